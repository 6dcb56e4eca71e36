"""A `finscale run --executor ray` driver meets real signals (issue 33, item 12): SIGTERM stops
it like a local run (exit 3, checkpointed, a resume hint), and kill -9 of the driver takes the
local Ray cluster it started with it (no Ray agent or worker left running)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finscale.rundir import RunDir

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


def start_driver(out: Path, data: Path) -> subprocess.Popen:
    """A Ray driver training one long final run (cpu-s, one seed): it is still training when
    the test signals it, and a step checkpoint exists once an epoch is done."""
    sets = [f"output_dir={json.dumps(str(out))}", f"data.data_dir={json.dumps(str(data))}", "seeds=[0]",
            'model.budgets=["cpu-s"]', "train.max_epochs=200", "train.patience=200", "run.threads=1"]
    return subprocess.Popen([sys.executable, "-m", "finscale", "run", "smoke", "--phase", "final",
                             "--no-monitor", "--executor", "ray", *[a for s in sets for a in ("--set", s)]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, deadline_s: float = 240) -> Path:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((out / "smoke" / "final").glob("*/ckpt/step-*.pt"))
        if found:
            return found[0].parent.parent
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no step checkpoint in time: {proc.communicate()[1][-3000:]}")


def command(p) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""   # exited meanwhile


def running(p) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.slow
def test_sigterm_stops_a_ray_driver_like_a_local_run(tmp_path, shared_data):
    proc = start_driver(tmp_path, shared_data)
    run = wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 3, err[-3000:]                # was -6 (Ray's handler aborted)
    assert "signal SIGTERM" in out and "resume with" in out, out
    assert "Traceback" not in err and "SIGTERM received" not in err, err[-3000:]
    assert RunDir(run).state == "stopped"


@pytest.mark.slow
def test_kill9_of_a_ray_driver_leaves_no_ray_process(tmp_path, shared_data):
    proc = start_driver(tmp_path, shared_data)
    wait_for_checkpoint(tmp_path, proc)
    # Everything the driver started (GCS, raylet, agents, workers), but not its reaper, which
    # outlives it on purpose: it is what removes the others.
    ray_procs = [p for p in psutil.Process(proc.pid).children(recursive=True)
                 if "finscale.runner.reaper" not in command(p)]
    assert any("raylet" in command(p) for p in ray_procs), [command(p) for p in ray_procs]
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30   # Ray's agents alone linger 60 s (a dead GCS to report to)
    while time.monotonic() < deadline:
        alive = [p for p in ray_procs if running(p)]
        if not alive:
            return
        time.sleep(0.5)
    pytest.fail(f"left running after the driver was killed: {[(p.pid, command(p)[:60]) for p in alive]}")
