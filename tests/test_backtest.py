"""Backtest against a hand-computed toy series, and the deflated Sharpe ratio."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from finscale.evaluate import backtest, deflated_sharpe_ratio

CLOSE = np.array([100.0, 101.0, 99.0, 102.0, 103.0, 101.0, 104.0])
DATES = pd.bdate_range("2020-01-06", periods=7)
# t=0 enters (0->2); t=1 is inside that holding period and must be ignored; t=2 enters (2->4);
# t=4 is below threshold; t=5 has no room for a 2-day period before the end.
PROB = np.array([0.9, 0.9, 0.8, 0.9, 0.2, 0.9, 0.9])
C = 10 / 1e4


def _hand_equity():
    k = 1 - C
    e0 = k  # entry cost at Close[0]
    e1 = e0 * 101 / 100
    e2 = e1 * 99 / 101 * k * k  # exit of trade 1 and entry of trade 2 at Close[2]
    e3 = e2 * 102 / 99
    e4 = e3 * 103 / 102 * k  # exit at Close[4]
    return [e0, e1, e2, e3, e4, e4, e4]


def test_equity_matches_hand_computation_with_costs_and_non_overlap():
    res = backtest(CLOSE, DATES, PROB, threshold=0.5, horizon=2, cost_bps=10)
    s = res["strategy"]
    np.testing.assert_allclose(s["equity"], _hand_equity(), rtol=1e-13)
    assert [(t["entry"], t["exit"]) for t in res["trades"]] == [
        ("2020-01-06", "2020-01-08"), ("2020-01-08", "2020-01-10")]
    assert res["trades"][0]["net_return"] == pytest.approx(99 / 100 * (1 - C) ** 2 - 1)
    assert s["n_trades"] == 2 and s["hit_rate"] == 0.5
    assert s["exposure"] == pytest.approx(4 / 6)
    assert s["total_return"] == pytest.approx(103 / 100 * (1 - C) ** 4 - 1)
    eq = np.array(_hand_equity())
    daily = eq[1:] / np.r_[1.0, eq[1:-1]] - 1  # first return is against the initial capital 1
    assert s["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(252))
    assert s["max_drawdown"] == pytest.approx(1 - eq[2] / eq[1])
    years = (DATES[-1] - DATES[0]).days / 365.25
    assert s["cagr"] == pytest.approx(eq[-1] ** (1 / years) - 1)


def test_buy_and_hold_over_the_same_days():
    bh = backtest(CLOSE, DATES, PROB, threshold=0.5, horizon=2, cost_bps=10)["buy_and_hold"]
    expected = (1 - C) * CLOSE / 100
    expected[-1] *= 1 - C
    np.testing.assert_allclose(bh["equity"], expected, rtol=1e-13)
    assert bh["exposure"] == 1.0 and bh["n_trades"] == 1 and bh["hit_rate"] == 1.0
    assert bh["max_drawdown"] == pytest.approx(1 - 99 / 101)


def test_costs_scale_final_equity_per_round_trip():
    free = backtest(CLOSE, DATES, PROB, 0.5, 2, 0.0)["strategy"]["equity"][-1]
    costly = backtest(CLOSE, DATES, PROB, 0.5, 2, 25.0)["strategy"]["equity"][-1]
    assert costly == pytest.approx(free * (1 - 25e-4) ** 4)


def test_no_signal_stays_flat_and_nan_means_no_signal():
    res = backtest(CLOSE, DATES, np.full(7, np.nan), 0.5, 1, 1.0)
    s = res["strategy"]
    assert s["equity"] == [1.0] * 7 and s["n_trades"] == 0 and s["exposure"] == 0.0
    assert s["sharpe"] is None and s["hit_rate"] is None and s["max_drawdown"] == 0.0
    assert res["n_no_signal"] == 7


def test_horizon_one_trades_every_day_when_always_long():
    s = backtest(CLOSE, DATES, np.ones(7), 0.5, 1, 0.0)["strategy"]
    np.testing.assert_allclose(s["equity"], CLOSE / 100)
    assert s["n_trades"] == 6 and s["exposure"] == 1.0


def test_backtest_rejects_bad_inputs():
    with pytest.raises(ValueError, match="lengths"):
        backtest(CLOSE, DATES, PROB[:-1], 0.5, 2, 1)
    with pytest.raises(ValueError, match="increasing"):
        backtest(CLOSE, DATES[::-1], PROB, 0.5, 2, 1)
    with pytest.raises(ValueError, match="horizon"):
        backtest(CLOSE, DATES, PROB, 0.5, 0, 1)
    with pytest.raises(ValueError, match="cost_bps"):
        backtest(CLOSE, DATES, PROB, 0.5, 2, -1)
    with pytest.raises(ValueError, match="too short"):
        backtest(CLOSE[:2], DATES[:2], PROB[:2], 0.5, 2, 1)


def test_deflated_sharpe_reproduces_bailey_lopez_de_prado_example():
    # Bailey & Lopez de Prado (2014), section 4: N=100 trials with V[SR]=1/2 (annualised),
    # SR=2.5, T=1250 daily returns (250 per year), skew -3, kurtosis 10 -> DSR ~ 0.9004.
    a = math.sqrt(0.5 * 99 / 100)
    trials = np.r_[np.full(50, a), np.full(50, -a)]
    dsr = deflated_sharpe_ratio(2.5, trials, 1250, -3.0, 10.0, periods_per_year=250)
    assert dsr == pytest.approx(0.9004, abs=5e-4)


def test_deflated_sharpe_single_trial_is_probabilistic_sharpe_and_more_trials_deflate():
    sr = 1.2 / math.sqrt(252)
    psr = norm.cdf(sr * math.sqrt(499) / math.sqrt(1 - 0.1 * sr + (4 - 1) / 4 * sr**2))
    assert deflated_sharpe_ratio(1.2, [1.2], 500, 0.1, 4.0) == pytest.approx(psr)
    few = deflated_sharpe_ratio(1.2, np.linspace(-0.5, 1.2, 5), 500, 0.0, 3.0)
    many = deflated_sharpe_ratio(1.2, np.linspace(-0.5, 1.2, 200), 500, 0.0, 3.0)
    assert many < few < psr
