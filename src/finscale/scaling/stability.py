"""How often each finding holds across replicate seed sets (guard 13: one seed set is a coin flip).

Consumes: the scaling stage's per-horizon results (the pooled fits and, with >= 2 replicates,
each replicate's fits: :attr:`~finscale.scaling.fit.HorizonScaling.replicates`) and the
collected evaluations (each run's test log-loss, each baseline's).
Produces: one row per finding and horizon — every scaling verdict (quantity x size axis) and
the headline comparison "best size vs best baseline" (PatchTST ``better`` or ``worse``) — with
the pooled value (all replicates' runs together), the value in each replicate, the share of
replicates in which the pooled value holds, the share of every value seen, alpha per
replicate, and ``stable``: the share is at least :data:`STABLE_SHARE`. Written by the scaling
stage to ``runs/<study>/scaling/stability.json``; the report renders it and copies it to
``report/stability.csv``.
Guarantees: with one replicate nothing is claimed (``measured`` false, shares and ``stable``
None); a replicate without a fit counts as not holding the pooled verdict.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

STABLE_SHARE = 0.8
COMPARISON = "best size vs best baseline"
NO_FIT = "no fit"


def stability_row(horizon: int, finding: str, pooled, per_replicate: list, *,
                  alphas: list | None = None, pooled_alpha: float | None = None) -> dict:
    """One finding: the pooled value, its share over replicates and whether it is stable.

    ``per_replicate``: the value in each replicate (None: no fit there). Shares are only
    measured with >= 2 replicates."""
    k = len(per_replicate)
    values = [NO_FIT if v is None else v for v in per_replicate]
    measured = k >= 2
    share = sum(v == pooled for v in values) / k if measured and pooled is not None else None
    counts = Counter(values)
    return {"horizon": int(horizon), "finding": finding, "verdict": pooled,
            "share": share, "stable": None if share is None else bool(share >= STABLE_SHARE),
            "measured": measured, "n_replicates": k,
            "shares": {v: c / k for v, c in counts.most_common()} if measured else {},
            "replicate_verdicts": values, "alpha": pooled_alpha,
            "alphas": list(alphas) if alphas is not None else [None] * k}


def best_vs_baseline(evals: pd.DataFrame, baselines: pd.DataFrame) -> str | None:
    """``better``/``worse``: the best size's mean test log-loss against the best baseline's
    (the headline comparison of the findings); None without evaluations or baselines."""
    if evals.empty or baselines.empty:
        return None
    best = evals.groupby("budget")["log_loss"].mean().min()
    base = baselines.groupby("baseline")["log_loss"].mean().min()
    return "better" if best < base else "worse"


def fit_finding(quantity: str, axis: str) -> str:
    return f"scaling: {quantity} vs {axis}"


def horizon_stability(hs, evals: pd.DataFrame, baselines: pd.DataFrame, replicates: list[int]) -> list[dict]:
    """The rows of one horizon (see module docstring); ``replicates`` the ids present."""
    rows = []
    reps = {(r["quantity"], r["axis"], r["replicate"]): r for r in hs.replicates}
    for f in hs.fits:
        mine = [reps.get((f.quantity, f.axis, r), {}) for r in replicates] if len(replicates) > 1 else [
            {"verdict": f.verdict, "alpha": f.boot["fit"]["alpha"]}]
        rows.append(stability_row(hs.horizon, fit_finding(f.quantity, f.axis), f.verdict,
                                  [m.get("verdict") for m in mine], alphas=[m.get("alpha") for m in mine],
                                  pooled_alpha=f.boot["fit"]["alpha"]))
    ev = evals[evals["horizon"] == hs.horizon] if not evals.empty else evals
    base = baselines[baselines["horizon"] == hs.horizon] if not baselines.empty else baselines
    pooled = best_vs_baseline(ev, base)
    if pooled is not None:
        per = [best_vs_baseline(ev[ev["replicate"] == r], base) for r in replicates] \
            if len(replicates) > 1 else [pooled]
        rows.append(stability_row(hs.horizon, COMPARISON, pooled, per))
    return rows


def build_stability(results: list, evals: pd.DataFrame, baselines: pd.DataFrame, n_replicates: int) -> dict:
    """The stability document of a study (``scaling/stability.json``)."""
    if not evals.empty and "replicate" not in evals:
        evals = evals.assign(replicate=0)
    replicates = sorted(int(r) for r in evals["replicate"].unique()) if not evals.empty else [0]
    rows = []
    for hs in results:
        if not hs.reason:
            rows += horizon_stability(hs, evals, baselines, replicates)
    return {"n_replicates": int(n_replicates), "replicates_evaluated": replicates,
            "stable_share": STABLE_SHARE, "measured": len(replicates) >= 2, "rows": rows}


def stability_frame(doc: dict | None) -> pd.DataFrame:
    """``report/stability.csv``: one row per finding; alpha per replicate as alpha_r<k>."""
    if not doc or not doc.get("rows"):
        return pd.DataFrame(columns=["horizon", "finding", "verdict", "share", "stable", "n_replicates"])
    out = []
    for r in doc["rows"]:
        row = {k: r[k] for k in ("horizon", "finding", "verdict", "share", "stable", "n_replicates")}
        row["replicate_verdicts"] = "; ".join(map(str, r["replicate_verdicts"]))
        row["alpha"] = r.get("alpha")
        for k, a in zip(doc.get("replicates_evaluated", []), r.get("alphas", [])):
            row[f"alpha_r{k}"] = a
        out.append(row)
    return pd.DataFrame(out)


def read_stability(path: Path) -> dict | None:
    """The stored stability document, or None when the scaling stage has not written one."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rerun the scaling phase") from exc
