"""The `finscale` command's conventions: fast --help, global flags anywhere, positional STUDY,
--set KEY=VALUE, --json on every table command, progress output, MLflow fail-fast."""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from conftest import run_cli
from finscale import cli
from finscale.cli.commands import COMMANDS
from finscale.cli.common import fmt
from finscale.cli.progress import ProgressPrinter
from finscale.data import fetch_dataset

HEAVY = ("torch", "pandas", "numpy", "optuna", "sklearn", "scipy", "matplotlib")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli-data")
    fetch_dataset("sample:sp500", d)
    return d


def tiny(out: Path, *extra: str) -> list[str]:
    """Overrides: one cell, one seed, one short epoch on a few years of data."""
    items = [f"output_dir={json.dumps(str(out))}", "seeds=[0]", "target.horizons=[1]",
             'model.budgets=["cpu-s"]', 'splits.train_start="2012-01-01"', "train.max_epochs=1",
             "hpo.max_epochs=1", "hpo.trials=2", "hpo.batch_size=[256]", *extra]
    return [a for o in items for a in ("--set", o)]


def main_json(capsys, *argv: str) -> tuple[int, dict]:
    """Run the command in-process (same parser and handlers) and parse its stdout as JSON."""
    code = cli.main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


# --------------------------------------------------------------------------- start-up

@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_neither_torch_nor_pandas(flag):
    script = (f"import sys\nfrom finscale.cli import main\ntry:\n    main([{flag!r}])\nexcept SystemExit as e:\n"
              f"    code = e.code\nprint('MODULES', sorted(m for m in {HEAVY!r} if m in sys.modules), code)")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "MODULES [] 0" in r.stdout, r.stdout
    if flag == "--help":
        for name, help_text in COMMANDS.items():  # every command listed with its one-line help
            assert name in r.stdout and help_text.split()[0] in r.stdout
    else:
        assert r.stdout.startswith("finscale ")


def test_a_command_imports_only_its_own_module():
    script = ("import sys\nfrom finscale.cli import main\nmain(['config', 'keys', '--json'])\n"
              "print('LOADED', sorted(m for m in sys.modules if m.startswith('finscale.cli.')))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = r.stdout.split("LOADED", 1)[1]
    assert "finscale.cli.config" in loaded and "finscale.cli.run" not in loaded


# --------------------------------------------------------------------------- parser conventions

def _parsers(parser: argparse.ArgumentParser, path: str = "finscale"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_has_help_and_consistent_metavars(command):
    parser = cli.build_parser(command)
    for path, p in _parsers(parser):
        for action in p._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._SubParsersAction):
                assert action.metavar == "COMMAND", path
                continue
            assert action.help, f"{path} {action.option_strings or action.dest}: no help"
            if action.dest == "study":
                assert action.metavar == "STUDY", path
            if action.dest == "overrides":
                assert action.option_strings == ["--set"] and action.metavar == "KEY=VALUE", path
            if action.dest == "data_dir":
                assert action.metavar == "DIR", path


@pytest.mark.parametrize("argv", [
    ["data", "list", "-v", "--debug", "--data-dir", "D"],
    ["-v", "--debug", "--data-dir", "D", "data", "list"],
    ["-v", "data", "--data-dir=D", "list", "--debug"],
])
def test_global_flags_before_or_after_the_command(argv):
    assert cli.find_command(argv) == "data"
    args = cli.build_parser("data").parse_args(argv)
    assert args.verbose is True and args.debug is True and args.data_dir == "D"


def test_global_flags_default_when_absent():
    args = cli.build_parser("status").parse_args(["status", "smoke"])
    assert (args.verbose, args.debug, args.data_dir, args.study) == (False, False, None, "smoke")


def test_verbose_after_the_subcommand_shows_info_logs(tmp_path):
    r = run_cli("data", "fetch", "sample:sp500", "--data-dir", str(tmp_path), "-v")
    assert r.returncode == 0, r.stderr
    assert "INFO finscale" in r.stderr
    quiet = run_cli("data", "fetch", "sample:sp500", "--data-dir", str(tmp_path))
    assert quiet.returncode == 0 and "INFO" not in quiet.stderr


def test_doctor_takes_the_study_positionally_and_the_old_flag_still_works(capsys, data_dir, tmp_path):
    out = json.dumps(str(tmp_path))
    code, doc = main_json(capsys, "doctor", "smoke", "--json", "--data-dir", str(data_dir),
                          "--set", f"output_dir={out}")
    assert doc["study"] == "smoke" and doc["exit_code"] == code
    assert any(c["name"] == "study plan" and "'smoke'" in c["detail"] for c in doc["checks"])
    code = cli.main(["doctor", "--study", "smoke", "--json", "--data-dir", str(data_dir),
                     "--set", f"output_dir={out}"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["study"] == "smoke"
    assert "--study is deprecated" in captured.err


def test_features_set_is_key_value_and_the_feature_set_has_its_own_flag(capsys, data_dir):
    code = cli.main(["features", "describe", "--data", "sp500", "--set", "a20", "--data-dir", str(data_dir)])
    err = capsys.readouterr().err
    assert code == 1 and "--set a20: expected KEY=VALUE" in err and "--feature-set a20" in err


def test_numbers_are_formatted_one_way():
    assert [fmt(6099), fmt(19507), fmt(19507.4), fmt(0.412345), fmt(True), fmt(None)] == \
        ["6,099", "19,507", "19,507", "0.4123", "yes", ""]


def test_cli_and_report_tables_write_a_number_the_same_way():
    import numpy as np

    from finscale.formatting import interval, signed
    from finscale.report.render import fmt_cell

    values = [5000, 5000.0, np.int64(77355), 0.693147, 1234.4, 3.2e12, 0.00042, -0.0, float("nan"), None,
              np.bool_(True), np.float32(0.5), float("inf"), "cpu-s"]
    expected = ["5,000", "5,000", "77,355", "0.6931", "1,234", "3.200e+12", "4.200e-04", "0", "", "",
                "yes", "0.5", "inf", "cpu-s"]
    assert [fmt(v) for v in values] == expected
    assert [fmt_cell(v) for v in values] == expected
    assert [signed(0.01234), signed(-0.5), signed(0.0), signed(0.00042, fmt)] == \
        ["+0.01234", "-0.5", "0", "+4.200e-04"]
    assert [interval((0.1, 0.25)), interval((-0.05, float("nan"))), interval(None, missing="")] == \
        ["[0.1, 0.25]", "n/a", ""]


def test_features_of_a_panel_study_ask_which_asset(capsys, tmp_path):
    study = tmp_path / "panel.toml"
    study.write_text('[data]\nsource = ["sample:sp500", "sample:nasdaq"]\n')
    code = cli.main(["features", "describe", str(study), "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 1 and "data.source is a panel of 2 assets: name one with --data NAME" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- --json

def test_json_of_data_list_doctor_model_and_config(capsys, data_dir):
    code, doc = main_json(capsys, "data", "list", "--json", "--data-dir", str(data_dir))
    assert code == 0 and doc["datasets"][0]["path"] == "raw/sp500.parquet"
    assert doc["datasets"][0]["rows"] == 5031 and len(doc["datasets"][0]["sha256"]) == 64
    code, doc = main_json(capsys, "doctor", "--json", "--data-dir", str(data_dir))
    assert {c["status"] for c in doc["checks"]} <= {"ok", "warning", "error"}
    code, doc = main_json(capsys, "model", "describe", "smoke", "--json", "--budget", "cpu-s")
    (arch,) = doc["architectures"]
    assert code == 0 and arch["budget"] == "cpu-s" and isinstance(arch["params_total"], int)
    assert doc["memory"][0]["max_micro_batch"] > 0
    code, doc = main_json(capsys, "config", "keys", "--json")
    assert any(k["key"] == "train.lr" for k in doc["keys"])


def test_json_of_status_splits_and_hpo_summary(capsys, data_dir, tmp_path):
    sets = tiny(tmp_path)
    (tmp_path / "smoke").mkdir()  # a study directory with nothing run yet: every run pending
    code, doc = main_json(capsys, "status", "smoke", "--json", *sets)
    assert code == 0 and doc["hpo_split"] == "scattered" and doc["final_split"] == "contiguous"
    assert doc["hpo_cells"][0]["cell"] == "cpu-s-h1" and doc["hpo_cells"][0]["best_val_log_loss"] is None
    assert doc["final_runs"][0]["state"] == "pending" and doc["total"] == 1
    code, doc = main_json(capsys, "splits", "show", "smoke", "--json", "--scheme", "contiguous",
                          "--data-dir", str(data_dir), *sets)
    regions = {r["region"]: r for r in doc["regions"]}
    assert code == 0 and {"train", "val", "test"} <= set(regions)
    assert regions["val"]["windows"] >= 100 and 0 < regions["val"]["base_rate"] < 1
    code, doc = main_json(capsys, "hpo", "smoke", "--summary", "--json", *sets)
    assert code == 0 and doc["metric"] == "val_log_loss" and len(doc["cells"]) == 1


def test_status_names_the_split_of_each_validation_loss(capsys, tmp_path):
    (tmp_path / "smoke").mkdir()
    assert cli.main(["status", "smoke", *tiny(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "best val log-loss (scattered split)" in out and "val log-loss (contiguous split)" in out


# --------------------------------------------------------------------------- progress

def test_hpo_progress_in_a_log_is_plain_lines(data_dir, tmp_path):
    r = run_cli("hpo", "smoke", "--data-dir", str(data_dir), *tiny(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "\x1b[" not in r.stdout and "\r" not in r.stdout  # no cursor control in CI logs
    epochs = [ln for ln in lines if " epoch 1/1: train loss " in ln]
    trials = [ln for ln in lines if " cpu-s-h1 trial " in ln]
    assert len(epochs) == 2 and all("val log-loss 0." in ln for ln in epochs)
    assert all(re.match(r"\d\d:\d\d:\d\d ", ln) for ln in [*epochs, *trials])  # timestamped
    assert len(trials) == 2
    assert "(1/2 done, ETA " in trials[0] and trials[1].endswith("(2/2 done)")  # never "ETA 0m00s"
    assert "complete: val log-loss 0." in trials[0]
    # Optuna names the objective for optuna-dashboard
    import optuna

    from finscale.config import load_study, resolve_study_path
    from finscale.hpo.identity import study_name

    cfg = load_study(resolve_study_path("smoke"), [*tiny(tmp_path)[1::2]])
    study = optuna.load_study(study_name=study_name(cfg, "cpu-s", 1),
                              storage=f"sqlite:///{tmp_path}/smoke/optuna.db")
    assert study.metric_names == ["val_log_loss"]


def test_progress_on_a_terminal_draws_bars_with_an_eta():
    term = Console(file=io.StringIO(), force_terminal=True, width=120)
    with ProgressPrinter(console=term) as on_event:
        on_event("hpo_trials", cell="cpu-s-h1", done=1, total=4)
        on_event("train_start", run="t0001", epoch=0, max_epochs=3)
        on_event("batch", run="t0001", batch=2, batches=5)
        on_event("epoch", run="t0001", epoch=1, max_epochs=3, train_loss=0.5, val_log_loss=0.4, epoch_s=1.0)
        on_event("trial", cell="cpu-s-h1", number=1, state="complete", value=0.4, done=2, total=4)
        tasks = {t.description: t for t in on_event.bars.tasks}
        assert tasks["cpu-s-h1 trials"].completed == 2 and tasks["cpu-s-h1 trials"].total == 4
        assert tasks["cpu-s-h1 trials"].fields["eta"] != "?"  # one trial timed: an ETA exists
        assert tasks["t0001 epochs"].completed == 1 and tasks["t0001 epochs"].fields["eta"] != "?"
        assert tasks["batches"].completed == 2 and tasks["batches"].total == 5
        on_event("train_end", run="t0001", best_epoch=1, val_log_loss=0.4)
        assert {t.description for t in on_event.bars.tasks} == {"cpu-s-h1 trials"}
    text = term.file.getvalue()
    assert "cpu-s-h1 trial 1 complete: val log-loss 0.4000 (2/4 done" in text
    assert "epoch 1/3: train loss" not in text  # the bar shows epochs; no line per epoch


# --------------------------------------------------------------------------- MLflow

@pytest.mark.parametrize("command", [["run", "smoke", "--mlflow"], ["hpo", "smoke", "--mlflow"],
                                     ["run", "smoke", "--set", "tracking.mlflow=true"]])
def test_mlflow_without_the_package_fails_before_any_work(tmp_path, command):
    data = tmp_path / "data"
    argv = [*command, "--data-dir", str(data), *tiny(tmp_path / "runs")]
    script = (f"import sys; sys.modules['mlflow'] = None\nfrom finscale.cli import main\n"
              f"sys.exit(main({argv!r}))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "mlflow is not installed" in r.stderr and "pip install 'finscale[mlflow]'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not data.exists() and not (tmp_path / "runs").exists()  # nothing fetched, nothing run


def test_a_dying_library_thread_is_one_warning_line_not_a_traceback():
    # Optuna's heartbeat thread raises when its database goes away mid-HPO; the CLI must keep
    # stderr to one-line messages (the main thread reports the storage error itself).
    code = ("import threading, logging, sys\n"
            "logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')\n"
            "from finscale.stopping import quiet_thread_failures\n"
            "quiet_thread_failures()\n"
            "def beat():\n    raise ConnectionError('server closed the connection')\n"
            "t = threading.Thread(target=beat, name='heartbeat'); t.start(); t.join()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [
        "WARNING finscale.stopping: background thread heartbeat stopped: ConnectionError: "
        "server closed the connection"]
