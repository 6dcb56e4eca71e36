"""Wall time of a study with `finscale run --workers 2` vs the serial run (`--workers 1`), issues 16, 31.

Workload (``FINSCALE_BENCH_WORKERS``): ``default`` (the default study's hpo, final and evaluate
phases), ``reduced`` (the same with ``hpo.trials=3``: both runs short, so they see the same
machine load) or ``smoke``; each configuration in a fresh output directory on the same stored
data, serial first, then workers 2, back to back. Threads (``FINSCALE_BENCH_THREADS``): unset =
the defaults (serial: every core; workers: cores ÷ N each), or a number pinned with
``run.threads`` for both (what makes the metrics identical). Target: workers 2 <= 0.65x the
serial wall on 2 cores. The load average is printed at the start and end of each row, and the
CPU seconds of all processes: on a shared machine the load dominates wall times, while CPU
seconds show the pool's own overhead (worker start-up, data prepared per process).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

TARGET = 0.65
PHASES = ["--phase", "hpo", "--phase", "final", "--phase", "evaluate"]
WORKLOADS = {
    "default": ("default", []),
    "reduced": ("default", ["hpo.trials=3"]),
    "smoke": ("smoke", []),
}


def _cpu_children() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def timed_run(study: str, sets: list[str], out: Path, data: Path, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the run and its workers)."""
    args = [sys.executable, "-m", "finscale", "run", study, *PHASES, "--no-monitor", "--workers", str(workers),
            "--set", f"output_dir={json.dumps(str(out))}", "--data-dir", str(data)]
    for s in sets:
        args += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}   # threads from --workers
    cpu0, t0 = _cpu_children(), time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    elapsed, cpu = time.perf_counter() - t0, _cpu_children() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"finscale run --workers {workers} failed:\n{proc.stderr[-2000:]}")
    return elapsed, cpu


def main() -> None:
    name = os.environ.get("FINSCALE_BENCH_WORKERS", "default")
    study, sets = WORKLOADS[name]
    pinned = os.environ.get("FINSCALE_BENCH_THREADS")
    if pinned:
        sets = [*sets, f"run.threads={int(pinned)}"]
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
            seconds, cpu = timed_run(study, sets, Path(tmp) / f"w{workers}", data, workers)
            rows.append((workers, seconds, cpu, load, os.getloadavg()[0]))
    serial = rows[0][1]
    table = Table(title=f"study {study!r} ({name} workload{', ' + ' '.join(sets) if sets else ''}), "
                        f"{os.cpu_count()} cores; target <= {TARGET}x")
    for col in ("workers", "threads/unit", "wall s", "ratio vs serial", "CPU s", "load avg start/end"):
        table.add_column(col, justify="right")
    for workers, seconds, cpu, load, load_end in rows:
        threads = int(pinned) if pinned else max(1, (os.cpu_count() or 1) // workers)
        table.add_row(str(workers), str(threads), f"{seconds:.1f}", f"{seconds / serial:.2f}x", f"{cpu:.0f}",
                      f"{load:.1f}/{load_end:.1f}")
    console.print(table)
