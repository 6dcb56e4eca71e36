"""Check the scaling intervals by simulation: synthetic runs with a known law and seed variance.

Consumes: a true law L(N) = E + A·N^-alpha, sizes, seeds per size, the seed-to-seed spread
``sigma_seed`` (log scale) and, optionally, a test-set spread ``sigma_test`` (log scale, one
draw per run per test-day resample on top of a shared one, like runs scored on the same
resampled days). Produces, per interval method, the share of simulated studies whose alpha
interval contains the true alpha (its coverage, to compare with the nominal level), the
median interval width, and the number of simulated studies.
Methods: ``naive`` — percentile bootstrap that resamples each size's seeds with replacement
(the peer: with 2 seeds it sees 3 possible means and half the variance); ``pooled`` —
:func:`~finscale.scaling.laws.resample_seeds` (pooled residuals, t_df/z small-sample
inflation); ``hierarchical`` — :func:`~finscale.scaling.laws.resample_replicates` (a test-day
resample shared by all runs, then the pooled seed resample), what the scaling stage uses.
Guarantees: deterministic for a given ``seed``; used by ``benchmarks/bench_scaling_coverage.py``
(the full numbers) and by a fast test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from finscale.scaling.laws import bootstrap_fit, predict_power_law, resample_replicates, resample_seeds

METHODS = ("naive", "pooled", "hierarchical")


@dataclass(frozen=True)
class Truth:
    E: float = 0.30
    A: float = 2.0
    alpha: float = 0.30
    sizes: tuple[float, ...] = (1e4, 3.16e4, 1e5, 3.16e5, 1e6)
    sigma_seed: float = 0.01
    sigma_test: float = 0.0


def simulate_runs(truth: Truth, n_seeds: int, rng: np.random.Generator, n_test: int = 50):
    """(N, L, L_reps): one point per run and, per run, ``n_test`` test-day resamples."""
    N = np.repeat(np.asarray(truth.sizes, dtype=np.float64), n_seeds)
    law = {"E": truth.E, "A": truth.A, "alpha": truth.alpha}
    seed_effect = truth.sigma_seed * rng.standard_normal(N.size)
    observed_test = truth.sigma_test * (rng.standard_normal() + rng.standard_normal(N.size))
    L = predict_power_law(law, N) * np.exp(seed_effect + observed_test)
    shared = truth.sigma_test * rng.standard_normal(n_test)
    own = truth.sigma_test * rng.standard_normal((N.size, n_test))
    L_reps = L[:, None] * np.exp(shared[None, :] + own - own.mean(axis=1, keepdims=True)
                                 - shared.mean())
    return N, L, L_reps


def naive_seed_resampler(N: np.ndarray, L: np.ndarray) -> Callable:
    """Percentile-bootstrap peer: each size's runs resampled with replacement."""
    groups = [np.flatnonzero(N == n) for n in np.unique(N)]

    def draw(rng: np.random.Generator, r: int):
        idx = np.concatenate([rng.choice(g, g.size) for g in groups])
        return N[idx], L[idx]

    return draw


def _resampler(method: str, N, L, L_reps, level: float) -> Callable:
    if method == "naive":
        return naive_seed_resampler(N, L)
    if method == "pooled":
        return resample_seeds(N, L, level=level)
    if method == "hierarchical":
        return resample_replicates(N, L_reps, level=level)
    raise ValueError(f"method {method!r}; expected one of {', '.join(METHODS)}")


def alpha_coverage(truth: Truth, n_seeds: int, *, sims: int, n_resamples: int, methods=METHODS,
                   level: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """Per method: ``coverage`` (share of alpha intervals holding ``truth.alpha``),
    ``median_width`` and ``sims``; every method sees the same simulated studies."""
    hits = {m: 0 for m in methods}
    widths: dict[str, list[float]] = {m: [] for m in methods}
    for s in range(sims):
        rng = np.random.default_rng([seed, n_seeds, s])
        N, L, L_reps = simulate_runs(truth, n_seeds, rng)
        for m in methods:
            boot = bootstrap_fit((N, L), _resampler(m, N, L, L_reps, level), n_resamples, s, level=level)
            lo, hi = boot["alpha_ci"]
            hits[m] += bool(lo <= truth.alpha <= hi)
            widths[m].append(hi - lo)
    return {m: {"coverage": hits[m] / sims, "median_width": float(np.median(widths[m])), "sims": sims}
            for m in methods}
