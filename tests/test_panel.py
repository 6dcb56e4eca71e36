"""Panels (data.source as a list): per-asset windows, calendar splits, bad input, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finscale.config import ConfigError, load_study
from finscale.data import DataError
from finscale.rundata import final_data, prepare, tuning_data
from finscale.trained_run import load_run

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "studies" / "smoke.toml"


def _study(sources, *extra: str):
    return load_study(SMOKE, [f"data.source={json.dumps(list(sources))}", *extra])


def _write_file_asset(sp500: pd.DataFrame, path: Path, start=None, end=None) -> str:
    """A real CSV asset cut from the bundled sample (a shorter history)."""
    frame = sp500.copy()
    if start:
        frame = frame[frame["Date"] >= start]
    if end:
        frame = frame[frame["Date"] <= end]
    frame.to_csv(path, index=False)
    return f"file:{path}"


def _spans(prep, ends: np.ndarray, context_len: int, horizon: int) -> set:
    """Calendar dates covered by the windows' inputs and label periods."""
    dates = prep.dates.to_numpy()
    return {d for t in ends for d in dates[t - context_len + 1:t + horizon + 1]}


@pytest.mark.parametrize("horizon", [1, 3])
def test_no_window_crosses_assets_and_training_labels_stay_out_of_eval_spans(tmp_path, sp500, horizon):
    # nasdaq in full, a file asset whose history starts in 2013 (contributes what it has)
    late = _write_file_asset(sp500, tmp_path / "late.csv", start="2013-06-01")
    cfg = _study(["sample:nasdaq", late], "splits.embargo_days=2")
    prep = prepare(cfg, tmp_path / "data")
    assert prep.assets == ("nasdaq", "late") and prep.is_panel
    L = cfg.model.context_len
    data, test = final_data(prep, cfg, horizon)
    idx, dates = prep.asset_index, prep.dates.to_numpy()
    for ends in (data.train.ends, data.val.ends, test.ends):
        assert len(ends)
        assert np.array_equal(idx[ends - L + 1], idx[ends + horizon]), "a window spans two assets"
    # both assets are trained, validated and tested on
    for ends in (data.train.ends, data.val.ends, test.ends):
        assert set(idx[ends]) == {0, 1}
    # no training label date in the validation/test calendar span (any asset)
    train_label_last = max(dates[t + horizon] for t in data.train.ends)
    eval_first = min(dates[t - L + 1] for t in np.concatenate([data.val.ends, test.ends]))
    assert train_label_last < eval_first
    assert max(dates[t + horizon] for t in data.val.ends) < min(dates[t - L + 1] for t in test.ends)
    # the tuning split (scattered chunks) keeps training spans off validation spans by date too
    for fold in tuning_data(prep, cfg, horizon):
        assert np.array_equal(idx[fold.train.ends - L + 1], idx[fold.train.ends + horizon])
        assert not _spans(prep, fold.train.ends, L, horizon) & _spans(prep, fold.val.ends, L, horizon)
        assert max(dates[fold.val.ends]) < np.datetime64(cfg.splits.test_start)


def test_normalisation_statistics_come_from_each_assets_own_training_rows(tmp_path):
    cfg = _study(["sample:sp500", "sample:nasdaq"], "model.normalization=zscore")
    prep = prepare(cfg, tmp_path / "data")
    data, _test = final_data(prep, cfg, 1)
    stats = data.normalizer["per_asset"]
    close = prep.inputs.index("Close")
    for a, name in enumerate(prep.assets):
        own = data.train.ends[prep.asset_index[data.train.ends] == a]
        rows = np.zeros(len(prep.values), bool)
        for t in own:
            rows[t - cfg.model.context_len + 1:t + 1] = True
        assert stats[name]["mean"][close] == pytest.approx(prep.values[rows, close].mean(), rel=1e-6)
    assert stats["sp500"]["mean"][close] != pytest.approx(stats["nasdaq"]["mean"][close], rel=0.01)


def test_single_source_run_ids_are_unchanged():
    from finscale.runspec import make_spec

    cfg = load_study(SMOKE)
    assert isinstance(cfg.data.source, str)
    # ids of the smoke study before panels existed (a change here re-runs every study)
    assert make_spec(cfg, "cpu-s", 1, 0).run_id == "cpu-s-h1-s0-29cdac63"
    assert make_spec(cfg, "cpu-m", 1, 1).run_id == "cpu-m-h1-s1-43287a98"


def test_duplicate_and_unknown_sources_are_named(tmp_path):
    with pytest.raises(DataError, match=r"asset 'sp500' \(sample:sp500\) duplicates data.source\[0\]"):
        prepare(_study(["sample:sp500", "sample:nasdaq", "sample:sp500"]), tmp_path / "data")
    with pytest.raises(DataError, match=r"data.source\[1\]: source 'nosuch:x'"):
        prepare(_study(["sample:sp500", "nosuch:x"]), tmp_path / "data")
    assert not (tmp_path / "data" / "raw").exists()  # nothing written
    with pytest.raises(ConfigError, match="data.name"):
        _study(["sample:sp500", "sample:nasdaq"], "data.name=both")


def test_an_asset_failing_validation_is_named_and_nothing_is_written(tmp_path, sp500):
    bad = tmp_path / "broken.csv"
    sp500.drop(columns=["Close"]).to_csv(bad, index=False)
    with pytest.raises(DataError, match="asset 'broken'"):
        prepare(_study(["sample:nasdaq", f"file:{bad}"]), tmp_path / "data")
    assert not list((tmp_path / "data").rglob("*.parquet"))


def test_cli_names_the_asset_without_a_test_period(tmp_path, sp500, cli):
    early = _write_file_asset(sp500, tmp_path / "early.csv", end="2015-06-30")
    r = cli("run", str(SMOKE), "--no-monitor", "--set", f'data.source=["sample:sp500", "{early}"]',
            "--set", "hpo.mode=fixed", "--set", 'hpo.table={"cpu-s-h1"={lr=1e-3}}',
            "--set", 'model.budgets=["cpu-s"]', "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "asset 'early': no test windows" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not list((tmp_path / "runs").rglob("config.json"))


@pytest.mark.slow
def test_pooled_sp500_nasdaq_study_runs_end_to_end(tmp_path, cli):
    table = 'hpo.table={"cpu-s-h1"={lr=1e-3},"cpu-m-h1"={lr=1e-3},"cpu-l-h1"={lr=1e-3}}'
    r = cli("run", str(SMOKE), "--no-monitor", "--set", 'data.source=["sample:sp500","sample:nasdaq"]',
            "--set", "seeds=[0]", "--set", "train.max_epochs=1", "--set", "hpo.mode=fixed",
            "--set", table, "--set", "evaluate.bootstrap_resamples=50",
            "--set", "evaluate.scaling_resamples=20", "--data-dir", str(tmp_path / "data"),
            cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    evals = sorted((tmp_path / "runs" / "smoke" / "final").glob("*/eval.json"))
    assert len(evals) == 3
    ev = json.loads(evals[0].read_text())
    assert set(ev["per_asset"]) == {"sp500", "nasdaq"}
    assert sum(b["test_windows"] for b in ev["per_asset"].values()) == ev["test_windows"]
    assert ev["backtest"]["assets"] == ["sp500", "nasdaq"]
    assert len(ev["backtest"]["cost_sweep"]) >= 4 and ev["topk"]["k"] == 1
    assert "reason" in ev["ic"]  # two assets: a cross-sectional correlation needs >= 3
    report = (tmp_path / "runs" / "smoke" / "report" / "report.md").read_text()
    assert "Per-asset test metrics" in report and "| nasdaq |" in report
    assert (tmp_path / "runs" / "smoke" / "report" / "tables" / "final_assets.csv").exists()
    # A panel checkpoint scores one asset's bars with that asset's normaliser, and reproduces
    # the run's stored test predictions for it.
    run = load_run(evals[0].parent)
    assert run.assets == ["sp500", "nasdaq"]
    stored = run.predictions[run.predictions["asset"] == "nasdaq"]
    first, last = (stored["date"].min().date().isoformat(), stored["date"].max().date().isoformat())
    scored = run.predict_source("sample:nasdaq", asset="nasdaq", start=first, end=last)
    assert np.array_equal(scored["date"].to_numpy(), stored["date"].to_numpy())
    np.testing.assert_allclose(scored["prob"].to_numpy(), stored["prob"].to_numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="trained on a panel of sp500, nasdaq"):
        run.predict_source("sample:nasdaq")
    r = cli("predict", str(evals[0].parent), "--data", "sample:nasdaq", "--asset", "dax")
    assert r.returncode == 1 and "asset 'dax': not in this run's panel (sp500, nasdaq)" in r.stderr


def test_pooled_backtest_is_the_equal_weight_portfolio_of_the_assets():
    from finscale.evaluate import backtest, pool_backtests

    days = pd.bdate_range("2020-01-01", periods=60).values
    rng = np.random.default_rng(0)
    parts = {}
    for name, lo in (("a", 0), ("b", 20)):  # b starts later: days it does not trade are left out
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60 - lo)))
        prob = rng.uniform(size=60 - lo)
        parts[name] = backtest(close, days[lo:], prob, 0.5, 1, 5.0)
    pooled = pool_backtests(parts)
    assert pooled["assets"] == ["a", "b"] and pooled["n_days"] == 60
    daily = {n: np.asarray(p["strategy"]["equity"]) / np.r_[1.0, p["strategy"]["equity"][:-1]] - 1
             for n, p in parts.items()}
    expected = np.r_[daily["a"][:20], (daily["a"][20:] + daily["b"]) / 2]
    assert np.allclose(pooled["strategy"]["equity"], np.cumprod(1 + expected))
    assert len(pooled["trades"]) == len(parts["a"]["trades"]) + len(parts["b"]["trades"])
