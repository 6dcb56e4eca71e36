"""Aggregate the collected run tables into the report's result tables and warnings.

Consumes: a :class:`~finscale.study_runs.StudyRuns`. Produces pandas tables: final
results (budget x horizon: mean and 95% CI over seeds), baselines, paired tests, backtests
(with the deflated Sharpe ratio), hardware and a warnings list.
Guarantees: only aggregation of recorded values (means, Student-t intervals over seeds,
counts) plus the deflated Sharpe ratio the study design asks for; budgets are ordered by
their parameter count, not alphabetically.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from finscale.evaluate import deflated_sharpe_ratio
from finscale.formatting import count
from finscale.report.findings import corrected_side
from finscale.study_runs import StudyRuns

RESULT_METRICS = ("log_loss", "auc", "skill", "brier", "ece")
# Natural ranges: a t-interval over 2-3 seeds can overshoot them, which only confuses.
METRIC_BOUNDS = {"log_loss": (0.0, math.inf), "auc": (0.0, 1.0), "skill": (-math.inf, 1.0),
                 "brier": (0.0, 1.0), "ece": (0.0, 1.0)}
# Evaluation sets below one trading year, or with fewer than this many windows of the rarer
# class, give wide intervals: the report says so even though guard 4 let them pass.
SMALL_EVAL_WINDOWS = 250
MIN_CLASS_WINDOWS = 30
CI_LEVEL = 0.95


def budget_order(runs: pd.DataFrame) -> list[str]:
    """Budget names ordered by their nominal parameter count."""
    if runs.empty:
        return []
    return list(runs.sort_values("budget_params").drop_duplicates("budget")["budget"])


def mean_ci(values) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n) with a Student-t 95% interval over seeds (NaN bounds for n < 2)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan, 1
    half = sps.t.ppf((1 + CI_LEVEL) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return mean, mean - half, mean + half, int(v.size)


def final_results(sr: StudyRuns) -> pd.DataFrame:
    """Budget x horizon: seeds, measured parameters, and per metric mean + CI over seeds."""
    evals = sr.current(sr.evals)
    if evals.empty:
        return pd.DataFrame()
    runs = sr.runs.set_index("run_id")
    rows = []
    for h in sorted(evals["horizon"].unique()):
        for budget in budget_order(sr.runs):
            cell = evals[(evals["horizon"] == h) & (evals["budget"] == budget)]
            if cell.empty:
                continue
            row = {"horizon": int(h), "budget": budget, "seeds": len(cell),
                   "params_total": float(runs.loc[cell["run_id"], "params_total"].mean()),
                   "params_non_embedding": float(runs.loc[cell["run_id"], "params_non_embedding"].mean())}
            for m in RESULT_METRICS:
                row[m], lo, hi, _ = mean_ci(cell[m])
                row[f"{m}_lo"], row[f"{m}_hi"] = (float(np.clip(v, *METRIC_BOUNDS[m])) for v in (lo, hi))
            row["collapsed_runs"] = int(cell["collapsed"].fillna(False).astype(bool).sum())
            rows.append(row)
    return pd.DataFrame(rows)


def comparison_summary(sr: StudyRuns) -> pd.DataFrame:
    """Per cell and baseline: the mean improvement over seeds (baseline test log-loss - model
    test log-loss: positive = PatchTST better, the report's one sign convention) with its
    interval over seeds, how many seeds are significantly better / worse by the findings'
    test (:func:`~finscale.report.findings.corrected_side`: Holm-corrected Diebold-Mariano
    where the inference stage recorded it), and the median over seeds of the bootstrap, Diebold-Mariano
    and Holm-corrected DM p-values."""
    cmp = sr.current(sr.comparisons)
    if cmp.empty:
        return pd.DataFrame()
    rows = []
    for (h, budget, base), g in cmp.groupby(["horizon", "budget", "baseline"], sort=False):
        mean, lo, hi, n = mean_ci(-g["mean_diff"])  # eval.json records model - baseline
        sides = [corrected_side(row)[0] for _, row in g.iterrows()]
        rows.append({"horizon": int(h), "budget": budget, "baseline": base, "seeds": n,
                     "improvement": mean, "improvement_lo": lo, "improvement_hi": hi,
                     # the findings' test: Holm-corrected DM where recorded (one rule everywhere)
                     "seeds_better": sum(side > 0 for side in sides),
                     "seeds_worse": sum(side < 0 for side in sides),
                     "median_p": float(g["p_value"].median()),
                     **{f"median_{c}": float(pd.to_numeric(g[c]).median()) if c in g else float("nan")
                        for c in ("dm_p", "dm_p_holm")}})
    order = {b: i for i, b in enumerate(budget_order(sr.runs))}
    out = pd.DataFrame(rows)
    return out.sort_values(["horizon", "budget", "baseline"], key=lambda c: c.map(order)
                           if c.name == "budget" else c, ignore_index=True)


def backtest_table(sr: StudyRuns) -> pd.DataFrame:
    """Per run: strategy vs buy-and-hold statistics and the deflated Sharpe ratio, which
    deflates each run's Sharpe by the Sharpe ratios of ALL final runs of its horizon."""
    bt = sr.current(sr.backtests).copy()
    if bt.empty:
        return bt
    bt["dsr"] = None
    for _, g in bt.groupby("horizon"):
        trials = g["sharpe"].dropna().to_numpy(dtype=np.float64)
        for idx, row in g.iterrows():
            bt.at[idx, "dsr"] = _dsr(row, trials)
    bt["dsr_trials"] = bt.groupby("horizon")["sharpe"].transform(lambda s: s.notna().sum())
    return bt


def _dsr(row: pd.Series, trials: np.ndarray) -> float | None:
    if row["sharpe"] is None or not np.isfinite(row["sharpe"]) or row["skew"] is None:
        return None
    try:
        return deflated_sharpe_ratio(float(row["sharpe"]), trials, int(row["n_obs"]),
                                     float(row["skew"]), float(row["kurtosis"]))
    except ValueError:
        return None


def backtest_summary(bt: pd.DataFrame) -> pd.DataFrame:
    """Per horizon: the best-Sharpe run, its deflated Sharpe ratio and buy-and-hold."""
    if bt.empty or bt["sharpe"].dropna().empty:
        return pd.DataFrame()
    rows = []
    for h, g in bt.groupby("horizon"):
        ok = g.dropna(subset=["sharpe"])
        if ok.empty:
            continue
        best = ok.loc[ok["sharpe"].astype(float).idxmax()]
        rows.append({"horizon": int(h), "trials": int(len(ok)), "best_run": best["run_id"],
                     "best_sharpe": best["sharpe"], "deflated_sharpe": best["dsr"],
                     "median_sharpe": float(ok["sharpe"].astype(float).median()),
                     "bh_sharpe": best["bh_sharpe"], "bh_cagr": best["bh_cagr"]})
    return pd.DataFrame(rows)


def hardware_table(sr: StudyRuns) -> pd.DataFrame:
    """Study-level sensor summary: one row per backend seen plus the runs without a log."""
    hw = sr.current(sr.hardware)
    if hw.empty:
        return pd.DataFrame()
    logged = hw[hw["hw_samples"] > 0]
    return pd.DataFrame([{
        "runs": len(hw), "runs_with_log": len(logged),
        "backends": ", ".join(sorted(set(",".join(logged["backend"].dropna()).split(",")) - {""})),
        "samples": int(logged["hw_samples"].sum()),
        "max_c": None if logged["max_c"].dropna().empty else float(logged["max_c"].max()),
        "time_hot_s": float(logged["hot_s"].sum()),
        "runs_sensor_unavailable": int((logged["unavailable_samples"] > 0).sum()),
    }])


def warnings_table(sr: StudyRuns, notes: list | tuple = ()) -> pd.DataFrame:
    """Everything a reader must know before trusting the numbers; identical findings grouped
    (``count`` subjects per row). ``notes``: extra (kind, subject, message) from the sections."""
    rows: list[dict] = [dict(zip(("kind", "subject", "message"), n)) for n in notes]

    def add(kind: str, subject: str, message: str) -> None:
        rows.append({"kind": kind, "subject": subject, "message": message})

    runs = sr.runs
    cur = runs[runs["current"]] if not runs.empty else runs
    for run_id in sr.missing:
        add("not started", run_id, "expected by the study config but no run directory exists")
    for _, r in cur.iterrows():
        if r["state"] == "failed":
            add("failed", r["run_id"], f"run failed: {r['reason'] or 'no reason recorded'}")
        elif r["state"] != "done":
            add("not done", r["run_id"], f"state {r['state']!r}{': ' + r['reason'] if r['reason'] else ''}")
        elif not r["evaluated"]:
            add("not evaluated", r["run_id"], "done but no eval.json: run `finscale evaluate`")
        if r["collapsed"]:
            add("collapsed", r["run_id"], f"validation: {r['collapse_reason']}")
        if r.get("converged") is False:
            add("not converged", r["run_id"], "still improving when max_epochs stopped it "
                "(raise train.max_epochs)")
        _budget_warning(r, add)
    for _, e in sr.current(sr.evals).iterrows():
        if e["collapsed"]:
            add("collapsed", e["run_id"], f"test: {e['collapse_reason']}")
    _split_warnings(sr.splits, add)
    if not runs.empty:
        for _, r in runs[~runs["current"]].iterrows():
            add("stale", r["run_id"], "run directory from another config; excluded from the report")
    for _, c in sr.hpo.iterrows() if not sr.hpo.empty and "hpo_flags" in sr.hpo else []:
        # the notes as recorded (a note may itself contain "; ": never split the joined text)
        for note in filter(None, c.get("hpo_flag_note_list") or []):
            add("hpo flagged", c["cell"], note)
    hw = sr.current(sr.hardware)
    for _, r in hw[hw["unavailable_samples"] > 0].iterrows() if not hw.empty else []:
        add("sensor unavailable", r["run_id"], "hardware samples unreadable (no temperature sensor)")
    return group_warnings(pd.DataFrame(rows, columns=["kind", "subject", "message"]))


# Warning kinds in the order a reader should see them (others follow, alphabetically).
WARNING_ORDER = ("failed", "not started", "not done", "not evaluated", "collapsed", "not converged",
                 "hpo flagged", "budget missed", "small set", "stale", "sensor unavailable")


def group_warnings(rows: pd.DataFrame) -> pd.DataFrame:
    """Identical (kind, message) pairs grouped into one row with a count and their subjects."""
    if rows.empty:
        return rows.assign(count=pd.Series(dtype=int))
    grouped = (rows.groupby(["kind", "message"], sort=False)["subject"]
               .agg(count="size", subject=lambda s: ", ".join(s.iloc[:3]) + (f", … ({len(s) - 3} more)"
                                                                            if len(s) > 3 else ""))
               .reset_index())
    rank = {k: i for i, k in enumerate(WARNING_ORDER)}
    grouped["_rank"] = grouped["kind"].map(lambda k: rank.get(k, len(rank)))
    grouped = grouped.sort_values(["_rank", "kind"], kind="stable").drop(columns="_rank")
    return grouped[["kind", "count", "subject", "message"]].reset_index(drop=True)


def _budget_warning(r: pd.Series, add) -> None:
    total, budget, tol = r["params_total"], r["budget_params"], r["budget_tolerance"]
    if total is None or not np.isfinite(total) or tol is None:
        return
    if abs(total - budget) > tol * budget:
        add("budget missed", r["run_id"], f"measured {count(total)} parameters vs budget "
            f"{r['budget']} = {count(budget)} ± {tol:.0%}")


def _split_warnings(splits: pd.DataFrame, add) -> None:
    if splits.empty:
        return
    for _, s in splits[splits["region"].isin(["val", "test"])].iterrows():
        subject = f"h{s['horizon']} {s['split']} {s['region']}"
        rarer = min(s["base_rate"], 1 - s["base_rate"]) * s["windows"]
        if s["windows"] < SMALL_EVAL_WINDOWS:
            add("small set", subject, f"{s['windows']} windows (< {SMALL_EVAL_WINDOWS}); "
                "intervals are wide")
        if rarer < MIN_CLASS_WINDOWS:
            add("small set", subject, f"only {rarer:.0f} windows of the rarer class "
                f"(< {MIN_CLASS_WINDOWS}; base rate {s['base_rate']:.3f})")
