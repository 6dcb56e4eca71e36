"""Scale-free features of set ``a20_rel``: the a20 information, comparable across decades.

Consumes: :class:`~finscale.features.registry.Bars` and the a20 features of
``indicators.py``. Produces: registered features whose values do not drift with the price
level (S&P 500 rose many-fold over 1993-2025, so raw levels put test-period inputs far
outside the training range). Guarantees: each transform combines causal a20 features with
values at rows <= t only; each feature's ``doc`` states its formula. Oscillators that are
already scale-free (RSI, STOCHRSI, ADX, %B) are reused unchanged by the set.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from finscale.features import indicators as ind
from finscale.features.registry import FEATURES, Bars, register

Z_WINDOW = 20
FLOW_WINDOW = 20
_CHUNK = 1 << 16  # rows per block for windowed statistics (bounds temporary memory)


def _div(num: np.ndarray, den: np.ndarray, zero_value: float) -> np.ndarray:
    """num / den, with ``zero_value`` where den == 0 (NaN stays NaN)."""
    ok = den != 0
    out = np.where(ok, num / np.where(ok, den, 1.0), zero_value)
    return np.where(np.isnan(den) | np.isnan(num), np.nan, out)


def rolling_zscore(values: np.ndarray, window: int) -> np.ndarray:
    """(x_t - mean) / std over the trailing ``window`` rows (population std, two-pass).

    A window whose spread is below 1e-9 of its level (e.g. constant volume, or a run of
    zero volume) has no meaningful z-score; it is defined as 0 (value at the mean).
    """
    out = np.full(len(values), np.nan)
    for lo in range(0, max(len(values) - window + 1, 0), _CHUNK):
        view = sliding_window_view(values[lo:lo + _CHUNK + window - 1], window)
        mean, std = view.mean(axis=1), view.std(axis=1)
        flat = std <= 1e-9 * np.maximum(np.abs(mean), 1.0)
        z = (view[:, -1] - mean) / np.where(flat, 1.0, std)
        out[lo + window - 1:lo + window - 1 + len(z)] = np.where(flat, 0.0, z)
    return out


def _log_vs_prev_close(attr: str):
    def feature(bars: Bars) -> np.ndarray:
        out = np.full(len(bars), np.nan)
        out[1:] = np.log(getattr(bars, attr)[1:] / bars.close[:-1])
        return out
    return feature


def _relative_to_close(base: str, offset: float):
    base_fn = FEATURES[base].fn
    return lambda bars: base_fn(bars) / bars.close - offset


def volume_z20(bars: Bars) -> np.ndarray:
    return rolling_zscore(np.log1p(bars.volume), Z_WINDOW)


def obv_flow_20(bars: Bars) -> np.ndarray:
    """(OBV_t - OBV_{t-20}) / sum(Volume[t-19..t]): the share of the last 20 days' volume
    that traded on up days minus the share on down days; in [-1, 1], 0 when no volume traded.
    """
    signed = np.zeros(len(bars))
    signed[1:] = np.sign(np.diff(bars.close)) * bars.volume[1:]
    signed[:1] = np.nan  # row 0 has no previous close, so no OBV step
    return _div(ind.rolling_sum(signed, FLOW_WINDOW), ind.rolling_sum(bars.volume, FLOW_WINDOW), 0.0)


def adosc_rel(bars: Bars) -> np.ndarray:
    """ADOSC(3, 10) / mean(Volume[t-19..t]): the A/D oscillator in units of a typical day's
    volume; 0 when no volume traded in the window.
    """
    mean_volume = ind.rolling_sum(bars.volume, Z_WINDOW) / Z_WINDOW
    return _div(ind.adosc(bars), mean_volume, 0.0)


def _register_all() -> None:
    for attr in ("open", "high", "low", "close"):
        register(f"ret_{attr}", _log_vs_prev_close(attr), 1,
                 doc=f"log({attr.capitalize()}_t / Close_(t-1)): the day's {attr} relative to the "
                     "previous close.")
    register("volume_z20", volume_z20, Z_WINDOW - 1, uses_volume=True,
             doc="z-score of log(1 + Volume_t) against the trailing 20 rows (t included, "
                 "population std); 0 when the window's spread is negligible.")
    for base in ind.MOVING_AVERAGES:
        register(f"{base}_rel", _relative_to_close(base, 1.0), FEATURES[base].lookback,
                 doc=f"{base} / Close - 1: distance of the moving average from the close.")
    register("macd_rel", _relative_to_close("macd_line", 0.0), FEATURES["macd_line"].lookback,
             doc="macd_line / Close: the MACD line as a fraction of the price.")
    register("obv_flow_20", obv_flow_20, FLOW_WINDOW, bounded=True, uses_volume=True,
             doc=obv_flow_20.__doc__ or "")
    register("adosc_rel", adosc_rel, max(FEATURES["adosc"].lookback, Z_WINDOW - 1),
             uses_volume=True, doc=adosc_rel.__doc__ or "")
    register("atr_rel", _relative_to_close("atr_14", 0.0), FEATURES["atr_14"].lookback,
             doc="atr_14 / Close: average true range as a fraction of the price.")
    register("vwap_20_rel", _relative_to_close("vwap_20", 1.0), FEATURES["vwap_20"].lookback,
             uses_volume=True, doc="vwap_20 / Close - 1: distance of the 20-day VWAP from the close.")


_register_all()
