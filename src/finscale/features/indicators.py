"""Daily indicator features of set ``a20`` (TA-Lib), plus the raw OHLCV columns.

Consumes: :class:`~finscale.features.registry.Bars`. Produces: registered features, each a
float64 array aligned with the bars. Guarantees: every TA-Lib function used here is a
forward recursion or a trailing window, so row t depends on rows 0..t only; declared
lookbacks are TA-Lib's own (``talib.abstract.Function(...).lookback``), i.e. exactly the
leading NaN rows TA-Lib produces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import talib
from numpy.lib.stride_tricks import sliding_window_view
from talib import abstract

from finscale.features.registry import OHLCV, Bars, register

# Indicator parameters in one place: the weekly variants (weekly.py) reuse them.
RSI_PERIOD = 14
STOCHRSI: dict[str, Any] = {"timeperiod": 14, "fastk_period": 5, "fastd_period": 3, "fastd_matype": 0}
MACD = {"fastperiod": 12, "slowperiod": 26, "signalperiod": 9}
ADOSC = {"fastperiod": 3, "slowperiod": 10}
BBANDS: dict[str, Any] = {"timeperiod": 20, "nbdevup": 2.0, "nbdevdn": 2.0, "matype": 0}
VWAP_PERIOD = 20

# name -> (TA-Lib moving average of Close, period)
MOVING_AVERAGES = {
    "dema_9": ("DEMA", 9), "dema_10": ("DEMA", 10), "sma_12": ("SMA", 12),
    "dema_20": ("DEMA", 20), "dema_25": ("DEMA", 25), "sma_50": ("SMA", 50),
    "dema_90": ("DEMA", 90), "sma_100": ("SMA", 100), "sma_200": ("SMA", 200),
}


def talib_lookback(func: str, **params) -> int:
    """Leading NaN rows TA-Lib produces for ``func`` with ``params``."""
    return int(abstract.Function(func, **params).lookback)  # type: ignore[attr-defined]  # talib's stubs omit it


def rolling_sum(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing ``window``-row sums (NaN for the first window-1 rows).

    Each sum is taken over its own window (no running total), so an all-zero window sums
    to exactly 0.0 and results do not depend on how much history precedes the window.
    """
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        out[window - 1:] = sliding_window_view(values, window).sum(axis=1)
    return out


def rsi(close: np.ndarray) -> np.ndarray:
    return talib.RSI(close, timeperiod=RSI_PERIOD)


def stochrsi_k(close: np.ndarray) -> np.ndarray:
    return talib.STOCHRSI(close, **STOCHRSI)[0]


def macd_line(bars: Bars) -> np.ndarray:
    return talib.MACD(bars.close, **MACD)[0]


def atr_14(bars: Bars) -> np.ndarray:
    return talib.ATR(bars.high, bars.low, bars.close, timeperiod=14)


def adosc(bars: Bars) -> np.ndarray:
    return talib.ADOSC(bars.high, bars.low, bars.close, bars.volume, **ADOSC)


def bb_percent_b(bars: Bars) -> np.ndarray:
    """(Close - lower) / (upper - lower) of BBANDS(20, 2, 2); 0.5 when the band has no width.

    A zero-width band means the last 20 closes were equal, so Close sits on the middle band.
    """
    upper, _, lower = talib.BBANDS(bars.close, **BBANDS)
    width = upper - lower
    flat = width <= 1e-12 * np.abs(bars.close)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (bars.close - lower) / width
    return np.where(flat, 0.5, out)


def vwap_20(bars: Bars) -> np.ndarray:
    """sum(Close*Volume) / sum(Volume) over the trailing 20 rows.

    When the 20-row volume is zero the value is undefined; we then use Close (the price
    the stretch traded at), never a division by zero.
    """
    num = rolling_sum(bars.close * bars.volume, VWAP_PERIOD)
    den = rolling_sum(bars.volume, VWAP_PERIOD)
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, num / safe, np.where(np.isnan(den), np.nan, bars.close))


def _column(attr: str):
    return lambda bars: getattr(bars, attr)


def _moving_average(func: str, period: int):
    ta_fn = getattr(talib, func)
    return lambda bars: ta_fn(bars.close, timeperiod=period)


def _register_all() -> None:
    for col in OHLCV:
        register(col, _column(col.lower()), 0, uses_volume=col == "Volume",
                 doc=f"Raw daily {col} as stored (no transform).")
    for name, (func, period) in MOVING_AVERAGES.items():
        register(name, _moving_average(func, period), talib_lookback(func, timeperiod=period),
                 doc=f"TA-Lib {func}(Close, {period}).")
    register("rsi_daily", lambda b: rsi(b.close), talib_lookback("RSI", timeperiod=RSI_PERIOD),
             bounded=True, doc="TA-Lib RSI(Close, 14); 0..100.")
    register("stochrsi_daily", lambda b: stochrsi_k(b.close), talib_lookback("STOCHRSI", **STOCHRSI),
             bounded=True, doc="TA-Lib STOCHRSI(Close, 14, fastk 5, fastd 3), %K output; 0..100.")
    register("macd_line", macd_line, talib_lookback("MACD", **MACD),
             doc="TA-Lib MACD(Close, 12, 26, 9), the MACD line (EMA12 - EMA26).")
    register("obv", lambda b: talib.OBV(b.close, b.volume), talib_lookback("OBV"), uses_volume=True,
             doc="TA-Lib OBV(Close, Volume): cumulative signed volume from the first row.")
    register("adosc", adosc, talib_lookback("ADOSC", **ADOSC), uses_volume=True,
             doc="TA-Lib ADOSC(High, Low, Close, Volume, fast 3, slow 10).")
    register("atr_14", atr_14, talib_lookback("ATR", timeperiod=14),
             doc="TA-Lib ATR(High, Low, Close, 14), in price units.")
    register("adx_14", lambda b: talib.ADX(b.high, b.low, b.close, timeperiod=14),
             talib_lookback("ADX", timeperiod=14), bounded=True,
             doc="TA-Lib ADX(High, Low, Close, 14); 0..100.")
    register("bb_percent_b", bb_percent_b, talib_lookback("BBANDS", **BBANDS), doc=bb_percent_b.__doc__ or "")
    register("vwap_20", vwap_20, VWAP_PERIOD - 1, uses_volume=True, doc=vwap_20.__doc__ or "")


_register_all()
