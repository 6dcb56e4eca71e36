"""The final split's periods for plans: dates and windows per region and horizon.

Consumes: the study config and, when stored (or bundled), its data, read-only.
Produces: one :class:`Period` per region (train, val, test) with its first/last date and the
windows per horizon -- exact from the data's own split (``splits.final_split``, the same call
the runs make) when the data can be read, else estimated from the dates with the NYSE
holiday rules (no special closures), saying so.
Guarantees: never fetches (a plan works offline); an evaluation region below guard 4
(``splits.min_eval_windows``) is reported, not raised, so the whole plan still prints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMartinLutherKingJr,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
)

from finscale.config import StudyConfig
from finscale.rundata import window_context

log = logging.getLogger(__name__)

REGIONS = ("train", "val", "test")
# Offline training-period start when neither data.start nor splits.train_start is set.
DEFAULT_HISTORY_YEARS = 25


class NyseCalendar(AbstractHolidayCalendar):
    """NYSE full-day holidays (regular rules only: special closures are not predictable)."""

    rules = [
        Holiday("New Year", month=1, day=1, observance=nearest_workday),
        USMartinLutherKingJr, USPresidentsDay, GoodFriday, USMemorialDay,
        Holiday("Juneteenth", month=6, day=19, start_date="2022-01-01", observance=nearest_workday),
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay, USThanksgivingDay,
        Holiday("Christmas", month=12, day=25, observance=nearest_workday),
    ]


def trading_days(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """Estimated NYSE sessions in ``start..end`` (inclusive)."""
    if end < start:
        return pd.DatetimeIndex([])
    holidays = NyseCalendar().holidays(start, end)
    return pd.bdate_range(start, end, freq="C", holidays=list(holidays))


@dataclass
class Period:
    region: str
    first: str
    last: str
    windows: dict[int, int] = field(default_factory=dict)   # horizon -> windows
    exact: bool = False
    problem: str = ""


def final_periods(cfg: StudyConfig, data_dir=None) -> list[Period]:
    """The final split's regions with windows per horizon (exact when data is readable)."""
    try:
        from finscale.rundata import peek_frame

        frame = peek_frame(cfg, data_dir)
    except (FileNotFoundError, ValueError) as exc:
        log.info("periods: no local data (%s); estimating from dates", exc)
        return estimated_periods(cfg)
    return _exact(cfg, frame)


def _exact(cfg: StudyConfig, frame: pd.DataFrame) -> list[Period]:
    from finscale import labels, splits

    out = {r: Period(r, "", "", exact=True) for r in REGIONS}
    for h in cfg.target.horizons:
        y = labels.make_labels(frame, cfg.target, h)
        try:
            s = splits.final_split(frame["Date"], np.isfinite(y), cfg.splits, window_context(cfg), h)
        except ValueError as exc:  # guard 4 (or bad dates): shown in the plan, not raised
            for p in out.values():
                p.problem = p.problem or str(exc)
            continue
        for row in splits.split_report(s, frame["Date"], y):
            p = out[row["region"]]
            p.windows[h] = row["windows"]
            p.first = min(filter(None, [p.first, row["first_date"]]), default="")
            p.last = max(filter(None, [p.last, row["last_date"]]), default="")
    return list(out.values())


def _bounds(cfg: StudyConfig) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    s, d = cfg.splits, cfg.data
    today = pd.Timestamp.today().normalize()
    end = min(filter(None, [pd.Timestamp(s.test_end) if s.test_end else None,
                            pd.Timestamp(d.end) if d.end else None, today]))
    val = pd.Timestamp(s.val_start) if s.val_start else None
    test = pd.Timestamp(s.test_start) if s.test_start else None
    start = max(filter(None, [pd.Timestamp(s.train_start) if s.train_start else None,
                              pd.Timestamp(d.start) if d.start else None]), default=None)
    if start is None:
        start = (val or end) - pd.DateOffset(years=DEFAULT_HISTORY_YEARS)
    if val is None or test is None:  # fractions of the estimated rows
        days = trading_days(start, end)
        n = len(days)
        test_lo = n - int(round(n * s.test_fraction))
        val_lo = test_lo - int(round(n * s.val_fraction))
        val, test = days[max(val_lo, 0)], days[min(test_lo, n - 1)]
    if s.train_years:
        start = max(start, val - pd.DateOffset(years=s.train_years))
    day = pd.Timedelta(days=1)
    return {"train": (start, val - day), "val": (val, test - day), "test": (test, end)}


def estimated_periods(cfg: StudyConfig) -> list[Period]:
    """Windows = sessions - context_len - horizon + 1 per region (a window's whole span,
    context and labels, lies in its region); train and val also lose the embargo rows."""
    out = []
    for region, (lo, hi) in _bounds(cfg).items():
        days = trading_days(lo, hi)
        embargo = cfg.splits.embargo_days if region != "test" else 0
        counts = {h: max(0, len(days) - embargo - window_context(cfg) - h + 1)
                  for h in cfg.target.horizons}
        p = Period(region, str(lo.date()), str(hi.date()), counts)
        small = [h for h, n in counts.items() if n < cfg.splits.min_eval_windows]
        if region != "train" and small:
            p.problem = (f"{region}: ~{counts[small[0]]} windows at horizon {small[0]}, fewer than "
                         f"splits.min_eval_windows={cfg.splits.min_eval_windows} (guard 4)")
        out.append(p)
    return out
