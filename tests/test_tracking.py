"""MLflow tracking: a smoke study logged to a real local store, read back with the client."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from finscale import tracking
from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.rundir import RunDir

mlflow = pytest.importorskip("mlflow", reason="the optional extra finscale[mlflow] is not installed")
from mlflow.tracking import MlflowClient  # noqa: E402

NO_URI = {"MLFLOW_TRACKING_URI": ""}  # the developer's own tracking server must not be used


def overrides(out: Path, data: Path, *extra: str) -> list[str]:
    return [f"output_dir={json.dumps(str(out))}", f"data.data_dir={json.dumps(str(data))}",
            "seeds=[0,1]", "target.horizons=[1]", 'model.budgets=["cpu-s"]', "train.max_epochs=2",
            "evaluate.bootstrap_resamples=50", *extra]


def sets(items: list[str]) -> list[str]:
    return [a for o in items for a in ("--set", o)]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The smoke study (2 seeds, final + evaluate) run once with --mlflow; sensors from a fake
    sysfs tree so hardware.jsonl holds real readings."""
    root = tmp_path_factory.mktemp("tracked")
    data, out = root / "data", root / "runs"
    zone = root / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("51000\n")
    r = run_cli("data", "fetch", "sample:sp500", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    items = overrides(out, data, 'monitor.backend="linux"',
                      f"monitor.sysfs_root={json.dumps(str(root / 'thermal'))}")
    r = run_cli("run", "smoke", "--mlflow", "--phase", "final", "--phase", "evaluate", *sets(items),
                env=NO_URI)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = load_study(resolve_study_path("smoke"), [*items, "tracking.mlflow=true"])
    assert "mlflow ui --backend-store-uri sqlite:///" in r.stdout
    runs = sorted((out / "smoke" / "final").iterdir())
    assert len(runs) == 2 and all(RunDir(d).state == "done" for d in runs)
    client = MlflowClient(tracking_uri=tracking.default_uri(cfg))
    return cfg, client, runs


def children(client, cfg, **tags) -> list:
    exp = client.get_experiment_by_name(cfg.name)
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([exp.experiment_id], where)


def test_experiment_parent_and_nested_children(study):
    cfg, client, runs = study
    assert tracking.default_uri(cfg).endswith("/smoke/mlruns/mlflow.db")
    assert (cfg.study_dir / "mlruns" / "mlflow.db").is_file()
    exp = client.get_experiment_by_name("smoke")
    assert exp is not None and exp.lifecycle_stage == "active"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the model-training layout
    parents = children(client, cfg, **{"finscale.kind": "cell"})
    assert [p.data.tags["finscale.cell"] for p in parents] == ["cpu-s-h1"]
    assert parents[0].data.params == {"budget": "cpu-s", "horizon": "1"}
    kids = children(client, cfg, **{"finscale.phase": "final"})
    # final + evaluate tracked each run twice: still one child per seed
    assert sorted(k.data.tags["finscale.run_id"] for k in kids) == [d.name for d in runs]
    for kid in kids:
        assert kid.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert kid.info.status == "FINISHED"
        conf = json.loads((cfg.study_dir / "final" / kid.data.tags["finscale.run_id"] / "config.json").read_text())
        assert kid.data.tags["finscale.seed"] == str(conf["seed"])


def test_params_and_metrics_equal_the_run_directories(study):
    cfg, client, runs = study
    for run_dir in runs:
        (kid,) = children(client, cfg, **{"finscale.run_id": run_dir.name})
        conf = json.loads((run_dir / "config.json").read_text())
        env = json.loads((run_dir / "env.json").read_text())
        lines = RunDir(run_dir).read_metrics()
        final = [m for m in lines if m["event"] == "final"][-1]
        epochs = [m for m in lines if m["event"] == "epoch"]
        ev = json.loads((run_dir / "eval.json").read_text())
        p, m = kid.data.params, kid.data.metrics
        assert p["train.lr"] == json.dumps(conf["train"]["lr"])
        assert p["model_args.d_model"] == str(conf["model_args"]["d_model"])
        assert p["config_hash"] == conf["config_hash"]
        assert p["env.data.raw"] == env["data"]["raw"] and p["env.data.processed"] == env["data"]["processed"]
        assert p["measured.params_total"] == str(final["params"]["total"])
        assert p["measured.params_non_embedding"] == str(final["params"]["non_embedding"])
        for key in ("val_log_loss", "train_loss", "lr"):
            history = client.get_metric_history(kid.info.run_id, key)
            assert [(h.step, h.value) for h in history] == [(e["epoch"], e[key]) for e in epochs], key
        assert m["best_val_log_loss"] == final["val_log_loss"]
        assert m["best_epoch"] == final["best_epoch"] and m["n_params"] == final["params"]["total"]
        assert m["test_log_loss"] == ev["test"]["metrics"]["log_loss"]
        assert m["test_auc"] == ev["test"]["metrics"]["auc"]
        assert [m["test_log_loss_ci_low"], m["test_log_loss_ci_high"]] == ev["test"]["ci"]["log_loss"]
        assert m["baseline_logistic_test_log_loss"] == ev["baselines"]["logistic"]["metrics"]["log_loss"]
        assert m["backtest_strategy_sharpe"] == ev["backtest"]["strategy"]["sharpe"]


def test_artifacts_are_the_run_files(study, tmp_path):
    cfg, client, runs = study
    (kid,) = children(client, cfg, **{"finscale.run_id": runs[0].name})
    names = {a.path for a in client.list_artifacts(kid.info.run_id)}
    assert {"config.json", "env.json", "splits.json", "metrics.jsonl", "hardware.jsonl", "eval.json",
            "predictions.npz", "model"} <= names
    assert [a.path for a in client.list_artifacts(kid.info.run_id, "model")] == ["model/best.pt"]
    for name in ("config.json", "eval.json", "hardware.jsonl", "predictions.npz", "model/best.pt"):
        local = client.download_artifacts(kid.info.run_id, name, str(tmp_path))
        source = runs[0] / ("ckpt/best.pt" if name == "model/best.pt" else name)
        assert Path(local).read_bytes() == source.read_bytes(), name
    # the logged model loads and holds the run's architecture
    from finscale.checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(local))
    assert ckpt["model_args"] == json.loads((runs[0] / "config.json").read_text())["model_args"]
    assert '"max_c": 51.0' in (runs[0] / "hardware.jsonl").read_text()  # real readings were logged


def test_retracking_updates_the_same_child_run(study, monkeypatch):
    """A run tracked before its eval.json existed gains the test metrics on the next track,
    in the same child run, without duplicating its epoch history."""
    cfg, client, runs = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    copy = cfg.study_dir / "final" / "cpu-s-h1-s7-retrack"
    shutil.copytree(runs[0], copy, ignore=shutil.ignore_patterns("eval.json", "ckpt"))
    first = tracking.track_final_run(cfg, copy)
    assert first is not None
    assert "test_log_loss" not in client.get_run(first).data.metrics
    shutil.copy(runs[0] / "eval.json", copy / "eval.json")
    again = tracking.track_final_run(cfg, copy)
    assert again == first
    assert len(children(client, cfg, **{"finscale.run_id": copy.name})) == 1
    run = client.get_run(first)
    ev = json.loads((copy / "eval.json").read_text())
    assert run.data.metrics["test_log_loss"] == ev["test"]["metrics"]["log_loss"]
    epochs = [m for m in RunDir(copy).read_metrics() if m["event"] == "epoch"]
    assert len(client.get_metric_history(first, "val_log_loss")) == len(epochs)
    assert "eval.json" in {a.path for a in client.list_artifacts(first)}


def test_hpo_trial_is_a_nested_child_of_its_cell(study, monkeypatch):
    """A walk-forward trial directory (fold-0, fold-1) becomes one child run of the cell."""
    cfg, client, runs = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    trial = cfg.study_dir / "hpo" / "cpu-s-h1" / "trials" / "t0003-deadbeef"
    for fold in (0, 1):
        shutil.copytree(runs[fold], trial / f"fold-{fold}", ignore=shutil.ignore_patterns("eval.json", "ckpt"))
    run_id = tracking.track_hpo_trial(cfg, "cpu-s-h1", trial, 3, "COMPLETE", 0.3125)
    run = client.get_run(run_id)
    (parent,) = children(client, cfg, **{"finscale.kind": "cell"})
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["finscale.phase"] == "hpo" and run.data.tags["finscale.trial"] == "3"
    assert run.info.run_name == "cpu-s-h1-t0003" and run.info.status == "FINISHED"
    assert run.data.metrics["objective"] == 0.3125
    for fold in (0, 1):
        epochs = [m for m in RunDir(runs[fold]).read_metrics() if m["event"] == "epoch"]
        history = client.get_metric_history(run_id, f"fold{fold}.val_log_loss")
        assert [(h.step, h.value) for h in history] == [(e["epoch"], e["val_log_loss"]) for e in epochs]
    names = {a.path for a in client.list_artifacts(run_id, "fold-1")}
    assert "fold-1/config.json" in names
    assert tracking.track_hpo_trial(cfg, "cpu-s-h1", trial, 3, "COMPLETE", 0.3125) == run_id


def test_optuna_callback_tracks_each_finished_trial(study, monkeypatch):
    """The callback HPO passes to study.optimize, on a real Optuna study."""
    import optuna

    cfg, client, runs = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    cell_dir = cfg.study_dir / "hpo" / "cpu-s-h1" / "trials"
    for number in (0, 1):
        shutil.copytree(runs[number], cell_dir / f"t{number:04d}-cafe0000",
                        ignore=shutil.ignore_patterns("eval.json", "ckpt"))

    def objective(trial):
        trial.set_user_attr("run_dir", str(cell_dir / f"t{trial.number:04d}-cafe0000"))
        if trial.number == 1:
            raise optuna.TrialPruned()
        return 0.25

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opt = optuna.create_study(storage=f"sqlite:///{cfg.study_dir / 'cb.db'}")
    opt.optimize(objective, n_trials=2, callbacks=[tracking.optuna_callback(cfg, "cpu-s-h1")])
    done = children(client, cfg, **{"finscale.run_id": "hpo/cpu-s-h1/t0000-cafe0000"})
    pruned = children(client, cfg, **{"finscale.run_id": "hpo/cpu-s-h1/t0001-cafe0000"})
    assert done[0].data.metrics["objective"] == 0.25 and done[0].info.status == "FINISHED"
    assert pruned[0].data.tags["finscale.trial_state"] == "PRUNED" and pruned[0].info.status == "KILLED"
    assert "objective" not in pruned[0].data.metrics


def test_tracking_switch_and_store_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = [f"output_dir={json.dumps(str(tmp_path))}"]
    off = load_study(None, base)
    assert not tracking.enabled(off)
    assert tracking.track_final_run(off, tmp_path) is None  # disabled: touches nothing
    assert not (tmp_path / "default" / "mlruns").exists()
    on = load_study(None, [*base, "tracking.mlflow=true"])
    assert tracking.enabled(on)
    assert tracking.tracking_uri(on) == f"sqlite:///{tmp_path.resolve()}/default/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker.example:5000")
    assert tracking.enabled(off) and tracking.tracking_uri(off) == "http://tracker.example:5000"
    explicit = load_study(None, [*base, 'tracking.uri="sqlite:////elsewhere/m.db"'])
    assert tracking.tracking_uri(explicit) == "sqlite:////elsewhere/m.db"


def test_missing_mlflow_is_a_warning(tmp_path):
    script = ("import sys, logging; sys.modules['mlflow'] = None; logging.basicConfig(); "
              "from finscale.config import load_study; from finscale import tracking; "
              f"cfg = load_study(None, ['tracking.mlflow=true', 'output_dir=\"{tmp_path}\"']); "
              f"print(tracking.track_final_run(cfg, {str(tmp_path)!r}))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **NO_URI})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "None"
    assert "WARNING:finscale.tracking" in r.stderr and "pip install 'finscale[mlflow]'" in r.stderr


@pytest.mark.slow
def test_unreachable_tracking_uri_warns_and_the_study_completes(tmp_path, study):
    cfg, _, _ = study
    data = Path(cfg.data.data_dir)
    items = overrides(tmp_path / "runs", data, "train.max_epochs=1", 'tracking.uri="http://127.0.0.1:9"')
    r = run_cli("run", "smoke", "--mlflow", "--phase", "final", "--no-monitor", *sets(items),
                env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.count("WARNING finscale.tracking: MLflow tracking: cannot open http://127.0.0.1:9") == 1
    assert "final runs trained: 2" in r.stdout
    finals = sorted((tmp_path / "runs" / "smoke" / "final").iterdir())
    assert len(finals) == 2 and all(RunDir(d).state == "done" for d in finals)


def test_the_study_run_holds_the_answer_and_the_report(study, monkeypatch):
    from finscale.runner.study import RunOptions, run_study

    cfg, client, _ = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    for _ in range(2):  # rebuilding the report updates the same study run
        summary = run_study(cfg, RunOptions(phases=("report",), monitor=False))
    found = json.loads((summary.report.parent / "findings.json").read_text())
    (run,) = children(client, cfg, **{"finscale.kind": "study"})
    assert "mlflow.parentRunId" not in run.data.tags and run.info.status == "FINISHED"
    assert run.data.tags["finscale.answer"] == found["answer"] and found["answer"].startswith("Answer:")
    assert run.data.tags["finscale.verdict.h1"] == str(found["horizons"][0]["verdict"])
    assert run.data.metrics["h1.improvement"] == pytest.approx(found["horizons"][0]["improvement"])
    names = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/findings.json"} <= names


def test_each_final_model_is_a_pyfunc_that_predicts_like_the_run(study, monkeypatch):
    import mlflow

    from finscale.data import load_sample
    from finscale.trained_run import load_run

    cfg, client, runs = study
    (kid,) = children(client, cfg, **{"finscale.run_id": runs[0].name})
    uri = kid.data.tags["finscale.pyfunc_uri"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.default_uri(cfg))  # the study's store
    model = mlflow.pyfunc.load_model(uri)
    bars = load_sample("sp500").iloc[-300:]
    import pandas as pd

    pd.testing.assert_frame_equal(model.predict(bars), load_run(runs[0]).predict(bars))
