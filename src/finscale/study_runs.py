"""Read a study's run directories into tidy tables (the report's only input).

Consumes: ``runs/<study>/final/<run_id>/`` (config.json, env.json, status.json,
metrics.jsonl, hardware.jsonl, splits.json, eval.json), ``runs/<study>/hpo/<cell>/``
(best_params.json, trials.csv), ``runs/<study>/inference/`` (study-level tests) and the study config (to know which runs the CURRENT config
expects). Produces a :class:`StudyRuns` of pandas tables: runs, epochs, evals, baselines,
comparisons, backtests, calibration, equity, splits, provenance, hardware, hpo.
Guarantees: nothing is computed that the runs did not record (only reading, reshaping and
the training-FLOPs product of recorded quantities); missing optional files (hardware.jsonl,
HPO outputs, eval.json of unevaluated runs) give empty tables or NaN, never errors.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from finscale.config import StudyConfig
from finscale.rundir import RunDir

# The model, HPO and training code (torch, sklearn, Optuna: seconds to import) is imported only
# where it is needed, so ``results()`` on a recorded study reads JSON files and nothing more.

log = logging.getLogger(__name__)

# Test metrics carried into the tidy tables (names as in eval.json["test"]["metrics"]).
METRICS = ("log_loss", "auc", "skill", "skill_val", "brier", "ece", "accuracy", "accuracy_at_thr",
           "f1_at_thr", "base_rate", "pred_std", "log_loss_miscalibration",
           "log_loss_discrimination", "log_loss_refinement")
CI_METRICS = ("log_loss", "auc", "skill", "skill_val", "brier")
BACKTEST_STATS = ("total_return", "cagr", "sharpe", "max_drawdown", "hit_rate", "exposure",
                  "n_trades", "n_obs", "skew", "kurtosis")


@dataclass
class StudyRuns:
    """Every table the report is built from; one row per run (or per run x item)."""

    study_dir: Path
    runs: pd.DataFrame
    epochs: pd.DataFrame
    evals: pd.DataFrame
    baselines: pd.DataFrame
    comparisons: pd.DataFrame
    backtests: pd.DataFrame
    calibration: pd.DataFrame
    assets: pd.DataFrame = field(default_factory=pd.DataFrame)  # panels: run x asset test rows
    equity: dict = field(default_factory=dict)      # run_id -> {"dates", "strategy", "buy_and_hold"}
    splits: pd.DataFrame = field(default_factory=pd.DataFrame)
    provenance: pd.DataFrame = field(default_factory=pd.DataFrame)
    hardware: pd.DataFrame = field(default_factory=pd.DataFrame)
    hpo: pd.DataFrame = field(default_factory=pd.DataFrame)
    missing: list = field(default_factory=list)     # run ids the config expects but absent
    inference: dict = field(default_factory=dict)   # "<axis tag>/h<h>" -> inference/h<h>.json

    def current(self, table: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``table`` belonging to runs of the current study config."""
        if table.empty:
            return table
        return table[table["run_id"].isin(self.runs.loc[self.runs["current"], "run_id"])]


def expected_run_ids(cfg: StudyConfig) -> list[str] | None:
    """Run ids of the current config's final runs (None if the config cannot resolve them)."""
    from finscale.hpo.results import final_specs

    try:
        return [spec.run_id for spec in final_specs(cfg)]
    except ValueError as exc:  # e.g. fixed mode without an entry: list every run instead
        log.warning("cannot resolve the study's final runs (%s); reporting every run", exc)
        return None


def collect(cfg: StudyConfig) -> StudyRuns:
    """Read every final run directory of ``cfg``'s study (plus HPO outputs)."""
    final_root = cfg.study_dir / "final"
    dirs = sorted(p for p in final_root.iterdir() if p.is_dir()) if final_root.is_dir() else []
    expected = expected_run_ids(cfg)
    rows: dict[str, list] = {k: [] for k in (
        "runs", "epochs", "evals", "baselines", "comparisons", "backtests", "calibration", "splits",
        "provenance", "hardware", "assets")}
    equity: dict = {}
    for path in dirs:
        _read_run(RunDir(path), expected, rows, equity)
    tables = {k: pd.DataFrame(v) for k, v in rows.items()}
    for key in ("baselines", "splits", "provenance"):
        if not tables[key].empty:  # identical for every run of a horizon / the study
            tables[key] = tables[key].drop_duplicates(ignore_index=True)
    present = set(tables["runs"]["run_id"]) if not tables["runs"].empty else set()
    missing = [r for r in (expected or []) if r not in present]
    from finscale.hpo.results import results_frame

    inference = read_inference(cfg.study_dir)
    tables["comparisons"] = _with_holm(tables["comparisons"], inference)
    return StudyRuns(study_dir=cfg.study_dir, equity=equity, hpo=results_frame(cfg),
                     missing=missing, inference=inference, **tables)


def read_inference(study_dir: Path) -> dict:
    """The study-level inference files (``runs/<study>/inference/[<tag>/]h<h>.json``, see
    :mod:`finscale.runner.inference`) keyed by their path below ``inference/`` without ``.json``."""
    root = study_dir / "inference"
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root).with_suffix("")): json.loads(p.read_text())
            for p in sorted(root.rglob("h*.json"))}


def _with_holm(comparisons: pd.DataFrame, inference: dict) -> pd.DataFrame:
    """Comparisons plus ``dm_p_holm`` (the Holm-adjusted DM p-value across the study, NaN
    where the inference stage has not covered the run)."""
    if comparisons.empty:
        return comparisons
    holm = {(r["run_id"], r["baseline"]): r.get("dm_p_holm")
            for doc in inference.values() for r in doc.get("comparisons", [])}
    keys = zip(comparisons["run_id"], comparisons["baseline"])
    return comparisons.assign(dm_p_holm=[holm.get(k) for k in keys]).astype({"dm_p_holm": float})


def _read_run(run: RunDir, expected: list[str] | None, rows: dict, equity: dict) -> None:
    config = run.read_config()
    if config is None:
        log.warning("%s: no config.json; not a run directory, skipped", run.path)
        return
    run_id = run.path.name
    key = _key(run_id, config)
    final = read_final(run)
    ev = run.read_eval()
    current = expected is None or run_id in expected
    rows["runs"].append(_run_row(run, config, final, ev, key, current))
    rows["epochs"] += [{**key, **_epoch_row(m)} for m in run.read_metrics() if m.get("event") == "epoch"]
    rows["splits"] += [{"horizon": key["horizon"], **r} for r in run.read_json(run.SPLITS) or []]
    rows["provenance"].append(_provenance_row(run.read_json(run.ENV) or {}))
    rows["hardware"].append({**key, **hardware_summary(run.hardware)})
    if ev is not None:
        _read_eval(ev, key, rows, equity)


def _key(run_id: str, config: dict) -> dict:
    """The identity columns of a run: id, budget, horizon, seed, replicate, axis values."""
    return {"run_id": run_id, "budget": config["budget"], "horizon": int(config["horizon"]),
            "seed": int(config["seed"]), "replicate": int(config.get("replicate", 0)),
            **{f"axis:{k}": v for k, v in (config.get("axes") or {}).items()}}


def read_final(run: RunDir) -> dict | None:
    """The ``final`` line of a finished run's metrics.jsonl, if any (as train.read_final)."""
    finals = [m for m in run.read_metrics() if m.get("event") == "final"]
    return finals[-1] if finals else None


def _run_row(run: RunDir, config: dict, final: dict | None, ev: dict | None, key: dict,
             current: bool) -> dict:
    from finscale.model import ModelArgs, flops_per_sample, parse_budget

    status = run.status()
    margs = ModelArgs.from_dict(config["model_args"])
    params = (final or {}).get("params", {})
    epochs_run = (final or {}).get("epochs_run")
    train_windows = (final or {}).get("train_windows")
    fps = flops_per_sample(margs)["train"]
    return {
        **key, "state": status["state"], "reason": status.get("reason", ""), "current": current,
        "path": str(run.path), "config_hash": config.get("config_hash", ""),
        "budget_params": parse_budget(config["budget"]),
        "budget_tolerance": config.get("model", {}).get("budget_tolerance"),
        "d_model": margs.d_model, "num_layers": margs.num_layers, "num_heads": margs.num_heads,
        "d_ff": margs.d_ff, "params_total": params.get("total"),
        "params_non_embedding": params.get("non_embedding"), "params_head": params.get("head"),
        "train_flops_per_sample": fps, "train_windows": train_windows,
        "train_tokens": (final or {}).get("train_tokens"),
        "val_windows": (final or {}).get("val_windows"), "epochs_run": epochs_run,
        # Training compute actually spent: every window, every epoch run, forward + backward.
        "train_flops": fps * final["train_windows"] * final["epochs_run"] if final else None,
        "best_epoch": (final or {}).get("best_epoch"),
        "early_stopped": (final or {}).get("early_stopped"),
        "converged": (final or {}).get("converged"),
        "convergence_reason": (final or {}).get("convergence_reason", ""),
        "collapsed": (final or {}).get("collapsed"),
        "collapse_reason": (final or {}).get("collapse_reason", ""),
        "val_log_loss": (final or {}).get("val_log_loss"),
        "evaluated": ev is not None, "has_predictions": run.predictions.exists(),
        "lr": config.get("train", {}).get("lr"), "batch_size": config.get("train", {}).get("batch_size"),
    }


def _epoch_row(m: dict) -> dict:
    return {k: m.get(k) for k in ("epoch", "train_loss", "val_log_loss", "val_auc", "val_skill",
                                  "lr", "epoch_s", "samples_per_s", "improved", "train_flops")}


def _provenance_row(env: dict) -> dict:
    data = env.get("data", {})
    def flat(v):  # panels record one hash per asset
        return json.dumps(v, sort_keys=True) if isinstance(v, dict) else v

    return {"dataset": data.get("dataset"), "raw_sha256": flat(data.get("raw")),
            "processed_sha256": flat(data.get("processed")), "git_sha": env.get("git_sha"),
            "python": env.get("python"),
            "packages": json.dumps(env.get("packages", {}), sort_keys=True),
            "device": json.dumps(env.get("device", {}), sort_keys=True)}


def _metric_row(block: dict) -> dict:
    """Point metrics, CIs and collapse flag of one eval.json model block."""
    m, ci = block["metrics"], block.get("ci", {})
    row = {k: m.get(k) for k in METRICS}
    row["n"] = m.get("n")
    for k in CI_METRICS:
        lo_hi = ci.get(k) or [None, None]
        row[f"{k}_lo"], row[f"{k}_hi"] = lo_hi
    row.update(collapsed=block.get("collapsed"), collapse_reason=block.get("collapse_reason", ""),
               ci_level=block.get("ci_level"), n_resamples=block.get("n_resamples"),
               block_len=block.get("block_len"))
    return row


def _read_eval(ev: dict, key: dict, rows: dict, equity: dict) -> None:
    rows["evals"].append({**key, **_metric_row(ev["test"]), "threshold": ev.get("threshold"),
                          "train_base_rate": ev.get("train_base_rate"),
                          "val_base_rate": ev.get("val_base_rate"),
                          "strongest_baseline": ev.get("strongest_baseline"),
                          "strongest_selected_on": ev.get("strongest_baseline_selected_on", "test"),
                          "test_windows": ev.get("test_windows"),
                          "test_first_date": ev.get("test_first_date"),
                          "test_last_date": ev.get("test_last_date"),
                          "log_loss_const": ev["test"]["metrics"].get("log_loss_const"),
                          "optimal_log_loss": (ev.get("optimal_log_loss") or {}).get("pooled")})
    rows["assets"] += _asset_rows(ev, key)
    for name, block in ev.get("baselines", {}).items():
        rows["baselines"].append({"horizon": key["horizon"], "baseline": name, **_metric_row(block),
                                  "val_log_loss": block.get("val_log_loss")})
    for name, cmp in ev.get("comparisons", {}).items():
        lo, hi = cmp.get("ci") or [None, None]
        rows["comparisons"].append({**key, "baseline": name, "mean_diff": cmp["mean_diff"],
                                    "diff_lo": lo, "diff_hi": hi, "p_value": cmp["p_value"],
                                    "dm_stat": cmp.get("dm_stat"), "dm_p": cmp.get("dm_p")})
    for b in ev["test"].get("calibration", {}).get("bins", []):
        rows["calibration"].append({**key, **b})
    bt = ev.get("backtest")
    if bt:
        row = {**key, "threshold": bt.get("threshold"), "cost_bps": bt.get("cost_bps"),
               "n_days": bt.get("n_days")}
        for side, prefix in (("strategy", ""), ("buy_and_hold", "bh_")):
            row.update({prefix + k: bt[side].get(k) for k in BACKTEST_STATS})
        rows["backtests"].append(row)
        equity[key["run_id"]] = {"dates": bt["dates"], "strategy": bt["strategy"]["equity"],
                                 "buy_and_hold": bt["buy_and_hold"]["equity"]}


def _asset_rows(ev: dict, key: dict) -> list[dict]:
    """Panels: one row per asset of a run (model, base rate, strongest baseline, backtest)."""
    optimum = (ev.get("optimal_log_loss") or {}).get("per_asset", {})
    rows = []
    for asset, block in (ev.get("per_asset") or {}).items():
        m = block["test"]["metrics"]
        lo, hi = block["test"].get("ci", {}).get("log_loss") or [None, None]
        row = {**key, "asset": asset, "test_windows": block["test_windows"],
               "train_windows": block["train_windows"], "train_base_rate": block["train_base_rate"],
               "log_loss": m.get("log_loss"), "log_loss_lo": lo, "log_loss_hi": hi,
               "skill": m.get("skill"), "auc": m.get("auc"),
               "optimal_log_loss": optimum.get(asset)}
        base = block.get("baselines", {})
        strongest = ev.get("strongest_baseline")
        row["log_loss_constant"] = base.get("constant", {}).get("metrics", {}).get("log_loss")
        row["strongest_baseline"] = strongest
        row["log_loss_strongest"] = base.get(strongest, {}).get("metrics", {}).get("log_loss")
        row["sharpe"] = block.get("backtest", {}).get("strategy", {}).get("sharpe")
        row["bh_sharpe"] = block.get("backtest", {}).get("buy_and_hold", {}).get("sharpe")
        rows.append(row)
    return rows


def hardware_summary(path: Path) -> dict:
    """Per-run sensor summary from hardware.jsonl (absent file: monitor was off).

    ``hot_s`` is the time between consecutive samples whose earlier sample was in the
    warning or critical state: the trainer pauses exactly while warning persists, so this is
    the recorded approximation of the time paused (to one sampling interval).
    """
    if not path.exists():
        return {"hw_samples": 0, "max_c": None, "hot_s": 0.0, "unavailable_samples": 0,
                "backend": None, "states": ""}
    from finscale.monitor import read_hardware_log

    samples = read_hardware_log(path)
    states = pd.Series([s.get("state") for s in samples], dtype=object)
    times = pd.Series([s.get("time") for s in samples], dtype=float)
    hot = states.isin(["warning", "critical"]).to_numpy()[:-1]
    gaps = times.diff().to_numpy()[1:]
    temps = [s["max_c"] for s in samples if s.get("max_c") is not None]
    backends = sorted({str(s.get("backend")) for s in samples if s.get("backend")})
    return {"hw_samples": len(samples), "max_c": max(temps) if temps else None,
            "hot_s": float(gaps[hot].sum()) if len(samples) > 1 else 0.0,
            "unavailable_samples": int((states == "unavailable").sum()),
            "backend": ",".join(backends) or None,
            "states": ", ".join(f"{k} {v}" for k, v in states.value_counts().sort_index().items())}


# --------------------------------------------------------------------------- results()

RESULT_RUN_COLUMNS = ("state", "reason", "path", "params_total", "params_non_embedding", "d_model",
                      "num_layers", "num_heads", "d_ff", "train_windows", "epochs_run", "best_epoch",
                      "converged", "convergence_reason", "val_log_loss")


def recorded_run_ids(cfg: StudyConfig) -> list[str] | None:
    """The final run ids ``finscale run`` recorded in ``runs/<study>/study.json`` for exactly
    this config (None when there is no record or it is of another config)."""
    from finscale.config import config_to_dict
    from finscale.config.studydir import STUDY_RECORD

    path = cfg.study_dir / STUDY_RECORD
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return None
    if record.get("final_runs") is None:
        return None
    mine = config_to_dict(cfg)
    theirs = {**record.get("study", {}), "output_dir": mine["output_dir"], "name": mine["name"]}
    return list(record["final_runs"]) if theirs == mine else None


def results_table(cfg: StudyConfig) -> pd.DataFrame:
    """One row per final run of the current config found on disk, smallest model first (per
    horizon): identity, state, measured parameters, validation log-loss and, once evaluated,
    the test metrics with CIs (``collapsed``/``collapse_reason``: validation, from training;
    ``test_collapsed``/``test_collapse_reason``: test). Reads only JSON files of the run
    directories; the model code is imported only when study.json does not list the runs."""
    expected = recorded_run_ids(cfg)
    if expected is None:
        expected = expected_run_ids(cfg)
    root = cfg.study_dir / "final"
    names = expected if expected is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = [row for name in names if (row := _result_row(RunDir(root / name))) is not None]
    if not rows:
        return pd.DataFrame(columns=["run_id", "budget", "horizon", "seed", "replicate",
                                     *RESULT_RUN_COLUMNS])
    frame = pd.DataFrame(rows)
    return frame.sort_values(["horizon", "params_total", "replicate", "seed"], kind="stable",
                             na_position="last", ignore_index=True)


def _result_row(run: RunDir) -> dict | None:
    config = run.read_json("config.json")
    if config is None:  # expected but not started
        return None
    status, final, ev = run.status(), read_final(run) or {}, run.read_json("eval.json")
    arch, params = config.get("model_args", {}), final.get("params", {})
    row = {**_key(run.path.name, config), "state": status["state"], "reason": status.get("reason", ""),
           "path": str(run.path), "params_total": params.get("total"),
           "params_non_embedding": params.get("non_embedding"),
           **{k: arch.get(k) for k in ("d_model", "num_layers", "num_heads", "d_ff")},
           **{k: final.get(k) for k in ("train_windows", "epochs_run", "best_epoch", "converged",
                                        "convergence_reason", "val_log_loss", "collapsed",
                                        "collapse_reason")}}
    if ev is not None:
        test = _metric_row(ev["test"])
        test["test_collapsed"], test["test_collapse_reason"] = test.pop("collapsed"), test.pop("collapse_reason")
        row.update(test, strongest_baseline=ev.get("strongest_baseline"),
                   test_windows=ev.get("test_windows"), train_base_rate=ev.get("train_base_rate"),
                   val_base_rate=ev.get("val_base_rate"), test_first_date=ev.get("test_first_date"),
                   test_last_date=ev.get("test_last_date"))
    return row
