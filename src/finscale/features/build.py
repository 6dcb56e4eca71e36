"""Compute a feature set on a raw frame, and the look-ahead check every feature must pass.

Consumes: the canonical raw frame of ``finscale.data`` (``Date``, OHLCV). Produces: the
processed frame — ``Date``, the set's inputs in order, then ``price_close`` and
``price_high`` (raw Close/High for ``finscale.labels`` only, never model inputs) — with the
set's declared warm-up rows dropped. Guarantees: no input value is NaN/inf in the result;
volume features on data without volume are an error naming the feature.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finscale.features.registry import FEATURES, Bars, feature_names, set_lookback

log = logging.getLogger(__name__)

PRICE_COLUMNS = ("price_close", "price_high")


def _check_volume(bars: Bars, names: list[str], set_name: str) -> None:
    needs = [n for n in names if FEATURES[n].uses_volume]
    if not needs:
        return
    missing = int(np.isnan(bars.volume).sum())
    # Index data comes either without volume (NaN) or with zero reported on every day.
    if missing == len(bars) or not np.any(bars.volume):
        raise ValueError(f"feature set {set_name!r}: feature(s) {', '.join(needs)} need Volume, but "
                         "the data has no volume (all NaN or all zero, e.g. index data); use a set "
                         "without them")
    if missing:
        raise ValueError(f"feature set {set_name!r}: Volume has {missing} missing value(s); "
                         f"feature(s) {', '.join(needs)} need a complete Volume column")


def _first_bad(frame: pd.DataFrame, names: list[str]) -> tuple[str, int] | None:
    for name in names:
        bad = ~np.isfinite(frame[name].to_numpy())
        if bad.any():
            return name, int(np.flatnonzero(bad)[0])
    return None


def build_features(raw: pd.DataFrame, set_name: str) -> tuple[pd.DataFrame, dict]:
    """Compute ``set_name`` on ``raw``; returns (processed frame, info).

    info = {"set", "inputs", "warmup_rows_dropped", "lookback", "rows"}.
    """
    names = feature_names(set_name)
    lookback = set_lookback(set_name)
    if len(raw) <= lookback:
        raise ValueError(f"feature set {set_name!r} needs {lookback} warm-up rows plus at least one "
                         f"more, but the data has only {len(raw)} rows")
    bars = Bars.from_frame(raw)
    _check_volume(bars, names, set_name)
    columns = {"Date": raw["Date"].to_numpy()}
    columns.update({name: FEATURES[name].fn(bars) for name in names})
    columns.update(price_close=bars.close, price_high=bars.high)
    frame = pd.DataFrame(columns).iloc[lookback:].reset_index(drop=True)
    bad = _first_bad(frame, names)
    if bad is not None:
        name, i = bad
        raise ValueError(f"feature {name!r}: non-finite value {frame[name].iloc[i]} on "
                         f"{frame['Date'].iloc[i]} after the {lookback}-row warm-up of set {set_name!r}")
    info = {"set": set_name, "inputs": names, "warmup_rows_dropped": lookback,
            "lookback": lookback, "rows": len(frame)}
    log.info("feature set %s: %d rows, %d inputs, %d warm-up rows dropped",
             set_name, len(frame), len(names), lookback)
    return frame, info


@dataclass(frozen=True)
class Violation:
    """A row whose value changed when later rows were appended (look-ahead)."""

    end: int          # the prefix was rows 0..end
    row: int          # first row <= end whose value differs
    prefix_value: float
    full_value: float


def find_lookahead(fn: Callable[[Bars], np.ndarray], bars: Bars, ends: Iterable[int], *,
                   rtol: float = 1e-9, atol: float = 1e-12) -> list[Violation]:
    """Guard 1 check: compute ``fn`` on rows 0..t and on all rows; values at rows <= t must agree.

    Returns one :class:`Violation` per prefix end t that disagrees (NaN == NaN counts as
    equal; NaN vs a number does not). An empty list means no look-ahead was detected.
    """
    full = np.asarray(fn(bars), dtype=np.float64)
    found = []
    for end in ends:
        head = np.asarray(fn(bars.head(end + 1)), dtype=np.float64)
        same = np.isclose(head, full[:end + 1], rtol=rtol, atol=atol, equal_nan=True)
        if not same.all():
            row = int(np.flatnonzero(~same)[0])
            found.append(Violation(int(end), row, float(head[row]), float(full[row])))
    return found


def leading_nans(values: np.ndarray) -> int:
    """Number of leading non-finite rows (a feature's actual warm-up)."""
    finite = np.isfinite(values)
    return int(np.argmax(finite)) if finite.any() else len(values)
