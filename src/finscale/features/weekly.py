"""Weekly-bar features that only use COMPLETED weeks.

Consumes: daily :class:`~finscale.features.registry.Bars`. Produces: ``rsi_weekly`` and
``stochrsi_weekly`` (and the helpers to build more weekly features).

Guarantees (guard 1): a week is a W-FRI bin — Saturday..Friday, labelled by the Friday that
closes it (pandas ``resample("W-FRI", label="right", closed="right")``). The value computed
from week W becomes visible on the first trading row dated after W's Friday (normally the
next Monday) and is carried forward until the next week completes. So:
- a short week (holiday Friday) is still only visible after its Friday, never on its last
  trading day: on that day nobody could know that no more trading would happen that week;
- the last, incomplete week of a series is invisible (no row after it exists);
- a calendar week with no trading rows produces no bar, and rows after it keep seeing the
  last completed week.
The common leaky variant — bins labelled by their start and forward-filled — shows a week's
close up to four days early; ``tests/test_features.py`` plants it and shows the check fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from finscale.features.indicators import RSI_PERIOD, STOCHRSI, rsi, stochrsi_k, talib_lookback
from finscale.features.registry import Bars, register

# Calendar-agnostic bound on trading rows per week (7 for data that trades every day), so
# a weekly lookback of k weeks is at most 7 * (k + 1) daily rows including the week it
# waits to become visible.
MAX_ROWS_PER_WEEK = 7


@dataclass(frozen=True)
class WeeklyBars:
    """OHLCV per week (``week_end``: its Friday, days since 1970) and each daily row's week id."""

    group: np.ndarray
    week_end: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def week_end_day(day: np.ndarray) -> np.ndarray:
    """The Friday (days since 1970-01-01) that closes the W-FRI week containing ``day``."""
    weekday = (day + 3) % 7  # Monday = 0; 1970-01-01 was a Thursday
    return day + (4 - weekday) % 7


def weekly_bars(bars: Bars) -> WeeklyBars:
    """Aggregate daily rows into W-FRI weeks: first Open, max High, min Low, last Close, sum Volume."""
    ends_by_row = week_end_day(bars.day)
    new_week = np.empty(len(bars), dtype=bool)
    new_week[:1] = True
    new_week[1:] = ends_by_row[1:] != ends_by_row[:-1]
    starts = np.flatnonzero(new_week)
    if len(starts) == 0:
        empty = np.empty(0)
        return WeeklyBars(np.empty(0, dtype=np.int64), empty, empty, empty, empty, empty, empty)
    last = np.append(starts[1:], len(bars)) - 1
    return WeeklyBars(
        group=np.cumsum(new_week) - 1,
        week_end=ends_by_row[starts],
        open=bars.open[starts],
        high=np.maximum.reduceat(bars.high, starts),
        low=np.minimum.reduceat(bars.low, starts),
        close=bars.close[last],
        volume=np.add.reduceat(bars.volume, starts),
    )


def to_daily(weekly_values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Daily series where each row sees the value of the previous (completed) week."""
    out = np.full(len(group), np.nan)
    previous = group - 1
    seen = previous >= 0
    out[seen] = weekly_values[previous[seen]]
    return out


def completed_weeks(weekly_fn: Callable[[WeeklyBars], np.ndarray]) -> Callable[[Bars], np.ndarray]:
    """Turn a function of weekly bars into a causal daily feature (see module docstring)."""
    def feature(bars: Bars) -> np.ndarray:
        weeks = weekly_bars(bars)
        return to_daily(np.asarray(weekly_fn(weeks), dtype=np.float64), weeks.group)
    return feature


def weekly_lookback(weeks: int) -> int:
    """Daily warm-up rows for a weekly indicator with ``weeks`` leading NaN weeks."""
    return MAX_ROWS_PER_WEEK * (weeks + 1)


register("rsi_weekly", completed_weeks(lambda w: rsi(w.close)),
         weekly_lookback(talib_lookback("RSI", timeperiod=RSI_PERIOD)), bounded=True,
         doc="TA-Lib RSI(14) of weekly closes (W-FRI); visible from the first row after the "
             "week's Friday, carried forward; 0..100.")
register("stochrsi_weekly", completed_weeks(lambda w: stochrsi_k(w.close)),
         weekly_lookback(talib_lookback("STOCHRSI", **STOCHRSI)), bounded=True,
         doc="TA-Lib STOCHRSI(14, 5, 3) %K of weekly closes (W-FRI); visible from the first row "
             "after the week's Friday, carried forward; 0..100.")
