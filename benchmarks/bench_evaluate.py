"""Evaluation and scaling-fit speed: block-bootstrap metric CIs and the scaling bootstrap.

Peers measured in the same run: the per-resample scikit-learn loop for the metric CIs,
and a full 24-start refit per resample for the scaling bootstrap (fewer resamples, scaled).
"""

from __future__ import annotations

import time

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from finscale.evaluate import block_bootstrap_indices, metric_cis, replicate_metrics
from finscale.scaling import bootstrap_fit, fit_power_law, resample_replicates

N_DAYS, N_RESAMPLES, BLOCK_LEN, HORIZON = 500, 1000, 5, 5
SIZES = np.repeat([2e4, 2e5, 2e6, 2e7], 2)  # 4 budgets x 2 seeds


def _timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _test_days(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(N_DAYS) < 0.4).astype(int)
    p = np.clip(0.4 + 0.2 * (y - 0.4) + rng.normal(0, 0.1, N_DAYS), 0.01, 0.99)
    return y, p


def _sklearn_loop(y, p, n_resamples):
    idx = block_bootstrap_indices(y.size, BLOCK_LEN, n_resamples, np.random.default_rng(0))
    for r in idx:
        log_loss(y[r], p[r], labels=[0, 1]), brier_score_loss(y[r], p[r]), roc_auc_score(y[r], p[r])


def _scaling_points(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(N_DAYS) < 0.4).astype(int)
    strength = 0.05 + 0.3 * (1 - (SIZES / SIZES.min()) ** -0.3)
    probs = np.stack([np.clip(0.4 + s * (y - 0.4) + rng.normal(0, 0.08, N_DAYS), 0.01, 0.99)
                      for s in strength])
    reps = replicate_metrics(y, probs, BLOCK_LEN, N_RESAMPLES, seed, horizon=HORIZON)["log_loss"]
    return reps.mean(axis=1), reps


def _full_grid_refits(L, reps, n):
    rng = np.random.default_rng(0)
    for _ in range(n):
        fit_power_law(SIZES, reps[:, rng.integers(reps.shape[1])])


def main() -> None:
    y, p = _test_days()
    rows = []
    t_cis, _ = _timed(lambda: metric_cis(y, p, 0.4, 0.45, BLOCK_LEN, N_RESAMPLES, 0, horizon=HORIZON))
    peer_n = 100
    t_loop, _ = _timed(lambda: _sklearn_loop(y, p, peer_n), repeat=1)
    t_loop *= N_RESAMPLES / peer_n
    rows.append(("metric_cis: 6 metrics incl. AUC, 1,000 resamples x 500 days", t_cis,
                 "sklearn loop (LL+Brier+AUC), scaled from 100", t_loop))
    L, reps = _scaling_points()
    t_seeds, _ = _timed(lambda: bootstrap_fit((SIZES, L), None, N_RESAMPLES, 0), repeat=1)
    t_reps, ci = _timed(lambda: bootstrap_fit((SIZES, L), resample_replicates(SIZES, reps),
                                              N_RESAMPLES, 0), repeat=1)
    peer_n = 50
    t_full, _ = _timed(lambda: _full_grid_refits(L, reps, peer_n), repeat=1)
    t_full *= N_RESAMPLES / peer_n
    rows.append(("bootstrap_fit: seeds, 1,000 resamples, 4 budgets x 2 seeds", t_seeds,
                 "24-start refit per resample, scaled from 50", t_full))
    rows.append(("bootstrap_fit: test-day replicates + seeds, 1,000 resamples", t_reps,
                 "24-start refit per resample, scaled from 50", t_full))
    table = Table(title="finscale.evaluate / finscale.scaling")
    for col in ("operation", "seconds", "peer", "peer seconds", "speed-up"):
        table.add_column(col, justify="left" if col in ("operation", "peer") else "right")
    for name, t, peer, t_peer in rows:
        table.add_row(name, f"{t:.3f}", peer, f"{t_peer:.2f}", f"{t_peer / t:.1f}x")
    console = Console()
    console.print(table)
    console.print(f"alpha CI with replicates: {ci['alpha_ci']}, failed resamples: {ci['n_failed']}")


if __name__ == "__main__":
    main()
