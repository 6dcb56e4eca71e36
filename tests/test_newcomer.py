"""What a newcomer meets first: reading a study's results from anywhere, and `--set` typos.

One tiny real study (one budget, one seed, one epoch) is trained once for the module.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import finscale
from finscale.cli import main
from finscale.config import ConfigError, load_study, parse_override


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("newcomer")
    cfg = finscale.load_study("smoke", overrides=[
        f"output_dir={json.dumps(str(root / 'runs'))}", f"data.data_dir={json.dumps(str(root / 'data'))}",
        'model.budgets=["cpu-s"]', "seeds=[0]", "train.max_epochs=1", 'splits.train_start="2014-01-01"',
        "evaluate.bootstrap_resamples=20", "run.threads=1"])
    summary = finscale.run_study(cfg, phases=("data", "features", "final", "evaluate"), monitor=False)
    assert len(summary.done) == 1
    return cfg


def test_results_reads_a_run_directory_from_anywhere(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # another working directory: runs/ is not here
    table = finscale.results(tiny.study_dir)
    assert len(table) == 1 and table["state"].item() == "done"
    assert not [c for c in table.columns if c.endswith(("_x", "_y"))]
    assert {"collapsed", "test_collapsed", "log_loss", "log_loss_lo", "params_total"} <= set(table.columns)
    record = json.loads((tiny.study_dir / "study.json").read_text())
    assert record["final_runs"] == [table["run_id"].item()]
    with pytest.raises(ValueError, match=str(tmp_path / "runs" / "smoke")):
        finscale.results("smoke")  # never ran here: the missing directory is named


def test_results_lists_runs_smallest_first_and_skips_torch(tiny):
    code = (f"import sys, finscale; t = finscale.results({str(tiny.study_dir)!r}); "
            "print(len(t), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]  # study.json lists the runs: no model code needed


def test_status_and_report_accept_the_run_directory(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["status", str(tiny.study_dir)]) == 0
    assert "1/1 final runs done" in capsys.readouterr().out
    assert main(["status", "smoke"]) == 1
    err = capsys.readouterr().err
    assert "no such study directory" in err and str(tmp_path / "runs" / "smoke") in err
    assert "not started" not in err


def test_output_dir_in_a_study_file_is_relative_to_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "s.toml").write_text('name = "s"\noutput_dir = "out"\n')
    monkeypatch.chdir(tmp_path)
    assert load_study(folder / "s.toml").study_dir == folder / "out" / "s"
    assert load_study(folder / "s.toml", ['output_dir="elsewhere"']).study_dir.as_posix() == "elsewhere/s"


def test_set_reads_values_as_the_keys_type():
    assert parse_override("splits.val_start=2015-01-01") == (["splits", "val_start"], "2015-01-01")
    assert load_study(None, ["splits.val_start=2015-01-01"]).splits.val_start == "2015-01-01"
    assert parse_override("name=123") == (["name"], "123")
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    with pytest.raises(ConfigError, match=r"--set train.lr=abc: train.lr: expected a number"):
        parse_override("train.lr=abc")


def test_a_set_typo_offers_the_key_before_torch_loads():
    code = ("import sys; from finscale.cli import main; "
            "rc = main(['run', 'smoke', '--set', 'train.learnrate=1']); print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["1", "False"]
    assert "unknown key train.learnrate; did you mean train.lr?" in out.stderr


def test_a_run_log_has_timestamps_one_line_per_unit_and_a_study_eta():
    import io

    from rich.console import Console

    from finscale.cli.progress import ProgressPrinter, StudyTotals

    log = Console(file=io.StringIO(), force_terminal=False, width=200)
    totals = StudyTotals({"hpo": 4, "final": 2, "evaluate": 2})
    with ProgressPrinter(console=log, totals=totals, epochs=False) as on_event:
        on_event("phase", phase="hpo")
        totals.started["hpo"] -= 60  # as if the phase began a minute ago: the ETA is not 0
        on_event("hpo_trials", cell="a-h1", done=0, total=2)
        for done in (1, 2):
            on_event("epoch", run="t", epoch=1, max_epochs=1, train_loss=0.5, val_log_loss=0.4, epoch_s=0.1)
            on_event("trial", cell="a-h1", number=done - 1, state="complete", value=0.4, done=done, total=2)
        on_event("hpo_trials", cell="a-h1", done=2, total=2)  # a second worker meets the finished cell
        on_event("phase", phase="final")
        on_event("final_run", index=0, total=2, run_id="a-h1-s0", eta_s=None, state="pending")
    lines = log.file.getvalue().splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d ", ln) for ln in lines)
    assert not [ln for ln in lines if "already done" in ln or " epoch " in ln or "ETA 0m00s" in ln]
    assert len([ln for ln in lines if " trial " in ln]) == 2
    assert "study ETA" in lines[-1]  # 2 trials left, then 2 runs and 2 evaluations estimated
    assert totals.done == {"hpo": 2} and totals.eta() > 0


def test_the_notebook_example_loads_results_and_plots_them(tiny, tmp_path):
    from pathlib import Path

    from PIL import Image

    script = Path(__file__).resolve().parents[1] / "examples" / "results.py"
    out = tmp_path / "results.png"
    r = subprocess.run([sys.executable, str(script), str(tiny.study_dir), "--out", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cpu-s-h1-s0-" in r.stdout and f"figure: {out}" in r.stdout
    with Image.open(out) as img:
        assert img.width >= 300 and img.height >= 200


def test_results_of_several_studies_side_by_side(tiny, tmp_path):
    import shutil

    other = tmp_path / "runs" / "smoke"
    shutil.copytree(tiny.study_dir, other)  # the same study, moved: its run directory still reads
    both = finscale.results([tiny.study_dir, other])
    assert list(both.columns[:2]) == ["study", "run_id"] and len(both) == 2
    assert set(both["study"]) == {str(tiny.study_dir.resolve()), str(other.resolve())}
    assert both.loc[0, "log_loss"] == both.loc[1, "log_loss"]
    with pytest.raises(ValueError, match="no such study directory"):
        finscale.results([other, tmp_path / "runs" / "nope"])


def test_study_eta_weights_final_runs_by_budget_and_counts_interleaved_evaluations_once(monkeypatch):
    """Two workers train 4 big runs (6 s each) then 4 small ones (2 s), evaluating as they go.
    After the first two big runs the study has 10 s left; the ETA weights the runs left by
    their budget's HPO trial time (big 3 s, small 1 s) and does not add the interleaved
    evaluations on top of the final runs' measured rate. (Unweighted, with the evaluations
    added, it said 36 s.) A fake clock: no timing."""
    import io

    from rich.console import Console

    from finscale.cli import progress
    from finscale.cli.progress import ProgressPrinter, StudyTotals

    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    totals = StudyTotals({"hpo": 2, "final": 8, "evaluate": 8}, runs_by_budget={"big": 4, "small": 4},
                         workers=2)
    log = Console(file=io.StringIO(), force_terminal=False, width=200)
    with ProgressPrinter(console=log, totals=totals, epochs=False) as on_event:
        on_event("phase", phase="hpo")
        for cell, budget, seconds in (("big-h1", "big", 3.0), ("small-h1", "small", 1.0)):
            on_event("hpo_trials", cell=cell, budget=budget, done=0, total=1)
            now[0] += seconds
            on_event("trial", cell=cell, number=0, state="complete", value=0.4, done=1, total=1)
        on_event("phase", phase="final")
        t0 = now[0]
        for i in (0, 1):
            on_event("final_run", index=i, total=8, run_id=f"big-h1-s{i}", eta_s=None, state="pending",
                     budget="big")
        now[0] = t0 + 6
        on_event("phase", phase="evaluate")
        for i in (2, 3):
            on_event("final_run", index=i, total=8, run_id=f"big-h1-s{i}", eta_s=None, state="pending",
                     budget="big")
        on_event("evaluate_run", index=0, total=8, run_id="big-h1-s0")
    assert totals.trial_s == {"big": [3.0], "small": [1.0]}
    eta = totals.eta()
    assert eta == pytest.approx(10.0), eta
    totals.trial_s.clear()           # no HPO timings (a resumed or fixed-HPO study): unweighted
    # 4 runs met in 6 s: 4 left at 1.5 s each; the interleaved evaluations are not added
    assert totals.eta() == pytest.approx(6.0)
