"""Economic metrics: the backtest cost sweep, panel IC / Rank IC / ICIR, top-k long-short."""

import math

import numpy as np
import pandas as pd
import pytest

from finscale.evaluate import backtest, cost_sweep, daily_returns_at, pool_backtests
from finscale.evaluate.signal import daily_ic, ic_summary, newey_west_se, topk_long_short


def _market(n=400, seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0004, 0.01, n)))
    prob = rng.uniform(size=n)
    prob[-3:] = np.nan
    return close, pd.bdate_range("2020-01-01", periods=n), prob


def test_cost_sweep_is_monotone_and_equals_the_single_cost_backtest():
    close, dates, prob = _market()
    sweep = cost_sweep(close, dates, prob, 0.5, 3, (0, 1, 5, 10, 20, 7.5))
    assert [r["cost_bps"] for r in sweep] == [0, 1, 5, 7.5, 10, 20]
    for a, b in zip(sweep, sweep[1:]):
        assert b["total_return"] < a["total_return"] and b["sharpe"] < a["sharpe"]
        assert b["turnover"] == a["turnover"] > 0  # positions never depend on the cost
    for bps in (1, 7.5):
        single = backtest(close, dates, prob, 0.5, 3, bps)["strategy"]
        row = next(r for r in sweep if r["cost_bps"] == bps)
        for k in ("total_return", "sharpe", "cagr", "max_drawdown", "n_trades"):
            assert row[k] == pytest.approx(single[k], rel=1e-12)


def test_turnover_counts_each_entry_and_exit():
    close, dates = np.linspace(100, 110, 11), pd.bdate_range("2021-01-01", periods=11)
    prob = np.r_[np.full(10, 0.9), np.nan]  # always long: 5 back-to-back 2-day trades
    row = cost_sweep(close, dates, prob, 0.5, 2, (0,))[0]
    assert row["n_trades"] == 5
    assert row["daily_turnover"] == pytest.approx(10 / 10) and row["turnover"] == pytest.approx(252)


def test_daily_returns_recomputed_at_another_cost_match_a_fresh_backtest():
    close, dates, prob = _market(seed=3)
    at5 = backtest(close, dates, prob, 0.5, 2, 5.0)
    at20 = backtest(close, dates, prob, 0.5, 2, 20.0)
    eq = np.asarray(at20["strategy"]["equity"])
    np.testing.assert_allclose(daily_returns_at(at5, 20.0), eq[1:] / np.r_[1.0, eq[1:-1]] - 1, rtol=1e-10)


def test_pooled_sweep_at_the_study_cost_equals_the_pooled_backtest():
    parts = {}
    for i in range(3):
        close, dates, prob = _market(seed=10 + i)
        bt = backtest(close, dates, prob, 0.5, 2, 5.0)
        bt["cost_sweep"] = cost_sweep(close, dates, prob, 0.5, 2, (0, 5, 20))
        parts[f"a{i}"] = bt
    pooled = pool_backtests(parts)
    row = next(r for r in pooled["cost_sweep"] if r["cost_bps"] == 5.0)
    assert row["sharpe"] == pytest.approx(pooled["strategy"]["sharpe"], rel=1e-10)
    assert row["total_return"] == pytest.approx(pooled["strategy"]["total_return"], rel=1e-10)
    assert [r["sharpe"] for r in pooled["cost_sweep"]] == sorted((r["sharpe"] for r in pooled["cost_sweep"]),
                                                                 reverse=True)


def _panel(n_days=300, n_assets=8, strength=0.3, seed=0):
    """Scores that carry a known share of the next return: corr(score, r) = strength."""
    rng = np.random.default_rng(seed)
    days = np.repeat(pd.bdate_range("2020-01-01", periods=n_days).values, n_assets)
    assets = np.tile(np.arange(n_assets), n_days)
    z = rng.normal(size=days.size)
    r = 0.01 * (strength * z + math.sqrt(1 - strength**2) * rng.normal(size=days.size))
    return days, assets, 1 / (1 + np.exp(-z)), r, z


def test_ic_of_a_known_signal():
    days, assets, prob, r, z = _panel(n_days=400, n_assets=30, strength=0.3)
    out = ic_summary(days, z, r, horizon=1, block_len=5, n_resamples=200, seed=0)
    assert out["mean"] == pytest.approx(0.3, abs=0.02)
    assert out["rank_ic"] == pytest.approx(6 / math.pi * math.asin(0.3 / 2), abs=0.02)  # Spearman of a normal pair
    assert out["t"] == pytest.approx(out["icir"] * math.sqrt(out["n_days"]))
    assert out["ci"][0] < 0.3 < out["ci"][1] and out["t"] > 10
    # a monotone transform (the model's probability) keeps the rank IC exactly
    assert ic_summary(days, prob, r, horizon=1, block_len=5, n_resamples=50, seed=0)["rank_ic"] == \
        pytest.approx(out["rank_ic"], rel=1e-12)


def test_ic_of_noise_is_rarely_significant():
    outs = []
    for seed in range(30):
        days, _, prob, r, _ = _panel(n_days=120, strength=0.0, seed=seed)
        outs.append(ic_summary(days, prob, r, horizon=1, block_len=5, n_resamples=200, seed=seed))
    assert np.mean([abs(o["t"]) > 1.96 for o in outs]) <= 0.15
    assert np.mean([not o["ci"][0] < 0 < o["ci"][1] for o in outs]) <= 0.2


def test_daily_ic_skips_days_with_too_few_assets():
    frame = daily_ic(["d1", "d1", "d2", "d2", "d2"], [1, 2, 1, 2, 3], [0.1, 0.2, 0.3, 0.1, 0.2])
    assert list(frame["day"]) == ["d2"]


def test_newey_west_widens_the_error_of_overlapping_returns():
    rng = np.random.default_rng(0)
    x = np.convolve(rng.normal(size=2000), np.ones(5), "valid")  # 5-day overlapping sums
    assert newey_west_se(x, 4) > 1.8 * newey_west_se(x, 0)
    assert newey_west_se(x, 0) == pytest.approx(np.std(x) / math.sqrt(x.size))


def test_topk_long_short_earns_a_known_signal_and_pays_qlib_costs():
    days, assets, prob, r, z = _panel(n_days=250, n_assets=10, strength=0.5, seed=1)
    out = topk_long_short(days, assets, prob, r, k=2)
    assert out["sharpe_gross"] > 5 and out["mean_gross"] > out["mean_net"]
    free = topk_long_short(days, assets, prob, r, k=2, open_bps=0, close_bps=0)
    assert free["sharpe"] == pytest.approx(out["sharpe_gross"])
    # day 1 opens 4 positions of 1/2 (2 of notional at 5 bp), nothing to close
    assert free["mean_gross"] - out["mean_net"] > 0
    assert out["daily"][0] == pytest.approx(free["daily"][0] - 2 * 5e-4)


def test_topk_costs_split_open_and_close():
    days = np.repeat(np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]"), 2)
    assets = np.array([0, 1, 0, 1])
    scores = np.array([0.9, 0.1, 0.1, 0.9])  # the legs swap on day 2
    out = topk_long_short(days, assets, scores, np.zeros(4), k=1)
    # day 1 opens 2 of notional (5 bp); day 2 closes 2 (15 bp) and opens 2 (5 bp)
    assert out["daily"] == pytest.approx([-2 * 5e-4, -2 * 15e-4 - 2 * 5e-4])
    assert out["turnover"] == pytest.approx((2 + 4) / 2)


def test_ceiling_fit_recovers_a_planted_sharpe_ceiling():
    from finscale.scaling.economics import fit_ceiling

    C = np.repeat(np.geomspace(1e8, 1e12, 6), 2)
    S = 1.5 - 40.0 * C**-0.2
    fit = fit_ceiling(C, S)
    assert fit["identified"]
    assert fit["S_inf"] == pytest.approx(1.5, abs=1e-3) and fit["b"] == pytest.approx(0.2, abs=1e-3)
    assert fit["gain_25pct"] == pytest.approx(40 * 1e12**-0.2 * (1 - 1.25**-0.2), rel=1e-3)


def test_ceiling_on_a_straight_line_is_not_identified():
    from finscale.scaling.economics import fit_ceiling

    C = np.geomspace(1e8, 1e12, 5)
    assert not fit_ceiling(C, 0.1 * np.log(C))["identified"]


def _run_docs(n_runs=6, seed=0):
    """eval.json-like backtests of runs scored on the same days (larger N, more skill)."""
    close, dates, _ = _market(n=300, seed=seed)
    rng = np.random.default_rng(seed)
    up = np.r_[close[1:] > close[:-1], False]
    rows, docs = [], {}
    for i in range(n_runs):
        budget, N = ("s", 1e3) if i < n_runs // 2 else ("l", 1e5)
        p = np.where(rng.uniform(size=close.size) < (0.55 if budget == "s" else 0.75), up, ~up) * 0.8 + 0.1
        p[-1:] = np.nan
        bt = backtest(close, dates, p, 0.5, 1, 5.0)
        bt["cost_sweep"] = cost_sweep(close, dates, p, 0.5, 1, (0, 5, 20))
        docs[f"r{i}"] = {"backtest": bt, "block_length": {"block_len": 5}}
        rows.append({"run_id": f"r{i}", "budget": budget, "seed": i, "params_total": N * (1 + i),
                     "train_flops": 6 * N * (1 + i) * 1e4})
    return pd.DataFrame(rows).set_index("run_id"), docs


def test_economics_per_size_is_paired_and_matches_the_backtests():
    from finscale.scaling.economics import horizon_economics

    runs, docs = _run_docs()
    out = horizon_economics(runs, docs, n_resamples=200, seed=0)
    assert out["paired"] and out["cost_levels"] == [0.0, 5.0, 20.0]
    at5 = {r["run_id"]: r for r in out["runs"] if r["cost_bps"] == 5.0}
    for rid, doc in docs.items():
        assert at5[rid]["sharpe"] == pytest.approx(doc["backtest"]["strategy"]["sharpe"], rel=1e-10)
        assert 0 <= at5[rid]["dsr"] <= 1
    large = next(b for b in out["budgets"] if b["budget"] == "l" and b["cost_bps"] == 5.0)
    assert large["sharpe_ci"][0] <= large["sharpe"] <= large["sharpe_ci"][1]
    diff = next(d for d in out["differences"] if d["cost_bps"] == 5.0)
    assert diff["largest"] == "l" and diff["diff"] > 0 and diff["ci"][0] > 0  # planted skill gap
    sharpe_by_cost = [next(b["sharpe"] for b in out["budgets"] if b["budget"] == "l" and b["cost_bps"] == c)
                      for c in (0.0, 5.0, 20.0)]
    assert sharpe_by_cost == sorted(sharpe_by_cost, reverse=True)
    assert set(out["ceiling"]) == {"C", "N"}
