"""Scaling with compute: the validation-loss envelope over cumulative training compute, its
fit L(C) = E + A·C^-gamma, the compute-optimal size per compute level, and HPO compute.

Consumes: every final run's ``metrics.jsonl`` epoch lines (validation log-loss and the
cumulative training FLOPs ``train_flops`` the trainer records) and measured sizes (through
:func:`finscale.study_runs.collect`), and the HPO trial directories
``runs/<study>/hpo/<cell>/trials/*/``. Produces ``runs/<study>/scaling/compute.json``.

Compute. C after epoch e = e x windows x matmul FLOPs per training sample, the last from
:func:`finscale.model.flops_per_sample` (forward + backward = 3 x forward; per sequence of n
patch tokens of width d, MLP width f, L blocks: 2·n·patch_dim·d + L·(8·n·d² + 4·n²·d +
4·n·d·f) + 2·n·d — the ``4·n²·d`` is the attention term; ≈ 6·N_non_embedding·tokens + the
attention term). Validation forward passes are not counted (they do not train).

Envelope (Kaplan et al. 2020; Hoffmann et al. 2022, fig. 1): the (run, epoch) points of a
horizon sorted by C; a point is on the envelope when its validation loss is below every
point with less compute — the lowest loss reached at each compute level. The test split is
not read (guard 11). The envelope is non-increasing by construction, so its decline alone is
no evidence of scaling; the exponent and its interval are what it reports.

Fit: L(C) = E + A·C^-gamma by :func:`finscale.scaling.fit_power_law` on the envelope points;
intervals by :func:`finscale.scaling.bootstrap_fit` with a run-level resampler (runs drawn
with replacement within each budget, the envelope rebuilt, the law refitted), so epochs of
one run are never treated as independent evidence.

Compute-optimal size: the joint L(N, D) = E + A·N^-alpha + B·D^-beta of
:mod:`finscale.scaling.joint` fitted to the (run, epoch) points with N = measured total
parameters and D = training tokens seen (tokens per epoch x epochs; repeated epochs count
again), bootstrapped over runs as above; N_opt(C) from
:func:`finscale.scaling.joint.optimal_allocation`, whose C = 6·N·D is mapped to measured
FLOPs by kappa = median(C / (6·N·D)) over the points. The learning-rate schedule is fixed by
max_epochs, so intermediate epochs are not tuned for their own D (as Hoffmann et al. warn):
read N_opt as indicative, with its interval. ``frontier_N`` is the measured size of the run
on the envelope at each point (Approach 1), with no fit at all.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from finscale.config import StudyConfig
from finscale.formatting import interval, short
from finscale.model import ModelArgs, flops_per_sample
from finscale.repro import derive_seed
from finscale.rundir import RunDir
from finscale.scaling.joint import _REFIT_OPTIONS, EXPONENT_MAX, _Problem, fit_joint, optimal_allocation
from finscale.scaling.laws import at_bound, bootstrap_fit, compare_to_constant, prediction_band
from finscale.study_runs import StudyRuns, collect

log = logging.getLogger(__name__)

COMPUTE_NAME = "compute.json"
FORMULA = ("C = epochs x training windows x FLOPs/sample, FLOPs/sample = 3 x forward matmul FLOPs "
           "(2 per multiply-add): per sequence of n patch tokens 2·n·patch_dim·d + layers·(8·n·d² "
           "+ 4·n²·d + 4·n·d·d_ff) + 2·n·d (≈ 6·N_non_embedding·tokens + the 4·n²·d attention term)")
GRID = 40
MAX_JOINT_RESAMPLES = 200


def compute_path(cfg: StudyConfig) -> Path:
    return cfg.study_dir / "scaling" / COMPUTE_NAME


# --------------------------------------------------------------------------- envelope

def loss_envelope(C, L) -> np.ndarray:
    """Indices (in increasing C) of the points whose L is below every point of smaller C."""
    C, L = np.asarray(C, dtype=np.float64), np.asarray(L, dtype=np.float64)
    order = np.lexsort((L, C))
    keep, best = [], math.inf
    for i in order:
        if np.isfinite(L[i]) and L[i] < best:
            keep.append(i)
            best = L[i]
    return np.asarray(keep, dtype=np.int64)


def epoch_points(sr: StudyRuns) -> pd.DataFrame:
    """One row per (final run, epoch) of the current config: run_id, budget, seed, horizon,
    epoch, N, C (cumulative training FLOPs), D (tokens seen), L (validation log-loss)."""
    runs, ep = sr.current(sr.runs), sr.current(sr.epochs)
    if runs.empty or ep.empty:
        return pd.DataFrame(columns=["run_id", "budget", "seed", "horizon", "epoch", "N", "C", "D", "L"])
    info = runs.set_index("run_id")
    ep = ep[ep["run_id"].isin(info.index[info["params_total"].notna()])]
    per_epoch = info["train_flops_per_sample"] * info["train_windows"]
    C = ep["train_flops"] if "train_flops" in ep else pd.Series(np.nan, index=ep.index)
    # runs written before train_flops was recorded: the same product from recorded quantities
    C = C.fillna(ep["epoch"] * ep["run_id"].map(per_epoch))
    return pd.DataFrame({"run_id": ep["run_id"], "budget": ep["budget"], "seed": ep["seed"],
                         "horizon": ep["horizon"], "epoch": ep["epoch"],
                         "N": ep["run_id"].map(info["params_total"]).astype(float), "C": C.astype(float),
                         "D": (ep["epoch"] * ep["run_id"].map(info["train_tokens"])).astype(float),
                         "L": ep["val_log_loss"].astype(float)}).dropna().reset_index(drop=True)


def _run_draw(points: pd.DataFrame):
    """Resampler for bootstrap_fit: runs with replacement within each budget, envelope rebuilt."""
    by_budget = [g["run_id"].unique() for _, g in points.groupby("budget")]
    rows = {r: g.index.to_numpy() for r, g in points.groupby("run_id")}
    C, L = points["C"].to_numpy(), points["L"].to_numpy()

    def draw(rng: np.random.Generator, r: int):
        idx = np.concatenate([rows[run] for ids in by_budget for run in rng.choice(ids, ids.size)])
        env = idx[loss_envelope(C[idx], L[idx])]
        return C[env], L[env]
    return draw


def fit_envelope(points: pd.DataFrame, *, n_resamples: int, seed: int, level: float = 0.95) -> dict:
    """The envelope of ``points`` (columns run_id, budget, N, C, L) and its L(C) fit with
    run-bootstrap intervals; ``reason`` says why there is no fit."""
    env = points.iloc[loss_envelope(points["C"], points["L"])]
    out: dict = {"envelope": {"C": _floats(env["C"]), "L": _floats(env["L"]), "run_id": list(env["run_id"]),
                        "budget": list(env["budget"]), "frontier_N": _floats(env["N"]),
                        "epoch": [int(e) for e in env["epoch"]]}, "reason": ""}
    if len(env) < 3:
        return {**out, "reason": f"the envelope has {len(env)} point(s); a power law needs >= 3"}
    C, L = env["C"].to_numpy(float), env["L"].to_numpy(float)
    boot = bootstrap_fit((C, L), _run_draw(points), n_resamples, seed, level=level)
    comparison = compare_to_constant(C, L)
    fit = boot["fit"]
    grid = np.geomspace(C.min(), C.max(), GRID)
    lo, hi = prediction_band(boot["samples"], grid, level)
    out.update(fit={"E": fit["E"], "A": fit["A"], "gamma": fit["alpha"], "drop": fit["drop"],
                    "log_slope": fit["log_slope"], "n_points": fit["n_points"]},
               ci={"gamma": boot["alpha_ci"], "E": boot["E_ci"], "A": boot["A_ci"], "drop": boot["drop_ci"]},
               level=level, n_resamples=n_resamples, n_failed=boot["n_failed"],
               comparison={k: comparison[k] for k in ("lobo_rmse_power", "lobo_rmse_const", "delta_bic")},
               band={"C": _floats(grid), "lo": _floats(lo), "hi": _floats(hi)},
               text=_envelope_text(fit, boot, len(points)))
    return out


def _envelope_text(fit: dict, boot: dict, n_points: int) -> str:
    ci = boot["alpha_ci"]
    ci_text = interval(ci, short)
    return (f"validation log-loss envelope L(C) = {fit['E']:.4g} + {fit['A']:.4g}·C^-{fit['alpha']:.3g}, "
            f"gamma {boot['level']:.0%} CI {ci_text} (runs resampled within budgets); "
            f"{fit['n_points']} envelope points of {n_points} (run, epoch) points. The envelope is a "
            "running minimum, so it falls by construction: gamma measures how fast, not whether.")


# --------------------------------------------------------------------------- compute-optimal size

def compute_optimal(points: pd.DataFrame, *, n_resamples: int, seed: int, level: float = 0.95) -> dict:
    """Joint L(N, D) on the (run, epoch) points and N_opt per compute level with run-bootstrap
    intervals (see the module docstring); ``reason`` says why there is none."""
    N, D, C, L = (points[k].to_numpy(float) for k in ("N", "D", "C", "L"))
    try:
        fit = fit_joint(N, D, L)
    except ValueError as exc:
        return {"reason": str(exc)}
    kappa = float(np.median(C / (6.0 * N * D)))
    grid = np.geomspace(C.min(), C.max(), GRID)
    base = {"fit": fit.to_dict(), "kappa": kappa, "C": _floats(grid), "reason": ""}
    bounded = [k for k in ("alpha", "beta") if at_bound(getattr(fit, k))]
    if bounded:  # a step between the smallest sizes, not a power law: no allocation to read
        return {**base, "reason": f"{' and '.join(bounded)} at the bound {EXPONENT_MAX:g} (L(N, D) = "
                                  f"{fit.E:.4g} + {fit.A:.4g}·N^-{fit.alpha:.3g} + {fit.B:.4g}·D^-{fit.beta:.3g}): "
                                  "a step between the smallest sizes, so N_opt(C) is not identified"}
    try:
        n_opt, d_opt = optimal_allocation(fit, grid / kappa)
    except ValueError as exc:
        return {**base, "reason": str(exc)}
    samples = _joint_samples(points, fit, n_resamples, seed)
    curves = np.full((len(samples), grid.size), np.nan)
    for i, s in enumerate(samples):
        if s.alpha > 1e-8 and s.beta > 1e-8:
            curves[i] = optimal_allocation(s, grid / kappa)[0]
    ok = np.all(np.isfinite(curves), axis=1)
    q = [(1 - level) / 2, (1 + level) / 2]
    lo, hi = np.quantile(curves[ok], q, axis=0) if ok.any() else (np.full(grid.size, np.nan),) * 2
    a_exp = np.array([s.a_exp for s in samples], dtype=float)
    a_ok = a_exp[np.isfinite(a_exp)]
    return {**base, "N_opt": _floats(n_opt), "D_opt": _floats(d_opt), "N_lo": _floats(lo), "N_hi": _floats(hi),
            "a_exp": fit.a_exp, "a_exp_ci": _floats(np.quantile(a_ok, q)) if a_ok.size else None,
            "level": level, "n_resamples": len(samples), "n_usable": int(ok.sum()),
            "text": _optimal_text(fit, kappa, a_ok, q)}


def _joint_samples(points: pd.DataFrame, fit, n_resamples: int, seed: int) -> list:
    """Refits of the joint law on run-level resamples (runs drawn within budgets, as weights)."""
    N, D, L = (points[k].to_numpy(float) for k in ("N", "D", "L"))
    prob = _Problem(N, D, L, fit.delta)
    start = prob.centre(math.log(fit.A), math.log(fit.B), math.log(fit.E), fit.alpha, fit.beta)
    codes, runs = pd.factorize(points["run_id"])
    budget_of = points.groupby("run_id")["budget"].first()
    groups = [np.flatnonzero(np.isin(runs, ids)) for ids in budget_of.groupby(budget_of).groups.values()]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(min(n_resamples, MAX_JOINT_RESAMPLES)):
        counts = np.zeros(len(runs))
        for g in groups:
            np.add.at(counts, rng.choice(g, g.size), 1.0)
        w = counts[codes]
        used = w > 0
        if np.unique(N[used]).size < 3 or np.unique(D[used]).size < 3:
            continue
        res = prob.minimise([start], w / w.sum(), _REFIT_OPTIONS)
        out.append(prob.to_fit(res.x, res, N, D))
    return out


def _optimal_text(fit, kappa: float, a_ok: np.ndarray, q) -> str:
    ci = interval(np.quantile(a_ok, q) if a_ok.size else None, short)
    return (f"joint fit on (run, epoch) points: L(N, D) = {fit.E:.4g} + {fit.A:.4g}·N^-{fit.alpha:.3g} + "
            f"{fit.B:.4g}·D^-{fit.beta:.3g}; N_opt ∝ C^a with a = {fit.a_exp:.3g} (CI {ci}); measured FLOPs "
            f"= {kappa:.3g} x 6·N·D. Intermediate epochs are not tuned for their own D: indicative only.")


# --------------------------------------------------------------------------- IsoFLOP slices

def isoflop_slices(runs: pd.DataFrame, budget_of_run: pd.Series, *, n_resamples: int, seed: int) -> list[dict]:
    """Per configured compute budget (``train.compute_budget``): per size the mean over seeds
    of the best validation log-loss, the measured compute, and N_opt from a parabola in log N
    (Hoffmann et al. 2022, approach 2) with an interval from resampling runs within sizes;
    None where the parabola is not convex (the minimum is not inside the sizes)."""
    runs = runs.assign(compute_budget=budget_of_run).dropna(subset=["compute_budget", "val_log_loss"])
    out = []
    rng = np.random.default_rng(seed)
    for level, g in runs.groupby("compute_budget"):
        sizes = g.groupby("budget").agg(N=("params_total", "mean"), L=("val_log_loss", "mean"),
                                        C=("train_flops", "mean"), runs=("run_id", "size")).sort_values("N")
        entry = {"compute_budget": float(level), "sizes": {k: (_floats(v) if k != "budget" else list(v))
                                                           for k, v in sizes.reset_index().to_dict("list").items()},
                 "best_size": str(sizes["L"].idxmin()), "N_opt": None, "N_opt_ci": None}
        if len(sizes) >= 3:
            entry["N_opt"] = _parabola_min(g["params_total"].to_numpy(float), g["val_log_loss"].to_numpy(float))
            groups = [grp.index.to_numpy() for _, grp in g.reset_index(drop=True).groupby("budget")]
            x, y = g["params_total"].to_numpy(float), g["val_log_loss"].to_numpy(float)
            draws = [_parabola_min(x[i], y[i]) for i in (np.concatenate([rng.choice(k, k.size) for k in groups])
                                                         for _ in range(min(n_resamples, 1000)))]
            ok = np.array([d for d in draws if d is not None], dtype=float)
            # an interval only around a convex point fit, over the resamples that stay convex
            entry["N_opt_ci"] = _floats(np.quantile(ok, [0.025, 0.975])) if ok.size and entry["N_opt"] else None
            entry["convex_share"] = ok.size / max(1, len(draws))
            entry["inside"] = entry["N_opt"] is not None and bool(x.min() <= entry["N_opt"] <= x.max())
        out.append(entry)
    return out


def _parabola_min(N: np.ndarray, L: np.ndarray) -> float | None:
    """argmin of the least-squares parabola of L in log N, if convex (else None)."""
    a, b, _ = np.polyfit(np.log(N), L, 2)
    if a <= 0 or abs(b / (2 * a)) > 700:  # concave, or a vertex beyond any float size
        return None
    return float(math.exp(-b / (2 * a)))


# --------------------------------------------------------------------------- HPO compute

def hpo_compute(cfg: StudyConfig) -> list[dict]:
    """Per HPO cell: trials found and the training FLOPs they spent (pruned ones included)."""
    root = cfg.study_dir / "hpo"
    rows = []
    for cell in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        trial_dirs = sorted((cell / "trials").glob("t*")) if (cell / "trials").is_dir() else []
        flops = [_trial_flops(t) for t in trial_dirs]
        known = [f for f in flops if f is not None]
        rows.append({"cell": cell.name, "trials": len(trial_dirs), "trials_counted": len(known),
                     "flops": float(sum(known))})
    return rows


def _trial_flops(trial: Path) -> float | None:
    """Training FLOPs of one trial: the sum over its folds of the last epoch's train_flops
    (or epochs x windows x FLOPs/sample where a run predates the field)."""
    folds = sorted(trial.glob("fold-*")) or [trial]
    total = 0.0
    for fold in folds:
        run = RunDir(fold)
        epochs = [m for m in run.read_metrics() if m.get("event") == "epoch"] if run.file("metrics.jsonl").exists() \
            else []
        if not epochs:
            continue
        last = epochs[-1]
        if last.get("train_flops") is not None:
            total += float(last["train_flops"])
            continue
        final, config = next((m for m in run.read_metrics() if m.get("event") == "final"), None), \
            run.read_json("config.json")
        if final is None or config is None:
            return None
        fps = flops_per_sample(ModelArgs.from_dict(config["model_args"]))["train"]
        total += float(fps * final["train_windows"] * last["epoch"])
    return total


# --------------------------------------------------------------------------- the stage

def compute_results(cfg: StudyConfig, sr: StudyRuns | None = None) -> dict:
    """Everything of ``compute.json``: per horizon the envelope, its fit and N_opt; HPO compute."""
    sr = sr or collect(cfg)
    points = epoch_points(sr)
    resamples = cfg.evaluate.scaling_resamples
    horizons: list[dict] = []
    for h in sorted(cfg.target.horizons):
        ph = points[points["horizon"] == h].reset_index(drop=True)
        entry: dict = {"horizon": h, "n_runs": int(ph["run_id"].nunique()), "n_points": len(ph)}
        if ph.empty:
            horizons.append({**entry, "reason": "no epoch lines of final runs"})
            continue
        entry["points"] = {k: (_floats(ph[k]) if k in "NCDL" else list(ph[k])) for k in
                           ("run_id", "budget", "N", "C", "D", "L")}
        entry.update(fit_envelope(ph, n_resamples=resamples, seed=derive_seed("compute", cfg.name, h)))
        entry["optimal"] = compute_optimal(ph, n_resamples=resamples, seed=derive_seed("n_opt", cfg.name, h))
        entry["final_flops"] = float(ph.groupby("run_id")["C"].max().sum())
        entry["isoflop"] = _isoflop(cfg, sr, h, resamples)
        horizons.append(entry)
    hpo = hpo_compute(cfg)
    return {"formula": FORMULA, "horizons": horizons, "hpo": hpo,
            "final_flops_total": float(points.groupby("run_id")["C"].max().sum()) if len(points) else 0.0,
            "hpo_flops_total": float(sum(r["flops"] for r in hpo))}


def _isoflop(cfg: StudyConfig, sr: StudyRuns, h: int, resamples: int) -> list[dict]:
    """IsoFLOP slices of horizon ``h`` when the study sets ``train.compute_budget`` (a key or an axis)."""
    runs = sr.current(sr.runs)
    runs = runs[(runs["horizon"] == h) & runs["val_log_loss"].notna()].reset_index(drop=True)
    col = "axis:train.compute_budget"
    if col in runs:
        level = runs[col].astype(float)
    elif cfg.train.compute_budget > 0:
        level = pd.Series(cfg.train.compute_budget, index=runs.index)
    else:
        return []
    return isoflop_slices(runs, level, n_resamples=resamples, seed=derive_seed("isoflop", cfg.name, h))


def _floats(values) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float).ravel()]
