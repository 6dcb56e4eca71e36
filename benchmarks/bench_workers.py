"""Wall time of a study with `finscale run --workers 2` vs the serial run (issue 16).

Workload: the default study (all phases but the report) by default, or a reduced one:
``FINSCALE_BENCH_WORKERS=smoke`` runs the smoke study's hpo/final/evaluate phases, each
configuration in a fresh output directory on the same stored data. Serial = one process
with every core (torch's default threads); workers = N processes with cores ÷ N threads each
(the `--workers` default). Target: workers 2 <= 0.75x the serial wall time on 2 cores.
The machine's load average is printed with each row: on a shared machine it dominates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

TARGET = 0.75
WORKLOADS = {
    "default": ("default", ["--phase", "hpo", "--phase", "final", "--phase", "evaluate"]),
    "smoke": ("smoke", ["--phase", "hpo", "--phase", "final", "--phase", "evaluate"]),
}


def timed_run(study: str, phases: list[str], out: Path, data: Path, workers: int) -> float:
    args = [sys.executable, "-m", "finscale", "run", study, *phases, "--no-monitor", "--workers", str(workers),
            "--set", f"output_dir={json.dumps(str(out))}", "--data-dir", str(data)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}   # threads from --workers
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"finscale run --workers {workers} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    name = os.environ.get("FINSCALE_BENCH_WORKERS", "default")
    study, phases = WORKLOADS[name]
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        # data + features once, untimed: both configurations read the same stored artifacts
        subprocess.run([sys.executable, "-m", "finscale", "run", study, "--phase", "data", "--phase", "features",
                        "--set", f"output_dir={json.dumps(str(Path(tmp) / 'prep'))}", "--data-dir", str(data)],
                       check=True, capture_output=True)
        rows = []
        for workers in (1, 2):
            load = os.getloadavg()[0]
            seconds = timed_run(study, phases, Path(tmp) / f"w{workers}", data, workers)
            rows.append((workers, seconds, load))
    serial = rows[0][1]
    table = Table(title=f"study {study!r} ({name} workload), {os.cpu_count()} cores; target <= {TARGET}x")
    for col in ("workers", "threads/unit", "wall s", "ratio vs serial", "load avg at start"):
        table.add_column(col, justify="right")
    for workers, seconds, load in rows:
        threads = max(1, (os.cpu_count() or 1) // workers)
        table.add_row(str(workers), str(threads), f"{seconds:.1f}", f"{seconds / serial:.2f}x", f"{load:.1f}")
    console.print(table)
