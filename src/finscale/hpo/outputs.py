"""HPO outputs and summaries: best parameters, trial tables, parameter importances.

Consumes: a cell's Optuna study (read only) and its storage spec.
Produces in ``runs/<study>/hpo/<cell>/``: ``best_params.json`` ({"params": make_spec form,
"value", "trial", "n_trials", "storage", "study_name", ...}; read back by
:func:`finscale.hpo.results.cell_params`), ``trials.csv`` and ``trials.parquet`` (one row
per trial: number, state, value, role, duration, params, user attributes), and a summary
dict per cell for the CLI and the report.
Guarantees: files are written atomically; storage passwords never reach a file; the best
trial is the counting COMPLETE trial of lowest value; importances are computed only from
>= 2 complete trials in which a searched parameter and the value vary, and Optuna's own
"importances will be equal" warnings are recorded as the reason instead of numbers.
"""

from __future__ import annotations

import json
import logging
import math
import warnings

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from finscale.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from finscale.config import StudyConfig
from finscale.convergence import cell_flags, describe_cell_flags
from finscale.hpo.identity import study_name
from finscale.hpo.ledger import Ledger, retry_history, study_ledger
from finscale.hpo.results import best_params_path
from finscale.hpo.storage import StorageSpec, open_storage, resolve_storage
from finscale.runspec import cfg_cell
from finscale.selection import Selection, selected_cells

log = logging.getLogger(__name__)


def _role(led: Ledger, t: FrozenTrial) -> str:
    if t in led.replaced:
        return "replaced"
    return "surplus" if t in led.surplus else "counted"


def _cell(value):
    """A table cell: scalars as they are, structures as JSON (Parquet needs flat types)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return value


def trials_frame(led: Ledger) -> pd.DataFrame:
    rows = []
    for t in led.trials:
        history = retry_history(t)
        row = {"number": t.number, "state": t.state.name, "value": t.value, "role": _role(led, t),
               "retry_of": history[-1] if history else None,
               "duration_s": t.duration.total_seconds() if t.duration else None,
               "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete}
        row.update({f"params_{k}": v for k, v in t.params.items()})
        row.update({f"user_attrs_{k}": _cell(v) for k, v in t.user_attrs.items()})
        rows.append(row)
    frame = pd.DataFrame(rows).sort_values("number") if rows else pd.DataFrame(columns=["number"])
    # mixed int/str/None user attributes would make Parquet guess a type; keep them as text
    for col in frame.columns:
        if col.startswith("user_attrs_") and frame[col].map(type).nunique() > 1:
            frame[col] = frame[col].map(lambda v: None if v is None or v is pd.NA else str(v))
    return frame.reset_index(drop=True)


def best_trial(led: Ledger) -> FrozenTrial | None:
    done = [t for t in led.in_state(TrialState.COMPLETE) if t.value is not None and math.isfinite(t.value)]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


def importances(study: optuna.Study, led: Ledger) -> tuple[dict | None, str | None]:
    """(parameter importances, None) or (None, why they are not informative)."""
    done = led.in_state(TrialState.COMPLETE)
    if len(done) < 2:
        return None, f"{len(done)} complete trial(s); importances need at least 2"
    varying = [k for k in {k for t in done for k in t.params}
               if len({json.dumps(t.params.get(k)) for t in done}) > 1]
    if not varying:
        return None, "no searched parameter varies across the complete trials"
    if len({t.value for t in done}) < 2:
        return None, "every complete trial has the same value"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = optuna.importance.get_param_importances(study)
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    equal = [n for n in notes if "will be equal" in n]
    if equal:
        return None, equal[0]
    return {k: float(v) for k, v in result.items()}, ("; ".join(notes) or None)


def cell_summary(cfg: StudyConfig, budget: str, horizon: int, study: optuna.Study,
                 spec: StorageSpec, n_trials: int) -> dict:
    led = study_ledger(study)
    best = best_trial(led)
    imp, why = importances(study, led)
    return {**_convergence_flags(cfg, budget, horizon, led, n_trials),
        "cell": cfg_cell(cfg, budget, horizon), "budget": budget, "horizon": horizon,
        "study_name": study.study_name, "storage": spec.display(), "n_trials": n_trials,
        "done": led.done(n_trials), "counts": led.counts(),
        "best_value": best.value if best else None, "best_trial": best.number if best else None,
        "best_params": best.user_attrs.get("cell_params") if best else None,
        "best_optuna_params": best.params if best else None,
        "params_total": best.user_attrs.get("params_total") if best else None,
        "importances": imp, "importance_note": why,
    }


def _convergence_flags(cfg: StudyConfig, budget: str, horizon: int, led: Ledger, n_trials: int) -> dict:
    """Guard 14 for a cell: best trial late, or too few trials for the searched dimensions."""
    from finscale.hpo.space import cell_space

    done = [t for t in led.in_state(TrialState.COMPLETE) if t.value is not None]
    n_dims = len(cell_space(cfg, budget, horizon).searched())
    flags = cell_flags([t.number for t in done], [t.value for t in done if t.value is not None], n_dims=n_dims,
                       n_trials=n_trials)
    return {"hpo_flags": flags, "hpo_flag_notes": describe_cell_flags(flags, n_dims=n_dims, n_trials=n_trials),
            "searched_dims": n_dims}


def cell_outputs(cfg: StudyConfig, budget: str, horizon: int, study: optuna.Study,
                 spec: StorageSpec, n_trials: int) -> dict:
    """Write best_params.json (when a trial completed), trials.csv/.parquet; return the summary."""
    summary = cell_summary(cfg, budget, horizon, study, spec, n_trials)
    out = best_params_path(cfg, budget, horizon).parent
    out.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study_ledger(study))
    atomic_write_bytes(frame.to_csv(index=False).encode(), out / "trials.csv")
    atomic_write_parquet(frame, out / "trials.parquet")
    paths = {"trials_csv": str(out / "trials.csv"), "trials_parquet": str(out / "trials.parquet")}
    if summary["best_trial"] is not None:
        atomic_write_json({
            "params": summary["best_params"], "value": summary["best_value"],
            "trial": summary["best_trial"], "n_trials": n_trials,
            "counts": summary["counts"], "optuna_params": summary["best_optuna_params"],
            "params_total": summary["params_total"], "storage": summary["storage"],
            "study_name": summary["study_name"], "importances": summary["importances"],
            "hpo_flags": summary["hpo_flags"], "hpo_flag_notes": summary["hpo_flag_notes"],
            "searched_dims": summary["searched_dims"],
        }, out / "best_params.json")
        paths["best_params"] = str(out / "best_params.json")
    else:
        log.warning("cell %s: no complete trial, so no best_params.json", summary["cell"])
    return {**summary, "outputs": paths}


def hpo_summary(cfg: StudyConfig, storage: str | None = None, sel: Selection = Selection()) -> list[dict]:
    """One summary per selected cell of the study (axis variants included), read from its
    storage (no writes). Cells whose study does not exist yet have ``"started": False``. A
    storage that cannot be read (corrupt or read-only file, database down) raises a one-line
    StorageError.
    """
    from finscale.hpo.failures import storage_error

    spec = resolve_storage(cfg.hpo.storage if storage is None else storage, cfg.study_dir)
    todo = selected_cells(cfg, sel)
    try:
        return _summaries(todo, spec)
    except Exception as exc:
        if (err := storage_error(spec, exc)) is not None:
            raise err from None
        raise


def _summaries(todo: list, spec: StorageSpec) -> list[dict]:
    if spec.kind in ("sqlite", "journal") and not _storage_file(spec).exists():
        return [_not_started(c.cfg, c.budget, c.horizon, spec) for c in todo]
    store = open_storage(spec)
    names = set(optuna.study.get_all_study_names(store))
    out = []
    for c in todo:
        name = study_name(c.cfg, c.budget, c.horizon)
        if name not in names:
            out.append(_not_started(c.cfg, c.budget, c.horizon, spec))
            continue
        study = optuna.load_study(study_name=name, storage=store)
        n = int(study.user_attrs.get("n_trials", c.cfg.hpo.trials))
        out.append({**cell_summary(c.cfg, c.budget, c.horizon, study, spec, n), "started": True})
    return out


def _storage_file(spec: StorageSpec):
    from pathlib import Path

    return Path(spec.url.split(":", 1)[1]) if spec.kind == "journal" else Path(spec.url[len("sqlite:///"):])


def _not_started(cfg: StudyConfig, budget: str, horizon: int, spec: StorageSpec) -> dict:
    return {"cell": cfg_cell(cfg, budget, horizon), "budget": budget, "horizon": horizon,
            "study_name": study_name(cfg, budget, horizon), "storage": spec.display(),
            "started": False, "n_trials": cfg.hpo.trials, "done": False, "counts": {},
            "best_value": None, "best_trial": None, "best_params": None}
