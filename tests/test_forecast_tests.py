"""Forecast-comparison tests (evaluate.forecast_tests) and the paired bootstrap's single
construction: planted differentials, the HLN formula, Holm, SPA/MCS on planted candidates,
interval <=> p-value agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from finscale.evaluate import (
    compare_forecasts,
    diebold_mariano,
    holm,
    model_confidence_set,
    paired_bootstrap_test,
    spa_test,
)
from finscale.evaluate.bootstrap import paired_percentile
from finscale.evaluate.forecast_tests import daily_differential, hln_factor, newey_west_variance


def _ar1(n: int, phi: float, rng: np.random.Generator, burn: int = 50) -> np.ndarray:
    e = rng.normal(size=n + burn)
    x = np.zeros_like(e)
    for t in range(1, e.size):
        x[t] = phi * x[t - 1] + e[t]
    return x[burn:]


def test_dm_rejects_a_planted_mean_and_signs_it():
    rng = np.random.default_rng(0)
    d = -0.25 + _ar1(400, 0.5, rng)          # forecaster a has the lower loss on average
    res = diebold_mariano(d, bandwidth=10, horizon=1)
    assert res["dm_stat"] < 0 and res["dm_p"] < 0.01
    assert res["dm_mean"] == pytest.approx(d.mean()) and res["dm_days"] == 400
    assert diebold_mariano(-d, 10, 1)["dm_stat"] == pytest.approx(-res["dm_stat"])


def test_dm_size_is_near_nominal_on_zero_mean_autocorrelated_differentials():
    """Over 400 zero-mean AR(1) differentials (phi = 0.5, 300 days) the 5% test rejects
    close to 5% of the time (Newey-West is mildly liberal at this T: about 7-8% measured)."""
    rng = np.random.default_rng(1)
    rejected = [diebold_mariano(_ar1(300, 0.5, rng), 10, 1)["dm_p"] < 0.05 for _ in range(400)]
    assert 0.02 <= np.mean(rejected) <= 0.10


def test_dm_without_hac_would_be_badly_oversized():
    """The trap HAC guards against: bandwidth 0 (iid variance) on the same series rejects
    far more often than 5%."""
    rng = np.random.default_rng(1)
    rejected = [diebold_mariano(_ar1(300, 0.5, rng), 0, 1)["dm_p"] < 0.05 for _ in range(200)]
    assert np.mean(rejected) > 0.2


def test_hln_correction_and_newey_west_match_their_formulas():
    n, h = 120, 5
    assert hln_factor(n, h) == pytest.approx(math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n))
    d = np.random.default_rng(2).normal(0.1, 1, n)
    lag = 4
    e = d - d.mean()
    gamma = [e[j:] @ e[:n - j] / n for j in range(lag + 1)]
    lrv = gamma[0] + 2 * sum((1 - j / (lag + 1)) * gamma[j] for j in range(1, lag + 1))
    assert newey_west_variance(d, lag) == pytest.approx(lrv)
    res = diebold_mariano(d, lag, h)
    stat = d.mean() / math.sqrt(lrv / n) * hln_factor(n, h)
    assert res["dm_stat"] == pytest.approx(stat)
    assert res["dm_p"] == pytest.approx(2 * student_t.sf(abs(stat), df=n - 1))


def test_dm_degenerate_differentials_and_bad_input():
    assert diebold_mariano(np.zeros(50), 5, 1)["dm_p"] == 1.0
    assert diebold_mariano(np.full(50, 0.1), 5, 1)["dm_p"] == 0.0
    with pytest.raises(ValueError, match="finite daily differentials"):
        diebold_mariano([0.1, np.nan, 0.2, 0.3], 2, 1)


def test_panel_differentials_average_the_assets_of_a_day():
    """Two identical copies of one market are one market's evidence: the DM test of the
    'panel' equals the single market's."""
    rng = np.random.default_rng(3)
    n = 400
    p = np.clip(rng.beta(2, 5, n), 0.02, 0.98)
    y = (rng.random(n) < p).astype(float)
    single = compare_forecasts(y, p, np.full(n, 0.3), 5, 200, 0, horizon=1)
    days = np.r_[np.arange(n), np.arange(n)]
    panel = compare_forecasts(np.r_[y, y], np.r_[p, p], np.full(2 * n, 0.3), 5, 200, 0, horizon=1,
                              days=days)
    assert panel["dm_days"] == n
    assert panel["dm_stat"] == pytest.approx(single["dm_stat"])
    np.testing.assert_allclose(daily_differential(np.r_[1.0, 3.0, 5.0], np.r_[2, 1, 2]), [3.0, 3.0])


def test_holm_adjusted_p_values():
    p = [0.01, 0.04, 0.03, 0.5, np.nan]
    # sorted 0.01, 0.03, 0.04, 0.5 (m = 4): 0.04, 0.09, max(0.09, 0.08), 0.5
    np.testing.assert_allclose(holm(p), [0.04, 0.09, 0.09, 0.5, np.nan])
    assert np.all(holm([0.3, 0.6]) == [0.6, 0.6]) and holm([0.9, 0.9]).max() == 1.0


def _candidates(rng, n=500, superior=True):
    base = rng.normal(1.0, 1.0, n)
    out = {f"m{i}": base + rng.normal(0, 0.2, n) for i in range(3)}
    if superior:
        out["good"] = base - 0.3 + rng.normal(0, 0.2, n)
    return base, out


def test_spa_finds_a_planted_superior_model_and_does_not_reject_a_null_set():
    rng = np.random.default_rng(4)
    base, models = _candidates(rng)
    res = spa_test(base, models, block_len=10, reps=500, seed=0)
    assert res["rejected"] and res["p"] < 0.05 and res["better_models"] == ["good"]
    base, models = _candidates(rng, superior=False)
    null = spa_test(base, models, block_len=10, reps=500, seed=0)
    assert not null["rejected"] and null["better_models"] == []
    assert spa_test(base, models, 10, 500, 0) == null   # fixed seed: reproducible


def test_mcs_keeps_a_clearly_superior_model_alone_and_a_null_set_whole():
    rng = np.random.default_rng(5)
    base, models = _candidates(rng)
    res = model_confidence_set({"base": base, **models}, block_len=10, reps=500, seed=0)
    assert res["included"] == ["good"] and set(res["excluded"]) == {"base", "m0", "m1", "m2"}
    base, models = _candidates(rng, superior=False)
    null = model_confidence_set({"base": base, **models}, block_len=10, reps=500, seed=0)
    assert null["included"] == ["base", "m0", "m1", "m2"] and null["excluded"] == []


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1, 0.2])
def test_interval_excludes_zero_iff_p_below_alpha_on_planted_pairs(alpha):
    """One distribution for both: over many planted pairs (clear wins, losses, near-ties,
    several resample counts) the interval excludes 0 exactly when p < alpha."""
    rng = np.random.default_rng(6)
    checked = {True: 0, False: 0}
    for i in range(120):
        n = int(rng.integers(120, 400))
        p_true = np.clip(rng.beta(2, 5, n), 0.02, 0.98)
        y = (rng.random(n) < p_true).astype(float)
        a = np.clip(p_true + rng.normal(0, rng.uniform(0.0, 0.2), n), 0.01, 0.99)
        b = np.clip(p_true + rng.normal(0, rng.uniform(0.0, 0.2), n), 0.01, 0.99)
        res = paired_bootstrap_test(y, a, b, int(rng.integers(1, 15)), int(rng.choice([99, 200, 999])),
                                    i, horizon=1, alpha=alpha)
        excludes = res["ci"][0] > 0 or res["ci"][1] < 0
        assert excludes == (res["p_value"] < alpha), res
        checked[excludes] += 1
    assert min(checked.values()) >= 10    # both sides of the boundary were exercised


def test_paired_percentile_is_the_inverted_interval():
    boot = np.arange(-5, 195, dtype=float)      # 200 resamples -5..194, 6 of them <= 0
    ci, p = paired_percentile(boot, 0.05)
    assert ci == [-1.0, 190.0] and p == pytest.approx(2 * 6 / 200)   # b_(5), b_(196); 0 inside
    ci, p = paired_percentile(boot + 1.5, 0.05)
    assert ci[0] > 0 and p == pytest.approx(2 * 4 / 200)
    with pytest.raises(ValueError, match="alpha"):
        paired_percentile(boot, 1.5)


def test_mcs_with_identical_candidates_keeps_both_together():
    """A tuned baseline can equal another exactly (window_logistic with k = 1 is the day-t
    logistic regression): arch's MCS fails on the zero-variance difference, so twins are
    folded into one candidate and share its fate."""
    from finscale.evaluate.forecast_tests import model_confidence_set

    rng = np.random.default_rng(0)
    good = rng.normal(0.30, 0.05, 400)
    out = model_confidence_set({"a": good, "twin": good.copy(), "bad": good + 0.05}, 5, 200, 0)
    assert out["twins"] == {"twin": "a"}
    assert set(out["included"]) == {"a", "twin"} and out["excluded"] == ["bad"]
    assert out["pvalues"]["twin"] == out["pvalues"]["a"]
