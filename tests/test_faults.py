"""Fault injection: kill -9 in each phase, concurrent runs, full disk, read-only directories,
database outage, hostile names and values. Every failure must end in one line on stderr
(no traceback), a consistent status.json, and results identical to an undisturbed run."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import postgres_server, run_cli
from finscale.cli.common import resolve_study_path
from finscale.config import ConfigError, config_to_dict, load_study
from finscale.rundir import RunDir, UnitLock
from finscale.runner.export import export_scripts

HOSTILE = 'A"""+__import__("os").system("touch PWNED")+"""B'
DEADLINE_S = 240


def tiny(out: Path, data: Path, *extra: str) -> list[str]:
    return [f"output_dir={json.dumps(str(out))}", f"data.data_dir={json.dumps(str(data))}",
            "seeds=[0]", "target.horizons=[1]", 'model.budgets=["cpu-s"]', "train.max_epochs=3",
            "hpo.trials=3", "hpo.max_epochs=2", "evaluate.bootstrap_resamples=50",
            "run.threads=1", *extra]  # pinned threads: identical floats on any machine


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


PHASES = ["--phase", "hpo", "--phase", "final", "--phase", "evaluate", "--no-monitor"]


def cli_args(out: Path, data: Path, *extra: str) -> list[str]:
    return ["run", "smoke", *PHASES, *sets(tiny(out, data, *extra))]


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, no traceback, one ``error:`` line that contains every needle."""
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def wait_until(condition, proc: subprocess.Popen, what: str):
    """Poll for a state of a running process (never a fixed sleep); fail if it ended first."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        assert proc.poll() is None, f"the process ended (rc {proc.returncode}) before {what}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill9(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the process was no longer running when it was to be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "finscale", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data):
    """An undisturbed run of the tiny study: HPO (3 trials), one final run, evaluation."""
    out = tmp_path_factory.mktemp("reference")
    r = run_cli(*cli_args(out, shared_data))
    assert r.returncode == 0, r.stderr
    return results(out)


def results(out: Path) -> dict:
    study = out / "smoke"
    best = json.loads((study / "hpo" / "cpu-s-h1" / "best_params.json").read_text())
    (final,) = sorted((study / "final").iterdir())
    run = RunDir(final)
    epochs = [m for m in run.read_metrics() if m["event"] == "epoch"]
    return {"best_params": best["params"], "best_value": best["value"], "run_id": final.name,
            "epochs": [(m["epoch"], m["val_log_loss"]) for m in epochs], "state": run.state,
            "test": json.loads((final / "eval.json").read_text())["test"]["metrics"]}


# --------------------------------------------------------------------------- kill -9

@pytest.mark.slow
def test_kill9_in_every_phase_gives_identical_results(tmp_path, shared_data, reference):
    """SIGKILL mid-HPO-trial, mid-final-run and during evaluation; the reruns end exactly
    where the undisturbed run did: same best parameters, epochs, test metrics."""
    out = tmp_path / "killed"
    study = out / "smoke"
    mid_trial = lambda: list(study.glob("hpo/cpu-s-h1/trials/t0001-*/ckpt/step-*.pt"))  # noqa: E731
    mid_final = lambda: list(study.glob("final/*/ckpt/step-*.pt"))  # noqa: E731

    proc = start(cli_args(out, shared_data))
    wait_until(mid_trial, proc, "trial 1 of HPO checkpointed its first epoch")
    kill9(proc)

    proc = start(cli_args(out, shared_data))
    wait_until(mid_final, proc, "the final run checkpointed an epoch")
    kill9(proc)

    proc = start(cli_args(out, shared_data))
    lines = []
    wait_until(lambda: lines.append(proc.stdout.readline()) or "== evaluate" in lines[-1], proc,
               "the evaluate phase began")
    kill9(proc)

    again = run_cli(*cli_args(out, shared_data))
    assert again.returncode == 0, again.stderr
    assert results(out) == reference


# --------------------------------------------------------------------------- concurrency

@pytest.mark.slow
def test_two_concurrent_runs_train_each_unit_once(tmp_path, shared_data):
    args = cli_args(tmp_path, shared_data, "seeds=[0, 1]", "hpo.trials=2", "hpo.max_epochs=1")
    procs = [start(args) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trained = [int(o.split("final runs trained: ")[1].split(",")[0]) for o in outs]
    assert sum(trained) == 2, outs  # two final runs, each trained by exactly one process
    for run_dir in (tmp_path / "smoke" / "final").iterdir():
        epochs = [m["epoch"] for m in RunDir(run_dir).read_metrics() if m["event"] == "epoch"]
        assert epochs == sorted(set(epochs)) == list(range(1, len(epochs) + 1)), run_dir
        assert RunDir(run_dir).state == "done"
    trials = list((tmp_path / "smoke" / "hpo" / "cpu-s-h1" / "trials").iterdir())
    assert len(trials) == 2  # the cell's two trials, not four


def test_unit_lock_is_exclusive_across_processes_and_released_by_death(tmp_path):
    lock = UnitLock(tmp_path / "unit").acquire()
    code = ("import sys; from finscale.rundir import UnitLock; "
            f"sys.exit(0 if UnitLock({str(tmp_path / 'unit')!r}).try_acquire() else 7)")
    held = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert held.returncode == 7
    lock.release()
    holder = subprocess.Popen([sys.executable, "-c", code.replace("sys.exit(", "print(") +
                               "; sys.stdout.flush(); import time; time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "0"  # the child holds the lock now
    assert not UnitLock(tmp_path / "unit").try_acquire()
    kill9(holder)
    assert UnitLock(tmp_path / "unit").try_acquire()  # kill -9 leaves no stale lock


# --------------------------------------------------------------------------- disk and permissions

@contextlib.contextmanager
def small_filesystem(path: Path, size_kb: int):
    """A real tiny filesystem (tmpfs; needs root) at ``path``; else ``path`` with a file-size
    limit (RLIMIT_FSIZE) applied to the child process. Yields the child's preexec_fn."""
    path.mkdir(parents=True)
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
        capture_output=True).returncode == 0
    if mounted:
        try:
            yield None
        finally:
            subprocess.run(["umount", "-l", str(path)], check=True)
        return

    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (size_kb * 1024, size_kb * 1024))
    yield limit


@contextlib.contextmanager
def read_only(path: Path):
    """Make ``path`` read-only for real: a read-only bind mount as root, chmod otherwise."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", "-l", str(path)], check=True)
        return
    modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~0o222)
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def run_child(args: list[str], preexec) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finscale", *args], capture_output=True,
                          text=True, timeout=300, preexec_fn=preexec)


@pytest.mark.slow
def test_full_disk_is_one_line_error_and_status_is_not_left_running(tmp_path, shared_data):
    out = tmp_path / "out"
    with small_filesystem(out, 96) as preexec:
        r = run_child(["run", "smoke", "--phase", "final", "--no-monitor",
                       *sets(tiny(out, shared_data))], preexec)
        line = assert_one_line_error(r)
        assert str(out) in line
        assert any(cause in line.lower() for cause in ("no space left", "too large", "write failed"))
        states = [RunDir(d).state for d in (out / "smoke" / "final").iterdir()]
        assert states and "running" not in states, states


def fill(directory: Path) -> None:
    """Write zeros into ``directory`` until its filesystem is full."""
    with open(directory / "filler", "wb") as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()


@pytest.mark.slow
def test_full_disk_under_the_hpo_storage_is_one_line_error(tmp_path, shared_data):
    from finscale.hpo.storage import open_storage, resolve_storage
    from finscale.hpo.study import open_study

    db_dir = tmp_path / "db"
    with small_filesystem(db_dir, 2048) as preexec:
        if preexec is not None:
            pytest.skip("needs a real small filesystem (root, to mount a tmpfs)")
        url = f"sqlite:///{db_dir / 'optuna.db'}"
        overrides = tiny(tmp_path / "out", shared_data, f"hpo.storage={json.dumps(url)}")
        cfg = load_study(resolve_study_path("smoke"), overrides)
        open_study(cfg, "cpu-s", 1, open_storage(resolve_storage(url, cfg.study_dir)))
        fill(db_dir)
        r = run_child(["run", "smoke", "--phase", "hpo", "--no-monitor", *sets(overrides)], None)
        assert_one_line_error(r, "optuna.db", "full")


@pytest.mark.slow
def test_read_only_run_directory_is_one_line_error_and_keeps_status(tmp_path, shared_data):
    overrides = tiny(tmp_path, shared_data)
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "STOP").touch()  # leaves a checkpointed, stopped final run
    r = run_cli("run", "smoke", "--phase", "final", "--no-monitor", *sets(overrides))
    assert r.returncode == 3, r.stderr
    (tmp_path / "smoke" / "STOP").unlink()
    (run_dir,) = (tmp_path / "smoke" / "final").iterdir()
    assert RunDir(run_dir).state == "stopped"
    with read_only(tmp_path / "smoke" / "final"):
        r = run_cli("run", "smoke", "--phase", "final", "--no-monitor", *sets(overrides))
        line = assert_one_line_error(r, str(run_dir))
        assert "read-only" in line.lower() or "permission denied" in line.lower()
    assert RunDir(run_dir).state == "stopped"


# --------------------------------------------------------------------------- PostgreSQL outage

@pytest.fixture
def pg_outage():
    """A throwaway server this test may stop: (url, stop())."""
    with postgres_server() as server:
        yield server


@pytest.mark.slow
def test_postgresql_outage_mid_hpo_is_one_line_error(tmp_path, shared_data, pg_outage):
    url, stop_server = pg_outage
    args = ["hpo", "smoke", "--budget", "cpu-s", "--horizon", "1", "--storage", url,
            *sets(tiny(tmp_path, shared_data, "hpo.max_epochs=3"))]
    proc = subprocess.Popen([sys.executable, "-m", "finscale", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_until(lambda: list(tmp_path.glob("smoke/hpo/cpu-s-h1/trials/t0000-*/ckpt/step-*.pt")),
               proc, "the first trial checkpointed an epoch")
    stop_server()
    out, err = proc.communicate(timeout=300)
    assert_one_line_error(subprocess.CompletedProcess(args, proc.returncode, out, err),
                          "HPO storage postgresql")


# --------------------------------------------------------------------------- signals

@pytest.mark.slow
def test_sigterm_during_an_hpo_trial_logs_no_traceback(tmp_path, shared_data):
    proc = subprocess.Popen([sys.executable, "-m", "finscale", "run", "smoke", "--phase", "hpo",
                             "--no-monitor", *sets(tiny(tmp_path, shared_data, "hpo.max_epochs=4"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: list(tmp_path.glob("smoke/hpo/cpu-s-h1/trials/t0000-*/ckpt/step-*.pt")),
               proc, "the first trial checkpointed an epoch")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, (out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert "signal SIGTERM" in out and "resume with" in out


# --------------------------------------------------------------------------- hostile input

@pytest.mark.parametrize("key,value", [
    ("name", HOSTILE), ("name", ".."), ("name", "."), ("name", "a/b"), ("name", ""),
    ("data.name", "../x"), ("model.budgets", ["../../etc"]), ("model.budgets", ["cpu-s", "a b"]),
])
def test_hostile_names_are_rejected_when_the_study_loads(key, value):
    with pytest.raises(ConfigError, match=rf"{key.split('.')[-1]}.*not a valid name"):
        load_study(resolve_study_path("smoke"), [f"{key}={json.dumps(value)}"])


def test_hostile_name_on_the_command_line_writes_nothing(tmp_path):
    r = run_cli("run", "smoke", "--set", f"name={json.dumps(HOSTILE)}",
                "--set", f"output_dir={json.dumps(str(tmp_path / 'out'))}",
                "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert_one_line_error(r, "name", "not a valid name")
    assert list(tmp_path.iterdir()) == []  # no study dir, no data dir, no PWNED


def test_exported_scripts_carry_hostile_values_as_data(tmp_path, shared_data):
    """The exporter itself, given hostile text in the study name (bypassing the config check)
    and in free-text fields: the script runs no injected code and embeds the values intact."""
    cfg = load_study(resolve_study_path("smoke"), tiny(
        tmp_path / "runs", shared_data, f"tracking.uri={json.dumps(HOSTILE)}",
        f"monitor.sysfs_root={json.dumps(chr(10).join([HOSTILE, 'null', 'true']))}"))
    cfg = dataclasses.replace(cfg, name=HOSTILE)  # what the exporter must survive anyway
    (script,) = export_scripts(cfg, tmp_path / "appendix")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace = runpy.run_path(str(script), run_name="exported")
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "PWNED").exists()
    assert namespace["STUDY"] == config_to_dict(cfg)
    assert namespace["STUDY"]["name"] == HOSTILE
    assert HOSTILE not in (tmp_path / "appendix" / "run_all.sh").read_text()


def test_exported_config_keeps_true_false_null_inside_strings(tmp_path, shared_data):
    cfg = load_study(resolve_study_path("smoke"), [*tiny(tmp_path / "runs", shared_data),
                                                   'name="nullified_true"'])
    (script,) = export_scripts(cfg, tmp_path / "appendix")
    namespace = runpy.run_path(str(script), run_name="exported")
    assert namespace["STUDY"]["name"] == "nullified_true"
    assert namespace["STUDY"] == config_to_dict(cfg)
    assert namespace["RUN"]["run_id"] == script.stem


# --------------------------------------------------------------------------- CLI errors

@pytest.mark.parametrize("override,key", [
    ('splits.val_start="2016-13-01"', "splits.val_start: '2016-13-01' is not an ISO date"),
    ('splits.test_start="2015-01-01"', "splits.test_start: 2015-01-01 is not after splits.val_start"),
    ('splits.test_end="2017-01-01"', "splits.test_end: 2017-01-01 is not after splits.test_start"),
    ("train.lr=0.0", "train.lr: 0.0 is below the minimum"),
    ("hpo.lr=[0.0, 0.01]", "hpo.lr[0]: 0.0 is below the minimum"),
    ("target.horizons=[]", "target.horizons: expected at least one horizon"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_study(resolve_study_path("smoke"), [override])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_unknown_budget_stops_before_anything_is_written(tmp_path):
    r = run_cli("run", "smoke", "--no-monitor", "--set", f"output_dir={json.dumps(str(tmp_path / 'out'))}",
                "--data-dir", str(tmp_path / "data"), "--set", 'model.budgets=["cpu-s", "3X"]')
    assert_one_line_error(r, "budget '3X'")
    assert list(tmp_path.iterdir()) == []


def test_too_few_validation_windows_stop_before_hpo(tmp_path, shared_data):
    r = run_cli(*cli_args(tmp_path, shared_data, 'splits.val_start="2017-05-01"'))
    assert_one_line_error(r, "val region", "min_eval_windows")
    assert not (tmp_path / "smoke" / "hpo").exists() and not (tmp_path / "smoke" / "optuna.db").exists()
