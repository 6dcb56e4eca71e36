"""The identity of a cell's Optuna study: which config values change its trials' results.

Consumes: the study config and a cell. Produces: the Optuna study name
``<study>/<budget>-h<h>-<hash8>``, where the hash covers every value that changes what a
trial trains or how trials are sampled and pruned (data, features, target, splits, model,
train, the search ranges, sampler seed, pruner). So ``--set train.max_epochs=3``
after a finished search starts a new search instead of silently reusing trials trained with
other settings. Values that do not change results (storage, workers, heartbeat, the names of
other budgets and horizons, evaluation, monitoring, tracking) and ``hpo.trials`` are left out.
"""

from __future__ import annotations

from finscale.config import StudyConfig, config_hash, config_to_dict
from finscale.data.pin import identity_fields
from finscale.runspec import UNSET_SPLITS, cell_name, cfg_cell, model_identity, run_precision

# hpo.trials is left out on purpose: raising it extends a finished search (its first trials
# stay as they were sampled), which is how workers join with more trials.
_HPO_IGNORED = ("mode", "trials", "storage", "workers", "heartbeat_s", "grace_s", "table", "fixed")


def trial_identity(cfg: StudyConfig, budget: str, horizon: int) -> dict:
    """The config values that change the trials of cell (budget, horizon)."""
    cell = cfg_cell(cfg, budget, horizon)
    model = config_to_dict(cfg.model)
    model["architectures"] = model.pop("architectures").get(budget)
    model.pop("budgets")
    model = model_identity(model, run_precision(cfg))
    target = config_to_dict(cfg.target)
    target.pop("horizons")
    hpo = {k: v for k, v in config_to_dict(cfg.hpo).items() if k not in _HPO_IGNORED}
    hpo["fixed"] = cfg.hpo.fixed.get(cell, cfg.hpo.fixed.get(cell_name(budget, horizon)))
    data = identity_fields(config_to_dict(cfg.data))
    data.pop("data_dir")
    return {"budget": budget, "horizon": horizon, "data": data,
            "features": config_to_dict(cfg.features), "target": target,
            "splits": _splits(cfg), "model": model,
            "train": config_to_dict(cfg.train), "hpo": hpo}


def _splits(cfg: StudyConfig) -> dict:
    """The splits section without the guard minimum and an unset data size (ids unchanged)."""
    return {k: v for k, v in config_to_dict(cfg.splits).items()
            if k != "min_train_windows" and not (k in UNSET_SPLITS and v == 0)}


def study_name(cfg: StudyConfig, budget: str, horizon: int) -> str:
    """``<study>/<cell>-<hash8>`` (the cell carries the axis tag of a variant): one Optuna
    study per cell and trial-changing config."""
    digest = config_hash(trial_identity(cfg, budget, horizon))[:8]
    return f"{cfg.name}/{cfg_cell(cfg, budget, horizon)}-{digest}"
