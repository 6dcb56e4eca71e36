"""Targets: hand-computed cases for both price modes, every default horizon, and direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finscale.config import TargetConfig
from finscale.data.sources import load_sample
from finscale.features import build_features
from finscale.labels import future_max, make_labels

nan = np.nan
CLOSE = [100.0, 100.5, 99.0, 101.5, 100.0, 102.0, 101.0, 100.0, 100.2]
HIGH = [100.8, 101.2, 100.2, 101.6, 101.1, 102.5, 101.9, 100.4, 100.9]
# Close * 1.01 = 101, 101.505, 99.99, 102.515, 101, 103.02, 102.01, 101, 101.202

EXPECTED = {
    # y_t = 1 if max(High[t+1..t+h]) >= 1.01 * Close[t]
    ("high", 1): [1, 0, 1, 0, 1, 0, 0, 0, nan],
    ("high", 2): [1, 1, 1, 0, 1, 0, 0, nan, nan],
    ("high", 3): [1, 1, 1, 0, 1, 0, nan, nan, nan],
    ("high", 5): [1, 1, 1, 0, nan, nan, nan, nan, nan],  # t=3: 102.5 < 102.515
    # y_t = 1 if max(Close[t+1..t+h]) >= 1.01 * Close[t]
    ("close", 1): [0, 0, 1, 0, 1, 0, 0, 0, nan],
    ("close", 2): [0, 0, 1, 0, 1, 0, 0, nan, nan],  # t=1: 101.5 < 101.505
    ("close", 3): [1, 0, 1, 0, 1, 0, nan, nan, nan],
    ("close", 5): [1, 1, 1, 0, nan, nan, nan, nan, nan],
    # y_t = 1 if Close[t+h] > Close[t]
    ("direction", 1): [1, 0, 1, 0, 1, 0, 0, 1, nan],
    ("direction", 2): [0, 1, 1, 1, 1, 0, 0, nan, nan],
    ("direction", 3): [1, 0, 1, 0, 0, 0, nan, nan, nan],  # t=4: equal closes are not a rise
    ("direction", 5): [1, 1, 1, 0, nan, nan, nan, nan, nan],
}


def _frame(close=CLOSE, high=HIGH) -> pd.DataFrame:
    return pd.DataFrame({"Date": pd.bdate_range("2024-01-01", periods=len(close)),
                         "price_close": close, "price_high": high})


def _target(mode: str) -> TargetConfig:
    return TargetConfig(kind="direction") if mode == "direction" else TargetConfig(price=mode)


@pytest.mark.parametrize(("mode", "horizon"), list(EXPECTED))
def test_hand_computed_labels(mode, horizon):
    labels = make_labels(_frame(), _target(mode), horizon)
    assert labels.dtype == np.float32 and labels.shape == (len(CLOSE),)
    np.testing.assert_array_equal(labels, np.array(EXPECTED[(mode, horizon)], dtype=np.float32))
    assert np.isnan(labels[-horizon:]).all() and not np.isnan(labels[:-horizon]).any()


def test_threshold_value_is_used():
    frame = _frame()
    loose = make_labels(frame, TargetConfig(threshold=0.0), 1)
    strict = make_labels(frame, TargetConfig(threshold=0.05), 1)
    np.testing.assert_array_equal(loose[:-1], (np.array(HIGH[1:]) >= np.array(CLOSE[:-1])).astype(np.float32))
    assert np.nansum(strict) == 0 and np.isnan(strict[-1])


@pytest.mark.parametrize("horizon", [1, 2, 7, 20])
def test_vectorised_labels_equal_a_plain_loop(horizon):
    rng = np.random.default_rng(horizon)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    high = close * np.exp(np.abs(rng.normal(0, 0.01, 400)))
    frame = _frame(close, high)
    got = make_labels(frame, TargetConfig(threshold=0.02), horizon)
    expected = np.full(400, np.nan, dtype=np.float32)
    for t in range(400 - horizon):
        expected[t] = float(high[t + 1:t + horizon + 1].max() >= close[t] * 1.02)
    np.testing.assert_array_equal(got, expected)


def test_missing_prices_give_missing_labels_never_zero():
    close = list(CLOSE)
    close[4] = nan
    labels = make_labels(_frame(close=close), TargetConfig(price="close"), 2)
    # t=2,3 read Close[4]; t=4 compares against it
    assert np.isnan(labels[[2, 3, 4]]).all() and labels[1] == 0 and labels[5] == 0


def test_horizon_longer_than_series_gives_no_labels():
    assert np.isnan(make_labels(_frame(), TargetConfig(), 9)).all()
    assert np.isnan(future_max(np.arange(3.0), 5)).all()


def test_bad_inputs_raise_value_errors_naming_them():
    with pytest.raises(ValueError, match="horizon: expected an integer >= 1, got 0"):
        make_labels(_frame(), TargetConfig(), 0)
    with pytest.raises(ValueError, match="labels need column 'price_high'"):
        make_labels(_frame().drop(columns="price_high"), TargetConfig(), 1)
    with pytest.raises(ValueError, match="target.kind: 'volatility'"):
        make_labels(_frame(), TargetConfig(kind="volatility"), 1)


def test_base_rates_on_bundled_sp500_match_the_reference_table():
    """phase6a.md: base rates on the bundled sample (full 1999-2018 series), threshold 1%."""
    raw = load_sample("sp500")
    frame = raw.rename(columns={"Close": "price_close", "High": "price_high"})
    reference = {1: (0.218, 0.141), 2: (0.359, 0.258), 3: (0.455, 0.343), 5: (0.571, 0.463)}
    for h, (high_rate, close_rate) in reference.items():
        assert np.nanmean(make_labels(frame, TargetConfig(price="high"), h)) == pytest.approx(high_rate, abs=5e-4)
        assert np.nanmean(make_labels(frame, TargetConfig(price="close"), h)) == pytest.approx(close_rate, abs=5e-4)


def test_labels_on_processed_frame_use_raw_close_not_features():
    raw = load_sample("sp500")
    frame, _ = build_features(raw, "a20_rel")  # inputs hold no price level at all
    labels = make_labels(frame, TargetConfig(kind="direction"), 1)
    close = raw["Close"].to_numpy()[199:]
    np.testing.assert_array_equal(labels[:-1], (close[1:] > close[:-1]).astype(np.float32))
