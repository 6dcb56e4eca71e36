"""Power of the scaling verdict: the smallest log-log slope a study's design detects.

Consumes: one fit's points — a size ``N`` and a metric ``L`` per run — and the runs' metrics
on the shared test-day block resamples ``L_reps`` (runs x R, as the scaling stage builds
them), or a :class:`Design` written by hand. Produces a :class:`Design` (the sizes, the runs
per size and three measured spreads, log scale) and, by simulation, the distribution of the
verdict's slope interval on a study of that design with no trend; from it the power at any
planted slope, the minimum detectable slope (80 % power) and the runs per size (seeds x
replicates) needed to detect a stated slope.

Noise model (what a rerun of the study with new seeds and new test days would change):
``log L[run] = a + slope * log N + seed + test_size[size] + test_run[run]``, with
``seed ~ N(0, sigma_seed)`` per run, ``test_size`` the test-day noise shared by the runs of
one size (it does not shrink with more seeds) and ``test_run`` each run's own test-day noise.
A test-day effect common to every run cancels in a slope and is left out. The spreads are
measured from the test-day resamples (the per-window loss variance, the number of test
windows and the block length all act through them) and from the spread of the runs of a
size around their mean (seeds).

Decision rule simulated: the one the verdict uses for "falls" — the upper end of the
``level`` percentile interval of the log-log slope lies below 0, and alpha's interval lies
above 0 — with the resamples built as :func:`finscale.scaling.laws.resample_replicates`
builds them (a test-day column, then the pooled, t_df/z-inflated seed residuals). alpha's
condition is simulated as "the Huber-regression slope of log L on log N is below 0 in at
least (1 + level)/2 of the resamples" (:func:`huber_slopes`; alpha is fitted with that loss,
and a falling fit is a negative slope). The leave-one-budget-out/BIC checks are not
simulated; ``benchmarks/bench_scaling_power.py`` measures how far the full rule's detection
rate is from the power stated here. The slope of the resampled
points is linear in log L, so every simulated study and resample is a few vectorised numpy
operations, and a planted slope shifts every interval by exactly that slope: one simulation
of a flat study gives the whole power curve.
Guarantees: deterministic for a given ``seed``, the same bits on any x86-64 CPU (logs via
:func:`~finscale.scaling.laws.stable_log`); about 0.3 s per design, 2 s with the runs grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from finscale.scaling.laws import stable_exp, stable_log

POWER = 0.8
# Runs per size the recommendations consider; 1 is left out: with one run per size the
# interval cannot see (nor resample) the seed spread, so its "power" would be a false one.
RUNS_GRID = (2, 3, 4, 6, 8, 12, 16)
_CHUNK = 2_000_000  # array elements per simulation batch (memory, not results)
HUBER_DELTA = 1e-3  # finscale.scaling.laws.bootstrap_fit's default delta


@dataclass(frozen=True)
class Design:
    """A scaling design: distinct sizes, runs per size, and the spreads (log L scale)."""

    sizes: tuple[float, ...]
    runs_per_size: tuple[int, ...]
    sigma_seed: float
    sigma_test_size: float
    sigma_test_run: float
    level: float = 0.95

    def with_runs(self, n: int) -> Design:
        """The same design with ``n`` runs at every size (more seeds or replicates)."""
        return Design(self.sizes, (int(n),) * len(self.sizes), self.sigma_seed, self.sigma_test_size,
                      self.sigma_test_run, self.level)

    def to_dict(self) -> dict:
        return asdict(self)


def measure_design(N, L, L_reps, *, level: float = 0.95) -> Design:
    """The design of one fit's points, its spreads measured from the data (module docstring).

    Runs of equal ``N`` form a size, as in :func:`~finscale.scaling.laws.resample_replicates`.
    Test-day spreads: the resample deviations ``log L_reps - log L`` with the part common to
    all runs removed, split into the mean of each size (``sigma_test_size``, corrected for
    the run-level part it contains) and the deviations within a size (``sigma_test_run``).
    Seed spread: the pooled within-size variance of log L less the run-level test-day part it
    contains (0 when a size has a single run: no seed spread can be seen, nor resampled)."""
    N = np.asarray(N, dtype=np.float64).ravel()
    logL = stable_log(np.asarray(L, dtype=np.float64).ravel())
    dev = stable_log(np.asarray(L_reps, dtype=np.float64)) - logL[:, None]
    dev = dev - dev.mean(axis=0, keepdims=True)
    groups = [np.flatnonzero(N == n) for n in np.unique(N)]
    df = sum(g.size - 1 for g in groups)
    within = sum(float(np.sum((dev[g] - dev[g].mean(axis=0)) ** 2)) for g in groups)
    var_run = within / (df * dev.shape[1]) if df else 0.0
    k = len(groups)
    size_means = [float(np.mean(dev[g].mean(axis=0) ** 2)) * k / (k - 1) - var_run / g.size for g in groups]
    seed_within = sum(float(np.sum((logL[g] - logL[g].mean()) ** 2)) for g in groups)
    var_seed = seed_within / df - var_run if df else 0.0
    return Design(tuple(float(stable_exp(stable_log(N[g]).mean())) for g in groups), tuple(g.size for g in groups),
                  math.sqrt(max(var_seed, 0.0)), math.sqrt(max(float(np.mean(size_means)), 0.0)),
                  math.sqrt(max(var_run, 0.0)), float(level))


def _inflation(df: int, level: float) -> float:
    q = (1 + level) / 2
    return float(student_t.ppf(q, df) / norm.ppf(q)) if df > 0 else 1.0


def null_slope_intervals(design: Design, *, sims: int = 400, resamples: int = 300,
                         seed: int = 0, huber: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): the verdict's slope interval on ``sims`` simulated flat studies of ``design``.

    Each simulated study draws its runs' log-losses from the noise model, then ``resamples``
    bootstrap resamples exactly as the scaling stage does: fresh test-day deviations for all
    runs (one column), then within each size the size's mean plus residuals drawn with
    replacement from the pool of all sizes' residuals (scaled by sqrt(n/(n-1)) and t_df/z).
    ``huber=False``: the least-squares slope's interval alone (the one the verdict prints)."""
    x = stable_log(np.repeat(np.asarray(design.sizes, dtype=np.float64), design.runs_per_size))
    g = np.repeat(np.arange(len(design.sizes)), design.runs_per_size)
    n_g = np.asarray(design.runs_per_size, dtype=np.float64)
    onehot = (g[:, None] == np.arange(n_g.size)[None, :]) / n_g[None, :]  # runs -> size means
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)  # slope = w . log L
    df = int(np.sum(n_g - 1))
    scale = _inflation(df, design.level) * np.sqrt(n_g / np.maximum(n_g - 1, 1))[g]
    pooled = np.flatnonzero(n_g[g] > 1)  # sizes with one run keep their value
    rng = np.random.default_rng(seed)
    batch = max(1, _CHUNK // (resamples * x.size))
    lo, hi = [], []
    for start in range(0, sims, batch):
        s = min(batch, sims - start)
        observed = _draw(rng, design, (s, 1), g)
        cols = observed + _draw(rng, design, (s, resamples), g, with_seed=False)
        means = cols @ onehot
        values = means[..., g]
        if pooled.size and df:
            resid = (cols - values)[..., pooled] * scale[pooled]
            pick = rng.integers(0, pooled.size, size=(s, resamples, pooled.size))
            values = values.copy()
            values[..., pooled] += np.take_along_axis(resid, pick, axis=-1)
        q = np.quantile(values @ w, [(1 - design.level) / 2, (1 + design.level) / 2], axis=1)
        # "alpha's interval excludes 0": >= (1+level)/2 of the resamples fit a falling law;
        # the Huber fit on log residuals decides that, so its slope must be below 0 as well.
        qh = np.quantile(huber_slopes(values, x), [(1 - design.level) / 2, (1 + design.level) / 2], axis=1) \
            if huber else q
        lo.append(np.minimum(q[0], qh[0]))
        hi.append(np.maximum(q[1], qh[1]))
    return np.concatenate(lo), np.concatenate(hi)


def huber_slopes(values: np.ndarray, x: np.ndarray, delta: float = HUBER_DELTA, iters: int = 10) -> np.ndarray:
    """Slope of the Huber (``delta``, the power-law fit's) regression of ``values`` (..., runs)
    on ``x``, by iteratively reweighted least squares from the least-squares line.

    Why: the power law's alpha is fitted with the Huber loss on log residuals, which at the
    usual 1-3% seed spread (delta = 0.1%) is close to least absolute deviations and noisier
    than the least-squares slope; alpha > 0 in a resample is, near the decision boundary,
    the same as this slope < 0 (the power law with E -> 0 is the log-linear line). Regression
    equivariant like the least-squares slope: a planted slope shifts it by itself."""
    xc = x - x.mean()
    b = values @ (xc / np.sum(xc**2))
    a = values.mean(axis=-1) - b * x.mean()
    for _ in range(iters):
        r = np.abs(values - a[..., None] - b[..., None] * x)
        wt = np.where(r <= delta, 1.0, delta / np.maximum(r, 1e-300))
        sw, sx, sy = wt.sum(-1), wt @ x, np.sum(wt * values, axis=-1)
        sxx, sxy = wt @ (x * x), np.sum(wt * values * x, axis=-1)
        b = (sw * sxy - sx * sy) / (sw * sxx - sx**2)
        a = (sy - b * sx) / sw
    return b


def _draw(rng, design: Design, shape: tuple[int, int], g: np.ndarray, with_seed: bool = True) -> np.ndarray:
    """Noise of log L for every run: (shape..., runs); seed effects only for observed points."""
    k = len(design.sizes)
    out = design.sigma_test_size * rng.standard_normal((*shape, k))[..., g]
    out += design.sigma_test_run * rng.standard_normal((*shape, g.size))
    if with_seed:
        out += design.sigma_seed * rng.standard_normal((*shape, g.size))
    return out


def power_at(slope: float, hi: np.ndarray, lo: np.ndarray | None = None) -> float:
    """Share of simulated studies whose interval excludes 0 on the planted ``slope``'s side
    (a planted slope shifts every interval by itself: see the module docstring)."""
    if slope < 0 or lo is None:
        return float(np.mean(hi + slope < 0))
    return float(np.mean(lo + slope > 0))


def min_detectable_slope(hi: np.ndarray, power: float = POWER) -> float:
    """The shallowest falling slope (negative) detected with ``power``: P(hi + s < 0) >= power."""
    return -float(np.quantile(hi, power)) if hi.size else math.nan


def fall_pct(slope: float, sizes) -> float:
    """The fall of the loss across the ladder (smallest to largest size) that a log-log
    ``slope`` means, in % of the loss at the smallest size (negative: a rise)."""
    ratio = max(sizes) / min(sizes)
    return 100.0 * (1.0 - ratio**slope)


def design_power(design: Design, *, sims: int = 400, resamples: int = 300, seed: int = 0,
                 power: float = POWER, target_slope: float | None = None, grid: bool = True) -> dict:
    """The design's power summary: ``min_detectable_slope`` (and the fall it means across the
    ladder, in %), the same per runs-per-size in ``RUNS_GRID`` (``mds_by_runs``: seeds x
    replicates at every size, smaller simulations), the runs per size that halve the
    minimum detectable slope, and for ``target_slope`` (e.g. the slope that would close the
    gap to the best baseline) its power now and the runs per size that detect it.
    ``grid=False`` skips the runs-per-size simulations (and the recommendations)."""
    lo, hi = null_slope_intervals(design, sims=sims, resamples=resamples, seed=seed)
    mds = min_detectable_slope(hi, power)
    by_runs = {}
    for n in RUNS_GRID if grid else ():
        _, h = null_slope_intervals(design.with_runs(n), sims=max(100, sims * 3 // 8),
                                    resamples=max(100, resamples * 2 // 5), seed=seed + n)
        by_runs[n] = min_detectable_slope(h, power)
    out = {"min_detectable_slope": mds, "min_detectable_fall_pct": fall_pct(mds, design.sizes),
           "min_detectable_rise_slope": -float(np.quantile(lo, 1 - power)),
           "power": power, "runs_per_size": min(design.runs_per_size), "design": design.to_dict(),
           "sims": sims, "resamples": resamples,
           "mds_by_runs": {str(n): v for n, v in by_runs.items()},
           "runs_to_halve": _runs_for(by_runs, by_runs.get(min(design.runs_per_size), mds) / 2)
           if grid else None}
    if target_slope is not None and target_slope < 0 and grid:
        out.update(target_slope=float(target_slope), target_power=power_at(target_slope, hi),
                   runs_for_target=_runs_for(by_runs, target_slope))
    return out


def _runs_for(by_runs: dict[int, float], slope: float) -> int | None:
    """Fewest runs per size whose minimum detectable slope is at least as shallow as ``slope``
    (None: not within ``RUNS_GRID`` — the test-day noise of a size does not shrink with seeds)."""
    for n in sorted(by_runs):
        if by_runs[n] >= slope:
            return n
    return None


def runs_words(runs: int, seeds: int) -> str:
    """``runs`` per size in the study's terms (seeds x replicates), keeping its seeds per set."""
    reps = max(1, math.ceil(runs / max(seeds, 1)))
    return f"{runs} runs per size (e.g. {seeds} seeds x {reps} replicate{'s' if reps > 1 else ''})"
