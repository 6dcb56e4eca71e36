"""Study axes: [axes] validation, variants and their tags, run ids, the data-size axis
(splits.train_years) and a tiny two-axis study end to end (cells, run ids, report)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from finscale import labels, splits
from finscale.config import ConfigError, SplitsConfig, TargetConfig, load_study
from finscale.hpo.results import final_specs
from finscale.rundir import RunDir
from finscale.runner.study import RunOptions, run_study
from finscale.runspec import make_spec
from finscale.study_axes import axis_tag, variants

TWO_AXES = '''
[axes]
"model.normalization" = ["revin", "zscore"]
"model.context_len" = [40, 80]
'''


def study(tmp_path: Path, body: str, name: str = "ax") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n{body}')
    return path


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("body, overrides, message", [
    ('[axes]\n"model.nope" = [1, 2]', [], "axes.model.nope: unknown study key 'model.nope'"),
    ('[axes]\n"model.context_len" = ["x", 40]', [], "axes.model.context_len[0]: expected an integer, got 'x'"),
    ('[axes]\n"model.normalization" = ["revin", "batch"]', [], "axes.model.normalization[1]: 'batch' is not one of"),
    ('[model]\ncontext_len = 40\n[axes]\n"model.context_len" = [40, 80]', [],
     "axes.model.context_len: also set in the study file's [model] section"),
    ('[axes]\n"model.context_len" = [40, 80]', ["model.context_len=40"],
     "axes.model.context_len: also given by --set model.context_len=..."),
    ('[axes]\n"seeds" = [[0], [1]]', [], "axes.seeds: not allowed as an axis"),
    ('[axes]\n"model" = ["a"]', [], "axes.model: is a section"),
    ('[axes]\n"model.context_len" = []', [], "axes.model.context_len: expected a non-empty list"),
    ('[axes]\n"model.context_len" = [40, 40]', [], "axes.model.context_len: expected distinct values"),
])
def test_bad_axes_are_one_clear_error(tmp_path, body, overrides, message):
    path = study(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_study(path, [f"{o}" for o in overrides])
    assert message in str(err.value) and str(path) in str(err.value)


def test_bad_axis_from_the_cli_exits_nonzero_without_writing(tmp_path):
    path = study(tmp_path, f'output_dir = "{tmp_path / "out"}"\n[axes]\n"model.context_len" = [40, "x"]')
    r = run_cli("run", str(path), "--dry-run")
    assert r.returncode != 0
    assert "axes.model.context_len[1]: expected an integer" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_only_filters_by_axis_values_and_rejects_unknown_ones(tmp_path):
    cfg = load_study(study(tmp_path, TWO_AXES))
    chosen = variants(cfg, {"model.normalization": ["zscore"]})
    assert [axis_tag(v) for v in chosen] == ["zscore-context_len40", "zscore-context_len80"]
    assert [axis_tag(v) for v in variants(cfg, {"model.context_len": ["80"]})] == \
        ["revin-context_len80", "zscore-context_len80"]
    with pytest.raises(ValueError, match=r"--only model.normalization=batch: not one of"):
        variants(cfg, {"model.normalization": ["batch"]})
    with pytest.raises(ValueError, match=r"--only model.stride=\.\.\.: not an axis"):
        variants(cfg, {"model.stride": ["4"]})


# --------------------------------------------------------------------------- variants, ids

def test_variants_are_the_product_of_the_axes_with_readable_tags(tmp_path):
    cfg = load_study(study(tmp_path, TWO_AXES))
    vs = variants(cfg)
    assert [(v.model.normalization, v.model.context_len) for v in vs] == \
        [("revin", 40), ("revin", 80), ("zscore", 40), ("zscore", 80)]
    assert [axis_tag(v) for v in vs] == ["revin-context_len40", "revin-context_len80",
                                         "zscore-context_len40", "zscore-context_len80"]
    assert all(variants(v) == [v] for v in vs)  # a variant expands to itself
    specs = final_specs(cfg)
    assert len(specs) == len(vs) * len(cfg.model.budgets) * len(cfg.target.horizons) * len(cfg.seeds)
    assert len({s.run_id for s in specs}) == len(specs)
    assert specs[0].run_id.startswith("cpu-s-h1-revin-context_len40-s0-")
    assert specs[0].cell == "cpu-s-h1-revin-context_len40"


def test_no_axes_keeps_run_ids_and_an_unset_data_size_does_not_change_them(tmp_path):
    cfg = load_study(None)
    assert variants(cfg) == [cfg] and axis_tag(cfg) == ""
    plain = make_spec(cfg, "cpu-s", 1, 0)
    assert plain.run_id == f"cpu-s-h1-s0-{plain.digest[:8]}" and "axes" not in plain.config
    explicit = load_study(None, ["splits.train_years=0", "splits.min_train_windows=500"])
    assert make_spec(explicit, "cpu-s", 1, 0).run_id == plain.run_id
    assert make_spec(load_study(None, ["splits.train_years=4"]), "cpu-s", 1, 0).digest != plain.digest


# --------------------------------------------------------------------------- data size D

def _split(frame, years: int, horizon: int = 1, **extra):
    cfg = SplitsConfig(val_start="2015-01-01", test_start="2016-07-01", train_years=years, **extra)
    y = labels.make_labels(frame, TargetConfig(), horizon)
    return splits.final_split(frame["Date"], np.isfinite(y), cfg, 40, horizon)


@pytest.fixture(scope="module")
def frame(sp500):
    from finscale.features import build_features

    return build_features(sp500, "a20")[0]


def test_train_years_truncates_training_from_its_start_and_keeps_val_and_test(frame):
    full = _split(frame, 0)
    dates = frame["Date"].to_numpy()
    previous = len(full.train) + 1
    for years in (8, 4, 2):
        part = _split(frame, years)
        assert np.array_equal(part.val, full.val) and np.array_equal(part.test, full.test)
        assert part.train[-1] == full.train[-1] and len(part.train) < previous
        assert set(part.train) <= set(full.train)
        first = np.datetime64(dates[part.train[0] - 39], "D")  # first row of the first window
        assert first >= np.datetime64("2015-01-01") - np.timedelta64(366 * years, "D")
        previous = len(part.train)


def test_a_data_size_too_small_is_an_error_naming_the_value(frame):
    with pytest.raises(splits.SplitSizeError, match=r"splits.train_years=1: the training region .* "
                                                    r"fewer than splits.min_train_windows=300"):
        _split(frame, 1, min_train_windows=300)


def test_a_data_size_too_small_fails_the_study_before_anything_runs(tmp_path):
    path = study(tmp_path, f'output_dir = "{tmp_path / "out"}"\n[data]\ndata_dir = "{tmp_path / "data"}"\n'
                           '[splits]\nmin_train_windows = 300\n[axes]\n"splits.train_years" = [0, 1]\n')
    cfg = load_study(path)
    with pytest.raises(ValueError, match=r"axes splits.train_years=1: splits.train_years=1: the training"):
        run_study(cfg, RunOptions(monitor=False))
    assert not (tmp_path / "out" / "ax" / "final").exists()
    assert not (tmp_path / "out" / "ax" / "hpo").exists()


# --------------------------------------------------------------------------- end to end

TINY = '''
seeds = [0]
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
budgets = ["cpu-s", "cpu-m"]
[train]
max_epochs = 1
[hpo]
trials = 1
[evaluate]
bootstrap_resamples = 50
scaling_resamples = 20
[axes]
"model.normalization" = ["revin", "zscore"]
"splits.train_years" = [3, 0]
'''


@pytest.mark.slow
def test_two_axis_study_end_to_end(tmp_path):
    out = tmp_path / "out"
    path = study(tmp_path, TINY.format(out=out, data=tmp_path / "data"), name="tiny")
    r = run_cli("run", str(path), "--no-monitor", timeout=600)
    assert r.returncode == 0, r.stderr
    root = out / "tiny"
    tags = ["revin-train_years3", "revin-train_years0", "zscore-train_years3", "zscore-train_years0"]
    # HPO: one Optuna study (and one cell folder) per budget x horizon x axis combination
    cells = sorted(p.name for p in (root / "hpo").iterdir() if p.is_dir())
    assert cells == sorted(f"{b}-h1-{t}" for b in ("cpu-s", "cpu-m") for t in tags)
    runs = {p.name: p for p in (root / "final").iterdir()}
    assert len(runs) == 8 and all(RunDir(p).state == "done" for p in runs.values())
    for run_id, p in runs.items():
        config = json.loads((p / "config.json").read_text())
        tag = f"{config['axes']['model.normalization']}-train_years{config['axes']['splits.train_years']}"
        assert run_id.startswith(f"{config['budget']}-h1-{tag}-s0-")
        assert config["model"]["normalization"] == config["axes"]["model.normalization"]
        assert config["splits"]["train_years"] == config["axes"]["splits.train_years"]
    # D is measured: fewer training windows with 3 years than with all, tokens = windows x patches
    finals = {rid: [m for m in RunDir(p).read_metrics() if m["event"] == "final"][0] for rid, p in runs.items()}
    for f in finals.values():
        assert f["train_tokens"] == f["train_windows"] * 4  # context 32, patch 8, stride 8: 4 patches
    short = {f["train_windows"] for rid, f in finals.items() if "train_years3" in rid}
    full = {f["train_windows"] for rid, f in finals.items() if "train_years0" in rid}
    assert max(short) < min(full)
    # scaling stage: per-variant fits and axes.json with paired tests on the same test windows
    axes = json.loads((root / "scaling" / "axes.json").read_text())
    assert {c["axis"] for c in axes["comparisons"]} == {"model.normalization", "splits.train_years"}
    tested = [c for c in axes["comparisons"] if not c["reason"]]
    assert len(tested) == 4 and all(c["n_pairs"] == 2 and c["n"] > 0 for c in tested)
    assert axes["joint"] and all(j["reason"] for j in axes["joint"])  # 4 points: too few, says why
    for t in tags:
        assert (root / "scaling" / t / "h1.json").exists()
    # report: the axes section with its table and figures
    md = (root / "report" / "report.md").read_text()
    assert "## Axes and data scaling" in md and "Paired tests between axis values" in md
    assert "figures/axis_model_normalization_h1.png" in md
    assert "a joint fit of 5 parameters needs >= 8 points" in md
    assert "stale" not in md  # the main scaling section is checked against its own variant's runs
    # the findings describe that same first variant (not every variant's runs pooled), and say so
    found = json.loads((root / "report" / "findings.json").read_text())
    assert "with [axes], these findings and the results and baselines tables describe the first " \
           "variant (model.normalization='revin', splits.train_years=3)" in " ".join(found["lines"])
    final_table = pd.read_csv(root / "report" / "tables" / "final_results.csv")
    assert set(final_table["seeds"]) == {1}  # one seed of one variant per cell, not four pooled
    first = [f for rid, f in finals.items() if "revin-train_years3" in rid]
    best = found["horizons"][0]["best_budget"]
    mean = np.mean([json.loads((runs[rid] / "eval.json").read_text())["test"]["metrics"]["log_loss"]
                    for rid in runs if "revin-train_years3" in rid and rid.startswith(f"{best}-h1-")])
    assert len(first) == 2 and f"mean test log-loss {mean:.4g}" in " ".join(found["lines"])
    # status and --only by axis value
    status = run_cli("status", str(path))
    assert status.returncode == 0 and "cpu-m-h1-zscore-train_years0" in status.stdout
    plan = run_cli("run", str(path), "--dry-run", "--only", "model.normalization=zscore")
    assert plan.returncode == 0 and "0 units of work left" in plan.stdout
    bad = run_cli("run", str(path), "--dry-run", "--only", "model.normalization=batch")
    assert bad.returncode != 0 and "not one of the axis values" in bad.stderr
