"""MLflow tracking (optional extra ``finscale[mlflow]``), logged from finished run directories.

Consumes: the study config (``[tracking]``) and a run directory (final run or HPO trial)
after its unit of work finished. Produces, in the tracking store: an experiment per study
(named after it), a parent run per budget x horizon cell (tag ``finscale.cell``) and a
nested child run per final seed or HPO trial (tag ``finscale.run_id``) holding
- params: config.json flattened (``train.lr``, ``model_args.d_model``, ...), env.json
  flattened under ``env.`` (versions, device, data hashes) and the measured parameter
  counts (``measured.params_total`` ...);
- metrics: every numeric value of each ``epoch`` line of metrics.jsonl with step = epoch
  (``val_log_loss``, ``train_loss``, ``lr`` ...); the ``final`` line as ``best_val_*`` (the
  restored best weights) plus ``best_epoch``, ``n_params`` ...; eval.json, when present, as
  ``test_*`` (and ``test_*_ci_low/high``, ``baseline_<name>_test_*``, ``vs_<name>_*``,
  ``backtest_*``); an HPO trial's objective value as ``objective``;
- artifacts: config.json, env.json, splits.json, metrics.jsonl, hardware.jsonl, eval.json,
  predictions.npz (test/validation probabilities and labels, written by evaluation) and any PNG
  figures; for final runs also the model, ``model/best.pt`` (the restored best weights with
  their ``model_args``; load with :func:`finscale.checkpoint.load_checkpoint`).
A study-level run (tag ``finscale.kind = study``, :func:`track_study`) holds the report's
answer, verdicts and improvements and the report itself once it is built.
Guarantees: the run directories stay the source of truth — tracking only reads them.
Re-tracking a run directory updates its child run (found by tag) and logs only what is new
(epochs beyond those logged, eval.json once it exists, changed artifacts), so it is
idempotent and cheap for runs already tracked. Nothing here raises: a missing mlflow
package, an unreachable store or an MLflow error is logged as a WARNING (the CLI checks
:func:`check_available` first, so ``--mlflow`` without mlflow fails before any work); after a store
cannot be opened, tracking to it is off for the rest of the process (a later
``finscale run --mlflow`` re-tracks the finished runs).

Default store (``tracking.uri`` empty and ``$MLFLOW_TRACKING_URI`` unset): the SQLite
database ``<study_dir>/mlruns/mlflow.db`` with artifacts in ``<study_dir>/mlruns/artifacts``
— MLflow 3 refuses its old ``file:`` store unless ``MLFLOW_ALLOW_FILE_STORE=true``. View it
with ``mlflow ui --backend-store-uri sqlite:///<study_dir>/mlruns/mlflow.db``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finscale.config import StudyConfig
from finscale.rundir import RunDir

__all__ = ["enabled", "tracking_uri", "default_uri", "ui_command", "track_final_run",
           "track_hpo_trial", "track_study", "optuna_callback", "check_available", "INSTALL_HINT"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'finscale[mlflow]'"
ARTIFACTS = RunDir.ARTIFACTS
MODEL_ARTIFACT = (f"ckpt/{RunDir.BEST}", "model")   # final runs: (file in the run dir, artifact folder)
MAX_PARAM_LEN = 6000        # MLflow's limit on a param value
BATCH_PARAMS, BATCH_METRICS = 100, 1000  # MLflow's per-request limits
# status.json state / Optuna trial state -> MLflow run status
STATUS = {"done": "FINISHED", "complete": "FINISHED", "failed": "FAILED", "fail": "FAILED",
          "pruned": "KILLED", "stopped": "KILLED", "thermal_stop": "KILLED"}

# MLflow 3 opens an experiment without this tag in its GenAI layout; ours is model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
_sessions: dict[tuple[str, str], tuple[Any, str]] = {}   # (uri, study) -> (client, experiment id)
_off: set[str] = set()                                   # stores that could not be opened
_warned: set[str] = set()


def enabled(cfg: StudyConfig) -> bool:
    """Tracking is on with ``tracking.mlflow = true`` (``--mlflow``) or $MLFLOW_TRACKING_URI."""
    return bool(cfg.tracking.mlflow or os.environ.get("MLFLOW_TRACKING_URI"))


def default_uri(cfg: StudyConfig) -> str:
    return f"sqlite:///{(cfg.study_dir / 'mlruns' / 'mlflow.db').resolve()}"


def tracking_uri(cfg: StudyConfig) -> str:
    """``tracking.uri``, else $MLFLOW_TRACKING_URI, else the study's local SQLite store."""
    return cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(cfg)


def check_available(cfg: StudyConfig) -> None:
    """Raise ``ValueError`` naming the install command when the study asks for MLflow
    (``tracking.mlflow``, ``--mlflow``) and mlflow is not installed: called before any work,
    so a study is never run untracked by mistake. (Tracking switched on only by
    $MLFLOW_TRACKING_URI stays a warning: that variable may be meant for another program.)"""
    import importlib.util

    if not cfg.tracking.mlflow:
        return
    try:
        present = importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        present = False
    if not present:
        raise ValueError(f"tracking.mlflow (--mlflow): mlflow is not installed; install it with "
                         f"{INSTALL_HINT}, or run without --mlflow")


def ui_command(cfg: StudyConfig) -> str:
    return f"mlflow ui --backend-store-uri {tracking_uri(cfg)}"


@dataclass
class _Unit:
    """One child run: where its files are and how it is labelled."""

    key: str                      # finscale.run_id tag: unique within the study
    name: str
    phase: str                    # final | hpo
    cell: str
    root: Path
    dirs: list[tuple[str, Path]]  # (label, directory): ("", root), or ("fold0", root/fold-0), ...
    status: str
    tags: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- entry points

def track_final_run(cfg: StudyConfig, run_dir: Path) -> str | None:
    """Log a final run directory (again); returns the MLflow child run id, or None."""
    run_dir = Path(run_dir)

    def unit() -> _Unit:
        conf = _read_json(run_dir / RunDir.CONFIG)
        if conf is None:
            raise ValueError(f"{run_dir}: no {RunDir.CONFIG} (not a run directory)")
        state = (_read_json(run_dir / RunDir.STATUS) or {}).get("state", "running")
        cell = f"{conf.get('budget')}-h{conf.get('horizon')}"
        return _Unit(run_dir.name, run_dir.name, "final", cell, run_dir, [("", run_dir)],
                     STATUS.get(state, "RUNNING"), {"finscale.seed": str(conf.get("seed"))})

    return _guarded(cfg, run_dir, unit)


def track_hpo_trial(cfg: StudyConfig, cell: str, run_dir: Path, trial_number: int, state: str,
                    value: float | None) -> str | None:
    """Log an HPO trial directory (walk-forward folds in ``fold-N/``); returns the child run id."""
    run_dir = Path(run_dir)

    def unit() -> _Unit:
        folds = sorted(run_dir.glob("fold-*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 0)
        dirs = [(f"fold{p.name[5:]}", p) for p in folds] or [("", run_dir)]
        trial_state = str(state).rsplit(".", 1)[-1]   # "COMPLETE" or "TrialState.COMPLETE"
        metrics = {} if value is None else {"objective": float(value)}
        return _Unit(f"hpo/{cell}/{run_dir.name}", f"{cell}-t{trial_number:04d}", "hpo", cell,
                     run_dir, dirs,
                     STATUS.get(trial_state.lower(), "RUNNING"),
                     {"finscale.trial": str(trial_number), "finscale.trial_state": trial_state}, metrics)

    return _guarded(cfg, run_dir, unit)


def optuna_callback(cfg: StudyConfig, cell: str):
    """An Optuna ``study.optimize(callbacks=[...])`` entry tracking each finished trial from
    its run directory (user attribute ``run_dir``); a no-op when tracking is off."""

    def callback(study, trial) -> None:
        run_dir = trial.user_attrs.get("run_dir")
        if run_dir and enabled(cfg):
            track_hpo_trial(cfg, cell, Path(run_dir), trial.number, trial.state.name, trial.value)

    return callback


STUDY_ARTIFACTS = ("report.html", "findings.json", "scaling.json", "tables/strongest_baseline.csv",
                   "tables/final_results.csv")


def track_study(cfg: StudyConfig, report_dir: Path) -> str | None:
    """Log the study itself, once its report exists: a top-level run tagged
    ``finscale.kind = study`` holding the answer and each horizon's verdict as tags
    (``finscale.answer``, ``finscale.verdict.h<h>``), each horizon's improvement of the best
    size over the best baseline as a metric (``h<h>.improvement``, baseline - model) and the
    report (``report.html``, ``findings.json``, ``scaling.json``, key tables) as artifacts
    under ``report/``. Idempotent like the others: re-logged when the report changes."""
    report_dir = Path(report_dir)
    return _guarded(cfg, report_dir, None, lambda client, exp_id: _track_study(client, exp_id, cfg, report_dir))


def _track_study(client, exp_id: str, cfg: StudyConfig, report_dir: Path) -> str:
    from mlflow.entities import Metric

    found = _read_json(report_dir / "findings.json") or {}
    run, _ = _find_or_create(client, exp_id, {"finscale.kind": "study", "finscale.study": cfg.name},
                             name=f"{cfg.name} (study)", tags={})
    run_id, now = run.info.run_id, int(time.time() * 1000)
    tags = {"finscale.answer": str(found.get("answer", ""))[:MAX_PARAM_LEN],
            **{f"finscale.verdict.h{h['horizon']}": str(h.get("verdict")) for h in found.get("horizons", [])}}
    metrics = [Metric(f"h{h['horizon']}.improvement", float(h["improvement"]), now, 0)
               for h in found.get("horizons", []) if _is_number(h.get("improvement"))]
    _log(client, run_id, [], metrics, tags)
    logged = json.loads(run.data.tags.get("finscale.artifacts", "{}"))
    current = dict(logged)
    for name in STUDY_ARTIFACTS:
        path = report_dir / name
        if path.is_file() and logged.get(name) != (digest := _sha(path)):
            where = "report/" + name.rpartition("/")[0] if "/" in name else "report"
            client.log_artifact(run_id, str(path), artifact_path=where.rstrip("/"))
            current[name] = digest
    if current != logged:
        client.set_tag(run_id, "finscale.artifacts", json.dumps(current, sort_keys=True))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _guarded(cfg: StudyConfig, run_dir: Path, make_unit, work=None) -> str | None:
    """Run ``work(client, experiment_id)`` (default: track ``make_unit()``) without ever raising."""
    if not enabled(cfg):
        return None
    uri = tracking_uri(cfg)
    if uri in _off:
        return None
    try:
        import mlflow  # noqa: F401  (the optional extra)
    except ImportError:
        _warn_once("missing", "MLflow tracking is on but mlflow is not installed (%s); "
                   "runs are not tracked", INSTALL_HINT)
        return None
    # Broad excepts below are deliberate, and the only ones in finscale: tracking mirrors the
    # run directories, and no tracking failure (network, server, MLflow version quirks) may
    # ever fail or stop a study.
    try:
        client, exp_id = _session(cfg, uri)
    except Exception as exc:
        _off.add(uri)
        log.warning("MLflow tracking: cannot open %s (%s: %s); tracking is off for the rest of this "
                    "process; rerun with --mlflow to track the finished runs later",
                    uri, type(exc).__name__, _first_line(exc))
        return None
    try:
        return work(client, exp_id) if work is not None else _track(client, exp_id, cfg, make_unit())
    except Exception as exc:
        log.warning("MLflow tracking of %s failed (%s: %s); the run itself is unaffected",
                    run_dir, type(exc).__name__, _first_line(exc))
        return None


# --------------------------------------------------------------------------- store, experiment, runs

def _session(cfg: StudyConfig, uri: str) -> tuple[Any, str]:
    """(client, experiment id) for this study, cached per process."""
    if (uri, cfg.name) in _sessions:
        return _sessions[(uri, cfg.name)]
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    location = None
    if uri == default_uri(cfg):
        (cfg.study_dir / "mlruns").mkdir(parents=True, exist_ok=True)
        location = (cfg.study_dir / "mlruns" / "artifacts").resolve().as_uri()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.name)
    if exp is None:
        try:
            exp_id = client.create_experiment(cfg.name, artifact_location=location,
                                              tags={"finscale.study": cfg.name, **EXPERIMENT_KIND})
        except MlflowException:  # created meanwhile by another worker
            created = client.get_experiment_by_name(cfg.name)
            if created is None:  # not created by another worker after all: the error stands
                raise
            exp_id = created.experiment_id
    else:
        exp_id = exp.experiment_id
        if not set(EXPERIMENT_KIND) & set(exp.tags):  # a kind chosen in the UI is left alone
            client.set_experiment_tag(exp_id, *next(iter(EXPERIMENT_KIND.items())))
        if exp.lifecycle_stage == "deleted":
            log.info("MLflow: restoring the deleted experiment %r", cfg.name)
            client.restore_experiment(exp_id)
    log.info("MLflow tracking to %s (experiment %r); view: %s", uri, cfg.name, ui_command(cfg))
    _sessions[(uri, cfg.name)] = (client, exp_id)
    return client, exp_id


def _find(client, exp_id: str, tags: dict[str, str]) -> list:
    """Runs carrying all ``tags``, oldest first (so concurrent creators agree on one)."""
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([exp_id], where, max_results=1000)
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def _find_or_create(client, exp_id: str, key: dict[str, str], *, name: str, tags: dict,
                    start_time: int | None = None) -> tuple[Any, bool]:
    """The run tagged ``key`` (created if absent); (run, created?). A duplicate that lost a
    creation race to another process is deleted, so the oldest one is always used."""
    found = _find(client, exp_id, key)
    if found:
        return found[0], False
    run = client.create_run(exp_id, start_time=start_time, run_name=name, tags={**tags, **key})
    found = _find(client, exp_id, key)
    if found and found[0].info.run_id != run.info.run_id:
        client.delete_run(run.info.run_id)
        return found[0], False
    return run, True


def _cell_run(client, exp_id: str, cfg: StudyConfig, cell: str) -> str:
    from mlflow.entities import Param

    budget, _, horizon = cell.rpartition("-h")
    run, created = _find_or_create(client, exp_id, {"finscale.cell": cell, "finscale.kind": "cell"},
                                   name=cell, tags={"finscale.study": cfg.name, "finscale.budget": budget,
                                                    "finscale.horizon": horizon})
    if created:  # params make cells comparable in the MLflow UI's run table
        client.log_batch(run.info.run_id, params=[Param("budget", budget), Param("horizon", horizon)])
    return run.info.run_id


def _track(client, exp_id: str, cfg: StudyConfig, unit: _Unit) -> str:
    from mlflow.entities import Metric, Param

    parent = _cell_run(client, exp_id, cfg, unit.cell)
    first_dir = unit.dirs[0][1]
    run, _ = _find_or_create(
        client, exp_id, {"finscale.run_id": unit.key, "finscale.kind": "unit"}, name=unit.name,
        tags={"mlflow.parentRunId": parent, "finscale.phase": unit.phase, "finscale.cell": unit.cell,
              "finscale.study": cfg.name, "finscale.run_dir": str(unit.root.resolve()), **unit.tags},
        start_time=_mtime_ms(first_dir / RunDir.CONFIG))
    run_id, done, now, tags = run.info.run_id, run.data.tags, int(time.time() * 1000), dict(unit.tags)
    # MLflow params are write-once: log only keys not there yet (e.g. counts of a run that
    # was tracked when it failed and finished later).
    params = [Param(k, v) for k, v in _params(first_dir).items() if k not in run.data.params]
    metrics = [Metric(k, v, now, 0) for k, v in unit.metrics.items() if run.data.metrics.get(k) != v]
    for label, folder in unit.dirs:
        metrics += _new_metrics(folder, label, done, tags, now)
    _log(client, run_id, params, metrics, tags)
    _log_artifacts(client, run_id, unit, done)
    client.set_terminated(run_id, unit.status, end_time=_mtime_ms(first_dir / RunDir.STATUS))
    client.set_terminated(parent, "FINISHED")
    return run_id


def _new_metrics(folder: Path, label: str, done: dict, tags: dict, now: int) -> list:
    """Metrics of ``folder`` not logged yet (progress kept in ``tags``; fold ``label``s
    prefix the metric names: ``fold0.val_log_loss``)."""
    from mlflow.entities import Metric

    prefix, suffix = (f"{label}.", f".{label}") if label else ("", "")
    out = []
    lines = _read_metrics(folder)
    epochs = [m for m in lines if m.get("event") == "epoch"]
    seen_key = f"finscale.epochs_logged{suffix}"
    seen = int(done.get(seen_key, 0))
    for line in epochs:
        if line["epoch"] > seen:
            out += [Metric(prefix + k, v, now, int(line["epoch"])) for k, v in _numeric(line).items()
                    if k not in ("epoch", "step")]
    tags[seen_key] = str(max([seen] + [int(m["epoch"]) for m in epochs]))
    final = next((m for m in reversed(lines) if m.get("event") == "final"), None)
    final_key = f"finscale.final_logged{suffix}"
    if final is not None and final_key not in done:
        out += [Metric(prefix + k, v, now, 0) for k, v in _final_metrics(final).items()]
        tags[final_key] = "1"
    ev = _read_json(folder / RunDir.EVAL)
    eval_key = f"finscale.eval_logged{suffix}"
    if ev is not None and eval_key not in done:
        out += [Metric(prefix + k, v, now, 0) for k, v in _eval_metrics(ev).items()]
        tags[eval_key] = "1"
    return out


def _log(client, run_id: str, params: list, metrics: list, tags: dict) -> None:
    from mlflow.entities import RunTag

    for i in range(0, len(params), BATCH_PARAMS):
        client.log_batch(run_id, params=params[i:i + BATCH_PARAMS])
    for i in range(0, len(metrics), BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[i:i + BATCH_METRICS])
    # Progress tags last: a crash before this point re-logs rather than skips.
    items = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, len(items), BATCH_PARAMS):
        client.log_batch(run_id, tags=items[i:i + BATCH_PARAMS])


def _log_artifacts(client, run_id: str, unit: _Unit, done: dict) -> None:
    """Upload artifacts whose content changed since the last upload (hash in a tag)."""
    logged = json.loads(done.get("finscale.artifacts", "{}"))
    current = dict(logged)
    for label, folder in unit.dirs:
        sub = folder.name if label else None   # fold-N/ inside the artifact tree
        files = [(folder / n, sub) for n in ARTIFACTS] + [(p, sub) for p in sorted(folder.glob("*.png"))]
        if unit.phase == "final":
            files.append((folder / MODEL_ARTIFACT[0], MODEL_ARTIFACT[1]))
        for path, where in files:
            if not path.is_file():
                continue
            name = f"{where}/{path.name}" if where else path.name
            digest = _sha(path)
            if logged.get(name) != digest:
                client.log_artifact(run_id, str(path), artifact_path=where)
                current[name] = digest
    if current != logged:
        client.set_tag(run_id, "finscale.artifacts", json.dumps(current, sort_keys=True))


# --------------------------------------------------------------------------- run dir -> params/metrics

def _params(folder: Path) -> dict[str, str]:
    params = _flatten(_read_json(folder / RunDir.CONFIG) or {})
    params.update(_flatten(_read_json(folder / RunDir.ENV) or {}, "env."))
    lines = [m for m in _read_metrics(folder) if m.get("event") == "final"]
    if lines:
        params.update({f"measured.params_{k}": str(v) for k, v in lines[-1].get("params", {}).items()})
    return params


def _final_metrics(final: dict) -> dict[str, float]:
    out = {f"best_{k}" if k.startswith("val_") else k: v for k, v in _numeric(final).items()}
    counts = final.get("params") or {}
    out.update({f"n_params{'' if k == 'total' else '_' + k}": float(v) for k, v in counts.items()})
    return out


def _eval_metrics(ev: dict) -> dict[str, float]:
    test = ev.get("test", {})
    out = {f"test_{k}": v for k, v in _numeric(test.get("metrics", {})).items()}
    for k, ci in (test.get("ci") or {}).items():
        if isinstance(ci, list) and len(ci) == 2 and all(_is_number(x) for x in ci):
            out[f"test_{k}_ci_low"], out[f"test_{k}_ci_high"] = float(ci[0]), float(ci[1])
    if "collapsed" in test:
        out["test_collapsed"] = float(bool(test["collapsed"]))
    for name, base in (ev.get("baselines") or {}).items():
        out.update({f"baseline_{name}_test_{k}": v for k, v in _numeric(base.get("metrics", {})).items()})
    for name, comp in (ev.get("comparisons") or {}).items():
        out.update({f"vs_{name}_{k}": v for k, v in _numeric(comp).items() if k not in ("n", "n_resamples")})
    for side in ("strategy", "buy_and_hold"):
        out.update({f"backtest_{side}_{k}": v
                    for k, v in _numeric((ev.get("backtest") or {}).get(side, {})).items()})
    out.update({k: v for k, v in _numeric(ev).items() if k in ("threshold", "test_windows")})
    return out


def _numeric(d: dict) -> dict[str, float]:
    """The top-level numbers of ``d`` (bools as 0/1; None, strings and containers skipped)."""
    return {k: float(v) for k, v in d.items() if _is_number(v)}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not (isinstance(v, float) and math.isinf(v))


def _flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> {"a.b": "value"}; lists and empty dicts as JSON, long values cut."""
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    text = obj if isinstance(obj, str) else json.dumps(obj, default=str)  # true/null, not True/None
    return {prefix.rstrip("."): text if len(text) <= MAX_PARAM_LEN else text[:MAX_PARAM_LEN - 3] + "..."}


# --------------------------------------------------------------------------- small helpers

def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def _read_metrics(folder: Path) -> list[dict]:
    from finscale.rundir import RunDir

    return RunDir(folder).read_metrics()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _mtime_ms(path: Path) -> int | None:
    try:
        return int(path.stat().st_mtime * 1000)
    except FileNotFoundError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def _warn_once(key: str, msg: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg, *args)
