"""Faults that used to change results silently (issue 33): a full disk during tuning, an
epoch logged twice after kill -9, NaN/inf config values, stop requests ignored in late phases,
limits found only after training, hostile checkpoints. Each test reproduces the fault for
real (a real tmpfs filled to the brim where the machine allows mounting one, real signals to
real processes, real checkpoints edited on disk) and checks the result is either identical to
an undisturbed run or a one-line error."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from conftest import run_cli
from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.hpo import run_cell
from finscale.hpo.ledger import study_ledger
from finscale.hpo.results import best_params_path, cell_params
from finscale.hpo.storage import open_storage, resolve_storage
from finscale.hpo.study import open_study


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("faults-data")


def hpo_overrides(out: Path, data: Path, *extra: str) -> list[str]:
    """A cell of three one-epoch trials on a few years of the bundled data."""
    return [f"output_dir={json.dumps(str(out))}", f"data.data_dir={json.dumps(str(data))}",
            'model.budgets=["cpu-s"]', "target.horizons=[1]", 'splits.train_start="2012-01-01"',
            "hpo.max_epochs=1", "hpo.batch_size=[256]", "hpo.trials=3", "run.threads=1", *extra]


# --------------------------------------------------------------------------- a disk that fills up

class Disk:
    """A directory whose filesystem can be filled and freed: a real tmpfs when this process
    may mount one (root); else an OSError(ENOSPC) raised at the OS boundary (the checkpoint
    file's ``open``) while "full" — the same error a full disk gives."""

    def __init__(self, path: Path, monkeypatch):
        self.path, self.real = path, False
        path.mkdir(parents=True)
        if os.geteuid() == 0:
            self.real = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)],
                                       capture_output=True).returncode == 0
        self.full = False
        if not self.real:
            import builtins

            from finscale import checkpoint

            real_open = builtins.open

            def open_on_a_disk(file, mode="r", *a, **k):
                if self.full and "w" in mode and str(file).startswith(str(self.path)):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
                return real_open(file, mode, *a, **k)
            monkeypatch.setattr(checkpoint, "open", open_on_a_disk, raising=False)

    def fill(self) -> None:
        self.full = True
        if self.real:
            with open(self.path / "filler", "wb") as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()

    def free(self) -> None:
        self.full = False
        (self.path / "filler").unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.path)], check=True)


@pytest.fixture
def disk(tmp_path, monkeypatch):
    d = Disk(tmp_path / "disk", monkeypatch)
    yield d
    d.unmount()


def test_full_disk_during_a_trial_requeues_it_and_the_cell_ends_tuned(tmp_path, data_dir, disk):
    """The disk fills while trial 1 trains: the command fails; after space is freed the same
    command re-runs trial 1 (never a counted failure) and the cell is tuned on 3 complete
    trials, exactly like an undisturbed search."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # the run directories are on the small disk
    cfg = load_study(resolve_study_path("smoke"), hpo_overrides(disk.path, data_dir,
                                                                f"hpo.storage={json.dumps(storage)}"))
    ref_cfg = load_study(resolve_study_path("smoke"), hpo_overrides(tmp_path / "ref", data_dir))
    reference = run_cell(ref_cfg, "cpu-s", 1)
    started = []

    def fill_at_trial_1(trainer):
        started.append(trainer.run.path)
        if len(started) == 2:
            disk.fill()

    from finscale.hpo.study import WorkerJob, work  # the worker loop, with a trainer hook
    from finscale.rundata import prepare

    store = open_storage(resolve_storage(storage, cfg.study_dir))
    open_study(cfg, "cpu-s", 1, store)
    job = WorkerJob(cfg, "cpu-s", 1, resolve_storage(storage, cfg.study_dir), 3, prepare(cfg))
    with pytest.raises(OSError):
        work(job, on_trainer=fill_at_trial_1)
    disk.free()
    summary = run_cell(cfg, "cpu-s", 1)
    led = study_ledger(optuna_study(cfg, storage))
    assert [t.state for t in led.counted] == [TrialState.COMPLETE] * 3, summary["counts"]
    assert summary["done"] and summary["best_value"] == reference["best_value"]
    assert summary["best_params"] == reference["best_params"]
    assert len(led.replaced) == 1 and led.replaced[0].user_attrs.get("fault")


def optuna_study(cfg, storage):
    return open_study(cfg, "cpu-s", 1, open_storage(resolve_storage(storage, cfg.study_dir)))


def test_cell_searched_without_a_complete_trial_is_an_error_not_defaults(tmp_path, data_dir):
    """The cell's only trial failed for real (it diverged): its final runs must not train
    with untuned study defaults; the error names the cell and its trial states."""
    import optuna

    overrides = hpo_overrides(tmp_path, data_dir, "hpo.trials=1")
    cfg = load_study(resolve_study_path("smoke"), overrides)
    study = optuna_study(cfg, resolve_storage("", cfg.study_dir).url)
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={}, distributions={},
                                        user_attrs={"fail_reason": "fold 0: non-finite training loss"}))
    summary = run_cell(cfg, "cpu-s", 1)
    assert summary["done"] and summary["best_trial"] is None
    assert not best_params_path(cfg, "cpu-s", 1).exists()
    with pytest.raises(ValueError, match=r"cpu-s-h1: no complete trial \(fail 1"):
        cell_params(cfg, "cpu-s", 1)
    r = run_cli("run", "smoke", "--phase", "final", "--no-monitor", *[a for o in overrides for a in ("--set", o)])
    assert r.returncode == 1 and "no complete trial" in r.stderr, r.stderr
    assert not (tmp_path / "smoke" / "final").exists()


# --------------------------------------------------------------------------- an epoch logged twice

KILL_SCRIPT = """
import os, sys, json, signal
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_train import trainer
from finscale.config import TrainConfig
t = trainer(Path(sys.argv[1]), TrainConfig(max_epochs=4, batch_size=32, lr=3e-3, patience=10,
                                            checkpoint_every=int(sys.argv[3])))
if sys.argv[2] != "0":  # a real SIGKILL right after epoch N was logged
    t.callbacks.append(lambda e, line: os.kill(os.getpid(), signal.SIGKILL) if e == int(sys.argv[2]) else None)
final = t.fit()
print(json.dumps([final["val_log_loss"], final["convergence_reason"]]))
"""


def _train_script(tmp_path: Path, where: str, kill_at: int, every: int) -> subprocess.CompletedProcess:
    import sys

    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(tests=os.path.dirname(__file__)))
    return subprocess.run([sys.executable, str(script), str(tmp_path / where), str(kill_at), str(every)],
                          capture_output=True, text=True, timeout=300)


def _epochs(run_dir: Path) -> list[int]:
    from finscale.rundir import RunDir

    return [m["epoch"] for m in RunDir(run_dir).read_metrics() if m["event"] == "epoch"]


def test_kill9_before_the_first_step_checkpoint_logs_each_epoch_once(tmp_path):
    """checkpoint_every=2: epoch 1 is logged, then kill -9 before any step checkpoint. The
    rerun starts over and must not keep the killed attempt's epoch-1 line."""
    straight = _train_script(tmp_path, "straight", 0, 2)
    assert straight.returncode == 0, straight.stderr
    assert _train_script(tmp_path, "killed", 1, 2).returncode == -9
    assert _epochs(tmp_path / "killed" / "run") == [1]
    assert not list((tmp_path / "killed" / "run" / "ckpt").glob("step-*.pt"))
    again = _train_script(tmp_path, "killed", 0, 2)
    assert again.returncode == 0, again.stderr
    assert _epochs(tmp_path / "killed" / "run") == [1, 2, 3, 4]
    assert json.loads(again.stdout) == json.loads(straight.stdout)


def test_unreadable_step_checkpoints_restart_the_run_without_duplicate_epochs(tmp_path):
    straight = _train_script(tmp_path, "straight", 0, 1)
    assert _train_script(tmp_path, "broken", 2, 1).returncode == -9
    for step in (tmp_path / "broken" / "run" / "ckpt").glob("step-*.pt"):
        step.write_bytes(step.read_bytes()[:100])  # truncated on disk: unreadable
    again = _train_script(tmp_path, "broken", 0, 1)
    assert again.returncode == 0, again.stderr
    assert _epochs(tmp_path / "broken" / "run") == [1, 2, 3, 4]
    assert json.loads(again.stdout) == json.loads(straight.stdout)


# --------------------------------------------------------------------------- NaN and inf in the config

@pytest.mark.parametrize("override,key", [
    ("evaluate.cost_bps=nan", "evaluate.cost_bps"), ("train.min_delta=nan", "train.min_delta"),
    ("train.grad_clip=nan", "train.grad_clip"), ("train.lr=nan", "train.lr"),
    ("monitor.interval_s=inf", "monitor.interval_s"), ("splits.val_fraction=nan", "splits.val_fraction"),
    ("train.pos_weight=inf", "train.pos_weight"), ("hpo.lr=[nan, 1e-3]", "hpo.lr[0]"),
    ("hpo.dropout=[0.0, -inf]", "hpo.dropout[1]"), ("target.threshold=-nan", "target.threshold"),
    ('hpo.table={"cpu-s-h1" = {lr = nan}}', "hpo.table.cpu-s-h1.lr"),
    ('hpo.fixed={"cpu-s-h1" = {dropout = inf}}', "hpo.fixed.cpu-s-h1.dropout"),
])
def test_nan_and_inf_are_rejected_naming_the_key(override, key):
    from finscale.config import ConfigError

    with pytest.raises(ConfigError, match="not a finite number") as err:
        load_study(resolve_study_path("smoke"), [override])
    assert key in str(err.value)


def test_nan_in_an_axis_is_rejected_before_anything_runs(tmp_path):
    from finscale.config import ConfigError

    study = tmp_path / "axis.toml"
    study.write_text('name = "axis"\n[axes]\n"train.weight_decay" = [0.001, nan]\n')
    with pytest.raises(ConfigError, match=r"axes.train.weight_decay\[1\]: nan is not a finite number"):
        load_study(study)
    r = run_cli("run", str(study), "--set", f"output_dir={json.dumps(str(tmp_path))}")
    assert r.returncode == 1 and r.stderr.startswith("error:") and "not a finite" in r.stderr
    assert not (tmp_path / "axis").exists()


# --------------------------------------------------------------------------- stops in late phases

def three_budgets(out: Path, data: Path, *extra: str) -> list[str]:
    return [a for o in [f"output_dir={json.dumps(str(out))}", f"data.data_dir={json.dumps(str(data))}",
                        "seeds=[0]", "target.horizons=[1]", 'model.budgets=["cpu-s", "cpu-m", "cpu-l"]',
                        "train.max_epochs=1", "evaluate.bootstrap_resamples=50", "run.threads=1", *extra]
            for a in ("--set", o)]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, data_dir):
    """Three one-epoch final runs, evaluated: (study output dir, {run id: eval.json text})."""
    out = tmp_path_factory.mktemp("evaluated")
    r = run_cli("run", "smoke", "--phase", "final", "--phase", "evaluate", "--no-monitor",
                *three_budgets(out, data_dir))
    assert r.returncode == 0, r.stderr
    return out, {d.name: (d / "eval.json").read_text() for d in (out / "smoke" / "final").iterdir()}


def _copy_study(evaluated, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(evaluated[0], out)
    return out


def _stop_during(out: Path, data: Path, phases: list[str], marker: str, stop, *extra: str):
    """Start ``finscale run`` on ``phases``; when ``marker`` is printed, call ``stop(proc)``;
    return (exit code, output). Polls with a deadline: a stop that is ignored fails the test."""
    from test_faults import start, wait_until

    args = ["run", "smoke", *[a for p in phases for a in ("--phase", p)], "--no-monitor",
            *three_budgets(out, data, *extra)]
    proc = start(args)
    lines: list[str] = []
    wait_until(lambda: lines.append(proc.stdout.readline()) or marker in lines[-1], proc, marker)
    stop(proc)
    try:
        rest, _ = proc.communicate(timeout=90)  # one unit at most, never the whole phase
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the stop request was ignored during {phases}") from None
    return proc.returncode, "".join(lines) + rest


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "STOP"])
def test_stop_request_ends_the_scaling_phase_at_once(tmp_path, data_dir, evaluated, how):
    import signal

    out = _copy_study(evaluated, tmp_path)
    stop_file = out / "smoke" / "STOP"

    def stop(proc):
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            stop_file.touch()
    rc, text = _stop_during(out, data_dir, ["scaling", "report"], "== scaling", stop,
                            "evaluate.scaling_resamples=4000")
    assert rc == 3, text
    assert "Traceback" not in text
    assert f"scaling phase: {'signal SIGTERM' if how == 'SIGTERM' else 'STOP file'}" in text, text
    assert not (out / "smoke" / "report").exists()


@pytest.mark.slow
def test_ctrl_c_during_evaluate_stops_after_the_unit_and_resumes_identically(tmp_path, data_dir, evaluated):
    import signal

    out = _copy_study(evaluated, tmp_path)
    for run_dir in (out / "smoke" / "final").iterdir():
        (run_dir / "eval.json").unlink()
    rc, text = _stop_during(out, data_dir, ["evaluate"], "[evaluate 1/3]",
                            lambda proc: proc.send_signal(signal.SIGINT))
    assert rc == 3 and "Traceback" not in text, text
    left = [d.name for d in (out / "smoke" / "final").iterdir() if not (d / "eval.json").exists()]
    assert left, "every run was evaluated: the Ctrl-C was ignored"
    r = run_cli("run", "smoke", "--phase", "evaluate", "--no-monitor", *three_budgets(out, data_dir))
    assert r.returncode == 0, r.stderr
    again = {d.name: (d / "eval.json").read_text() for d in (out / "smoke" / "final").iterdir()}
    assert again == evaluated[1]


# --------------------------------------------------------------------------- limits before any work

@pytest.mark.parametrize("override,needle", [
    ("seeds=[4294967296]", "seeds[0]: 4294967296 is above the maximum"),
    ("hpo.sampler_seed=4294967296", "sampler_seed: 4294967296 is above the maximum"),
    ("evaluate.bootstrap_resamples=1000000000", "bootstrap_resamples: 1000000000 is above the maximum"),
])
def test_limits_are_checked_when_the_study_loads(tmp_path, override, needle):
    r = run_cli("run", "smoke", "--no-monitor", "--set", f"output_dir={json.dumps(str(tmp_path))}",
                "--set", override)
    assert r.returncode == 1 and needle in r.stderr, r.stderr
    assert not (tmp_path / "smoke").exists()  # nothing trained, nothing written


def test_a_budget_too_big_for_this_machine_stops_before_any_work(tmp_path):
    r = run_cli("run", "smoke", "--no-monitor", "--set", f"output_dir={json.dumps(str(tmp_path))}",
                "--set", 'model.budgets=["cpu-s", "2B"]', "--set", 'model.device="cpu"')
    assert r.returncode == 1, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "2B needs about" in line and "GB to train on cpu" in line and "available" in line, line
    assert not (tmp_path / "smoke").exists()


# --------------------------------------------------------------------------- hostile checkpoints

def _interrupted_trainer(tmp_path: Path):
    """A real run stopped mid-epoch 2 (best.pt from epoch 1, a step checkpoint): (dir, make)."""
    from finscale.checkpoint import step_checkpoints
    from finscale.train import Controls, RunInterrupted
    from test_train import trainer

    calls = {"n": 0}

    def stop_in_epoch_2():
        calls["n"] += 1
        return "test stop" if calls["n"] == 20 else None

    t = trainer(tmp_path)
    t.controls = Controls(should_stop=stop_in_epoch_2)
    with pytest.raises(RunInterrupted):
        t.fit()
    step = step_checkpoints(tmp_path / "run" / "ckpt")[-1][1]  # the newest: what a resume reads
    return tmp_path / "run" / "ckpt", step, lambda: trainer(tmp_path)


def _edit(path: Path, change) -> None:
    import torch

    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _nan_weight(state):
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name].clone().fill_(float("nan"))


TAMPERINGS = {
    "best_truncated": ("best.pt", lambda p: p.write_bytes(p.read_bytes()[:200]), "unreadable"),
    "best_nan_weights": ("best.pt", lambda p: _edit(p, _nan_weight), "NaN or inf"),
    "best_missing_model": ("best.pt", lambda p: _edit(p, lambda s: s.pop("model")), "missing entry 'model'"),
    "best_wrong_shape": ("best.pt", lambda p: _edit(p, lambda s: s["model"].update(
        {k: v[:1] for k, v in list(s["model"].items())[:1]})), "does not fit"),
    "step_nan_weights": ("step", lambda p: _edit(p, _nan_weight), "NaN or inf"),
    "step_missing_optimizer": ("step", lambda p: _edit(p, lambda s: s.pop("optimizer")), "missing entry 'optimizer'"),
    "step_epoch_as_text": ("step", lambda p: _edit(p, lambda s: s["trainer"].update(epoch="1")), "does not fit"),
    "step_model_as_text": ("step", lambda p: _edit(p, lambda s: s.update(model="weights")), "expected dict"),
    "step_symlink_to_text": ("step", lambda p: (p.unlink(), (p.parent / "notes.txt").write_text("hello"),
                                                 p.symlink_to(p.parent / "notes.txt")), "symbolic link"),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampered_checkpoint_of_an_interrupted_run_is_a_failed_run_naming_the_file(tmp_path, name):
    from finscale.rundir import RunDir
    from finscale.train import TrainingFailed

    which, tamper, needle = TAMPERINGS[name]
    ckpt, step, make = _interrupted_trainer(tmp_path)
    target = ckpt / "best.pt" if which == "best.pt" else step
    tamper(target)
    with pytest.raises(TrainingFailed, match=needle) as err:
        make().fit()
    assert str(target) in str(err.value)
    status = RunDir(tmp_path / "run").status()
    assert status["state"] == "failed" and str(target) in status["reason"]


@pytest.mark.slow
def test_nan_weights_in_a_done_runs_best_pt_fail_that_run_and_evaluate_the_others(tmp_path, data_dir, evaluated):
    out = _copy_study(evaluated, tmp_path)
    runs = sorted((out / "smoke" / "final").iterdir())
    for run_dir in runs:
        (run_dir / "eval.json").unlink()
    _edit(runs[0] / "ckpt" / "best.pt", _nan_weight)
    r = run_cli("run", "smoke", "--phase", "evaluate", "--no-monitor", *three_budgets(out, data_dir))
    assert r.returncode == 1 and f"FAILED: {runs[0].name}" in r.stdout, (r.stdout, r.stderr)
    assert "NaN or inf" in r.stderr and str(runs[0] / "ckpt" / "best.pt") in r.stderr
    from finscale.rundir import RunDir

    assert RunDir(runs[0]).state == "failed" and not (runs[0] / "eval.json").exists()
    assert {d.name: (d / "eval.json").read_text() for d in runs[1:]} == \
        {k: v for k, v in evaluated[1].items() if k != runs[0].name}


# --------------------------------------------------------------------------- exported scripts

@pytest.mark.slow
def test_exported_script_of_a_tuned_run_reproduces_it_bit_for_bit_from_an_empty_directory(tmp_path, data_dir):
    """HPO chose parameters; the exported script, run where no runs/ exist, trains the same
    run id with the embedded parameters and writes the same eval.json."""
    import sys

    overrides = [a for o in hpo_overrides(tmp_path / "study", data_dir, "hpo.trials=2", "seeds=[0]",
                                          "train.max_epochs=2", "evaluate.bootstrap_resamples=50")
                 for a in ("--set", o)]
    r = run_cli("run", "smoke", "--phase", "hpo", "--phase", "final", "--phase", "evaluate",
                "--no-monitor", *overrides)
    assert r.returncode == 0, r.stderr
    (run_dir,) = (tmp_path / "study" / "smoke" / "final").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["params"], "the run was not tuned"
    r = run_cli("export", "smoke", "--out", str(tmp_path / "appendix"), *overrides)
    assert r.returncode == 0, r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in ([sys.executable, str(tmp_path / "appendix" / f"{run_dir.name}.py")],
                    ["bash", str(tmp_path / "appendix" / "run_all.sh")]):
        replay = tmp_path / f"replay-{len(command)}"
        out = subprocess.run([*command, "--output-dir", str(replay), "--data-dir", str(data_dir),
                              "--no-monitor"], cwd=empty, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        (again,) = (replay / "smoke" / "final").iterdir()
        assert again.name == run_dir.name
        assert (again / "eval.json").read_text() == (run_dir / "eval.json").read_text()
    assert list(empty.iterdir()) == []


# --------------------------------------------------------------------------- hostile input files

BARS = "Date,Open,High,Low,Close,Volume\n2020-01-02,10,11,9,10.5,100\n2020-01-03,10.5,11.5,10,11,120\n"


@pytest.mark.parametrize("where,text", [
    ("cell", BARS.replace("10.5,11.5", "10.5," + "9" * 10_000_000 + "x")),
    ("date", BARS.replace("2020-01-03", "2020-" + "1" * 1_000_000)),
    ("header", BARS.replace("Volume", "Volume," + "V" * 1_000_000 + ",Close")),
    ("missing", BARS.replace("Volume", "W" * 1_000_000)),
])
def test_error_lines_cut_huge_values_to_about_80_characters(tmp_path, where, text):
    from finscale.data import DataError, fetch_dataset

    path = tmp_path / f"{where}.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        fetch_dataset(f"file:{path}", tmp_path / "data")
    message = str(err.value)
    assert str(path) in message and len(message) < len(str(path)) + 400, message[:500]
    assert "characters" in message  # says the value was cut, and how long it was
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))


def test_an_input_file_past_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from finscale.data import DataError, fetch_dataset, sources

    path = tmp_path / "big.csv"
    with open(path, "wb") as fh:  # a sparse file: 300 MB on paper, nothing on disk
        fh.write(BARS.encode())
        fh.truncate(300 * 10**6)
    monkeypatch.setattr(sources.pd, "read_csv", lambda *a, **k: pytest.fail("the file was read"))
    with pytest.raises(DataError, match=r"big.csv: 300 MB, larger than the 256 MB limit"):
        fetch_dataset(f"file:{path}", tmp_path / "data")


# --------------------------------------------------------------------------- worker processes

@pytest.mark.slow
def test_full_disk_under_two_workers_is_one_line_per_worker_and_one_error(tmp_path, data_dir):
    from test_faults import run_child, small_filesystem

    out = tmp_path / "out"
    with small_filesystem(out, 96) as preexec:
        r = run_child(["run", "smoke", "--phase", "final", "--no-monitor", "--workers", "2",
                       *three_budgets(out, data_dir)], preexec)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    worker_lines = [line for line in r.stderr.splitlines() if line.startswith("ERROR worker")]
    assert len(errors) == 1 and "worker" in errors[0], r.stderr
    assert 1 <= len(worker_lines) <= 2 and all("no space left" in w.lower() or "too large" in w.lower()
                                                for w in worker_lines), r.stderr


@pytest.mark.slow
def test_workers_of_a_killed_parent_checkpoint_and_stop(tmp_path, data_dir):
    import psutil

    from finscale.rundir import RunDir
    from test_faults import kill9, start, wait_until

    args = ["run", "smoke", "--phase", "final", "--no-monitor", "--workers", "2",
            *three_budgets(tmp_path, data_dir, "train.max_epochs=30", "train.patience=30")]
    proc = start(args)
    final = tmp_path / "smoke" / "final"
    wait_until(lambda: len(list(final.glob("*/ckpt/step-*.pt"))) >= 1, proc, "a worker checkpointed an epoch")
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "worker_main" in " ".join(c.cmdline())]
    assert workers
    kill9(proc)
    gone, alive = psutil.wait_procs(workers, timeout=120)
    assert not alive, "workers went on training for a dead parent"
    states = {d.name: RunDir(d).state for d in final.iterdir()}
    assert "running" not in states.values(), states


# --------------------------------------------------------------------------- concurrent schema creation

RACE = """
import sys, time
from pathlib import Path
from finscale.hpo.storage import StorageSpec, open_storage
import optuna
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
storage = open_storage(StorageSpec(f"sqlite:///{sys.argv[1]}"))
optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
"""


@pytest.mark.slow
def test_processes_creating_one_fresh_sqlite_storage_at_once_all_succeed(tmp_path):
    import sys

    for round_ in range(2):
        go, db = tmp_path / f"go{round_}", tmp_path / f"r{round_}" / "optuna.db"
        procs = [subprocess.Popen([sys.executable, "-c", RACE, str(db), str(go)], stderr=subprocess.PIPE,
                                  text=True) for _ in range(6)]
        go.touch()  # all of them start creating the schema at the same moment
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        assert all(rc == 0 for rc, _ in results), [err[-300:] for rc, err in results if rc]


# --------------------------------------------------------------------------- a raw file changed on disk

def test_run_notices_a_raw_file_changed_on_disk(tmp_path):
    import pandas as pd

    data = tmp_path / "data"
    r = run_cli("features", "build", "smoke", "--data", "sp500", "--feature-set", "a20", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    (raw,) = (data / "raw").glob("*.parquet")
    frame = pd.read_parquet(raw)
    frame.loc[frame.index[-1], ["Close", "High"]] *= 1.01  # still valid bars, different data
    frame.to_parquet(raw, index=False)
    r = run_cli("run", "smoke", "--phase", "final", "--no-monitor", "--set", f"output_dir={json.dumps(str(tmp_path))}",
                "--set", f"data.data_dir={json.dumps(str(data))}", "--set", "seeds=[0]", "--set",
                'model.budgets=["cpu-s"]', "--set", "target.horizons=[1]", "--set", "train.max_epochs=1")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert not (tmp_path / "smoke" / "final").exists()  # nothing trained on the old features
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert str(raw) in line and "changed" in line, line


# --------------------------------------------------------------------------- smaller ones

def test_duplicate_budgets_and_negative_min_rows_are_rejected(tmp_path):
    from finscale.config import ConfigError

    with pytest.raises(ConfigError, match="model.budgets: 'cpu-s' is listed twice"):
        load_study(resolve_study_path("smoke"), ['model.budgets=["cpu-s", "cpu-m", "cpu-s"]'])
    r = run_cli("data", "fetch", "sample:sp500", "--min-rows", "-5", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1 and "--min-rows -5: expected an integer >= 1" in r.stderr, r.stderr
    assert not (tmp_path / "d").exists()


def test_hpo_summary_of_a_corrupt_storage_is_one_line(tmp_path):
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "optuna.db").write_bytes(os.urandom(8192))  # not a database
    r = run_cli("hpo", "smoke", "--summary", "--set", f"output_dir={json.dumps(str(tmp_path))}")
    assert r.returncode == 1, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "optuna.db" in line and "not a database" in line, line


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_disk_filling_mid_search_then_freed_gives_the_undisturbed_search(tmp_path, data_dir, monkeypatch, workers):
    """The issue's campaign: runs/ (sqlite storage included) on a small tmpfs that fills while
    trial 1 trains. The command fails in one line; once space is freed the same command ends
    with the undisturbed search's best parameters, every trial complete."""
    from test_faults import assert_one_line_error, start, wait_until

    disk = Disk(tmp_path / "disk", monkeypatch)
    try:
        if not disk.real:
            pytest.skip("needs a real small filesystem (root, to mount a tmpfs)")
        ref = [a for o in hpo_overrides(tmp_path / "ref", data_dir) for a in ("--set", o)]
        args = ["run", "smoke", "--phase", "hpo", "--no-monitor", "--workers", str(workers)]
        assert run_cli(*args, *ref).returncode == 0
        here = [a for o in hpo_overrides(disk.path, data_dir) for a in ("--set", o)]
        proc = start([*args, *here])
        wait_until(lambda: list(disk.path.glob("smoke/hpo/cpu-s-h1/trials/t0001-*")), proc, "trial 1 started")
        disk.fill()
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:  # the fill may land after the last write of the search
            assert_one_line_error(subprocess.CompletedProcess(args, proc.returncode, "", out))
        disk.free()
        again = run_cli(*args, *here)
        assert again.returncode == 0, again.stderr
        best = lambda root: json.loads((root / "smoke" / "hpo" / "cpu-s-h1" / "best_params.json").read_text())  # noqa: E731
        got, want = best(disk.path), best(tmp_path / "ref")
        assert (got["params"], got["value"]) == (want["params"], want["value"])
        assert got["counts"]["complete"] == 3 and got["counts"]["fail"] == 0, got["counts"]
    finally:
        disk.free()
        disk.unmount()
