"""The report's first section: what the study found, per horizon, in plain sentences.

Consumes: the collected tables of the current runs (runs, evals, baselines, comparisons, hpo)
and the headline scaling rows (test log-loss vs total parameters, one per horizon) — all
recorded by earlier stages; nothing is fitted or re-evaluated here.
Produces: a :class:`Findings` with, per horizon, the scaling verdict, the best size against
the strongest baseline — both chosen on VALIDATION log-loss (guard 16), the test split only
scores them — (difference in test log-loss with each seed's paired block-bootstrap
interval, from eval.json), whether any size beats every baseline, and the ranked caveats
that apply; rendered as Markdown/HTML by ``sections`` and printed by ``finscale report``.
Stability (guard 13): with the scaling stage's ``stability.json`` rows, the headline verdict
is stated only when it holds in at least ``STABLE_SHARE`` (80%) of the replicate seed sets;
otherwise the finding says "unstable across seeds" with the share of each verdict; likewise
the best-size-vs-baseline comparison says how often its side held. With one replicate the
findings say that stability was not measured.
Guarantees: signs are uniform — an **improvement** over a baseline is the baseline's test
log-loss minus the model's (positive = the model is better), intervals likewise; a model is
said to beat a baseline only when EVERY seed's comparison is significant on the good side by
the Holm-corrected Diebold-Mariano test (uncorrected DM, then the paired bootstrap interval,
where an older study lacks it); the "loses to a baseline" caveat needs a significant loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from finscale.evaluate.baselines import FITTED_ON_VALIDATION
from finscale.formatting import count, interval, num, signed

# Caveat severities: lower sorts first in the ranked list.
SEVERITY = {"loses_to_baseline": 0, "no_extrapolation": 1, "unstable": 1, "not_converged": 2,
            "hpo_flags": 3, "collapsed": 2, "few_seeds": 4, "stability_not_measured": 4}
UNSTABLE = "unstable across seeds"
HEADLINE_FINDING = "scaling: log_loss vs params_total"
COMPARISON_FINDING = "best size vs best baseline"


@dataclass(frozen=True)
class Caveat:
    kind: str
    text: str

    @property
    def rank(self) -> int:
        return SEVERITY.get(self.kind, 9)


@dataclass
class HorizonFinding:
    horizon: int
    verdict: str | None              # headline scaling verdict (None: no fit)
    verdict_text: str
    comparison: str                  # best size vs best baseline, in words
    beats_every_baseline: str        # which sizes (if any) beat every baseline, in words
    best_budget: str | None = None
    best_baseline: str | None = None
    improvement: float | None = None  # best baseline log-loss - best size log-loss (>0 better)
    selected_on: str = "validation"  # the split the best size and baseline were chosen on
    caveats: list[Caveat] = field(default_factory=list)
    stability: str = ""              # how often the verdict/comparison held across replicates
    pooled_verdict: str | None = None  # the pooled fit's verdict (verdict is UNSTABLE if it flips)
    # The headline fit's equivalence bounds and power, as the scaling stage recorded them
    # (max_fall_pct, max_rise_pct, their nats, min_detectable_slope, min_detectable_fall_pct).
    bounds: dict = field(default_factory=dict)

    def sentences(self) -> list[str]:
        return [s for s in (self.verdict_text, self.comparison, self.beats_every_baseline,
                            self.stability) if s]


@dataclass
class Findings:
    horizons: list[HorizonFinding]
    caveats: list[Caveat]            # study-wide, ranked

    def to_dict(self) -> dict:
        """JSON-ready: ``lines`` (what ``finscale report`` prints), per-horizon numbers, caveats."""
        return {"lines": self.lines(),
                "horizons": [{"horizon": hf.horizon, "verdict": hf.verdict,
                              "pooled_verdict": hf.pooled_verdict, "sentences": hf.sentences(),
                              "best_budget": hf.best_budget, "best_baseline": hf.best_baseline,
                              "improvement": hf.improvement, "selected_on": hf.selected_on,
                              **hf.bounds} for hf in self.horizons],
                "caveats": [{"kind": c.kind, "text": c.text} for c in self.caveats]}

    def lines(self) -> list[str]:
        """Plain text, one sentence per line (what ``finscale report`` prints)."""
        out = []
        for hf in self.horizons:
            out += [f"h={hf.horizon}: {s}" for s in hf.sentences()]
        out += [f"caveat: {c.text}" for c in self.caveats]
        return out


def _improvement_ci(row) -> tuple[float, float]:
    """Paired CI of (baseline - model) from eval.json's (model - baseline) interval."""
    return -float(row["diff_hi"]), -float(row["diff_lo"])


def _best_budget(runs: pd.DataFrame, evals: pd.DataFrame) -> tuple[str, float, int]:
    """The size with the lowest mean VALIDATION log-loss over its seeds (guard 16), and its
    mean TEST log-loss and seed count: the test split only scores what was chosen."""
    chooser = runs if "val_log_loss" in runs and runs["val_log_loss"].notna().any() else None
    if chooser is None:
        raise ValueError("findings: no validation log-loss recorded for the final runs; the best "
                         "size is chosen on validation, never on test")
    chooser = chooser[chooser["budget"].isin(evals["budget"])]  # only sizes that were scored
    budget = str(chooser.groupby("budget")["val_log_loss"].mean().idxmin())
    means = evals.groupby("budget")["log_loss"].agg(["mean", "count"])
    return budget, float(means.loc[budget, "mean"]), int(means.loc[budget, "count"])




def _best_baseline(baselines: pd.DataFrame) -> tuple[str, float] | None:
    """The baseline with the lowest VALIDATION log-loss (guard 16) and its test log-loss."""
    if baselines.empty or "val_log_loss" not in baselines or baselines["val_log_loss"].isna().all():
        return None
    pool = baselines[~baselines["baseline"].isin(FITTED_ON_VALIDATION) & baselines["val_log_loss"].notna()]
    name = str(pool.groupby("baseline")["val_log_loss"].mean().idxmin())
    return name, float(baselines[baselines["baseline"] == name]["log_loss"].mean())


def _finite(value) -> bool:
    return value is not None and pd.notna(value)


def corrected_side(row) -> tuple[int, str]:
    """(+1 significantly better / -1 worse / 0 neither, the test used) for one comparison row.

    The Holm-corrected Diebold-Mariano p-value when the inference stage recorded it; else the
    uncorrected DM p-value; else (older eval.json) the paired bootstrap interval. Sign: the
    model is better when its log-loss is lower (``mean_diff`` = model - baseline < 0)."""
    for col, name in (("dm_p_holm", "Holm-corrected Diebold-Mariano"), ("dm_p", "Diebold-Mariano, uncorrected")):
        if _finite(row.get(col)):
            if float(row[col]) >= 0.05:
                return 0, name
            diff = float(row["mean_diff"])
            return (1 if diff < 0 else -1 if diff > 0 else 0), name
    lo, hi = _improvement_ci(row)
    return (1 if lo > 0 else -1 if hi < 0 else 0), "paired block-bootstrap interval"


def _seed_verdicts(cmp: pd.DataFrame) -> tuple[int, int, list[str]]:
    """(#seeds significantly better, #significantly worse, interval strings) for one size,
    significance by :func:`corrected_side` (the test and its p-value follow each interval)."""
    better = worse = 0
    cis = []
    for _, row in cmp.sort_values("seed").iterrows():
        lo, hi = _improvement_ci(row)
        side, test = corrected_side(row)
        better += side > 0
        worse += side < 0
        p = next((row[c] for c in ("dm_p_holm", "dm_p") if _finite(row.get(c))), None)
        cis.append(interval((lo, hi), signed) + (f" ({test} p={num(float(p), 2)})" if p is not None else ""))
    return better, worse, cis


def compare_best(h: int, evals: pd.DataFrame, baselines: pd.DataFrame, comparisons: pd.DataFrame,
                 params: dict, runs: pd.DataFrame | None = None) -> tuple[str, dict]:
    """Sentence: the best size against the best baseline at horizon ``h``, both chosen on
    validation; and its numbers."""
    budget, loss, n_seeds = _best_budget(runs if runs is not None else evals, evals)
    best = _best_baseline(baselines)
    size = f"{budget} ({count(params[budget])} parameters)" if params.get(budget) else budget
    if best is None:
        return (f"Best PatchTST size {size} (chosen on validation): mean test log-loss {num(loss)} "
                f"over {n_seeds} seed(s); no baseline was evaluated.",
                {"best_budget": budget, "selected_on": "validation"})
    name, base_loss = best
    improvement = base_loss - loss
    cmp = comparisons[(comparisons["budget"] == budget) & (comparisons["baseline"] == name)]
    better, worse, cis = _seed_verdicts(cmp)
    side = "better" if improvement > 0 else "worse"
    text = (f"Best PatchTST size {size}: mean test log-loss {num(loss)} over {n_seeds} seed(s) vs "
            f"the strongest simple baseline, {name}, {num(base_loss)} (both chosen on validation): "
            f"improvement {signed(improvement)} "
            f"(PatchTST is {side}); paired block-bootstrap 95% intervals of the improvement per seed "
            f"{', '.join(cis) or 'n/a'}; {better} of {len(cmp)} seed(s) significantly better, "
            f"{worse} significantly worse.")
    return text, {"best_budget": budget, "best_baseline": name, "improvement": improvement,
                  "worse_seeds": worse, "better_seeds": better, "n_seeds": len(cmp),
                  "selected_on": "validation"}


def beats_every_baseline(comparisons: pd.DataFrame) -> str:
    """Which sizes beat every baseline in every seed, by the corrected test (:func:`corrected_side`)."""
    if comparisons.empty:
        return ""
    winners, tests = [], set()
    for budget, rows in comparisons.groupby("budget", sort=False):
        sides = [corrected_side(r) for _, r in rows.iterrows()]
        tests |= {t for _, t in sides}
        if sides and all(side > 0 for side, _ in sides):
            winners.append(str(budget))
    how = "; ".join(sorted(tests))
    if not winners:
        return f"No size beats every baseline in every seed ({how})."
    return f"Sizes that beat every baseline in every seed ({how}): {', '.join(winners)}."


def horizon_caveats(h: int, runs: pd.DataFrame, hpo: pd.DataFrame, verdict: str | None,
                    numbers: dict) -> list[Caveat]:
    """The caveats that apply at one horizon, unranked."""
    from finscale.scaling import FALLS_IN_RANGE

    out = []
    # only a significant loss (corrected test, _seed_verdicts) in at least one seed, not a point estimate
    if numbers.get("improvement") is not None and numbers["improvement"] < 0 and numbers.get("worse_seeds"):
        out.append(Caveat("loses_to_baseline", f"h={h}: PatchTST loses to {numbers['best_baseline']} "
                          f"at its best size ({numbers['best_budget']}), significantly in "
                          f"{numbers['worse_seeds']} of {numbers['n_seeds']} seed(s); a scaling law of "
                          "models that a simpler baseline beats is a weak result"))
    if verdict == FALLS_IN_RANGE:
        out.append(Caveat("no_extrapolation", f"h={h}: the power law describes the measured sizes but "
                          "its extrapolation is not supported (the leave-one-budget-out check preferred "
                          "the no-scaling model, or could not run with fewer than 4 sizes)"))
    if "converged" in runs and len(runs):
        bad = runs[runs["converged"] == False]  # noqa: E712 (NaN = unknown, not flagged)
        if len(bad):
            out.append(Caveat("not_converged", f"h={h}: {len(bad)} of {len(runs)} final runs did not "
                              "converge (still improving when max_epochs stopped them)"))
    if "collapsed" in runs and runs["collapsed"].fillna(False).astype(bool).any():
        n = int(runs["collapsed"].fillna(False).astype(bool).sum())
        out.append(Caveat("collapsed", f"h={h}: {n} final run(s) collapsed (predictions barely vary "
                          "or are no better than the base rate)"))
    if not hpo.empty and "hpo_flags" in hpo:
        flagged = hpo[hpo["hpo_flags"].map(lambda f: bool(f) if isinstance(f, list) else False)]
        if len(flagged):
            kinds = sorted({k for flags in flagged["hpo_flags"] for k in flags})
            out.append(Caveat("hpo_flags", f"h={h}: {len(flagged)} HPO cell(s) flagged "
                              f"({', '.join(kinds)}): their hyperparameters may not be tuned"))
    return out


def _pct(share: float) -> str:
    return f"{share:.0%}"


def _shares_text(row: dict) -> str:
    return ", ".join(f"{v}: {_pct(x)}" for v, x in row["shares"].items())


def apply_stability(hf: HorizonFinding, rows: dict) -> list[Caveat]:
    """State the verdict only when stable across replicates (module docstring); caveats."""
    fit, cmp = rows.get(HEADLINE_FINDING), rows.get(COMPARISON_FINDING)
    h = hf.horizon
    out: list[Caveat] = []
    if fit is None or not fit["measured"]:
        if hf.verdict is not None:
            hf.stability = ("Stability across seeds was not measured (one replicate seed set); "
                            "`finscale run STUDY --replicates K` measures how often each finding holds.")
        return out
    k = fit["n_replicates"]
    held = round(fit["share"] * k)
    if fit["stable"]:
        parts = [f"The verdict holds in {held} of {k} replicate seed sets ({_pct(fit['share'])}; "
                 f"stated at >= {_pct(STABLE)})"]
    else:
        hf.verdict_text = (f"Scaling of test log-loss with size is {UNSTABLE}: the pooled fit says "
                           f"\"{hf.verdict}\" but it holds in only {held} of {k} replicate seed sets "
                           f"({_shares_text(fit)}); no verdict is stated (needs >= {_pct(STABLE)}).")
        hf.verdict = UNSTABLE
        parts = []
        out.append(Caveat("unstable", f"h={h}: the scaling verdict is {UNSTABLE} (held in {held} of {k} "
                          "replicate seed sets); a rerun with other seeds can reverse it"))
    if cmp is not None:
        side = "better" if cmp["verdict"] == "better" else "worse"
        n = round(cmp["share"] * k)
        parts.append(f"the best size is {side} than the best baseline in {n} of {k} replicate seed sets"
                     + ("" if cmp["stable"] else f" ({UNSTABLE})"))
        if not cmp["stable"]:
            out.append(Caveat("unstable", f"h={h}: whether PatchTST beats the best baseline is "
                              f"{UNSTABLE} ({side} in {n} of {k} replicate seed sets)"))
    hf.stability = "; ".join(parts)[:1].upper() + "; ".join(parts)[1:] + "."
    return out


STABLE = 0.8  # finscale.scaling.STABLE_SHARE (kept in step by a test)


def build_findings(runs: pd.DataFrame, evals: pd.DataFrame, baselines: pd.DataFrame,
                   comparisons: pd.DataFrame, hpo: pd.DataFrame, headline: list[dict],
                   stability: dict | None = None) -> Findings:
    """Findings per horizon (see module docstring). ``headline``: one dict per horizon with
    ``horizon``, ``verdict``, ``text`` and (optional) ``bounds`` of the test log-loss vs total
    parameters fit;
    ``stability``: the scaling stage's stability document (None: not available)."""
    by_h: dict[int, dict] = {}
    for row in (stability or {}).get("rows", []):
        by_h.setdefault(int(row["horizon"]), {})[row["finding"]] = row
    verdicts = {int(r["horizon"]): r for r in headline}
    out, caveats = [], []
    for h in sorted(int(x) for x in evals["horizon"].unique()) if not evals.empty else []:
        at = {name: t[t["horizon"] == h] if not t.empty and "horizon" in t else t
              for name, t in (("runs", runs), ("evals", evals), ("baselines", baselines),
                              ("comparisons", comparisons), ("hpo", hpo))}
        # The horizon's own runs: a budget's architecture (and so its count) differs by horizon.
        params = at["runs"].groupby("budget")["params_total"].median().to_dict() \
            if "params_total" in at["runs"] else {}
        text, numbers = compare_best(h, at["evals"], at["baselines"], at["comparisons"], params,
                                     at["runs"])
        fit = verdicts.get(h, {})
        verdict_text = fit.get("text") or "No scaling fit (too few sizes or runs)."
        hf = HorizonFinding(h, fit.get("verdict"), verdict_text, text,
                            beats_every_baseline(at["comparisons"]), numbers.get("best_budget"),
                            numbers.get("best_baseline"), numbers.get("improvement"))
        hf.pooled_verdict = hf.verdict
        hf.bounds = dict(fit.get("bounds") or {})
        hf.caveats = horizon_caveats(h, at["runs"], at["hpo"], hf.verdict, numbers)
        hf.caveats += apply_stability(hf, by_h.get(h, {}))
        caveats += hf.caveats
        out.append(hf)
    seeds = runs.groupby(["budget", "horizon"])["seed"].nunique() if not runs.empty else pd.Series()
    if len(seeds) and seeds.min() < 3:
        caveats.append(Caveat("few_seeds", f"{int(seeds.min())} seed(s) per cell: a single seed set's "
                              "verdict can flip on a rerun (replicate seed sets measure how often)"))
    if stability is not None and not stability.get("measured") and out:
        caveats.append(Caveat("stability_not_measured", "stability across seeds was not measured (one "
                              "replicate seed set): each verdict may flip on a rerun with other seeds"))
    return Findings(out, sorted(caveats, key=lambda c: (c.rank, c.text)))

