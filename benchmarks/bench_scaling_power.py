"""Stated power of the scaling verdict vs the measured detection rate on planted loss curves.

Synthetic studies of the default study's design — 4 sizes (5.16k..488k parameters), 2 seeds,
one replicate — with the noise model of :mod:`finscale.scaling.power` (seed spread 2%,
test-day spread 0.6% shared by a size and 1.2% per run, log scale; one extra test-day draw
shared by every run) and a planted fall: a log-linear curve L = 0.33 (N / N_min)^s at half,
one and 1.5 times the design's minimum detectable slope (80% power by the statement), and a
saturating curve L = 0.33 (f + (1 - f)(N / N_min)^-0.5) with the same least-squares log-log
slope as the minimum detectable one. For each row: the power stated for the true design
(:func:`finscale.scaling.power.power_at`), the mean power each simulated study states from
its own measured design (what a report prints), and the measured detection rate of the FULL
verdict rule (``bootstrap_fit`` + ``compare_to_constant`` + ``decide_verdict``: a falling
verdict), with its binomial SE. Target: detection rate within ±10 points of the stated power.
Size: ``FINSCALE_BENCH_SIMS`` simulated studies per row (default 80) x
``FINSCALE_BENCH_RESAMPLES`` bootstrap resamples (default 200); about 0.5 s per study.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.optimize import brentq

from finscale.scaling import (
    FALLING,
    bootstrap_fit,
    compare_to_constant,
    decide_verdict,
    measure_design,
    resample_replicates,
)
from finscale.scaling.laws import at_bound
from finscale.scaling.power import Design, min_detectable_slope, null_slope_intervals, power_at

SIZES = (5.16e3, 2.6e4, 1.2e5, 4.88e5)
SEEDS = 2
TRUTH = Design(SIZES, (SEEDS,) * len(SIZES), sigma_seed=0.02, sigma_test_size=0.006, sigma_test_run=0.012)
TEST_DAYS = 200  # test-day resample columns per simulated study


def _curve(kind: str, slope: float):
    x = np.log(np.asarray(SIZES) / SIZES[0])
    if kind == "log-linear":
        return lambda N: 0.33 * (N / SIZES[0]) ** slope

    def ols(f):  # least-squares log-log slope of the saturating curve at floor share f
        return np.polyfit(x, np.log(f + (1 - f) * np.exp(-0.5 * x)), 1)[0] - slope

    f = brentq(ols, 0.0, 1.0 - 1e-12)
    return lambda N: 0.33 * (f + (1 - f) * (N / SIZES[0]) ** -0.5)


def _study(law, rng: np.random.Generator):
    N = np.repeat(np.asarray(SIZES), SEEDS)
    g = np.repeat(np.arange(len(SIZES)), SEEDS)
    d = TRUTH

    def test_days(shape):
        return (d.sigma_test_size * rng.standard_normal((*shape[:-1], len(SIZES)))[..., g]
                + d.sigma_test_run * rng.standard_normal(shape))

    L = law(N) * np.exp(d.sigma_seed * rng.standard_normal(N.size) + test_days((N.size,)))
    dev = test_days((TEST_DAYS, N.size)).T + 0.01 * rng.standard_normal(TEST_DAYS)[None, :]
    return N, L, L[:, None] * np.exp(dev)


def _detected(N, L, reps, resamples: int, seed: int) -> bool:
    ci = bootstrap_fit((N, L), resample_replicates(N, reps), resamples, seed)
    verdict = decide_verdict(ci["alpha_ci"], ci["slope_ci"], compare_to_constant(N, L)["preferred"],
                             alpha_at_bound=at_bound(ci["fit"]["alpha"]))
    return verdict in FALLING


def _row(kind: str, slope: float, hi0, sims: int, resamples: int) -> dict:
    law, rng = _curve(kind, slope), np.random.default_rng([7, int(-slope * 1e6)])
    hits, stated = 0, []
    for s in range(sims):
        N, L, reps = _study(law, rng)
        hits += _detected(N, L, reps, resamples, s)
        _, hi = null_slope_intervals(measure_design(N, L, reps), sims=200, resamples=150, seed=s)
        stated.append(power_at(slope, hi))
    rate = hits / sims
    return {"curve": kind, "slope": slope, "power_true": power_at(slope, hi0), "power_stated": float(np.mean(stated)),
            "rate": rate, "se": math.sqrt(max(rate * (1 - rate), 1e-9) / sims)}


def main() -> None:
    sims = int(os.environ.get("FINSCALE_BENCH_SIMS", "80"))
    resamples = int(os.environ.get("FINSCALE_BENCH_RESAMPLES", "200"))
    _, hi0 = null_slope_intervals(TRUTH, sims=2000, resamples=resamples, seed=0)
    mds = min_detectable_slope(hi0)
    print(f"  design: {TRUTH}; minimum detectable slope (80% power) {mds:.4f}", flush=True)
    table = Table(title=f"Stated power vs detection rate of the full verdict rule: {sims} simulated studies x "
                        f"{resamples} resamples per row; target |rate - stated| <= 0.10")
    for col in ("curve", "planted slope", "stated (true design)", "stated (mean, own design)",
                "detection rate", "SE", "rate - stated", "within 10 pts", "s"):
        table.add_column(col, justify="left" if col == "curve" else "right")
    for kind, mult in (("log-linear", 0.5), ("log-linear", 1.0), ("log-linear", 1.5), ("saturating", 1.0)):
        t0 = time.perf_counter()
        r = _row(kind, mult * mds, hi0, sims, resamples)
        gap = r["rate"] - r["power_true"]
        table.add_row(kind, f"{r['slope']:.4f}", f"{r['power_true']:.3f}", f"{r['power_stated']:.3f}",
                      f"{r['rate']:.3f}", f"{r['se']:.3f}", f"{gap:+.3f}", "yes" if abs(gap) <= 0.10 else "NO",
                      f"{time.perf_counter() - t0:.0f}")
        print(f"  {kind} x{mult}: stated {r['power_true']:.3f} (own design {r['power_stated']:.3f}), "
              f"detected {r['rate']:.3f} ± {r['se']:.3f}", flush=True)
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
