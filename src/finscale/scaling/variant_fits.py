"""The scaling stage for studies with ``[axes]``: fits per variant, the joint L(N, D) fit over
the data-size axis, and paired comparisons between the values of each axis.

Consumes: the evaluated final runs (``study_runs``; predictions.npz for paired tests).
Produces: ``runs/<study>/scaling/<axis tag>/h<h>.json`` (the per-horizon fits of each variant,
as for a study without axes) and ``runs/<study>/scaling/axes.json``:
``joint`` — per horizon (and combination of the other axes) L(N, D) = E + A·N^-alpha + B·D^-beta
with N = measured total parameters, D = measured training tokens (windows × patches), bootstrap
intervals, allocation exponents, the N-only/D-only comparison, the verdict, the fitted
frontier and a contour grid for the report; ``comparisons`` — per axis, value pair, horizon
and budget a paired block-bootstrap test of test log-loss on the windows both sides scored;
``curves`` — per axis value and horizon the budget means and a power-law fit in N.
Guarantees: sizes are measured (never labels); a comparison uses only test windows common to
every run it pairs; what cannot be fitted says why instead of failing the stage.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd

from finscale.config import StudyConfig, flatten_axes
from finscale.evaluate.bootstrap import default_block_len, paired_bootstrap_test
from finscale.repro import derive_seed
from finscale.rundir import RunDir
from finscale.scaling.joint import analyze_joint, optimal_allocation, predict_joint
from finscale.scaling.laws import fit_power_law
from finscale.study_axes import axis_values, variants
from finscale.study_runs import StudyRuns, collect

log = logging.getLogger(__name__)

# Data-size axes: years of history kept, or assets pooled (panels); the first one a study
# varies is the D of its joint fit (D itself is measured: training tokens).
D_AXES = ("splits.train_years", "splits.train_assets")
GRID = 25


def study_axes(cfg: StudyConfig) -> dict:
    return {k: v for k, v in flatten_axes(cfg.axes).items() if isinstance(v, list) and len(v) > 1}


def _ready(sr: StudyRuns) -> pd.DataFrame:
    runs = sr.current(sr.runs)
    if runs.empty:
        return runs
    runs = runs[runs["evaluated"] & runs["has_predictions"]]
    evals = sr.evals.set_index("run_id")["log_loss"]
    return runs.assign(log_loss=runs["run_id"].map(evals))


def axes_results(cfg: StudyConfig) -> dict:
    """Everything of ``axes.json`` (see the module docstring)."""
    axes = study_axes(cfg)
    runs = _ready(collect(cfg))
    doc: dict = {"axes": axes, "joint": [], "comparisons": [], "curves": []}
    if runs.empty:
        doc["reason"] = "no evaluated runs"
        return doc
    d_axis = next((k for k in D_AXES if k in axes), None)
    if d_axis:
        doc["joint"] = joint_fits(cfg, runs, d_axis, [k for k in axes if k != d_axis])
    for key in axes:
        doc["comparisons"] += axis_comparisons(cfg, runs, key, axes)
        doc["curves"] += axis_curves(runs, key, axes[key])
    return doc


# --------------------------------------------------------------------------- joint fit

def joint_fits(cfg: StudyConfig, runs: pd.DataFrame, d_axis: str, others: list[str]) -> list[dict]:
    out = []
    groups = runs.groupby([f"axis:{k}" for k in others], dropna=False) if others else [((), runs)]
    for gkey, group in groups:
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        where = dict(zip(others, gkey))
        for h, hr in group.groupby("horizon"):
            out.append({"horizon": int(h), "where": where, "d_axis": d_axis,
                        **_joint_one(cfg, hr, int(h), where, d_axis)})
    return out


def _joint_one(cfg: StudyConfig, runs: pd.DataFrame, h: int, where: dict, d_axis: str) -> dict:
    points = pd.DataFrame({"run_id": runs["run_id"], "budget": runs["budget"], "seed": runs["seed"],
                           d_axis.rpartition(".")[2]: runs[f"axis:{d_axis}"], "N": runs["params_total"],
                           "D": runs["train_tokens"], "windows": runs["train_windows"],
                           "L": runs["log_loss"]}).reset_index(drop=True)
    base = {"points": points.to_dict("list")}
    if points[["N", "D", "L"]].isna().any().any():
        return {**base, "reason": "N (params), D (train_tokens) or test log-loss not recorded for every run"}
    try:
        res = analyze_joint(points["N"], points["D"], points["L"], n_resamples=cfg.evaluate.scaling_resamples,
                            seed=derive_seed("joint", cfg.name, h, *where.values()))
    except ValueError as exc:
        return {**base, "reason": str(exc)}
    return {**base, "reason": "", **res.to_dict(), **_grids(res.fit, points)}


def _grids(fit, points: pd.DataFrame) -> dict:
    """The fitted surface on a log grid (contours) and the compute-optimal frontier."""
    N, D = points["N"].to_numpy(float), points["D"].to_numpy(float)
    ng = np.geomspace(N.min() / 2, N.max() * 2, GRID)
    dg = np.geomspace(D.min() / 2, D.max() * 2, GRID)
    surface = predict_joint(fit, ng[None, :], dg[:, None])
    flops = np.geomspace((6 * N * D).min(), (6 * N * D).max(), GRID)
    n_opt, d_opt = optimal_allocation(fit, flops)
    return {"grid": {"N": _floats(ng), "D": _floats(dg), "L": [_floats(r) for r in np.asarray(surface)]},
            "frontier": {"C": _floats(flops), "N": _floats(n_opt), "D": _floats(d_opt),
                         "L": _floats(predict_joint(fit, n_opt, d_opt))}}


def _floats(values) -> list:
    """JSON-safe floats (no nan/inf: None)."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float).ravel()]


# --------------------------------------------------------------------------- comparisons

def _predictions(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(RunDir(path).predictions) as z:
        return z["ends"], z["y"].astype(np.float64), z["prob"].astype(np.float64)


def _mean_prob(rows: pd.DataFrame, ends: np.ndarray) -> np.ndarray:
    """The runs' mean probability on ``ends`` (a seed/other-axis ensemble of one value)."""
    probs = []
    for path in rows["path"]:
        e, _, p = _predictions(path)
        probs.append(p[np.searchsorted(e, ends)])
    return np.mean(probs, axis=0)


def axis_comparisons(cfg: StudyConfig, runs: pd.DataFrame, key: str, axes: dict) -> list[dict]:
    """Each value of ``key`` against its first value, per horizon and budget, paired on the
    test windows every run of both sides scored; each side averages the predictions of the
    runs that differ only in seed and the other axes (complete matched sets only)."""
    col, others = f"axis:{key}", [f"axis:{k}" for k in axes if k != key]
    ref, out = axes[key][0], []
    match = ["seed", *others]
    for (h, budget), group in runs.groupby(["horizon", "budget"]):
        a_side = group[group[col] == ref]
        for value in axes[key][1:]:
            b_side = group[group[col] == value]
            keys = set(map(tuple, a_side[match].astype(str).to_numpy())) & \
                set(map(tuple, b_side[match].astype(str).to_numpy()))
            row = {"axis": key, "value": value, "reference": ref, "horizon": int(h), "budget": budget,
                   "n_pairs": len(keys)}
            if not keys:
                out.append({**row, "reason": "no matched runs"})
                continue
            a, b = _pick(a_side, match, keys), _pick(b_side, match, keys)
            ends = _common_ends(pd.concat([a, b]))
            y = _labels(a.iloc[0]["path"], ends)
            test = paired_bootstrap_test(y, _mean_prob(b, ends), _mean_prob(a, ends),
                                         default_block_len(int(h), cfg.evaluate.block_len),
                                         cfg.evaluate.bootstrap_resamples,
                                         derive_seed("axis-compare", cfg.name, key, str(value), h, budget),
                                         horizon=int(h))
            out.append({**row, "reason": "", **test})
    return out


def _pick(side: pd.DataFrame, match: list[str], keys: set) -> pd.DataFrame:
    return side[[tuple(r) in keys for r in side[match].astype(str).to_numpy()]]


def _common_ends(rows: pd.DataFrame) -> np.ndarray:
    ends = None
    for path in rows["path"]:
        e = _predictions(path)[0]
        ends = e if ends is None else np.intersect1d(ends, e)
    assert ends is not None  # callers pass the matched runs of both sides (never none)
    return ends


def _labels(path: str, ends: np.ndarray) -> np.ndarray:
    e, y, _ = _predictions(path)
    return y[np.searchsorted(e, ends)]


def axis_curves(runs: pd.DataFrame, key: str, values: list) -> list[dict]:
    """Per value and horizon: budget means of N and test log-loss, and L(N) = E + A·N^-alpha."""
    out = []
    for value, h in itertools.product(values, sorted(runs["horizon"].unique())):
        sub = runs[(runs[f"axis:{key}"] == value) & (runs["horizon"] == h)]
        if sub.empty:
            continue
        by = sub.groupby("budget").agg(N=("params_total", lambda x: float(np.exp(np.log(x).mean()))),
                                       L=("log_loss", "mean")).sort_values("N")
        row = {"axis": key, "value": value, "horizon": int(h), "budget": list(by.index),
               "N": by["N"].tolist(), "L": by["L"].tolist(), "fit": None}
        if len(by) >= 3:
            f = fit_power_law(sub["params_total"].to_numpy(float), sub["log_loss"].to_numpy(float))
            row["fit"] = {k: float(f[k]) for k in ("E", "A", "alpha")}
        out.append(row)
    return out


def has_axes(cfg: StudyConfig) -> bool:
    return bool(axis_values(variants(cfg)[0]))
