"""Parallel execution (runner.pool, runner.cluster): local workers and Ray tasks give the serial
results, and a worker killed mid-run loses and duplicates nothing."""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli
from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.rundir import LOCK_FILE, RunDir
from finscale.runner.cluster import check_storage
from finscale.runner.pool import PhaseResult
from finscale.runner.study import RunOptions, run_study

PHASES = ("hpo", "final", "evaluate")


def tiny(out: Path, data: Path, *extra: str) -> list[str]:
    """Two budgets, one horizon, one seed; 3 epochs so a worker can be killed between checkpoints.
    One torch thread per unit: CPU results depend on the thread count, not on the worker count."""
    return [f"output_dir={json.dumps(str(out))}", f"data.data_dir={json.dumps(str(data))}",
            "seeds=[0]", "target.horizons=[1]", 'model.budgets=["cpu-s", "cpu-m"]', "train.max_epochs=3",
            "hpo.trials=2", "hpo.max_epochs=1", "evaluate.bootstrap_resamples=50", "run.threads=1", *extra]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def outcome(out: Path) -> dict:
    """Per final run: state, every epoch's validation loss (a duplicate would show), final line,
    test log-loss; per HPO cell: the finished trials' values."""
    runs = {}
    for d in sorted((out / "smoke" / "final").iterdir()):
        lines, run = RunDir(d).read_metrics(), RunDir(d)
        runs[d.name] = {"state": run.state,
                        "epochs": [(m["epoch"], m["val_log_loss"]) for m in lines if m["event"] == "epoch"],
                        "final": [m["val_log_loss"] for m in lines if m["event"] == "final"],
                        "test": run.read_json("eval.json")["test"]["metrics"]}
    trials = {}
    for path in (out / "smoke" / "hpo").glob("*/trials.csv"):
        with open(path) as fh:
            trials[path.parent.name] = [{k: v for k, v in row.items() if k in ("number", "state", "value", "role")
                                         or k.startswith("params_")} for row in csv.DictReader(fh)]
    return {"runs": runs, "trials": trials}


@pytest.fixture(scope="module")
def serial(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("serial")
    r = run_cli("run", "smoke", "--no-monitor", *[a for p in PHASES for a in ("--phase", p)],
                *sets(tiny(out, shared_data)))
    assert r.returncode == 0, r.stderr
    result = outcome(out)
    assert len(result["runs"]) == 2 and len(result["trials"]) == 2
    return result


def kill_unit_holder(out: Path, killed: list, deadline_s: float = 300) -> None:
    """Once a final run has a step checkpoint and is still running, SIGKILL the process that
    holds its lock (a worker, never the driver): polled against a deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for ckpt in (out / "smoke" / "final").glob("*/ckpt/step-*.pt"):
            run = ckpt.parent.parent
            try:
                _host, pid = (run / LOCK_FILE).read_text().split()
                if RunDir(run).state == "running":
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append((run.name, int(pid)))
                    return
            except (OSError, ValueError):
                pass   # lock file being written, or the holder just finished: look again
        time.sleep(0.05)


def assert_same(result: dict, serial: dict) -> None:
    assert result["trials"] == serial["trials"]          # exactly N trials per cell, same values
    assert result["runs"].keys() == serial["runs"].keys()
    for run_id, expected in serial["runs"].items():
        got = result["runs"][run_id]
        assert got["state"] == "done"
        assert got["epochs"] == expected["epochs"]        # no epoch lost or trained twice
        assert got["final"][-1] == expected["final"][-1]
        assert got["test"] == expected["test"]


@pytest.mark.slow
def test_two_workers_match_serial_and_survive_a_killed_worker(tmp_path, shared_data, serial):
    args = [sys.executable, "-m", "finscale", "run", "smoke", "--no-monitor", "--workers", "2",
            *[a for p in PHASES for a in ("--phase", p)], *sets(tiny(tmp_path, shared_data))]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: list = []
    kill_unit_holder(tmp_path, killed)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed and killed[0][1] != proc.pid, "no worker was killed mid-run"
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr[:4000]
    assert "starting a replacement" in stderr or "final runs trained: 2" in stdout
    assert_same(outcome(tmp_path), serial)


@pytest.mark.slow
def test_ray_tasks_match_serial_and_survive_a_killed_worker(tmp_path, shared_data, serial):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        cfg = load_study(resolve_study_path("smoke"), tiny(tmp_path, shared_data, 'run.executor="ray"'))
        killed: list = []
        killer = threading.Thread(target=kill_unit_holder, args=(tmp_path, killed), daemon=True)
        killer.start()
        summary = run_study(cfg, RunOptions(phases=PHASES, monitor=False))
        killer.join()
    finally:
        ray.shutdown()
    assert killed and killed[0][1] != os.getpid(), "no Ray worker was killed mid-run"
    assert sorted(summary.done + summary.skipped) == sorted(serial["runs"]) and not summary.failed
    assert_same(outcome(tmp_path), serial)


def test_local_sqlite_storage_with_remote_ray_workers_is_an_error(tmp_path):
    cfg = load_study(resolve_study_path("smoke"), [f"output_dir={json.dumps(str(tmp_path))}"])
    check_storage(cfg, nodes=1)  # one node: the local file is reachable
    with pytest.raises(ValueError, match=r"local SQLite file.*postgresql://.*journal:"):
        check_storage(cfg, nodes=3)
    shared = load_study(resolve_study_path("smoke"), [f'hpo.storage="journal:{tmp_path}/optuna.journal"'])
    check_storage(shared, nodes=3)


def test_phase_results_merge_without_duplicates():
    result = PhaseResult()
    result.merge({"done": ["a"], "skipped": ["b"], "failed": [], "stopped": None})
    result.merge({"done": ["b"], "skipped": ["a"], "failed": [], "stopped": ["stopped", "signal SIGTERM"]})
    result.finish()
    assert result.done == ["a", "b"] and result.skipped == [] and result.stopped[0] == "stopped"


def test_run_keys_do_not_change_run_ids_or_hpo_studies():
    from finscale.hpo.identity import study_name
    from finscale.runspec import make_spec

    base = load_study(resolve_study_path("smoke"), [])
    other = load_study(resolve_study_path("smoke"), ["run.workers=4", "run.threads=3", 'run.executor="ray"'])
    assert make_spec(base, "cpu-s", 1, 0).run_id == make_spec(other, "cpu-s", 1, 0).run_id
    assert study_name(base, "cpu-s", 1) == study_name(other, "cpu-s", 1)


def test_ray_missing_or_bad_flags_are_one_line_errors(tmp_path):
    r = run_cli("run", "smoke", "--workers", "0", "--set", f"output_dir={json.dumps(str(tmp_path))}")
    assert r.returncode != 0 and "run.workers" in (r.stderr + r.stdout)
