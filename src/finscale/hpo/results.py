"""HPO results as files: the one place that reads a cell's outputs back.

Consumes: ``runs/<study>/hpo/<cell>/best_params.json`` and ``trials.csv`` (written by
:mod:`finscale.hpo.outputs`). Produces: a cell's chosen parameters for its final runs
(:func:`cell_params`), the final runs' specs (:func:`final_specs`) and one tidy row per cell
(:func:`results_frame`) for the CLI's status and the report.
Guarantees: only reads; a cell whose search ran but has no complete trial is an error
naming the cell and its trial states (never a silent fall-back to untuned defaults); a cell
not searched yet yields the study's defaults, labelled so (search mode), and fixed mode
without its ``[hpo.table]`` entry is an error naming it; never a guess.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from finscale.config import StudyConfig
from finscale.runspec import RunSpec, cell_name, cfg_cell, make_spec
from finscale.selection import Selection, selected_cells, selected_runs
from finscale.study_axes import axis_values


def best_params_path(cfg: StudyConfig, budget: str, horizon: int) -> Path:
    return cfg.study_dir / "hpo" / cfg_cell(cfg, budget, horizon) / "best_params.json"


def read_best(cfg: StudyConfig, budget: str, horizon: int) -> dict | None:
    """The cell's best_params.json, or None before any trial completed."""
    path = best_params_path(cfg, budget, horizon)
    return json.loads(path.read_text()) if path.exists() else None


def read_trials(cfg: StudyConfig, budget: str, horizon: int) -> pd.DataFrame | None:
    """The cell's trials.csv (one row per trial), or None before the cell ran."""
    path = best_params_path(cfg, budget, horizon).with_name("trials.csv")
    if not path.exists():
        return None
    frame = pd.read_csv(path)
    if "state" not in frame.columns:
        raise ValueError(f"{path}: expected a 'state' column (columns: {', '.join(frame.columns)})")
    return frame


def cell_params(cfg: StudyConfig, budget: str, horizon: int) -> tuple[dict, str]:
    """The hyperparameters a final run of this cell uses, and where they came from.

    ``hpo.mode = "fixed"``: the ``[hpo.table."<budget>-h<h>"]`` entry (required).
    ``search``: the cell's ``best_params.json`` when HPO has run, else the study's values.
    """
    cell = cfg_cell(cfg, budget, horizon)
    if cfg.hpo.mode == "fixed":
        if cell not in cfg.hpo.table:  # with axes, the plain cell name serves every variant
            cell = cell_name(budget, horizon)
        if cell not in cfg.hpo.table:
            raise ValueError(f"hpo.table: no entry for cell {cell!r} (hpo.mode is 'fixed'; "
                             f"entries: {', '.join(sorted(cfg.hpo.table)) or 'none'})")
        return dict(cfg.hpo.table[cell]), f"hpo.table.{cell}"
    best = read_best(cfg, budget, horizon)
    if best is not None:
        return best["params"], str(best_params_path(cfg, budget, horizon))
    trials = read_trials(cfg, budget, horizon)
    if trials is not None:  # the search ran, and nothing completed: never train untuned
        states = ", ".join(f"{str(k).lower()} {v}" for k, v in sorted(trials["state"].value_counts().items()))
        raise ValueError(f"HPO cell {cell}: no complete trial ({states or 'no trials'}; see "
                         f"{best_params_path(cfg, budget, horizon).with_name('trials.csv')}); its final "
                         "runs would train with untuned study defaults. Fix the cause and rerun the "
                         "hpo phase (or use hpo.mode = \"fixed\")")
    return {}, "study defaults (no HPO result yet)"


def final_runs(cfg: StudyConfig, sel: Selection = Selection(), *,
               cells: tuple[str, ...] | None = None) -> list[tuple[StudyConfig, RunSpec]]:
    """``(axis variant, spec)`` of every selected final run (:func:`~finscale.selection.selected_runs`)
    with its cell's chosen parameters, narrowed by ``sel.units`` (run ids) and, given ``cells``,
    to the runs of those HPO cells (the worker pool resolves a cell's runs once it is tuned)."""
    params: dict = {}
    out = []
    for run in selected_runs(cfg, sel):
        c = run.cell
        if cells is not None and c.name not in cells:
            continue
        if c.name not in params:
            params[c.name] = cell_params(c.cfg, c.budget, c.horizon)[0]
        spec = make_spec(c.cfg, c.budget, c.horizon, run.seed, params[c.name], replicate=run.replicate)
        if sel.has_unit(spec.run_id):
            out.append((c.cfg, spec))
    return out


def final_specs(cfg: StudyConfig, sel: Selection = Selection()) -> list[RunSpec]:
    """Every selected final run's spec (axis variant x replicate x cell x seed), in order."""
    return [spec for _, spec in final_runs(cfg, sel)]


def results_frame(cfg: StudyConfig) -> pd.DataFrame:
    """One row per HPO cell of the current config that has outputs: trial counts by state,
    best value/trial/params and importances, exactly as the HPO stage recorded them."""
    rows = []
    for c in selected_cells(cfg):
        best, trials = read_best(c.cfg, c.budget, c.horizon), read_trials(c.cfg, c.budget, c.horizon)
        if best is not None or trials is not None:
            rows.append({"cell": c.name, "budget": c.budget, "horizon": c.horizon,
                         **axis_values(c.cfg), **_row(best or {}, trials)})
    return pd.DataFrame(rows)


def _row(best: dict, trials: pd.DataFrame | None) -> dict:
    counts = trials["state"].value_counts().to_dict() if trials is not None else {}
    imp = best.get("importances") or {}
    ranked = sorted(imp.items(), key=lambda kv: -kv[1])
    return {"trials": len(trials) if trials is not None else None, "planned": best.get("n_trials"),
            "trial_states": ", ".join(f"{str(k).lower()} {v}" for k, v in sorted(counts.items())),
            "best_value": best.get("value"), "best_trial": best.get("trial"),
            "best_params": json.dumps(best.get("params", {}), sort_keys=True),
            "importances": ", ".join(f"{k} {v:.2f}" for k, v in ranked),
            "importance_note": best.get("importance_note") or ("" if imp else "not recorded"),
            "hpo_flags": list(best.get("hpo_flags") or []),
            "hpo_flag_notes": "; ".join(best.get("hpo_flag_notes") or []),
            "hpo_flag_note_list": list(best.get("hpo_flag_notes") or []),  # one warning each
            # one column per chosen hyperparameter (readable and sortable, unlike JSON)
            **{f"hp_{k}": v for k, v in sorted((best.get("params") or {}).items())}}
