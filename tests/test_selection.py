"""Run selection (finscale.selection): one list of cells and runs for every caller, and workers
that train exactly what was selected (pool jobs carry resolved units, not filters)."""

import json
from pathlib import Path

import pytest

from conftest import run_cli
from finscale.config import load_study
from finscale.hpo.results import cell_params, final_runs
from finscale.selection import Selection, selected_cells, selected_runs

TWO_VARIANTS = '''name = "ax"
seeds = {seeds}
output_dir = "{out}"
[data]
data_dir = "{data}"
[target]
horizons = [1]
[splits]
train_start = "2012-01-01"
val_start = "2016-01-01"
test_start = "2017-07-01"
chunk_days = 120
min_eval_windows = 50
[model]
context_len = 32
patch_len = 8
stride = 8
budgets = {budgets}
[train]
max_epochs = 1
[hpo]
trials = 1
max_epochs = 1
split = "scattered"
[run]
threads = 1
[axes]
"model.normalization" = ["revin", "zscore"]
'''


def two_variants(tmp_path: Path, data: Path, budgets: str = '["cpu-s"]', seeds: str = "[0]") -> Path:
    path = tmp_path / "ax.toml"
    path.write_text(TWO_VARIANTS.format(out=tmp_path / "out", data=data, budgets=budgets, seeds=seeds))
    return path


def test_selection_is_variants_x_replicates_x_cells_x_seeds_in_order(tmp_path, data_dir):
    cfg = load_study(two_variants(tmp_path, data_dir, budgets='["cpu-s", "cpu-m"]', seeds="[0, 1]"),
                     ["replicates=2"])
    cells = selected_cells(cfg)
    assert [c.name for c in cells] == ["cpu-s-h1-revin", "cpu-m-h1-revin", "cpu-s-h1-zscore", "cpu-m-h1-zscore"]
    assert all(c.cfg.model.normalization == c.name.rpartition("-")[2] for c in cells)
    runs = selected_runs(cfg)
    assert len(runs) == 2 * 2 * 2 * 2   # variants x replicates x cells x seeds
    assert [(r.cell.name, r.replicate) for r in runs[:4]] == [("cpu-s-h1-revin", 0)] * 2 + [("cpu-m-h1-revin", 0)] * 2
    only = Selection(budgets=("cpu-m",), axes={"model.normalization": ["zscore"]})
    assert [c.name for c in selected_cells(cfg, only)] == ["cpu-m-h1-zscore"]
    assert {r.cell.name for r in selected_runs(cfg, only)} == {"cpu-m-h1-zscore"}
    # units narrow cells by name and final runs by run id (what a pool job or Ray task carries)
    one = final_runs(cfg)[5][1].run_id
    assert [s.run_id for _, s in final_runs(cfg, Selection(units=(one,)))] == [one]
    assert [c.name for c in selected_cells(cfg, Selection(units=("cpu-s-h1-zscore",)))] == ["cpu-s-h1-zscore"]
    with pytest.raises(ValueError, match=r"--only model.normalization=batch: not one of"):
        selected_cells(cfg, Selection(axes={"model.normalization": ["batch"]}))
    with pytest.raises(ValueError, match=r"--only matches no cell"):
        selected_runs(cfg, Selection(horizons=(5,)))


@pytest.mark.slow
def test_workers_with_an_axis_filter_train_only_that_variant(tmp_path, shared_data):
    path = two_variants(tmp_path, shared_data)
    r = run_cli("run", str(path), "--workers", "2", "--only", "model.normalization=zscore", "--no-monitor",
                "--phase", "hpo", "--phase", "final")
    assert r.returncode == 0, r.stderr
    study_dir = tmp_path / "out" / "ax"
    assert [d.name for d in (study_dir / "hpo").iterdir() if d.is_dir()] == ["cpu-s-h1-zscore"]
    finals = sorted(d.name for d in (study_dir / "final").iterdir())
    assert len(finals) == 1 and "-zscore-" in finals[0], finals
    assert "final runs trained: 1," in r.stdout


@pytest.mark.slow
def test_hpo_on_an_axes_study_searches_the_cells_the_final_runs_use(tmp_path, shared_data):
    path = two_variants(tmp_path, shared_data)
    r = run_cli("hpo", str(path), "--workers", "2")
    assert r.returncode == 0, r.stderr
    cfg = load_study(path)
    for var, spec in final_runs(cfg):
        params, source = cell_params(var, spec.budget, spec.horizon)
        assert Path(source).parent.name == spec.cell     # the final run reads its own cell's search
        best = json.loads(Path(source).read_text())
        assert params == best["params"] and best["n_trials"] == 1
        assert f"hpo {spec.cell}" in r.stdout
    searched = sorted(d.name for d in (tmp_path / "out" / "ax" / "hpo").iterdir() if d.is_dir())
    assert searched == ["cpu-s-h1-revin", "cpu-s-h1-zscore"]


def test_hpo_in_fixed_mode_points_to_the_table_it_reads(tmp_path):
    r = run_cli("hpo", "smoke", "--set", 'hpo.mode="fixed"', "--set", f"output_dir={json.dumps(str(tmp_path))}")
    assert r.returncode == 0, r.stderr
    assert "cells use their [hpo.table] parameters; nothing to search" in r.stdout
