"""Moving-block bootstrap over test days (guard 13).

Consumes per-window labels/probabilities in TIME ORDER. Produces percentile confidence
intervals and a paired test of log-loss differences whose interval and p-value come from one
resampled distribution (they agree at every level, :func:`paired_percentile`).

Resampling scheme (moving block bootstrap, Kuensch 1989): each resample concatenates
``ceil(n / block_len)`` blocks of ``block_len`` consecutive indices whose start is uniform
on ``0 .. n - block_len`` (no wrap-around), then truncates to ``n``. So every resample is a
sequence of contiguous runs of exactly ``block_len`` indices, except the final run, which
is cut short when ``block_len`` does not divide ``n``. Blocks must be at least the label
horizon long, because labels of neighbouring days share their future price path
(overlapping h-day windows); shorter blocks would understate the variance, so it is an
error. The evaluate phase chooses the length from the data (:mod:`.blocklen`).

Statistics are vectorised over resamples: the ``(n_resamples, n)`` index matrix gathers
per-window terms once (log-loss, Brier, correctness); AUC uses a rank formula on resample
counts (:func:`resampled_auc`), so 1,000 resamples of ~500 days take milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from finscale.metrics import check_binary, check_probability, per_sample_log_loss, recalibrated

log = logging.getLogger(__name__)


def default_block_len(horizon: int, block_len: int = 0) -> int:
    """Fallback block length where no data-chosen one is recorded (see :mod:`.blocklen`):
    0 means ``max(horizon, 5)``; else checked >= horizon."""
    chosen = max(int(horizon), 5) if block_len == 0 else int(block_len)
    check_block_len(chosen, horizon)
    return chosen


def check_block_len(block_len: int, horizon: int) -> None:
    """ValueError unless ``1 <= horizon <= block_len``."""
    if int(horizon) < 1:
        raise ValueError(f"horizon={horizon!r}; expected a positive number of days")
    if int(block_len) < int(horizon):
        raise ValueError(
            f"block_len={block_len} is shorter than the horizon {horizon}; labels of "
            f"neighbouring days overlap, so blocks must span at least the horizon"
        )


def block_bootstrap_indices(n: int, block_len: int, n_resamples: int,
                            rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n)`` int64 moving-block resample indices (see module docstring)."""
    if n < 1 or not 1 <= block_len <= n:
        raise ValueError(f"block_len={block_len} must be in 1..n (n={n} observations)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples}; expected >= 1")
    n_blocks = -(-n // block_len)
    starts = rng.integers(0, n - block_len + 1, size=(n_resamples, n_blocks))
    idx = starts[:, :, None] + np.arange(block_len)[None, None, :]
    return idx.reshape(n_resamples, n_blocks * block_len)[:, :n]


def panel_block_indices(days, block_len: int, n_resamples: int,
                        rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n)`` row indices of a moving-block bootstrap over CALENDAR DAYS.

    ``days``: each row's day (any sortable key; a panel has several rows per day, one per
    asset). Blocks are ``block_len`` consecutive distinct days, and a block takes every row
    of its days together, so same-day rows of correlated assets are never resampled apart
    (which would treat two copies of one market as twice the evidence). Blocks are drawn
    until ``n`` rows are filled, then cut at ``n``. With one row per day this is
    :func:`block_bootstrap_indices`' scheme.
    """
    days = np.asarray(days)
    order = np.argsort(days, kind="stable")
    _, first_row = np.unique(days[order], return_index=True)
    m, n = first_row.size, days.size
    if not 1 <= block_len <= m:
        raise ValueError(f"block_len={block_len} must be in 1..{m} (distinct test days)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples}; expected >= 1")
    bounds = np.append(first_row, n)  # rows of days [s, s+L) are order[bounds[s]:bounds[s+L]]
    rows_per_block = bounds[block_len:] - bounds[:-block_len]
    n_blocks = int(-(-n // rows_per_block.min())) + 1  # enough blocks for n rows whatever is drawn
    starts = rng.integers(0, m - block_len + 1, size=(n_resamples, n_blocks))
    out = np.empty((n_resamples, n), dtype=np.int64)
    for r in range(n_resamples):
        rows = np.concatenate([order[bounds[s]:bounds[s + block_len]] for s in starts[r]])
        out[r] = rows[:n]
    return out


def _resample_indices(n: int, block_len: int, n_resamples: int, seed: int, horizon: int,
                      days=None) -> np.ndarray:
    """Resample indices of ``n`` rows: time-ordered rows, or a panel's rows by ``days``."""
    check_block_len(block_len, horizon)
    rng = np.random.default_rng(seed)
    if days is None:
        return block_bootstrap_indices(n, block_len, n_resamples, rng)
    if len(days) != n:
        raise ValueError(f"days has {len(days)} entries for {n} rows; expected one per row")
    return panel_block_indices(days, block_len, n_resamples, rng)


def percentile_ci(stats: np.ndarray, alpha: float = 0.05) -> list[float] | None:
    """Percentile interval ignoring NaN resamples (e.g. one-class AUC); None if all NaN."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r}; expected a level in (0, 1)")
    stats = np.asarray(stats, dtype=np.float64)
    ok = np.isfinite(stats)
    if not ok.any():
        return None
    if not ok.all():
        log.info("bootstrap: %d of %d resamples undefined, ignored", (~ok).sum(), ok.size)
    lo, hi = np.quantile(stats[ok], [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]


def bootstrap_ci(metric_fn: Callable, *arrays, block_len: int, n_resamples: int, seed: int,
                 horizon: int, alpha: float = 0.05, vectorized: bool = False) -> list[float] | None:
    """Percentile CI of ``metric_fn(*arrays)`` under the moving-block bootstrap.

    All ``arrays`` share their first axis (time) and are resampled with the same indices.
    ``vectorized=False``: ``metric_fn`` gets one resample per call (1-D slices) and returns a
    float. ``vectorized=True``: it gets ``(n_resamples, n, ...)`` stacks and returns
    ``(n_resamples,)`` — much faster. NaN results are ignored (see :func:`percentile_ci`).
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays have lengths {[len(a) for a in arrays]}; expected equal lengths")
    idx = _resample_indices(n, block_len, n_resamples, seed, horizon)
    if vectorized:
        stats = np.asarray(metric_fn(*(a[idx] for a in arrays)), dtype=np.float64)
    else:
        stats = np.array([metric_fn(*(a[row] for a in arrays)) for row in idx], dtype=np.float64)
    return percentile_ci(stats, alpha)


def resampled_auc(y: np.ndarray, prob: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """ROC AUC of each resample ``prob[idx[r]]`` vs ``y[idx[r]]``; NaN where one class only.

    Mann-Whitney form with mid-ranks for ties, computed from how often each original window
    appears in each resample: windows are sorted once by ``prob`` and grouped by equal
    value; per resample, AUC = sum over groups of pos_g * (neg_below_g + neg_g / 2) /
    (pos * neg). Equals ``sklearn.metrics.roc_auc_score`` on each resample.
    """
    n_res, n = idx.shape[0], prob.size
    order = np.argsort(prob, kind="stable")
    rank_of = np.empty(n, dtype=np.int64)
    rank_of[order] = np.arange(n)
    flat = (rank_of[idx] + n * np.arange(n_res)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_res * n).reshape(n_res, n).astype(np.float64)
    sorted_p, sorted_y = prob[order], y[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    pos = np.add.reduceat(counts * sorted_y, group_starts, axis=1)
    neg = np.add.reduceat(counts * (1 - sorted_y), group_starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    u = (pos * (neg_below + neg / 2)).sum(axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def metric_cis(y, prob, prior: float, threshold: float | None, block_len: int, n_resamples: int,
               seed: int, *, horizon: int, alpha: float = 0.05, val_prior: float | None = None,
               days=None) -> dict:
    """Block-bootstrap CIs: metric -> [lo, hi] (None when undefined in every resample).

    Metrics: log_loss, auc, brier, accuracy (at 0.5), skill (vs ``prior`` on the same
    resample), skill_val (vs ``val_prior``, when given), log_loss_refinement (per-window
    log-loss of the isotonic recalibration fitted once on all days, resampled), and
    accuracy_at_thr when ``threshold`` is given. Conventions as in
    :func:`finscale.metrics.classification_metrics`. ``days`` (a panel's day per row):
    resample blocks of calendar days, all assets of a day together (:func:`panel_block_indices`).
    """
    y, p = check_binary(y, prob)
    prior = check_probability(prior, "prior", open_interval=True)
    idx = _resample_indices(y.size, block_len, n_resamples, seed, horizon, days)
    ll = per_sample_log_loss(y, p)[idx].mean(axis=1)
    ll_const = per_sample_log_loss(y, np.full_like(p, prior))[idx].mean(axis=1)
    stats = {
        "log_loss": ll,
        "auc": resampled_auc(y, p, idx),
        "brier": ((p - y) ** 2)[idx].mean(axis=1),
        "accuracy": ((p > 0.5) == (y == 1))[idx].mean(axis=1),
        "skill": 1.0 - ll / ll_const,
        "log_loss_refinement": per_sample_log_loss(y, recalibrated(y, p))[idx].mean(axis=1),
    }
    if val_prior is not None:
        val_prior = check_probability(val_prior, "val_prior", open_interval=True)
        stats["skill_val"] = 1.0 - ll / per_sample_log_loss(y, np.full_like(p, val_prior))[idx].mean(axis=1)
    if threshold is not None:
        stats["accuracy_at_thr"] = ((p > threshold) == (y == 1))[idx].mean(axis=1)
    return {name: percentile_ci(values, alpha) for name, values in stats.items()}


def paired_percentile(boot: np.ndarray, alpha: float = 0.05) -> tuple[list[float], float]:
    """Percentile interval and the p-value that inverts it, from ONE resampled distribution.

    With ``R`` resampled mean differences sorted as ``b_(1) <= ... <= b_(R)`` and
    ``k = ceil(alpha R / 2)``: the interval is ``[b_(k), b_(R-k+1)]`` (the k-th smallest
    and k-th largest) and ``p = min(1, 2 min(#{b >= 0}, #{b <= 0}) / R)``, the smallest level
    at which the interval of that level excludes 0. So, by construction and for every
    ``alpha``, the interval excludes 0 exactly when ``p < alpha``. ``p = 0`` means every
    resample lies on one side of 0 (p < 2/R).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r}; expected a level in (0, 1)")
    b = np.sort(np.asarray(boot, dtype=np.float64))
    if b.size < 1 or not np.all(np.isfinite(b)):
        raise ValueError("paired bootstrap: resampled differences must be finite and non-empty")
    r = b.size
    # round away float noise (0.05 * 200 / 2 = 5.000...01) before taking the ceiling
    k = max(1, int(np.ceil(round(alpha * r / 2, 9))))
    k = min(k, r)
    ci = [float(b[k - 1]), float(b[r - k])]
    p = min(1.0, 2.0 * min(int((b >= 0).sum()), int((b <= 0).sum())) / r)
    return ci, float(p)


def paired_bootstrap_test(y, prob_a, prob_b, block_len: int, n_resamples: int, seed: int, *,
                          horizon: int, alpha: float = 0.05, days=None) -> dict:
    """Paired block-bootstrap test of the mean per-window log-loss difference ``a - b``.

    Both models are scored on the SAME resampled days. Negative ``mean_diff`` means model
    ``a`` has the lower (better) log-loss. ``ci`` (level ``1 - alpha``) and ``p_value``
    (two-sided, H0 "no difference") come from the same resampled distribution of the mean
    difference (:func:`paired_percentile`), so ``ci`` excludes 0 if and only if
    ``p_value < alpha``. ``days``: as in :func:`metric_cis`.
    """
    y, pa = check_binary(y, prob_a, name="prob_a")
    _, pb = check_binary(y, prob_b, name="prob_b")
    diff = per_sample_log_loss(y, pa) - per_sample_log_loss(y, pb)
    idx = _resample_indices(y.size, block_len, n_resamples, seed, horizon, days)
    ci, p = paired_percentile(diff[idx].mean(axis=1), alpha)
    return {
        "mean_diff": float(diff.mean()),
        "ci": ci,
        "p_value": p,
        "ci_level": 1.0 - alpha,
        "p_method": "percentile-inversion",
        "n": int(y.size),
        "block_len": int(block_len),
        "n_resamples": int(n_resamples),
    }


def replicate_metrics(y, probs, block_len: int, n_resamples: int, seed: int, *,
                      horizon: int) -> dict[str, np.ndarray]:
    """Per-run metrics on shared block resamples of the test days, for scaling bootstraps.

    ``probs`` is (runs, n): every run's probabilities on the SAME test windows ``y``. All
    runs use the same resample indices (those of :func:`metric_cis` with this seed), so
    column j is every run scored on the j-th resampled test period, keeping the correlation
    that shared days induce. Returns {"log_loss", "auc", "brier", "log_loss_refinement"} ->
    (runs, n_resamples);
    AUC is NaN where a resample has one class; "log_loss_refinement" is the discrimination
    view (see :func:`metric_cis`). Feed to ``finscale.scaling.resample_replicates``.
    """
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    y, _ = check_binary(y, probs[0])
    for i, p in enumerate(probs):
        check_binary(y, p, name=f"probs[{i}]")
    idx = _resample_indices(y.size, block_len, n_resamples, seed, horizon)
    return {
        "log_loss": np.stack([per_sample_log_loss(y, p)[idx].mean(axis=1) for p in probs]),
        "auc": np.stack([resampled_auc(y, p, idx) for p in probs]),
        "brier": np.stack([((p - y) ** 2)[idx].mean(axis=1) for p in probs]),
        "log_loss_refinement": np.stack([per_sample_log_loss(y, recalibrated(y, p))[idx].mean(axis=1)
                                         for p in probs]),
    }
