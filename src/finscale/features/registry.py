"""Feature registry: name -> causal function + declared lookback; feature sets as data.

Consumes: nothing at import; indicator modules call :func:`register` for each feature.
Produces: ``FEATURES`` (name -> :class:`Feature`), ``FEATURE_SETS`` (name -> ordered list of
feature names, the model inputs of that set) and lookups that raise ``ValueError`` listing
the available names. Guarantees: every feature function maps :class:`Bars` (the OHLCV
history) to one float64 value per row, and the value at row t depends on rows 0..t only
(guard 1; checked for every registered feature by ``tests/test_features.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "Bars", "Feature", "FEATURES", "FEATURE_SETS", "register", "get_feature", "feature_names",
    "input_columns", "bounded_columns", "set_lookback",
]

OHLCV = ("Open", "High", "Low", "Close", "Volume")


@dataclass(frozen=True)
class Bars:
    """Daily OHLCV as contiguous float64 arrays; ``day`` is days since 1970-01-01 (int64)."""

    day: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def from_frame(cls, raw: pd.DataFrame) -> Bars:
        """Bars of a raw frame (``Date`` + ``Open High Low Close Volume``); any datetime unit."""
        missing = [c for c in ("Date", *OHLCV) if c not in raw.columns]
        if missing:
            raise ValueError(f"raw frame: missing column(s) {', '.join(missing)} "
                             f"(expected Date, {', '.join(OHLCV)}; found {', '.join(map(str, raw.columns))})")
        day = raw["Date"].to_numpy().astype("datetime64[D]").astype(np.int64)
        cols = [np.ascontiguousarray(raw[c].to_numpy(dtype=np.float64)) for c in OHLCV]
        return cls(day, *cols)

    def __len__(self) -> int:
        return len(self.close)

    def head(self, n: int) -> Bars:
        """The first ``n`` rows (what a feature could have seen on day n-1)."""
        return Bars(*(a[:n] for a in (self.day, self.open, self.high, self.low, self.close,
                                      self.volume)))


@dataclass(frozen=True)
class Feature:
    """One model input: ``fn(bars) -> float64 array`` with ``lookback`` warm-up rows.

    ``lookback`` bounds the leading rows that may be NaN; ``bounded`` marks oscillators with
    a fixed range (exempt from z-scoring); ``uses_volume`` features need a Volume column.
    """

    name: str
    fn: Callable[[Bars], np.ndarray]
    lookback: int
    bounded: bool
    doc: str
    uses_volume: bool = False


FEATURES: dict[str, Feature] = {}

# Feature sets are data: the ordered model inputs. a20 follows the Phase 6A design;
# a20_rel carries the same information expressed relative to Close (see relative.py).
FEATURE_SETS: dict[str, list[str]] = {
    "a20": [
        "Open", "High", "Low", "Close", "Volume",
        "dema_9", "dema_10", "sma_12", "dema_20", "dema_25", "sma_50", "dema_90", "sma_100",
        "sma_200", "rsi_daily", "rsi_weekly", "stochrsi_daily", "stochrsi_weekly", "macd_line",
        "obv", "adosc", "atr_14", "adx_14", "bb_percent_b", "vwap_20",
    ],
    "a20_rel": [
        "ret_open", "ret_high", "ret_low", "ret_close", "volume_z20",
        "dema_9_rel", "dema_10_rel", "sma_12_rel", "dema_20_rel", "dema_25_rel", "sma_50_rel",
        "dema_90_rel", "sma_100_rel", "sma_200_rel", "rsi_daily", "rsi_weekly", "stochrsi_daily",
        "stochrsi_weekly", "macd_rel", "obv_flow_20", "adosc_rel", "atr_rel", "adx_14",
        "bb_percent_b", "vwap_20_rel",
    ],
    # The four price returns of a20_rel alone: calibration markets whose signal lives in the
    # returns (studies/control_law.toml), without 21 inputs a small model must learn to ignore.
    "returns": ["ret_open", "ret_high", "ret_low", "ret_close"],
}


def register(name: str, fn: Callable[[Bars], np.ndarray], lookback: int, *, bounded: bool = False,
             doc: str = "", uses_volume: bool = False) -> Feature:
    """Add a feature to ``FEATURES``; a name can be registered once."""
    if name in FEATURES:
        raise ValueError(f"feature {name!r} is already registered")
    if lookback < 0:
        raise ValueError(f"feature {name!r}: lookback {lookback} must be >= 0")
    feature = Feature(name, fn, int(lookback), bounded, inspect.cleandoc(doc), uses_volume)
    FEATURES[name] = feature
    return feature


def get_feature(name: str) -> Feature:
    if name not in FEATURES:
        raise ValueError(f"unknown feature {name!r} (available: {', '.join(sorted(FEATURES))})")
    return FEATURES[name]


def feature_names(set_name: str) -> list[str]:
    """The ordered feature names of a set; unknown sets or members raise ``ValueError``."""
    if set_name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {set_name!r} "
                         f"(available: {', '.join(sorted(FEATURE_SETS))})")
    names = list(FEATURE_SETS[set_name])
    for name in names:
        get_feature(name)
    return names


def input_columns(set_name: str) -> list[str]:
    """Model input columns of a set, in order (column name = feature name)."""
    return feature_names(set_name)


def bounded_columns(set_name: str) -> set[str]:
    """Inputs of a set with a fixed range (oscillators), exempt from z-scoring."""
    return {n for n in feature_names(set_name) if FEATURES[n].bounded}


def set_lookback(set_name: str) -> int:
    """Warm-up rows a set needs: the largest declared lookback of its features."""
    return max(FEATURES[n].lookback for n in feature_names(set_name))
