"""Feature registry, guard 1 (no look-ahead), TA-Lib agreement, weekly bars, store and CLI."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import talib

import finscale.cli as cli
from finscale.data import fetch_dataset
from finscale.data.sources import load_sample
from finscale.features import (
    FEATURE_SETS,
    FEATURES,
    Bars,
    bounded_columns,
    build_features,
    build_processed,
    ensure_processed,
    find_lookahead,
    get_feature,
    input_columns,
    leading_nans,
    load_processed,
)
from finscale.features.weekly import completed_weeks
from finscale.testing.random_walk import random_walk_ohlcv

N_RANDOM_ENDS = 50


def _ends(raw: pd.DataFrame, seed: int, block_start: str) -> np.ndarray:
    """50 random prefix ends plus 12 consecutive rows (a whole week around a holiday)."""
    rng = np.random.default_rng(seed)
    random = rng.choice(np.arange(5, len(raw)), size=N_RANDOM_ENDS, replace=False)
    first = int(np.searchsorted(raw["Date"].to_numpy(), np.datetime64(block_start)))
    return np.unique(np.concatenate([random, np.arange(first, first + 12)]))


@pytest.fixture(scope="module")
def datasets() -> dict[str, tuple[Bars, np.ndarray]]:
    """name -> (bars, prefix ends): the bundled S&P 500 and a seeded synthetic random walk."""
    sp500 = load_sample("sp500")
    synth = random_walk_ohlcv(3000, seed=7, zero_volume=(1200, 30))
    # 2016-03-25 was Good Friday: a four-day week whose last trading day is a Thursday.
    return {"sp500": (Bars.from_frame(sp500), _ends(sp500, 0, "2016-03-21")),
            "synthetic": (Bars.from_frame(synth), _ends(synth, 1, "2003-01-06"))}


def assert_no_lookahead(fn, bars: Bars, ends: np.ndarray) -> None:
    """Guard 1: values at rows <= t must not change when rows after t are appended."""
    found = find_lookahead(fn, bars, ends)
    assert not found, (f"{len(found)} of {len(ends)} prefixes changed; first: prefix 0..{found[0].end}, "
                       f"row {found[0].row}: {found[0].prefix_value} vs {found[0].full_value}")


# ------------------------------------------------------------------ guard 1: no look-ahead

@pytest.mark.parametrize("name", sorted(FEATURES))
@pytest.mark.parametrize("dataset", ["sp500", "synthetic"])
def test_no_lookahead_for_every_registered_feature(datasets, name, dataset):
    bars, ends = datasets[dataset]
    assert len(ends) >= N_RANDOM_ENDS
    assert_no_lookahead(FEATURES[name].fn, bars, ends)


def negative_shift(bars: Bars) -> np.ndarray:
    """Planted bug: tomorrow's close on today's row."""
    return np.append(bars.close[1:], np.nan)


def left_labelled_weekly_close(bars: Bars) -> np.ndarray:
    """Planted bug: weekly bins labelled by their start and forward-filled (shows W's close early)."""
    dates = pd.DatetimeIndex(bars.day.astype("datetime64[D]").astype("datetime64[ns]"))
    weekly = pd.Series(bars.close, index=dates).resample("W-FRI", label="left", closed="right").last()
    return weekly.reindex(dates, method="ffill").to_numpy()


def left_labelled_weekly_rsi(bars: Bars) -> np.ndarray:
    dates = pd.DatetimeIndex(bars.day.astype("datetime64[D]").astype("datetime64[ns]"))
    weekly = pd.Series(bars.close, index=dates).resample("W-FRI", label="left", closed="right").last()
    return pd.Series(talib.RSI(weekly.to_numpy(), 14), index=weekly.index).reindex(
        dates, method="ffill").to_numpy()


@pytest.mark.parametrize("planted", [negative_shift, left_labelled_weekly_close, left_labelled_weekly_rsi])
@pytest.mark.parametrize("dataset", ["sp500", "synthetic"])
def test_lookahead_check_catches_planted_bugs(datasets, planted, dataset):
    bars, ends = datasets[dataset]
    with pytest.raises(AssertionError, match="prefixes changed"):
        assert_no_lookahead(planted, bars, ends)
    # the leaky weekly variant is caught on many prefix ends, not by luck on one
    assert len(find_lookahead(planted, bars, ends)) >= 10


@pytest.mark.parametrize("dataset", ["sp500", "synthetic"])
def test_declared_lookback_covers_warmup_and_values_are_finite_after_it(datasets, dataset):
    bars, _ = datasets[dataset]
    for name, feature in FEATURES.items():
        values = feature.fn(bars)
        assert values.shape == (len(bars),) and values.dtype == np.float64, name
        warmup = leading_nans(values)
        assert warmup <= feature.lookback, f"{name}: {warmup} NaN rows > declared {feature.lookback}"
        assert np.isfinite(values[feature.lookback:]).all(), f"{name}: NaN/inf after the warm-up"


def test_talib_daily_lookbacks_are_exact(datasets):
    bars, _ = datasets["sp500"]
    for name in ("dema_9", "dema_90", "sma_200", "rsi_daily", "stochrsi_daily", "macd_line", "adosc",
                 "atr_14", "adx_14", "bb_percent_b", "vwap_20", "obv_flow_20", "volume_z20"):
        assert leading_nans(FEATURES[name].fn(bars)) == FEATURES[name].lookback, name


# ------------------------------------------------------------------ a20 agrees with TA-Lib

def _weekly_reference(raw: pd.DataFrame, weekly_fn) -> np.ndarray:
    """Independent pandas version of the completed-week rule: W-FRI bins labelled by their
    Friday; a row sees the last week whose Friday is strictly before the row's date."""
    s = pd.Series(raw["Close"].to_numpy(), index=raw["Date"])
    weekly = s.resample("W-FRI", label="right", closed="right").last().dropna()
    values = weekly_fn(weekly.to_numpy())
    pos = np.searchsorted(weekly.index.to_numpy(), raw["Date"].to_numpy(), side="left") - 1
    return np.where(pos >= 0, values[np.maximum(pos, 0)], np.nan)


def test_a20_equals_direct_talib_calls_on_bundled_data():
    raw = load_sample("sp500")
    o, h, lo, c, v = (raw[k].to_numpy() for k in ("Open", "High", "Low", "Close", "Volume"))
    up, _, dn = talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)
    expected = {
        "Open": o, "High": h, "Low": lo, "Close": c, "Volume": v,
        "dema_9": talib.DEMA(c, 9), "dema_10": talib.DEMA(c, 10), "sma_12": talib.SMA(c, 12),
        "dema_20": talib.DEMA(c, 20), "dema_25": talib.DEMA(c, 25), "sma_50": talib.SMA(c, 50),
        "dema_90": talib.DEMA(c, 90), "sma_100": talib.SMA(c, 100), "sma_200": talib.SMA(c, 200),
        "rsi_daily": talib.RSI(c, 14),
        "rsi_weekly": _weekly_reference(raw, lambda w: talib.RSI(w, 14)),
        "stochrsi_daily": talib.STOCHRSI(c, 14, 5, 3)[0],
        "stochrsi_weekly": _weekly_reference(raw, lambda w: talib.STOCHRSI(w, 14, 5, 3)[0]),
        "macd_line": talib.MACD(c, 12, 26, 9)[0], "obv": talib.OBV(c, v),
        "adosc": talib.ADOSC(h, lo, c, v, 3, 10), "atr_14": talib.ATR(h, lo, c, 14),
        "adx_14": talib.ADX(h, lo, c, 14), "bb_percent_b": (c - dn) / (up - dn),
        "vwap_20": pd.Series(c * v).rolling(20).sum().to_numpy() / pd.Series(v).rolling(20).sum().to_numpy(),
    }
    frame, info = build_features(raw, "a20")
    assert list(expected) == input_columns("a20") and len(expected) == 25
    skip = info["warmup_rows_dropped"]
    for name, values in expected.items():
        np.testing.assert_allclose(frame[name].to_numpy(), values[skip:], rtol=1e-9, err_msg=name)


def test_build_features_frame_layout_and_info():
    raw = load_sample("sp500")
    frame, info = build_features(raw, "a20")
    assert list(frame.columns) == ["Date", *input_columns("a20"), "price_close", "price_high"]
    assert info == {"set": "a20", "inputs": input_columns("a20"), "warmup_rows_dropped": 199,
                    "lookback": 199, "rows": len(raw) - 199}
    assert frame["Date"].iloc[0] == raw["Date"].iloc[199]
    np.testing.assert_array_equal(frame["price_high"], raw["High"].to_numpy()[199:])
    assert np.isfinite(frame[input_columns("a20")].to_numpy()).all()
    assert bounded_columns("a20") == {"rsi_daily", "rsi_weekly", "stochrsi_daily", "stochrsi_weekly", "adx_14"}
    bounded = frame[sorted(bounded_columns("a20"))].to_numpy()
    assert bounded.min() >= 0 and bounded.max() <= 100


def test_a20_rel_is_invariant_to_price_and_volume_scale():
    raw = load_sample("sp500")
    scaled = raw.copy()
    scaled[["Open", "High", "Low", "Close"]] *= 37.0
    scaled["Volume"] *= 1000.0
    base, info = build_features(raw, "a20_rel")
    other, _ = build_features(scaled, "a20_rel")
    assert len(info["inputs"]) == 25
    for name in info["inputs"]:
        np.testing.assert_allclose(other[name], base[name], rtol=1e-6, atol=1e-6, err_msg=name)
    assert bounded_columns("a20_rel") >= {"rsi_daily", "obv_flow_20"}


# ------------------------------------------------------------------ weekly bars

def _frame(dates: list[str]) -> pd.DataFrame:
    close = np.arange(1.0, len(dates) + 1)
    return pd.DataFrame({"Date": pd.to_datetime(dates), "Open": close, "High": close + 0.5,
                         "Low": close - 0.5, "Close": close, "Volume": np.full(len(dates), 10.0)})


def test_weekly_values_visible_only_after_the_week_ends():
    weekly_close = completed_weeks(lambda w: w.close)
    dates = ["2024-03-18", "2024-03-19", "2024-03-20", "2024-03-21", "2024-03-22",  # full week
             "2024-03-25", "2024-03-26", "2024-03-27", "2024-03-28",                # Good Friday closed
             "2024-04-01", "2024-04-02",                                            # week after
             "2024-04-15", "2024-04-16",                                            # a whole week missing
             "2024-04-22", "2024-04-24"]                                            # last week: incomplete
    got = weekly_close(Bars.from_frame(_frame(dates)))
    nan = np.nan
    # closes are 1..15; a row sees the close of the last week that ended before it
    expected = [nan] * 5 + [5.0] * 4 + [9.0] * 2 + [11.0] * 2 + [13.0] * 2
    np.testing.assert_array_equal(got, expected)


def test_last_incomplete_week_is_invisible():
    weekly_close = completed_weeks(lambda w: w.close)
    dates = list(pd.bdate_range("2024-01-01", "2024-01-17").strftime("%Y-%m-%d"))  # ends on a Wednesday
    got = weekly_close(Bars.from_frame(_frame(dates)))
    assert got[-1] == 10.0  # Friday 2024-01-12's close, not Wednesday's 13
    assert 13.0 not in got


def test_weekly_bars_match_pandas_resample(datasets):
    from finscale.features.weekly import weekly_bars
    bars, _ = datasets["synthetic"]
    weeks = weekly_bars(bars)
    dates = pd.DatetimeIndex(bars.day.astype("datetime64[D]").astype("datetime64[ns]"))
    frame = pd.DataFrame({"Open": bars.open, "High": bars.high, "Low": bars.low, "Close": bars.close,
                          "Volume": bars.volume}, index=dates)
    ref = frame.resample("W-FRI", label="right", closed="right").agg(
        {"Open": "first", "High": "max", "Low": "min", "Close": "last", "Volume": "sum"}).dropna()
    np.testing.assert_array_equal(weeks.week_end.astype("datetime64[D]"), ref.index.to_numpy().astype("datetime64[D]"))
    for col in ref.columns:
        np.testing.assert_allclose(getattr(weeks, col.lower()), ref[col].to_numpy(), err_msg=col)


# ------------------------------------------------------------------ volume handling

def test_vwap_with_zero_volume_stretch_falls_back_to_close():
    raw = random_walk_ohlcv(300, seed=3, zero_volume=(100, 40))
    bars = Bars.from_frame(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any divide-by-zero RuntimeWarning fails the test
        vwap = get_feature("vwap_20").fn(bars)
        rel = {n: get_feature(n).fn(bars) for n in ("vwap_20_rel", "obv_flow_20", "adosc_rel", "volume_z20")}
    all_zero = np.arange(100 + 19, 140)  # windows made only of zero-volume rows
    np.testing.assert_array_equal(vwap[all_zero], bars.close[all_zero])
    np.testing.assert_array_equal(rel["obv_flow_20"][all_zero], 0.0)
    np.testing.assert_array_equal(rel["adosc_rel"][all_zero], 0.0)
    t = 110  # partly zero window: the traded rows' weighted mean
    w = slice(t - 19, t + 1)
    assert vwap[t] == pytest.approx((bars.close[w] * bars.volume[w]).sum() / bars.volume[w].sum())
    assert np.isfinite(vwap[19:]).all() and all(np.isfinite(v[20:]).all() for v in rel.values())


def test_volume_features_on_data_without_volume_name_the_feature(monkeypatch):
    raw = load_sample("sp500").assign(Volume=np.nan)
    with pytest.raises(ValueError, match=r"obv.*adosc.*vwap_20.*no volume"):
        build_features(raw, "a20")
    with pytest.raises(ValueError, match="volume_z20"):
        build_features(raw, "a20_rel")
    with pytest.raises(ValueError, match=r"obv.*all zero"):
        build_features(raw.assign(Volume=0.0), "a20")
    prices_only = [n for n in FEATURE_SETS["a20"] if not FEATURES[n].uses_volume]
    monkeypatch.setitem(FEATURE_SETS, "prices_only", prices_only)
    frame, info = build_features(raw, "prices_only")
    assert info["inputs"] == prices_only and np.isfinite(frame[prices_only].to_numpy()).all()


# ------------------------------------------------------------------ errors

def test_unknown_names_list_the_available_ones():
    raw = load_sample("sp500")
    with pytest.raises(ValueError, match=r"unknown feature set 'a21' \(available: a20, a20_rel, returns\)"):
        build_features(raw, "a21")
    with pytest.raises(ValueError, match=r"unknown feature 'rsi_hourly' \(available: .*rsi_daily"):
        get_feature("rsi_hourly")


def test_set_lookback_exceeding_rows_names_both_numbers():
    raw = load_sample("sp500").iloc[:150]
    with pytest.raises(ValueError, match=r"needs 199 warm-up rows.*only 150 rows"):
        build_features(raw, "a20")


def test_features_package_never_imports_labels():
    code = "import sys, finscale.features; sys.exit('finscale.labels' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------ store

@pytest.fixture()
def data_dir(tmp_path):
    fetch_dataset("sample:sp500", tmp_path, name="sp500")
    return tmp_path


def test_build_processed_writes_parquet_and_manifest_entry(data_dir):
    from finscale.data import Manifest
    path, entry = build_processed(data_dir, "sp500", "a20")
    assert path == data_dir / "processed" / "sp500.a20.parquet" and path.exists()
    raw_entry = Manifest(data_dir).latest("raw/sp500.parquet")
    assert entry["inputs"] == [{"path": "raw/sp500.parquet", "sha256": raw_entry["sha256"]}]
    assert entry["features"][5] == {"name": "dema_9", "lookback": 16}
    assert entry["warmup_rows_dropped"] == 199 and entry["finscale_version"]
    assert Manifest(data_dir).latest("processed/sp500.a20.parquet") == entry
    expected, _ = build_features(load_sample("sp500"), "a20")
    pd.testing.assert_frame_equal(load_processed(data_dir, "sp500", "a20"), expected)
    assert not list(path.parent.glob("*.tmp"))


def test_load_processed_missing_changed_and_stale(data_dir):
    with pytest.raises(FileNotFoundError, match="finscale features build --data sp500 --feature-set a20_rel"):
        load_processed(data_dir, "sp500", "a20_rel")
    path, _ = build_processed(data_dir, "sp500", "a20_rel")
    fetch_dataset("sample:nasdaq", data_dir, name="sp500")  # the raw input is replaced
    with pytest.raises(ValueError, match="stale"):
        load_processed(data_dir, "sp500", "a20_rel")
    rebuilt = ensure_processed(data_dir, "sp500", "a20_rel")
    expected, _ = build_features(load_sample("nasdaq"), "a20_rel")
    pd.testing.assert_frame_equal(rebuilt, expected)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="sha256 differs"):
        load_processed(data_dir, "sp500", "a20_rel")


# ------------------------------------------------------------------ CLI

@pytest.fixture()
def run_cli(capsys):
    # in-process: the parser imports only the features command group
    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def test_cli_build_and_describe(data_dir, run_cli):
    code, out, _ = run_cli("features", "build", "--data", "sp500", "--feature-set", "a20", "--data-dir", str(data_dir))
    assert code == 0 and "4,832" in out and (data_dir / "processed" / "sp500.a20.parquet").exists()
    code, out, _ = run_cli("features", "describe", "--data", "sp500", "--feature-set", "a20", "--data-dir",
                           str(data_dir), "--set", "target.price=close")
    assert code == 0
    assert "1999-10-18" in out and "2018-12-31" in out and "stochrsi_weekly" in out
    assert "threshold 0.01 on close" in out
    assert "[dim]" not in out and f"file: {data_dir / 'processed' / 'sp500.a20.parquet'}" in out
    for h, rate in ((1, "0.1385"), (2, "0.2542"), (3, "0.3396"), (5, "0.4595")):
        assert any(line.split("│")[1].strip() == str(h) and rate in line
                   for line in out.splitlines() if line.count("│") > 3), (h, rate)


def test_cli_build_without_data_fetches_the_study_dataset(tmp_path, run_cli):
    code, out, _ = run_cli("features", "build", "--data-dir", str(tmp_path), "--set", "data.source=sample:sp500",
                           "--set", "features.set=a20_rel")
    assert code == 0 and (tmp_path / "raw" / "sp500.parquet").exists()
    assert (tmp_path / "processed" / "sp500.a20_rel.parquet").exists() and "4,832" in out


def test_cli_errors_name_the_problem(data_dir, run_cli):
    code, _, err = run_cli("features", "describe", "--data", "sp500", "--feature-set", "a20_rel",
                           "--data-dir", str(data_dir))
    assert code == 1 and "finscale features build --data sp500 --feature-set a20_rel" in err
    code, _, err = run_cli("features", "build", "--data", "sp500", "--feature-set", "nope", "--data-dir", str(data_dir))
    assert code == 1 and "available: a20, a20_rel" in err
    code, _, err = run_cli("features", "list", "rsi_hourly")
    assert code == 1 and "unknown feature or set 'rsi_hourly'" in err
    code, out, _ = run_cli("features", "list", "a20_rel")
    first_column = {line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")}
    assert code == 0 and "sma_12_rel" in first_column and "sma_12" not in first_column
