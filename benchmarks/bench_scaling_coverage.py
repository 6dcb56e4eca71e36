"""Scaling intervals that carry seed variance: coverage of alpha's 95% interval by simulation.

Synthetic studies from a known law L(N) = 0.30 + 2.0·N^-0.30 at 5 sizes (1e4..1e6), each run's
test log-loss scattered by a known seed spread (1% log-normal) and a test-day spread (0.5%: one
shared and one per-run draw per test-day resample, as runs scored on the same resampled days),
with 2, 4 and 8 seeds per size. For each method, the share of simulated studies whose 95%
alpha interval contains the true alpha, against the nominal 95% (binomial SE shown), and the
median interval width; ratios against the peer, the naive percentile bootstrap (each size's
seeds resampled with replacement). ``pooled`` is :func:`finscale.scaling.resample_seeds`
(pooled residuals with the t_df/z small-sample inflation), ``hierarchical`` is
:func:`finscale.scaling.resample_replicates` (test-day resample, then seeds), which the
scaling stage uses. Size: ``FINSCALE_BENCH_SIMS`` simulated studies per row (default 60) x
``FINSCALE_BENCH_RESAMPLES`` resamples (default 200); about 1.5 s per interval on one core.
"""

from __future__ import annotations

import math
import os
import time

from rich.console import Console
from rich.table import Table

from finscale.testing.coverage import METHODS, Truth, alpha_coverage

SEEDS_PER_SIZE = (2, 4, 8)
NOMINAL = 0.95


def main() -> None:
    sims = int(os.environ.get("FINSCALE_BENCH_SIMS", "60"))
    resamples = int(os.environ.get("FINSCALE_BENCH_RESAMPLES", "200"))
    truth = Truth(sigma_seed=0.01, sigma_test=0.005)
    se = math.sqrt(NOMINAL * (1 - NOMINAL) / sims)
    table = Table(title=f"alpha 95% interval coverage: {sims} simulated studies x {resamples} resamples "
                        f"per row (nominal {NOMINAL:.2f} ± 2 SE = [{NOMINAL - 2 * se:.2f}, "
                        f"{min(1, NOMINAL + 2 * se):.2f}]); peer = naive percentile bootstrap")
    for col in ("seeds/size", "method", "coverage", "coverage / nominal", "coverage / peer",
                "median width", "width / peer", "s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for n in SEEDS_PER_SIZE:
        t0 = time.perf_counter()
        res = alpha_coverage(truth, n, sims=sims, n_resamples=resamples, methods=METHODS)
        took = time.perf_counter() - t0
        peer = res["naive"]
        for m in METHODS:
            r = res[m]
            table.add_row(str(n), m, f"{r['coverage']:.3f}", f"{r['coverage'] / NOMINAL:.2f}",
                          f"{r['coverage'] / max(peer['coverage'], 1e-9):.2f}", f"{r['median_width']:.3f}",
                          f"{r['median_width'] / max(peer['median_width'], 1e-12):.2f}",
                          f"{took:.0f}" if m == METHODS[0] else "")
        print(f"  seeds/size {n}: " + ", ".join(f"{m} {res[m]['coverage']:.3f}" for m in METHODS),
              flush=True)
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
