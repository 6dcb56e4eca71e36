"""Scaling-law fits per horizon, from a study's evaluated run directories (the scaling stage).

Consumes: the collected runs (measured parameters, training FLOPs) and each evaluated run's
``predictions.npz`` (test labels and probabilities). Produces, per horizon and per size
axis (total parameters, non-embedding parameters, training FLOPs), the power-law fit of test
log-loss with bootstrap intervals, the comparison with the constant model and the verdict of
:mod:`finscale.scaling`; plus, on total parameters, the same fit of ``1 - AUC`` and of the
refinement (recalibrated) log-loss, the discrimination part of the log-loss decomposition,
which a base-rate shift between training and test cannot move.

Uncertainty (guard 13): each of ``evaluate.scaling_resamples`` resamples draws ONE
moving-block resample of the test days (block length: the longest the horizon's runs
recorded in eval.json, chosen from the data by Politis–White)
shared by every run of the horizon — so the correlation between runs scored on the same days
is kept — and resamples seeds with :func:`finscale.scaling.resample_replicates` (a pooled,
small-sample-corrected residual bootstrap: plain resampling of 2 seeds per budget gave ~17%
false "scaling" verdicts on flat data, the pooled one ~3%); each run's metric is recomputed
on the resampled days from its predictions and the power law is refitted to the per-run
points. The point fit and the constant-model comparison (leave-one-budget-out, AIC/BIC) use
the per-run points of the recorded metrics; per-budget means are kept for the figures.
Each pooled fit also carries (``AxisFit.bounds``) its equivalence bounds and the power of its
design (:mod:`finscale.scaling.wording`, :mod:`finscale.scaling.power`; the headline fit's
are repeated at the top of ``h<h>.json``), and ``AxisFit.detail`` the fitted formula (omitted
when degenerate); the verdict sentence ``text`` leads with the slope and the bounds. The
per-window log-loss of the resamples uses logs with the same bits on every CPU.
A horizon with fewer than ``MIN_BUDGETS`` distinct budgets gets no fit, with the reason.
Results are frozen :class:`HorizonScaling` / :class:`AxisFit` objects that round-trip through
JSON (:meth:`HorizonScaling.to_dict` / :meth:`HorizonScaling.from_dict`), bootstrap samples
included, so the report can draw bands without refitting.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import log1p

from finscale.config import StudyConfig
from finscale.evaluate import (
    block_bootstrap_indices,
    default_block_len,
    panel_block_indices,
    recalibrated,
)
from finscale.evaluate.bootstrap import resampled_auc
from finscale.metrics import PROB_EPS
from finscale.repro import derive_seed
from finscale.rundir import RunDir
from finscale.scaling.laws import (
    auc_to_error,
    bootstrap_fit,
    compare_to_constant,
    resample_replicates,
    stable_exp,
    stable_log,
)
from finscale.scaling.power import design_power, measure_design
from finscale.scaling.wording import equivalence_bounds, fit_detail, scaling_verdict
from finscale.study_runs import StudyRuns

log = logging.getLogger(__name__)

MIN_BUDGETS = 3
# Size axes (runs-table column -> label); the log-loss fit is made on each, the AUC view on
# the first. train_flops = train FLOPs/sample x training windows x epochs run.
AXES = {
    "params_total": "measured parameters N (total)",
    "params_non_embedding": "measured parameters N (non-embedding)",
    "train_flops": "training compute C (FLOPs)",
}
AUC_AXIS = "params_total"
# Per fit (AxisFit.bounds, the scaling table) and, for the headline fit, per horizon (h<h>.json).
BOUND_KEYS = ("max_fall_pct", "max_rise_pct", "max_fall_nats", "max_rise_nats", "min_detectable_slope",
              "min_detectable_fall_pct")
UNITS = {"params_total": "parameters", "params_non_embedding": "non-embedding parameters",
         "train_flops": "FLOPs"}
QUANTITIES = {"log_loss": "test log-loss", "auc_error": "1 - test AUC",
              "log_loss_refinement": "test refinement log-loss (discrimination part)"}


@dataclass(frozen=True)
class AxisFit:
    """One fit: quantity vs one size axis for one horizon."""

    horizon: int
    axis: str
    quantity: str
    x_label: str
    points: pd.DataFrame          # per run: run_id, budget, seed, x, y
    budget_points: pd.DataFrame   # per budget: budget, x (geometric mean), y (mean)
    boot: dict                    # bootstrap_fit output (fit, *_ci, samples, ...)
    comparison: dict              # compare_to_constant output
    verdict: str
    text: str
    detail: str = ""              # the fitted formula, or why it is omitted (degenerate fit)
    bounds: dict = field(default_factory=dict)  # equivalence bounds and power (BOUND_KEYS, power)

    def row(self) -> dict:
        f, b, c = self.boot["fit"], self.boot, self.comparison
        ci = {f"{k}_{s}": (b.get(f"{k}_ci") or [None, None])[i]
              for k in ("alpha", "E", "A", "drop", "slope") for i, s in enumerate(("lo", "hi"))}
        return {"horizon": self.horizon, "quantity": self.quantity, "axis": self.axis,
                "E": f["E"], "A": f["A"], "alpha": f["alpha"], "drop": f["drop"],
                "slope": f["log_slope"], **ci,
                "lobo_rmse_power": c["lobo_rmse_power"], "lobo_rmse_const": c["lobo_rmse_const"],
                "aic_power": c["aic_power"], "aic_const": c["aic_const"],
                "bic_power": c["bic_power"], "bic_const": c["bic_const"], "delta_bic": c["delta_bic"],
                "n_runs": len(self.points), "n_budgets": len(self.budget_points),
                "n_resamples": b["n_resamples"], "n_failed": b["n_failed"],
                **{k: self.bounds.get(k) for k in BOUND_KEYS},
                "verdict": self.verdict, "text": self.text, "detail": self.detail}

    def to_dict(self) -> dict:
        boot = dict(self.boot, samples={k: _json_floats(v) for k, v in self.boot["samples"].items()})
        return {"horizon": self.horizon, "axis": self.axis, "quantity": self.quantity,
                "x_label": self.x_label, "points": self.points.to_dict("list"),
                "budget_points": self.budget_points.to_dict("list"), "boot": _plain(boot),
                "comparison": _plain(self.comparison), "verdict": self.verdict, "text": self.text,
                "detail": self.detail, "bounds": _plain(self.bounds)}

    @classmethod
    def from_dict(cls, d: dict) -> AxisFit:
        boot = dict(d["boot"], samples={k: np.asarray([np.nan if x is None else x for x in v],
                                                      dtype=np.float64)
                                        for k, v in d["boot"]["samples"].items()})
        return cls(d["horizon"], d["axis"], d["quantity"], d["x_label"], pd.DataFrame(d["points"]),
                   pd.DataFrame(d["budget_points"]), boot, d["comparison"], d["verdict"], d["text"],
                   d.get("detail", ""), d.get("bounds", {}))


@dataclass(frozen=True)
class HorizonScaling:
    """One horizon's fits (empty with a ``reason`` when the runs cannot support a fit)."""

    horizon: int
    reason: str = ""                               # why there is no fit ("" when fitted)
    block_len: int = 0
    fits: tuple[AxisFit, ...] = ()
    run_ids: tuple[str, ...] = ()                  # the evaluated runs the fits used
    # Per replicate seed set (only with >= 2 replicates): one summary dict per fit of
    # replicate_row() (replicate, quantity, axis, alpha with CI, verdict, n_runs, reason).
    replicates: tuple[dict, ...] = ()
    # A calibration market's expected curve beside the fit (finscale.scaling.expected; {} if none).
    expected: dict = field(default_factory=dict)

    def headline(self) -> AxisFit | None:
        """The headline fit: test log-loss vs measured total parameters (None: not fitted)."""
        return next((f for f in self.fits if f.quantity == "log_loss" and f.axis == AUC_AXIS), None)

    def to_dict(self) -> dict:
        head = self.headline()
        return {"horizon": self.horizon, "reason": self.reason, "block_len": self.block_len,
                # the headline fit's equivalence bounds and power, at the top for readers
                **{k: (head.bounds.get(k) if head is not None else None) for k in BOUND_KEYS},
                "run_ids": list(self.run_ids), "fits": [f.to_dict() for f in self.fits],
                "replicates": [_plain(r) for r in self.replicates],
                **({"expected_slope": self.expected["slope"], "expected_covered": self.expected["covered"],
                    "expected": _plain(self.expected)} if self.expected else {})}

    @classmethod
    def from_dict(cls, d: dict) -> HorizonScaling:
        return cls(int(d["horizon"]), d.get("reason", ""), int(d.get("block_len", 0)),
                   tuple(AxisFit.from_dict(f) for f in d.get("fits", [])),
                   tuple(d.get("run_ids", [])), tuple(d.get("replicates", [])), d.get("expected", {}))


def _json_floats(values) -> list:
    return [None if not np.isfinite(x) else float(x) for x in np.asarray(values, dtype=np.float64)]


def _plain(obj):
    """JSON-ready copy: numpy scalars/arrays to Python floats/lists (non-finite -> None)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer, bool)):
        return obj if isinstance(obj, bool) else int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


class NoFit(ValueError):
    """A horizon's runs cannot support a scaling fit; the message says why."""


class FitCache:
    """Bootstrap results keyed by a digest of everything a fit depends on (its inputs, the
    resample count and seed, and the source of :mod:`finscale.scaling`), so rebuilding a
    report whose runs did not change skips the thousands of refits. ``entries`` loaded from
    the previous report; ``used`` is what the new report keeps."""

    def __init__(self, entries: dict | None = None):
        self.entries = dict(entries or {})
        self.used: dict = {}
        import finscale.scaling.laws

        self._code = hashlib.sha256(inspect.getsource(finscale.scaling.laws).encode()).hexdigest()

    def key(self, *parts) -> str:
        h = hashlib.sha256(self._code.encode())
        for p in parts:
            h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else repr(p).encode())
        return h.hexdigest()

    def get(self, key: str) -> tuple[dict, dict] | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        self.used[key] = hit
        boot = dict(hit["boot"], samples={k: np.asarray(v, dtype=np.float64)
                                          for k, v in hit["boot"]["samples"].items()})
        return boot, hit["comparison"]

    def put(self, key: str, boot: dict, comparison: dict) -> None:
        samples = {k: [None if not np.isfinite(x) else float(x) for x in v]
                   for k, v in boot["samples"].items()}
        self.used[key] = {"boot": dict(boot, samples=samples), "comparison": comparison}


def fit_study(cfg: StudyConfig, sr: StudyRuns, cache: FitCache | None = None) -> list[HorizonScaling]:
    """Scaling fits for every horizon that has evaluated runs of the current config."""
    cache = cache or FitCache()
    runs = sr.current(sr.runs)
    ready = runs[runs["evaluated"] & runs["has_predictions"]] if not runs.empty else runs
    tasks = [(cfg, sr, ready[ready["horizon"] == h], int(h), cache) for h in sorted(cfg.target.horizons)]
    workers = min(len(tasks), os.cpu_count() or 1)
    if workers > 1:
        # Horizons are independent and each costs thousands of refits: one process per core.
        # fork where available: spawn re-imports the caller's __main__ (breaking unguarded
        # scripts); the children only run numpy/scipy, with BLAS limited to one thread.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = list(pool.map(_fit_horizon_task, tasks))
    else:
        results = [_fit_horizon_task(t) for t in tasks]
    out = []
    for hs, used in results:
        cache.used.update(used)
        out.append(hs)
    return out


def _fit_horizon_task(task) -> tuple[HorizonScaling, dict]:
    """One horizon's fits and the cache entries they used (runs in a worker process)."""
    cfg, sr, runs, h, cache = task
    run_ids = tuple(runs["run_id"]) if not runs.empty else ()
    try:
        block_len, fits, reps = _fit_horizon(cfg, sr, runs, h, cache)
    except NoFit as exc:
        log.info("horizon %d: no scaling fit (%s)", h, exc)
        return HorizonScaling(h, reason=str(exc), run_ids=run_ids), cache.used
    return (HorizonScaling(h, block_len=block_len, fits=tuple(fits), run_ids=run_ids,
                           replicates=tuple(reps)), cache.used)


def scaling_table(results: list[HorizonScaling]) -> pd.DataFrame:
    rows = []
    for hs in results:
        if hs.reason:
            rows.append({"horizon": hs.horizon, "quantity": None, "axis": None, "verdict": None,
                         "text": f"no fit: {hs.reason}"})
        rows += [f.row() for f in hs.fits]
    return pd.DataFrame(rows)


def _fit_horizon(cfg: StudyConfig, sr: StudyRuns, runs: pd.DataFrame, h: int, cache: FitCache):
    budgets = runs["budget"].unique()
    if len(budgets) < MIN_BUDGETS:
        raise NoFit(f"{len(budgets)} evaluated budget(s) ({', '.join(map(str, budgets)) or 'none'}); "
                    f"a power law needs >= {MIN_BUDGETS}")
    evals = sr.evals.set_index("run_id").loc[runs["run_id"]]
    y, probs, days = _load_predictions(runs)
    R = cfg.evaluate.scaling_resamples
    recorded = evals["block_len"].to_numpy(float) if "block_len" in evals else np.array([np.nan])
    block_len = int(np.nanmax(recorded)) if np.isfinite(recorded).any() \
        else default_block_len(h, cfg.evaluate.block_len)
    rng = np.random.default_rng(derive_seed("scaling", cfg.name, h))
    # Panels: blocks of calendar days with all their assets, as in the evaluate phase.
    idx = block_bootstrap_indices(y.size, block_len, R, rng) if days is None \
        else panel_block_indices(days, block_len, R, rng)
    ll_reps = np.stack([_window_log_loss(y, p)[idx].mean(axis=1) for p in probs])
    auc_reps = np.stack([resampled_auc(y, p, idx) for p in probs])
    seed = derive_seed("scaling-fit", cfg.name, h)
    reps = {"log_loss": ll_reps, "auc_error": 1.0 - auc_reps}
    if _has_refinement(evals):
        reps["log_loss_refinement"] = np.stack([_window_log_loss(y, recalibrated(y, p))[idx].mean(axis=1)
                                                for p in probs])
    ctx = {"seeds": len(cfg.seeds), **_strongest_baseline(sr, evals, h)}
    fits = _fit_axes(runs, evals, reps, R, seed, h, cache, ctx)
    return block_len, fits, _fit_replicates(runs, evals, reps, R, seed, h, cache)


def _strongest_baseline(sr: StudyRuns, evals: pd.DataFrame, h: int) -> dict:
    """The strongest baseline the runs' eval.json name and its mean test log-loss ({}: none);
    the power statement says what it takes to detect the slope that would close the gap."""
    if "strongest_baseline" not in evals or sr.baselines.empty:
        return {}
    names = evals["strongest_baseline"].dropna()
    if names.empty:
        return {}
    name = str(names.mode().iloc[0])
    rows = sr.baselines[(sr.baselines["horizon"] == h) & (sr.baselines["baseline"] == name)]
    return {"baseline": name, "baseline_loss": float(rows["log_loss"].mean())} if len(rows) else {}


def _window_log_loss(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Per-window log-loss as ``finscale.metrics.per_sample_log_loss`` (same clipping), with
    logs that give the same bits on every x86-64 CPU (np.log differs on AVX-512 machines)."""
    p = np.clip(prob, PROB_EPS, 1 - PROB_EPS)
    return -(y * stable_log(p) + (1 - y) * log1p(-p))


def _has_refinement(evals) -> bool:
    refinement = evals["log_loss_refinement"].to_numpy(float) if "log_loss_refinement" in evals \
        else np.array([np.nan])
    return bool(np.all(np.isfinite(refinement)) and np.all(refinement > 0))


def _fit_axes(runs, evals, reps: dict, R, seed, h, cache, ctx: dict | None = None) -> list[AxisFit]:
    """Every fit of one set of runs: log-loss on each axis; on AUC_AXIS 1 - AUC and the
    refinement log-loss. ``reps``: each quantity's test-day resamples (runs x R). ``ctx``
    (pooled fits only): seeds per replicate and the strongest baseline, for the power."""
    fits = [_fit_axis(runs, axis, "log_loss", evals["log_loss"].to_numpy(float), reps["log_loss"], R, seed,
                      h, cache, ctx) for axis in AXES]
    auc = evals["auc"].to_numpy(float)
    if np.all(np.isfinite(auc)):
        fits.append(_fit_axis(runs, AUC_AXIS, "auc_error", auc_to_error(auc), reps["auc_error"], R, seed,
                              h, cache, ctx))
    if "log_loss_refinement" in reps:
        fits.append(_fit_axis(runs, AUC_AXIS, "log_loss_refinement",
                              evals["log_loss_refinement"].to_numpy(float), reps["log_loss_refinement"],
                              R, seed, h, cache, ctx))
    return fits


def replicate_row(replicate: int, fit: AxisFit | None, quantity: str = "", axis: str = "",
                  reason: str = "") -> dict:
    """One replicate's fit in brief (the stability table's input)."""
    if fit is None:
        return {"replicate": replicate, "quantity": quantity, "axis": axis, "alpha": None,
                "alpha_lo": None, "alpha_hi": None, "verdict": None, "n_runs": 0, "reason": reason}
    ci = fit.boot.get("alpha_ci") or [None, None]
    return {"replicate": replicate, "quantity": fit.quantity, "axis": fit.axis,
            "alpha": fit.boot["fit"]["alpha"], "alpha_lo": ci[0], "alpha_hi": ci[1],
            "verdict": fit.verdict, "n_runs": len(fit.points), "reason": ""}


def _fit_replicates(runs, evals, reps: dict, R, seed, h, cache) -> list[dict]:
    """Each replicate seed set's runs fitted alone, as the pooled fit (same test-day resamples
    and bootstrap seed); nothing with fewer than 2 replicates."""
    labels = runs["replicate"].to_numpy() if "replicate" in runs else np.zeros(len(runs), int)
    if np.unique(labels).size < 2:
        return []
    out = []
    for r in sorted(np.unique(labels)):
        mine = labels == r
        sub = runs[mine]
        if sub["budget"].nunique() < MIN_BUDGETS:
            why = f"{sub['budget'].nunique()} evaluated budget(s); a power law needs >= {MIN_BUDGETS}"
            out += [replicate_row(int(r), None, q, a, why) for q, a in _fit_names(evals)]
            continue
        try:
            fits = _fit_axes(sub, evals[mine], {q: v[mine] for q, v in reps.items()}, R, seed, h, cache)
        except NoFit as exc:
            out += [replicate_row(int(r), None, q, a, str(exc)) for q, a in _fit_names(evals)]
            continue
        out += [replicate_row(int(r), f) for f in fits]
    return out


def _fit_names(evals) -> list[tuple[str, str]]:
    names = [("log_loss", axis) for axis in AXES]
    names += [("auc_error", AUC_AXIS)] if np.all(np.isfinite(evals["auc"].to_numpy(float))) else []
    return names + ([("log_loss_refinement", AUC_AXIS)] if _has_refinement(evals) else [])


def _load_predictions(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Test labels (shared), each run's probabilities, and (panels only: the file names each
    window's asset) each window's day; NoFit if the test windows differ."""
    y, ends, days, probs = None, None, None, []
    for _, r in runs.iterrows():
        with np.load(RunDir(r["path"]).predictions) as z:
            if ends is None:
                y, ends = z["y"].astype(np.float64), z["ends"]
                days = z["dates"].astype("datetime64[D]") if "asset" in z.files else None
            elif not np.array_equal(z["ends"], ends):
                raise NoFit(f"{r['run_id']} was evaluated on other test windows than "
                            f"{runs['run_id'].iloc[0]}; rerun its evaluation")
            probs.append(z["prob"].astype(np.float64))
    assert y is not None  # runs holds at least one evaluated run
    return y, np.stack(probs), days


def _budget_means(codes: np.ndarray, x: np.ndarray, L: np.ndarray, pick=None):
    """Per-budget geometric-mean size and mean metric (of the runs in ``pick`` per budget)."""
    xs, ls = [], []
    for b in range(codes.max() + 1):
        members = np.flatnonzero(codes == b) if pick is None else pick[b]
        xs.append(stable_exp(stable_log(x[members]).mean()))
        ls.append(L[members].mean())
    return np.asarray(xs), np.asarray(ls)


def _fit_axis(runs: pd.DataFrame, axis: str, quantity: str, L: np.ndarray, L_reps: np.ndarray,
              R: int, seed: int, h: int, cache: FitCache, ctx: dict | None = None) -> AxisFit:
    x = runs[axis].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(x) & (x > 0)):
        raise NoFit(f"{axis} is not recorded for every run (metrics.jsonl final line)")
    order = {b: i for i, b in enumerate(runs.sort_values(axis)["budget"].unique())}
    codes = runs["budget"].map(order).to_numpy()
    xb, lb = _budget_means(codes, x, L)
    key = cache.key(axis, quantity, x, L, L_reps, codes, R, seed)
    hit = cache.get(key)
    if hit is None:
        boot = bootstrap_fit((x, L), resample_replicates(x, L_reps), R, seed)
        comparison = compare_to_constant(x, L)
        cache.put(key, boot, comparison)
    else:
        boot, comparison = hit
    power = None if ctx is None else _power(x, L, L_reps, boot["level"], seed, ctx, quantity, axis, codes)
    bounds = {**(equivalence_bounds(boot["fit"], boot.get("slope_ci"), boot["level"]) or {}), **(power or {})}
    verdict, text = scaling_verdict(boot["fit"], boot, comparison, quantity=QUANTITIES[quantity], power=power,
                                    size_unit=UNITS[axis])
    points = pd.DataFrame({"run_id": runs["run_id"].to_numpy(), "budget": runs["budget"].to_numpy(),
                           "seed": runs["seed"].to_numpy(), "x": x, "y": L})
    budget_points = pd.DataFrame({"budget": list(order), "x": xb, "y": lb})
    return AxisFit(h, axis, quantity, AXES[axis], points, budget_points, boot, comparison, verdict, text,
                   fit_detail(boot["fit"], boot), bounds)


def _power(x, L, L_reps, level, seed, ctx: dict, quantity: str, axis: str, codes) -> dict:
    """The fit's design power (:mod:`finscale.scaling.power`); on the headline fit also the
    runs per size that halve it and that detect the slope closing the gap to the baseline."""
    headline = quantity == "log_loss" and axis == AUC_AXIS
    target = None
    if headline and ctx.get("baseline_loss"):
        small, large = codes == 0, codes == codes.max()
        ratio = stable_exp(stable_log(x[large]).mean() - stable_log(x[small]).mean())
        gap = ctx["baseline_loss"] / L[small].mean()
        target = float(stable_log(gap) / stable_log(ratio)) if gap < 1 and ratio > 1 else None
    out = design_power(measure_design(x, L, L_reps, level=level), seed=seed, target_slope=target,
                       grid=headline)
    return {**out, "seeds": ctx["seeds"], "target_name": ctx.get("baseline")}


