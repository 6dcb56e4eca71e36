"""Run the benchmarks: `python -m benchmarks [TOPIC ...]` (default: every bench_*.py).

Each module prints its own table with targets and ratios against the peer it names,
measured in the same run. Results are indicative on a shared 2-core CPU.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def topics() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)])
                  if m.name.startswith("bench_"))


# Too long for a default run (one study per market seed): run it by name.
ON_REQUEST = ("control", "law")


def main(argv: list[str]) -> int:
    chosen = argv or [t for t in topics() if t not in ON_REQUEST]
    unknown = [t for t in chosen if t not in topics()]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(topics())}")
        return 2
    for topic in chosen:
        print(f"\n=== benchmark: {topic} ===", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.bench_{topic}").main()
        print(f"(benchmark {topic} took {time.perf_counter() - start:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
