"""Scaling in money: Sharpe (and its deflated version) of each size against N and compute,
across the backtest's cost sweep, with a ceiling fit; panels add IC / Rank IC per size.

Consumes: each evaluated final run's ``eval.json`` (``backtest`` with its equity curve, trades
and ``cost_sweep``; panels ``ic`` with its daily series and ``topk``) and the runs table
(measured N, training FLOPs C). Produces ``runs/<study>/scaling/economics.json``.

Per horizon and cost level (the sweep's 0, 1, 5, 10, 20 bp and the study's cost):
- each run's annualised Sharpe of daily strategy returns, and its deflated Sharpe ratio
  (Bailey & López de Prado 2014, :func:`finscale.evaluate.deflated_sharpe_ratio`): the
  probability that its true Sharpe exceeds the expected best of the horizon's trials by
  luck, the trials being every final run of the horizon at that cost;
- per budget the mean Sharpe over seeds with a paired moving-block bootstrap interval: ONE
  block resample of the test days per replicate, shared by every run (the test days are the
  same for all runs of a horizon), so sizes are compared on the same days; and the
  largest-minus-smallest budget difference with its paired interval. Daily returns at a cost
  other than the recorded one are rescaled from the recorded equity and trades
  (:func:`finscale.evaluate.daily_returns_at`); a pooled panel backtest has no single-asset
  trades, so panels get intervals at the study's cost only.
- the ceiling fit S(x) = S_inf - a·x^-b (a >= 0, b in [0, 5]; Timmermann & Vulicevic 2026)
  on the per-run points for x = C and x = N, by bounded least squares, with intervals from
  refits on the same paired resamples; ``gain_25pct`` = S(1.25·x_max) - S(x_max).
  With 3-4 sizes and Sharpe's sampling noise the ceiling is rarely identified: read the
  intervals.
Panels: per run the IC block of eval.json; per budget the mean daily IC and Rank IC over
seeds with block-bootstrap intervals over the days all runs scored.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kurtosis, skew

from finscale.config import StudyConfig
from finscale.evaluate import block_bootstrap_indices, daily_returns_at, deflated_sharpe_ratio
from finscale.evaluate.bootstrap import percentile_ci
from finscale.repro import derive_seed
from finscale.rundir import RunDir
from finscale.study_runs import StudyRuns, collect

log = logging.getLogger(__name__)

ECONOMICS_NAME = "economics.json"
TRADING_DAYS = 252
B_MAX = 5.0
B_MIN = 0.01
B_GRID = np.r_[np.geomspace(1e-4, 0.05, 40), np.linspace(0.05, B_MAX, 991)[1:]]  # 0.005 steps
MAX_FIT_RESAMPLES = 200


def economics_path(cfg: StudyConfig) -> Path:
    return cfg.study_dir / "scaling" / ECONOMICS_NAME


def sharpe(returns: np.ndarray, axis: int = -1) -> np.ndarray:
    """Annualised Sharpe of daily returns (ddof=1; NaN where the spread is 0)."""
    sd = np.std(returns, axis=axis, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, np.mean(returns, axis=axis) / sd * math.sqrt(TRADING_DAYS), np.nan)


# --------------------------------------------------------------------------- ceiling fit

def fit_ceiling(x, S) -> dict:
    """S(x) = S_inf - a·x^-b by least squares, profiled over b: for each b on a fine grid in
    [0, B_MAX] the fit is linear in (S_inf, a) with a >= 0 (closed form), and the b with the
    smallest residual wins. Robust where S_inf and a run off together (b -> 0)."""
    x, S = np.asarray(x, dtype=np.float64), np.asarray(S, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(S) & (x > 0)
    x, S = x[ok], S[ok]
    if np.unique(x).size < 3:
        raise ValueError(f"a ceiling fit needs >= 3 distinct sizes; got {np.unique(x).size}")
    mean_lx = float(np.log(x).mean())
    Z = np.exp(-B_GRID[:, None] * (np.log(x) - mean_lx)[None, :])    # (grid, n): x^-b, centred
    zc, sc = Z - Z.mean(axis=1, keepdims=True), S - S.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        a_c = np.clip(-(zc @ sc) / np.einsum("ij,ij->i", zc, zc), 0.0, None)
    s_inf = S.mean() + a_c * Z.mean(axis=1)
    rss = np.sum((s_inf[:, None] - a_c[:, None] * Z - S[None, :]) ** 2, axis=1)
    i = int(np.nanargmin(rss))
    b = float(B_GRID[i])
    a = float(a_c[i]) * math.exp(b * mean_lx)  # a·x^-b = a_c·exp(-b·(log x - mean))
    x_max = float(x.max())
    # b near 0 makes S_inf - a·x^-b a straight line in log x (S_inf and a run off together);
    # near B_MAX a step between the smallest sizes: either way there is no ceiling to read.
    identified = bool(B_MIN < b < 0.9 * B_MAX and a_c[i] > 0)
    return {"S_inf": float(s_inf[i]), "a": a, "b": b, "gain_25pct": a * x_max**-b * (1 - 1.25**-b),
            "x_max": x_max, "n_points": int(x.size), "rmse": float(math.sqrt(rss[i] / x.size)),
            "identified": identified}


def _ceiling_with_ci(x, S_point, S_reps, level: float = 0.95) -> dict:
    """Point fit on per-run Sharpe ``S_point`` and percentile intervals over refits of the
    paired resamples ``S_reps`` (runs x resamples)."""
    try:
        fit = fit_ceiling(x, S_point)
    except ValueError as exc:
        return {"reason": str(exc)}
    q = [(1 - level) / 2, (1 + level) / 2]
    samples: dict[str, list[float]] = {k: [] for k in ("S_inf", "b", "gain_25pct")}
    for r in range(min(S_reps.shape[1], MAX_FIT_RESAMPLES)):
        try:
            f = fit_ceiling(x, S_reps[:, r])
        except ValueError:
            continue
        for k in samples:
            samples[k].append(f[k])
    ci = {f"{k}_ci": [float(v) for v in np.quantile(s, q)] if s else None for k, s in samples.items()}
    return {**fit, **ci, "reason": "", "n_resamples": len(samples["b"])}


# --------------------------------------------------------------------------- per horizon

def _strategy_returns(bt: dict) -> np.ndarray:
    eq = np.asarray(bt["strategy"]["equity"], dtype=np.float64)
    return eq[1:] / np.r_[1.0, eq[1:-1]] - 1.0


def _run_returns(bt: dict, costs: list[float], panel: bool) -> dict[float, np.ndarray]:
    """Daily strategy returns per cost level (panels: the study's cost only)."""
    out = {float(bt["cost_bps"]): _strategy_returns(bt)}
    if not panel:
        for c in costs:
            out.setdefault(c, daily_returns_at(bt, c))
    return out


def _cost_rows(runs: pd.DataFrame, docs: dict, cost: float, returns: dict, idx: np.ndarray | None) -> tuple:
    """(rows per run at this cost, per-run resampled Sharpe (runs x R) or None)."""
    rows = []
    for rid, r in runs.iterrows():
        bt = docs[rid]["backtest"]
        sweep = {x["cost_bps"]: x for x in bt.get("cost_sweep", [])}
        # an eval.json written before the sweep existed still has its own cost's backtest
        row = sweep.get(cost) or (bt["strategy"] if cost == float(bt["cost_bps"]) else {})
        rows.append({"run_id": rid, "budget": r["budget"], "seed": int(r["seed"]), "N": r["params_total"],
                     "C": r["train_flops"], "cost_bps": cost, "sharpe": row.get("sharpe"),
                     "turnover": row.get("turnover"), "total_return": row.get("total_return")})
    have = [rid for rid in runs.index if cost in returns[rid]]
    if len(have) != len(runs) or idx is None:
        return rows, None
    R = np.stack([returns[rid][cost] for rid in runs.index])
    trials = np.array([np.nan if x["sharpe"] is None else x["sharpe"] for x in rows], dtype=float)
    for x, ret in zip(rows, R):
        x["dsr"] = _dsr(x["sharpe"], trials[np.isfinite(trials)], ret)
    return rows, sharpe(R[:, idx], axis=-1)  # (runs, R)


def _dsr(value, trials: np.ndarray, ret: np.ndarray) -> float | None:
    """Deflated Sharpe of one run against the horizon's trials (None where undefined)."""
    if value is None or not np.isfinite(value) or np.std(ret) == 0:
        return None
    try:
        return deflated_sharpe_ratio(value, trials, ret.size, float(skew(ret)), float(kurtosis(ret, fisher=False)))
    except ValueError:  # a non-positive Sharpe variance (extreme skew/kurtosis)
        return None


def _budget_rows(rows: list[dict], reps: np.ndarray | None, cost: float) -> tuple[list, dict | None]:
    frame = pd.DataFrame(rows)
    order = frame.groupby("budget")["N"].mean().sort_values().index.tolist()
    out: list[dict] = []
    means: dict = {}  # budget -> per-resample mean Sharpe (None without resamples)
    for b in order:
        mask = (frame["budget"] == b).to_numpy()
        point = frame.loc[mask, "sharpe"].astype(float).mean()
        ci = percentile_ci(np.nanmean(reps[mask], axis=0)) if reps is not None else None
        means[b] = np.nanmean(reps[mask], axis=0) if reps is not None else None
        out.append({"budget": b, "cost_bps": cost, "N": float(frame.loc[mask, "N"].mean()),
                    "C": float(frame.loc[mask, "C"].mean()), "sharpe": point, "sharpe_ci": ci,
                    "dsr": float(frame.loc[mask, "dsr"].astype(float).mean()) if "dsr" in frame else None})
    diff = None
    if reps is not None and len(order) >= 2:
        d = means[order[-1]] - means[order[0]]
        diff = {"largest": order[-1], "smallest": order[0], "cost_bps": cost,
                "diff": out[-1]["sharpe"] - out[0]["sharpe"], "ci": percentile_ci(d)}
    return out, diff


def horizon_economics(runs: pd.DataFrame, docs: dict, *, n_resamples: int, seed: int) -> dict:
    """Everything for one horizon (see the module docstring); ``runs`` indexed by run_id."""
    first = docs[runs.index[0]]["backtest"]
    panel = "assets" in first
    costs = sorted({float(x["cost_bps"]) for x in first.get("cost_sweep", [])} | {float(first["cost_bps"])})
    returns = {rid: _run_returns(docs[rid]["backtest"], costs, panel) for rid in runs.index}
    lengths = {rid: len(v[float(first["cost_bps"])]) for rid, v in returns.items()}
    n = min(lengths.values())
    block = max(int((docs[runs.index[0]].get("block_length") or {}).get("block_len") or 5), 1)
    same_days = len(set(lengths.values())) == 1 and n >= 2 * block
    idx = block_bootstrap_indices(n, block, n_resamples, np.random.default_rng(seed)) if same_days else None
    out: dict = {"cost_levels": costs, "study_cost_bps": float(first["cost_bps"]), "panel": panel, "block_len": block,
           "paired": same_days, "runs": [], "budgets": [], "differences": [], "ceiling": {}}
    for cost in costs:
        rows, reps = _cost_rows(runs, docs, cost, returns, idx)
        out["runs"] += rows
        if not any(r["sharpe"] is not None for r in rows):
            continue
        budgets, diff = _budget_rows(rows, reps, cost)
        out["budgets"] += budgets
        if diff:
            out["differences"].append(diff)
        if cost == out["study_cost_bps"]:
            S = np.array([np.nan if r["sharpe"] is None else r["sharpe"] for r in rows])
            reps = reps if reps is not None else np.empty((len(rows), 0))
            out["ceiling"] = {axis: _ceiling_with_ci(runs[col].to_numpy(float), S, reps)
                              for axis, col in (("C", "train_flops"), ("N", "params_total"))}
    if panel:
        out["ic"] = _panel_ic(runs, docs, n_resamples, seed)
    return out


def _panel_ic(runs: pd.DataFrame, docs: dict, n_resamples: int, seed: int) -> dict:
    """Per run the eval.json IC block; per budget the mean daily IC / Rank IC with
    block-bootstrap intervals over the days every run scored."""
    per_run, series = [], {}
    for rid, r in runs.iterrows():
        ic = docs[rid].get("ic") or {}
        topk = docs[rid].get("topk") or {}
        per_run.append({"run_id": rid, "budget": r["budget"], "seed": int(r["seed"]), "N": r["params_total"],
                        **{k: ic.get(k) for k in ("mean", "t", "t_hac", "icir", "rank_ic", "rank_t",
                                                  "rank_t_hac", "rank_icir", "n_days")},
                        "topk_sharpe": topk.get("sharpe"), "topk_sharpe_gross": topk.get("sharpe_gross"),
                        "topk_turnover": topk.get("turnover")})
        if "daily" in ic:
            series[rid] = pd.DataFrame(ic["daily"]).set_index("day")
    per_budget = []
    if len(series) == len(runs):
        days = sorted(set.intersection(*(set(s.index) for s in series.values())))
        block = max(int((docs[runs.index[0]].get("block_length") or {}).get("block_len") or 5), 1)
        if len(days) >= 2 * block:
            idx = block_bootstrap_indices(len(days), block, n_resamples, np.random.default_rng(seed))
            for b, g in runs.groupby("budget"):
                for key in ("ic", "rank_ic"):
                    m = np.mean([series[rid].loc[days, key].to_numpy() for rid in g.index], axis=0)
                    per_budget.append({"budget": b, "metric": key, "N": float(g["params_total"].mean()),
                                       "mean": float(m.mean()), "ci": percentile_ci(m[idx].mean(axis=1))})
    return {"runs": per_run, "budgets": per_budget}


def economics_results(cfg: StudyConfig, sr: StudyRuns | None = None) -> dict:
    """Everything of ``economics.json``: per horizon :func:`horizon_economics`."""
    sr = sr or collect(cfg)
    runs = sr.current(sr.runs)
    runs = runs[runs["evaluated"]] if not runs.empty else runs
    axis_cols = [c for c in runs.columns if c.startswith("axis:")]
    if axis_cols and not runs.empty:  # with [axes] a "size" is a budget in one axis variant
        runs = runs.assign(budget=runs["budget"] + runs[axis_cols].astype(str).apply(
            lambda r: "".join(f" {c[5:].split('.')[-1]}={v}" for c, v in r.items()), axis=1))
    out = []
    for h in sorted(cfg.target.horizons):
        hr = runs[runs["horizon"] == h].set_index("run_id") if not runs.empty else runs
        docs = {rid: RunDir(p).read_json("eval.json") for rid, p in hr["path"].items()} if len(hr) else {}
        docs = {k: v for k, v in docs.items() if v and v.get("backtest")}
        hr = hr.loc[list(docs)] if docs else hr.iloc[:0]
        if hr.empty:
            out.append({"horizon": h, "reason": "no evaluated runs with a backtest"})
            continue
        out.append({"horizon": h, "reason": "", **horizon_economics(
            hr, docs, n_resamples=cfg.evaluate.scaling_resamples, seed=derive_seed("economics", cfg.name, h))})
    return {"horizons": out}
