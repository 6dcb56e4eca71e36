"""One epoch of shuffled batches: zero-copy WindowDataset vs a naive list-of-copies loader.

Workload (issue 4): batch 256, context 80, 25 inputs, as many rows as the bundled S&P 500
sample. Target: <= 50 ms per epoch. Peer: windows copied into a Python list up front, each
batch stacked from the list (the common hand-written loader), measured in the same run.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from finscale.windows import WindowDataset, epoch_order, iterate_batches

BATCH, CONTEXT, INPUTS, TARGET_MS, REPEATS = 256, 80, 25, 50.0, 7


def bundled_rows() -> int:
    from finscale.data.sources import load_sample

    return len(load_sample("sp500"))


class NaiveLoader:
    """The peer: one copied (L, C) array per window, batches stacked from the list."""

    def __init__(self, values: np.ndarray, labels: np.ndarray, ends: np.ndarray, context_len: int):
        self.windows = [values[t - context_len + 1:t + 1].copy() for t in ends]
        self.labels = [float(labels[t]) for t in ends]

    def batches(self, order: np.ndarray, batch_size: int):
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield (torch.stack([torch.from_numpy(self.windows[j]) for j in idx]),
                   torch.tensor([self.labels[j] for j in idx], dtype=torch.float32))


def _median_ms(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _epoch(batches) -> int:
    total = 0
    for x, _ in batches:
        total += x.shape[0]
    return total


def measure(rows: int) -> dict:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(rows, INPUTS)).astype(np.float32)
    labels = (rng.random(rows) < 0.3).astype(np.float32)
    ends = np.arange(CONTEXT - 1, rows, dtype=np.int64)
    order = epoch_order(len(ends), seed=0, epoch=0)

    t0 = time.perf_counter()
    ds = WindowDataset(values, labels, ends, CONTEXT)
    build_view = 1e3 * (time.perf_counter() - t0)
    t0 = time.perf_counter()
    naive = NaiveLoader(values, labels, ends, CONTEXT)
    build_naive = 1e3 * (time.perf_counter() - t0)
    assert _epoch(iterate_batches(ds, BATCH, order)) == _epoch(naive.batches(order, BATCH)) == len(ends)
    return {
        "rows": rows, "windows": len(ends),
        "view_ms": _median_ms(lambda: _epoch(iterate_batches(ds, BATCH, order))),
        "naive_ms": _median_ms(lambda: _epoch(naive.batches(order, BATCH))),
        "build_view_ms": build_view, "build_naive_ms": build_naive,
        "view_mb": values.nbytes / 2**20,
        "naive_mb": sum(w.nbytes for w in naive.windows) / 2**20,
    }


def main() -> None:
    torch.set_num_threads(1)  # the loader itself is single-threaded; keep runs comparable
    r = measure(bundled_rows())
    table = Table(title=f"one shuffled epoch: {r['windows']} windows of {CONTEXT}x{INPUTS}, "
                        f"batch {BATCH} ({r['rows']} rows, like the bundled S&P 500)")
    for col in ("loader", "epoch ms (median)", "build ms", "resident MB", "vs peer", "target"):
        table.add_column(col)
    ok = "PASS" if r["view_ms"] <= TARGET_MS else "FAIL"
    table.add_row("WindowDataset", f"{r['view_ms']:.1f}", f"{r['build_view_ms']:.2f}",
                  f"{r['view_mb']:.1f}", f"{r['naive_ms'] / r['view_ms']:.1f}x faster",
                  f"<= {TARGET_MS:.0f} ms {ok}")
    table.add_row("peer: list of copies", f"{r['naive_ms']:.1f}", f"{r['build_naive_ms']:.1f}",
                  f"{r['naive_mb']:.1f}", "1.0x", "")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
