"""A seeded synthetic OHLCV random walk for tests and benchmarks (no files, no network).

Produces a canonical raw frame (``Date`` + float64 OHLCV) with the awkward cases real data
has: missing weekdays (holidays, hence short weeks and weeks without a Friday) and an
optional run of zero-volume days. Series longer than pandas' nanosecond date range (about
150,000 business days) get second-resolution dates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NS_LIMIT = np.datetime64("2262-01-01")


def random_walk_ohlcv(n_rows: int, seed: int = 0, *, start: str = "1990-01-01",
                      holiday_rate: float = 0.03, zero_volume: tuple[int, int] | None = None) -> pd.DataFrame:
    """``n_rows`` trading days of a geometric random walk; ``zero_volume`` = (first row, length)."""
    rng = np.random.default_rng(seed)
    days = np.datetime64(start, "D") + np.arange(int(n_rows / (1 - holiday_rate) * 1.5) + 20)
    weekdays = days[((days.astype(np.int64) + 3) % 7) < 5]
    keep = rng.random(len(weekdays)) >= holiday_rate
    dates = weekdays[keep][:n_rows]
    if len(dates) < n_rows:  # pragma: no cover - the calendar above is long enough
        raise ValueError(f"calendar too short for {n_rows} rows")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.012, n_rows)))
    prev = np.concatenate([[100.0], close[:-1]])
    open_ = prev * np.exp(rng.normal(0.0, 0.003, n_rows))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.006, n_rows)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.006, n_rows)))
    volume = np.round(rng.lognormal(14.0, 0.4, n_rows))
    if zero_volume is not None:
        first, length = zero_volume
        volume[first:first + length] = 0.0
    unit = "ns" if dates[-1] < NS_LIMIT else "s"
    return pd.DataFrame({"Date": dates.astype(f"datetime64[{unit}]"), "Open": open_, "High": high,
                         "Low": low, "Close": close, "Volume": volume})
