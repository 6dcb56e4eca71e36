"""Feature-set building: ``build_features(raw, "a20")`` on the bundled and synthetic data.

Workloads (issue 3): the bundled S&P 500 sample (~5k rows), a synthetic ~8k-row series
(SPY's full history is ~8,100 rows) and a synthetic 1,000,000-row series. Targets for a20:
<= 50 ms for ~8k rows, <= 3 s for 1M rows. ``a20_rel`` is shown for information. Peer: the
bare TA-Lib calls of the a20 indicators on the same arrays (no registry, no weekly bars, no
frame assembly), measured in the same run: the ratio is the cost of everything around them.
"""

from __future__ import annotations

import statistics
import time

import talib
from rich.console import Console
from rich.table import Table

from finscale.data.sources import load_sample
from finscale.features import build_features
from finscale.testing.random_walk import random_walk_ohlcv

# (max rows, seconds) for set a20: ~8k rows (and the smaller bundled sample) and 1M rows.
TARGETS_S = ((8_100, 0.050), (1_000_000, 3.0))


def bare_talib(raw) -> None:
    """The peer: the a20 indicator calls alone, daily only."""
    o, h, lo, c, v = (raw[k].to_numpy() for k in ("Open", "High", "Low", "Close", "Volume"))
    for period in (9, 10, 20, 25, 90):
        talib.DEMA(c, period)
    for period in (12, 50, 100, 200):
        talib.SMA(c, period)
    talib.RSI(c, 14), talib.STOCHRSI(c, 14, 5, 3), talib.MACD(c, 12, 26, 9), talib.OBV(c, v)
    talib.ADOSC(h, lo, c, v, 3, 10), talib.ATR(h, lo, c, 14), talib.ADX(h, lo, c, 14)
    talib.BBANDS(c, 20, 2.0, 2.0), talib.SUM(c * v, 20), talib.SUM(v, 20)


def median_s(fn, repeats: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def target_s(rows: int) -> float:
    return next(seconds for limit, seconds in TARGETS_S if rows <= limit)


def _fmt_ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:,.1f}"


def main() -> None:
    workloads = [("bundled sp500", load_sample("sp500"), 15),
                 ("synthetic ~8k", random_walk_ohlcv(8_000, seed=0), 15),
                 ("synthetic 1M", random_walk_ohlcv(1_000_000, seed=0), 3)]
    table = Table(title="build_features (median of repeats)")
    for col in ("workload", "rows", "set", "ms", "target ms", "ms/target", "bare TA-Lib ms",
                "vs TA-Lib"):
        table.add_column(col, justify="left" if col in ("workload", "set") else "right")
    for label, raw, repeats in workloads:
        peer = median_s(lambda raw=raw: bare_talib(raw), repeats)
        for set_name in ("a20", "a20_rel"):
            measured = median_s(lambda raw=raw, s=set_name: build_features(raw, s), repeats)
            target = target_s(len(raw)) if set_name == "a20" else None
            verdict = "—" if target is None else f"{measured / target:.2f}" + (" ok" if measured <= target
                                                                             else " MISSED")
            table.add_row(label, f"{len(raw):,}", set_name, _fmt_ms(measured), _fmt_ms(target), verdict,
                          _fmt_ms(peer), f"{measured / peer:.1f}x")
    Console(highlight=False, width=120).print(table)
    print("targets apply to a20; peer = the bare daily TA-Lib calls of a20 on the same arrays")


if __name__ == "__main__":
    main()
