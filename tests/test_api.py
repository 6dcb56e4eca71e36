"""The public Python API and `finscale predict`: one real smoke run, served from its directory."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import finscale
from finscale.checkpoint import load_checkpoint
from finscale.cli import main
from finscale.data import load_sample
from finscale.features import input_columns


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    # z-scored inputs: serving needs the checkpoint's normaliser statistics, not just RevIN.
    cfg = finscale.load_study("smoke", overrides=[
        f"output_dir={root / 'runs'}", f"data.data_dir={root / 'data'}", 'model.budgets=["cpu-s"]',
        "target.horizons=[1]", "seeds=[0]", "train.max_epochs=1", 'splits.train_start="2014-01-01"',
        'model.normalization="zscore+revin"', "evaluate.bootstrap_resamples=20"])
    summary = finscale.run_study(cfg, phases=("data", "features", "final", "evaluate"), monitor=False)
    assert len(summary.done) == 1 and not summary.failed
    return cfg, root


def test_import_is_light_and_api_is_keyword_only():
    code = "import finscale, sys; print([m for m in ('torch', 'pandas', 'optuna') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    for name in ("load_study", "run_study", "results", "load_run"):
        fn = getattr(finscale, name)
        params = list(inspect.signature(fn).parameters.values())
        assert all(p.kind == p.KEYWORD_ONLY for p in params[1:]), name
        assert fn.__doc__ and name in finscale.__all__


def test_load_study_names_a_bad_override():
    with pytest.raises(ValueError, match="train.nope"):
        finscale.load_study("smoke", overrides=["train.nope=1"])


def test_results_and_load_run(trained):
    cfg, _ = trained
    table = finscale.results(cfg)
    assert len(table) == 1 and table["state"].item() == "done"
    assert {"run_id", "budget", "horizon", "seed", "params_total", "log_loss", "auc"} <= set(table.columns)
    run = finscale.load_run(table["path"].item())
    assert run.config["budget"] == "cpu-s" and len(run.metrics) == 1 and run.final["best_epoch"] == 1
    assert table["log_loss"].item() == pytest.approx(
        -np.mean(run.predictions["label"] * np.log(run.predictions["prob"])
                 + (1 - run.predictions["label"]) * np.log(1 - run.predictions["prob"])), rel=1e-6)


def test_best_checkpoint_is_self_contained(trained):
    cfg, _ = trained
    run_dir = finscale.results(cfg)["path"].item()
    ckpt = load_checkpoint(f"{run_dir}/ckpt/best.pt")  # weights_only=True
    serving = json.loads(ckpt["serving"])
    env = json.loads(open(f"{run_dir}/env.json").read())
    assert serving["inputs"] == input_columns("a20") and serving["context_len"] == 32
    assert serving["normalizer"]["kind"] == "zscore+revin" and len(serving["normalizer"]["mean"]) == 25
    assert serving["target"] == {"kind": "threshold", "threshold": 0.01, "price": "high"}
    assert serving["horizon"] == 1
    assert serving["data"]["raw"] == env["data"]["raw"] and serving["data"]["processed"] == env["data"]["processed"]


def test_predict_reproduces_the_stored_test_predictions_exactly(trained):
    cfg, _ = trained
    run = finscale.load_run(finscale.results(cfg)["path"].item())
    stored = run.predictions
    first, last = stored["date"].min().date().isoformat(), stored["date"].max().date().isoformat()
    scored = run.predict(load_sample("sp500"), start=first, end=last)
    assert np.array_equal(scored["prob"].to_numpy(), stored["prob"].to_numpy())
    assert np.array_equal(scored["label"].to_numpy(), stored["label"].to_numpy())
    assert np.array_equal(scored["end"].to_numpy(), stored["end"].to_numpy())
    everything = run.predict(load_sample("sp500"))  # every window; the newest have no label yet
    assert len(everything) > len(stored) and np.isnan(everything["label"].iloc[-1])
    np.testing.assert_allclose(everything.set_index("end").loc[stored["end"], "prob"], stored["prob"],
                               rtol=1e-5)


def test_cli_predict_writes_parquet_equal_to_stored(trained, tmp_path, capsys):
    cfg, _ = trained
    run = finscale.load_run(finscale.results(cfg)["path"].item())
    stored = run.predictions
    out = tmp_path / "pred.parquet"
    code = main(["predict", str(run.path), "--data", "sample:sp500", "--out", str(out),
                 "--start", stored["date"].min().date().isoformat(),
                 "--end", stored["date"].max().date().isoformat()])
    assert code == 0 and f"{len(stored)} predictions written" in capsys.readouterr().out
    frame = pd.read_parquet(out)
    assert np.array_equal(frame["prob"].to_numpy(), stored["prob"].to_numpy())


def test_predict_refuses_short_data_and_different_columns(trained, capsys):
    cfg, _ = trained
    run = finscale.load_run(finscale.results(cfg)["path"].item())
    raw = load_sample("sp500")
    with pytest.raises(ValueError, match="warm-up rows plus a 32-day window"):
        run.predict(raw.iloc[:60])
    older = dataclasses.replace(run, serving={**run.serving, "inputs": run.serving["inputs"][::-1]})
    with pytest.raises(ValueError, match="the checkpoint was trained on"):
        older.predict(raw)
    with pytest.raises(ValueError, match="Close"):
        run.predict(raw.drop(columns=["Close"]))
    assert main(["predict", str(run.path.parent / "nope"), "--data", "sample:sp500"]) == 1
    assert "no best checkpoint" in capsys.readouterr().err


def test_predict_takes_a_date_index_or_column_and_names_every_column(trained):
    cfg, _ = trained
    run = finscale.load_run(finscale.results(cfg)["path"].item())
    bars = load_sample("sp500").iloc[-400:]
    by_column = run.predict(bars)
    assert list(by_column.columns) == ["date", "run_id", "horizon", "prob", "label", "end"]
    assert (by_column["run_id"] == run.path.name).all() and (by_column["horizon"] == 1).all()
    yf = bars.set_index(pd.DatetimeIndex(bars["Date"]).tz_localize("America/New_York")).drop(columns="Date")
    yf["Adj Close"] = yf["Close"]  # as yfinance returns them: dates as a zoned index, one ticker level
    yf.columns = pd.MultiIndex.from_product([yf.columns, ["SPY"]], names=["Price", "Ticker"])
    pd.testing.assert_frame_equal(run.predict(yf), by_column)
    lower = bars.rename(columns={"Date": "date"})
    pd.testing.assert_frame_equal(run.predict(lower), by_column)
