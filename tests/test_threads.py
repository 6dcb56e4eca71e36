"""The thread policy (docs/performance.md) reaches the processes that train: OpenMP threads
wait passively unless the user says otherwise, and worker processes start with their share
of threads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from finscale.repro import THREAD_ENV_DEFAULTS, apply_thread_env, unit_threads, worker_env

PROBE = ("import json, os, torch; print(json.dumps({'threads': torch.get_num_threads(), "
         "'wait': os.environ.get('OMP_WAIT_POLICY')}))")


def test_defaults_fill_only_what_the_user_left_unset():
    assert THREAD_ENV_DEFAULTS == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {}
    assert apply_thread_env(env) == {"OMP_WAIT_POLICY": "PASSIVE"} and env["OMP_WAIT_POLICY"] == "PASSIVE"
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_thread_env(mine) == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_a_process_started_with_worker_env_runs_the_policy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    out = subprocess.run([sys.executable, "-c", PROBE], env=worker_env(2), capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out) == {"threads": 2, "wait": "PASSIVE"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice travels unchanged
    out = subprocess.run([sys.executable, "-c", PROBE], env=worker_env(1), capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out) == {"threads": 1, "wait": "ACTIVE"}


@pytest.mark.slow  # a two-worker study: ~20 s idle, minutes on a loaded 2-core machine
def test_study_workers_train_with_the_policy_and_their_thread_share(tmp_path, shared_data, monkeypatch):
    """A real `finscale run --workers 2`: each final run's env.json (written in the worker
    process that trained it) records the wait policy and the torch threads it ran with."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    out = tmp_path / "runs"
    sets = [f"output_dir={json.dumps(str(out))}", f"data.data_dir={json.dumps(str(shared_data))}",
            "seeds=[0,1]", 'model.budgets=["cpu-s"]', "train.max_epochs=1", "run.threads=2"]
    args = ["run", "smoke", "--phase", "final", "--no-monitor", "--workers", "2"]
    r = run_cli(*args, *[a for s in sets for a in ("--set", s)])
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(p.read_text())["device"] for p in Path(out).glob("smoke/final/*/env.json")]
    assert len(records) == 2
    for rec in records:
        assert rec["omp_wait_policy"] == "PASSIVE"
        assert rec["torch_threads"] == unit_threads(2, 2) == 2  # pinned: 2 each, not the parent's 1
