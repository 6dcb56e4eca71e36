"""Synthetic markets: parsing, determinism, validity, the martingale null, the planted signal
and the known optimum (data.synthetic, data.synthetic_truth)."""

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from finscale.config import DataConfig, TargetConfig
from finscale.data import DataError, Manifest, ensure_dataset, fetch_dataset, load_raw, parse_source
from finscale.data.synthetic import MAX_LAGS, OVERNIGHT, VOL_PARAMS, generate, parse_synthetic, trading_days
from finscale.data.synthetic_truth import optimal_probabilities, optimal_series, summarize
from finscale.data.validate import validate_ohlcv
from finscale.labels import make_labels


def market(target: str):
    return generate(parse_synthetic(target))


def labels(frame: pd.DataFrame, horizon: int = 1, **target) -> np.ndarray:
    prices = frame.rename(columns={"Close": "price_close", "High": "price_high"})
    return make_labels(prices, TargetConfig(**target), horizon).astype(float)


def log_returns(frame: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(frame["Close"].to_numpy()), prepend=np.nan)


def corr(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1]), int(ok.sum())


# --------------------------------------------------------------------------- source strings

def test_canonical_string_defaults_and_safe_name():
    a = parse_source("synthetic:planted?strength=0.3&seed=1")
    b = parse_source("synthetic:planted?seed=1&strength=.30&days=5000")
    assert str(a) == str(b) == ("synthetic:planted?seed=1&days=5000&start=2000-01-03&vol=gjr"
                                "&strength=0.3&complexity=8&lags=5&linear=0.25")
    assert a.default_name == b.default_name
    assert re.fullmatch(r"synthetic-planted-s1-[0-9a-f]{8}", a.default_name)
    assert str(parse_source("synthetic:null")) == "synthetic:null?seed=0&days=5000&start=2000-01-03&vol=gjr"
    assert parse_source("synthetic:null?seed=2").default_name != parse_source("synthetic:null?seed=3").default_name


@pytest.mark.parametrize("target, message", [
    ("nul?seed=1", r"unknown variant 'nul' \(expected: null, planted, teacher\)"),
    ("null?strength=0.3", r"unknown parameter 'strength' for synthetic:null \(expected: seed, days"),
    ("planted?strenght=0.3", r"unknown parameter 'strenght'"),
    ("null?seed=1&seed=2", r"parameter 'seed' given twice"),
    ("null?seed", r"parameter 'seed' has no value"),
    ("null?seed=-1", r"parameter seed='-1': expected an integer in \[0, "),
    ("null?seed=1.5", r"parameter seed='1.5': expected an integer"),
    ("null?days=50", r"parameter days='50': expected an integer in \[100, 50000\]"),
    ("null?vol=egarch", r"parameter vol='egarch': expected one of garch, gjr, constant"),
    ("null?start=2000-02-30", r"parameter start='2000-02-30': expected an ISO date"),
    ("null?start=../../x", r"parameter start='../../x'"),
    ("planted?strength=nan", r"parameter strength='nan': expected a number in \[0.0, 2.0\]"),
    ("planted?linear=2", r"parameter linear='2'"),
    ("planted?lags=65", r"parameter lags='65'"),
])
def test_bad_parameters_name_the_parameter(target, message):
    with pytest.raises(DataError, match=message):
        parse_source(f"synthetic:{target}")


def test_cli_bad_parameter_is_one_line_and_writes_nothing(cli, tmp_path):
    res = cli("data", "fetch", "synthetic:planted?seed=1&strenght=0.3", "--data-dir", str(tmp_path / "d"))
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "unknown parameter 'strenght'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "raw").exists()


# --------------------------------------------------------------------------- generation

def test_same_seed_same_market_and_seeds_differ():
    spec = parse_synthetic("planted?seed=4&days=300&strength=0.3")
    first = generate(spec).frame.copy()
    generate.cache_clear()
    pd.testing.assert_frame_equal(first, generate(spec).frame)
    other = market("planted?seed=5&days=300&strength=0.3").frame
    assert not np.allclose(first["Close"], other["Close"])


def test_null_is_planted_without_strength_and_strength_keeps_the_shocks():
    null = market("null?seed=6&days=300")
    zero = market("planted?seed=6&days=300&strength=0")
    strong = market("planted?seed=6&days=300&strength=0.5")
    pd.testing.assert_frame_equal(null.frame, zero.frame)
    np.testing.assert_array_equal(null.sigma, strong.sigma)
    assert not np.allclose(null.frame["Close"], strong.frame["Close"])


# 5,000 days: the lag-1 correlation of big-move days has a standard error of about 0.015
# (at 2,000 days, 0.022: a strong planted drift, half the variance, could hide the clustering)
@pytest.mark.parametrize("target", ["null?seed=7&days=5000&vol=garch", "planted?seed=7&days=5000&strength=1"])
def test_bars_pass_the_validator_and_look_like_daily_equity_bars(target):
    frame = market(target).frame
    out = validate_ohlcv(frame, origin=target)
    assert len(out) == 5000
    assert (out["High"] >= out[["Open", "Close"]].max(axis=1)).all()
    assert (out["Low"] <= out[["Open", "Close"]].min(axis=1)).all()
    assert (out["Volume"] > 0).all()
    r = log_returns(out)[1:]
    assert 0.005 < r.std() < 0.03                               # about 1 % a day
    big = np.abs(r) > np.quantile(np.abs(r), 0.9)
    assert np.corrcoef(big[1:], big[:-1])[0, 1] > 0.05          # volatility clusters


def test_calendar_skips_weekends_and_exchange_holidays():
    days = trading_days("2019-01-01", 252)
    assert days[0] == pd.Timestamp("2019-01-02") and days[-1] == pd.Timestamp("2019-12-31")
    assert (days.day_of_week < 5).all()
    for holiday in ("2019-01-21", "2019-04-19", "2019-07-04", "2019-11-28", "2019-12-25"):
        assert pd.Timestamp(holiday) not in days


def test_volatility_follows_the_arch_recursion():
    """The Monte Carlo of the truth module steps the same process arch simulated."""
    m = market("planted?seed=8&days=500&strength=0.5")
    p = VOL_PARAMS["gjr"]
    assert p["gamma"] > 0
    var, z = (100 * m.sigma) ** 2, m.z
    expected = p["omega"] + (p["alpha"] + p["gamma"] * (z[:-1] < 0)) * var[:-1] * z[:-1] ** 2 \
        + p["beta"] * var[:-1]
    np.testing.assert_allclose(var[1:], expected, rtol=1e-10)
    r = log_returns(m.frame)[1:]
    i = np.arange(1, 500) + MAX_LAGS
    np.testing.assert_allclose(r, m.mu[i] + m.sigma[i] * z[i], atol=1e-12)


# --------------------------------------------------------------------------- null and planted

def test_null_is_a_martingale():
    frame = market("null?seed=9&days=20000").frame
    m = market("null?seed=9&days=20000")
    r = log_returns(frame)
    y_dir = labels(frame, kind="direction")
    y_thr = labels(frame, kind="threshold", threshold=0.01, price="high")
    p_thr = optimal_probabilities(m, kind="threshold", threshold=0.01, price="high", horizon=1)
    for lag in range(5):
        past = np.roll(r, lag)
        past[:lag] = np.nan
        for target in (np.roll(r, -1), y_dir, y_thr - p_thr):   # next return; label surprises
            rho, n = corr(past, target)
            assert abs(rho) < 4 / np.sqrt(n), (lag, rho)


def _logistic_skill(frame: pd.DataFrame, lags: int = 5) -> tuple[float, float]:
    """Held-out log-loss of a logistic regression on lagged overnight gaps (the planted
    network's inputs), and of the base rate."""
    r = log_returns(frame)
    vol = pd.Series(r).ewm(alpha=0.06).std().to_numpy()
    gap = np.log(frame["Open"].to_numpy() / frame["Close"].shift(1).to_numpy())
    x = np.column_stack([np.roll(gap, j) / vol for j in range(lags)])
    y = labels(frame, kind="direction")
    rows = np.flatnonzero(np.isfinite(x).all(axis=1) & np.isfinite(y))[lags:]
    train, test = rows[: int(0.7 * len(rows))], rows[int(0.7 * len(rows)):]
    model = LogisticRegression().fit(x[train], y[train])
    base = np.full(len(test), y[train].mean())
    return log_loss(y[test], model.predict_proba(x[test])[:, 1]), log_loss(y[test], base)


def test_planted_signal_is_learnable_and_the_null_is_not():
    model, base = _logistic_skill(market("planted?seed=10&days=5000&strength=0.3&linear=1").frame)
    assert model < base - 0.01
    model, base = _logistic_skill(market("null?seed=10&days=5000").frame)
    assert model > base - 0.002


def test_planted_drift_reads_the_past_overnight_gaps_the_prices_show():
    """mu_t = strength * sigma_t * g(u_{t-3}, u_{t-2}, u_{t-1}) of the standardised gaps
    log(Open / previous Close) / (sigma sqrt(OVERNIGHT)), read from the frame: the signal is a
    function of observed prices (not of latent shocks), so a model can learn it."""
    m = market("planted?seed=13&days=400&vol=constant&strength=0.8&lags=3&linear=0")
    f, i0 = m.frame, m.offset
    sigma = m.sigma[i0:]
    u = np.log(f["Open"].to_numpy()[1:] / f["Close"].to_numpy()[:-1]) / (sigma[1:] * np.sqrt(OVERNIGHT))
    rows = np.arange(4, len(f))                      # frame rows with three observed gaps before
    windows = np.column_stack([u[rows - 1 - lag] for lag in (3, 2, 1)])   # oldest first
    np.testing.assert_allclose(m.mu[i0 + rows], 0.8 * sigma[rows] * m.network(windows),
                               rtol=1e-8, atol=1e-12)
    assert np.std(m.mu[i0:] / sigma) > 0.5


# --------------------------------------------------------------------------- known optimum

@pytest.mark.parametrize("target", ["null?seed=11&days=20000",
                                    "planted?seed=11&days=20000&strength=0.5&linear=0.5"])
def test_optimal_probabilities_are_calibrated(target):
    """Realised labels match the closed-form probabilities, in every probability quintile
    (20,000 days: a High drawn with 30 % too much intraday variance is off by 10 SE)."""
    m = market(target)
    p = optimal_probabilities(m, kind="threshold", threshold=0.005, price="high", horizon=1)
    y = labels(m.frame, kind="threshold", threshold=0.005, price="high")
    ok = np.isfinite(p)
    p, y = p[ok], y[ok]
    edges = np.quantile(p, [0.2, 0.4, 0.6, 0.8])
    for group in range(5):
        sel = np.searchsorted(edges, p) == group
        se = np.sqrt((p[sel] * (1 - p[sel])).sum()) / sel.sum()
        assert abs(y[sel].mean() - p[sel].mean()) < 4 * se, group
    assert log_loss(y, p) < log_loss(y, np.full(len(y), y.mean()))


def test_monte_carlo_agrees_with_the_closed_form_and_longer_horizons_are_calibrated():
    m = market("planted?seed=12&days=1500&strength=0.5")
    kw = {"kind": "threshold", "threshold": 0.01, "price": "high"}
    exact = optimal_probabilities(m, horizon=1, **kw)
    simulated = optimal_probabilities(m, horizon=1, monte_carlo=True, **kw)
    diff = (simulated - exact)[np.isfinite(exact)]
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(len(diff))
    assert np.abs(diff).mean() < 0.03
    p3 = optimal_probabilities(m, horizon=3, **kw)
    y3 = labels(m.frame, horizon=3, **kw)
    assert np.isnan(p3[-3:]).all() and np.isfinite(p3[:-3]).all()
    ok = np.isfinite(p3)
    se = np.sqrt(3 * (p3[ok] * (1 - p3[ok])).mean() / ok.sum())   # overlapping labels
    assert abs(y3[ok].mean() - p3[ok].mean()) < 4 * se


def test_on_the_null_direction_is_a_coin_flip_and_constant_volatility_leaves_only_the_base_rate():
    m = market("null?seed=13&days=300")
    p = optimal_probabilities(m, kind="direction", threshold=0.0, price="close", horizon=1)
    np.testing.assert_allclose(p[:-1], 0.5)
    s = summarize(p)
    assert s["optimal_logloss"] == pytest.approx(np.log(2)) == s["base_rate_logloss"]
    m = market("null?seed=13&days=300&vol=constant")
    np.testing.assert_allclose(m.sigma, 0.011)
    p = optimal_probabilities(m, kind="threshold", threshold=0.01, price="high", horizon=1)
    np.testing.assert_allclose(p[:-1], p[0])
    s = summarize(p)
    assert s["optimal_logloss"] == pytest.approx(s["base_rate_logloss"])


# --------------------------------------------------------------------------- store

def test_fetch_records_parameters_and_optimum_in_the_manifest(data_dir):
    entry = fetch_dataset("synthetic:planted?strength=0.4&seed=2&days=400", data_dir)
    canonical = str(parse_source("synthetic:planted?seed=2&days=400&strength=0.4"))
    assert entry["source"] == canonical
    assert entry["name"] == parse_source(canonical).default_name
    syn = entry["synthetic"]
    assert syn["variant"] == "planted" and syn["params"]["strength"] == 0.4
    assert {(t["kind"], t["horizon"]) for t in syn["truth"]} >= {("threshold", 1), ("threshold", 5)}
    for t in syn["truth"]:
        assert 0 < t["optimal_logloss"] < t["base_rate_logloss"] <= np.log(2) + 1e-9
    frame = load_raw(data_dir, entry["name"])
    assert len(frame) == 400 and frame["Date"].iloc[0] == pd.Timestamp("2000-01-03")
    p = optimal_series(entry["source"], kind="threshold", threshold=0.01, price="high", horizon=5)
    assert (p.index == frame["Date"]).all() and p.iloc[-5:].isna().all()
    assert p.mean() == pytest.approx(syn["truth"][3]["base_rate"])
    # The study may spell the parameters in any order: the stored dataset is reused.
    cfg = DataConfig(source="synthetic:planted?days=400&seed=2&strength=0.4")
    assert ensure_dataset(cfg, data_dir) == (entry["name"], Manifest(data_dir).latest(entry["path"]))
    assert len(Manifest(data_dir).entries()) == 1
