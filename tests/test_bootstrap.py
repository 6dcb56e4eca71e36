"""Moving-block bootstrap: index structure, CIs, vectorised AUC and the paired test."""

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from finscale.evaluate import (
    block_bootstrap_indices,
    bootstrap_ci,
    classification_metrics,
    default_block_len,
    metric_cis,
    paired_bootstrap_test,
    panel_block_indices,
    replicate_metrics,
    resampled_auc,
)


def _typical(n=500, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    p = np.clip(0.35 + 0.25 * (y - 0.35) + rng.normal(0, 0.12, n), 0.01, 0.99)
    return y, p


@pytest.mark.parametrize("n,block_len", [(103, 10), (100, 10), (50, 1), (7, 7)])
def test_resamples_are_contiguous_runs_of_block_len(n, block_len):
    idx = block_bootstrap_indices(n, block_len, 200, np.random.default_rng(0))
    assert idx.shape == (200, n) and idx.min() >= 0 and idx.max() < n
    for row in idx:
        for k in range(0, n, block_len):
            run = row[k : k + block_len]
            assert run[0] <= n - block_len  # a whole block fits: no wrap-around
            np.testing.assert_array_equal(np.diff(run), 1)
            assert run.size == min(block_len, n - k)  # only the final run is truncated


def test_block_starts_cover_the_series():
    idx = block_bootstrap_indices(60, 5, 2000, np.random.default_rng(1))
    starts = idx[:, ::5].ravel()
    assert set(np.unique(starts)) == set(range(56))


def test_block_length_rules():
    assert default_block_len(3) == 5 and default_block_len(7) == 7 and default_block_len(2, 4) == 4
    with pytest.raises(ValueError, match="shorter than the horizon"):
        default_block_len(5, 3)
    y, p = _typical(100)
    with pytest.raises(ValueError, match="shorter than the horizon 5"):
        metric_cis(y, p, 0.35, None, 4, 100, 0, horizon=5)
    with pytest.raises(ValueError, match="block_len=200"):
        metric_cis(y, p, 0.35, None, 200, 100, 0, horizon=5)


def test_resampled_auc_equals_sklearn_on_each_resample_with_ties():
    y, p = _typical(120, 2)
    p = p.round(1)  # many ties
    idx = block_bootstrap_indices(y.size, 6, 40, np.random.default_rng(3))
    fast = resampled_auc(y.astype(float), p, idx)
    slow = [roc_auc_score(y[r], p[r]) for r in idx]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_resampled_auc_nan_when_one_class():
    y = np.r_[np.zeros(20), np.ones(2)]
    idx = np.tile(np.arange(20), (3, 1))  # only negatives
    assert np.all(np.isnan(resampled_auc(y, np.linspace(0, 1, 22), idx)))


def test_metric_cis_contain_point_estimates_and_are_reproducible():
    y, p = _typical()
    point = classification_metrics(y, p, prior=0.3, threshold=0.4)
    cis = metric_cis(y, p, 0.3, 0.4, 10, 1000, 7, horizon=5)
    for name in ("log_loss", "auc", "brier", "accuracy", "skill", "accuracy_at_thr"):
        lo, hi = cis[name]
        assert lo < point[name] < hi, name
    assert cis == metric_cis(y, p, 0.3, 0.4, 10, 1000, 7, horizon=5)
    assert cis != metric_cis(y, p, 0.3, 0.4, 10, 1000, 8, horizon=5)


def test_vectorised_statistics_equal_sklearn_per_resample():
    y, p = _typical(200, 4)
    idx = block_bootstrap_indices(y.size, 5, 30, np.random.default_rng(5))
    from finscale.evaluate import per_sample_log_loss

    np.testing.assert_allclose(per_sample_log_loss(y, p)[idx].mean(axis=1),
                               [log_loss(y[r], p[r], labels=[0, 1]) for r in idx], rtol=1e-10)
    np.testing.assert_allclose(((p - y) ** 2)[idx].mean(axis=1),
                               [brier_score_loss(y[r], p[r]) for r in idx], rtol=1e-10)


def test_generic_bootstrap_ci_matches_vectorised_form():
    x = np.random.default_rng(6).normal(size=300)
    kw = dict(block_len=10, n_resamples=300, seed=1, horizon=1)
    slow = bootstrap_ci(np.mean, x, **kw)
    fast = bootstrap_ci(lambda a: a.mean(axis=1), x, vectorized=True, **kw)
    assert slow == pytest.approx(fast)


def test_blocks_widen_the_interval_for_autocorrelated_series():
    rng = np.random.default_rng(7)
    x = np.zeros(1000)
    for t in range(1, x.size):
        x[t] = 0.9 * x[t - 1] + rng.normal()
    iid = bootstrap_ci(lambda a: a.mean(axis=1), x, block_len=1, n_resamples=500, seed=0,
                       horizon=1, vectorized=True)
    blocks = bootstrap_ci(lambda a: a.mean(axis=1), x, block_len=50, n_resamples=500, seed=0,
                          horizon=1, vectorized=True)
    assert (blocks[1] - blocks[0]) > 2.5 * (iid[1] - iid[0])


def test_paired_test_identical_models_and_clear_winner():
    y, p = _typical()
    same = paired_bootstrap_test(y, p, p, 10, 500, 0, horizon=5)
    assert same["mean_diff"] == 0 and same["p_value"] == 1.0
    res = paired_bootstrap_test(y, p, np.full(y.size, y.mean()), 10, 999, 0, horizon=5)
    # every resample favours a: p = 0 (< 2/999), the interval wholly below 0
    assert res["mean_diff"] < 0 and res["ci"][1] < 0 and res["p_value"] == 0.0
    worse = paired_bootstrap_test(y, np.full(y.size, y.mean()), p, 10, 999, 0, horizon=5)
    assert worse["mean_diff"] == pytest.approx(-res["mean_diff"]) and worse["ci"][0] > 0


def test_paired_test_no_difference_gives_large_p_value():
    rng = np.random.default_rng(8)
    y = (rng.random(500) < 0.4).astype(int)
    a = np.clip(0.4 + rng.normal(0, 0.05, 500), 0.01, 0.99)
    b = np.clip(0.4 + rng.normal(0, 0.05, 500), 0.01, 0.99)
    assert paired_bootstrap_test(y, a, b, 5, 999, 0, horizon=1)["p_value"] > 0.05


def test_replicate_metrics_share_resamples_across_runs():
    y, p = _typical(300, 9)
    probs = np.stack([p, np.full(y.size, y.mean()), np.clip(p + 0.05, 0, 1)])
    reps = replicate_metrics(y, probs, 6, 200, 11, horizon=3)
    assert {k: v.shape for k, v in reps.items()} == {k: (3, 200) for k in ("log_loss", "auc", "brier", "log_loss_refinement")}
    idx = block_bootstrap_indices(y.size, 6, 200, np.random.default_rng(11))
    for run in range(3):
        np.testing.assert_allclose(reps["log_loss"][run, :5],
                                   [log_loss(y[r], probs[run][r], labels=[0, 1]) for r in idx[:5]])
    np.testing.assert_allclose(reps["auc"][0, :5], [roc_auc_score(y[r], p[r]) for r in idx[:5]])
    lo, hi = metric_cis(y, p, 0.35, None, 6, 200, 11, horizon=3)["log_loss"]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reps["log_loss"][0], [0.025, 0.975])))
    with pytest.raises(ValueError, match=r"probs\[1\]"):
        replicate_metrics(y, np.stack([p, p + 2]), 6, 10, 0, horizon=3)


# --------------------------------------------------------------------------- panels

def _one_market(n: int = 800, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = np.clip(rng.beta(2, 5, n), 0.02, 0.98)
    y = (rng.random(n) < p).astype(float)
    return y, p


def test_panel_blocks_take_every_asset_of_a_day_together():
    days = np.repeat(np.arange(300), 2)[::-1].copy()  # 2 assets per day, rows in any order
    idx = panel_block_indices(days, 5, 50, np.random.default_rng(0))
    assert idx.shape == (50, 600)
    for row in idx:
        _, counts = np.unique(days[row], return_counts=True)
        assert (counts % 2 == 0).all()  # a day is drawn with both its rows, never one alone
    with pytest.raises(ValueError, match="distinct test days"):
        panel_block_indices(days, 301, 5, np.random.default_rng(0))


def test_a_duplicated_market_is_not_twice_the_evidence():
    """Planted counter-example: a 'panel' of two identical copies of one market holds no more
    information than the market alone. Resampling rows as one long series narrows the
    interval by ~sqrt(2); resampling calendar days with all their assets does not."""
    y, p = _one_market()
    n = y.size
    kw = dict(prior=0.3, threshold=None, block_len=5, n_resamples=2000, seed=1, horizon=1)
    width = lambda ci: ci["log_loss"][1] - ci["log_loss"][0]  # noqa: E731
    alone = width(metric_cis(y, p, **kw))
    y2, p2, days = np.r_[y, y], np.r_[p, p], np.r_[np.arange(n), np.arange(n)]
    naive = width(metric_cis(y2, p2, **kw))
    by_day = width(metric_cis(y2, p2, **kw, days=days))
    assert naive < 0.8 * alone                # the trap this guards against
    assert 0.9 * alone < by_day < 1.1 * alone
    paired = paired_bootstrap_test(y2, p2, np.full(2 * n, 0.3), 5, 2000, 1, horizon=1, days=days)
    single = paired_bootstrap_test(y, p, np.full(n, 0.3), 5, 2000, 1, horizon=1)
    ratio = np.ptp(paired["ci"]) / np.ptp(single["ci"])
    assert 0.9 < ratio < 1.1
