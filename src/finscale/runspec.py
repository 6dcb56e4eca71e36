"""Run specifications: what one run (budget x horizon x seed) trains, and where.

Shared by the HPO trials and the final runs (so it sits below both in the layer order).
A spec joins the study's sections with the cell's chosen hyperparameters (from HPO or a
fixed table) into the model args and training config the run actually uses; its hash —
and so its run id — covers exactly the values that change the run's result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from finscale.config import StudyConfig, TrainConfig, config_hash, config_to_dict, replace_section
from finscale.data.panel import asset_names, is_panel
from finscale.data.pin import identity_fields
from finscale.features import input_columns
from finscale.model import ARCH_KEYS, ModelArgs, device_type, model_args_for, resolve_precision
from finscale.repro import environment_record, replicate_seed_sets
from finscale.rundata import PreparedData, window_context
from finscale.rundir import RunDir, make_run_id
from finscale.study_axes import axis_tag, axis_values

TRAIN_KEYS = ("lr", "weight_decay", "dropout", "warmup_fraction", "warmup_steps", "batch_size",
              "max_epochs", "patience", "grad_clip", "pos_weight")
# The design of a run (what the model sees), searched per cell like a hyperparameter so each
# size is compared at its own best validated design (guard 17): study sections they replace.
DESIGN_KEYS = ("feature_set", "normalization", "context_len")


def scaled_patching(model_cfg, context_len: int) -> dict:
    """Patch length and stride for ``context_len`` at the study's ratios (``patch_len /
    context_len`` and ``stride / patch_len``), so a design keeps the study's token count."""
    patch = max(1, min(context_len, round(context_len * model_cfg.patch_len / model_cfg.context_len)))
    stride = max(1, min(patch, round(patch * model_cfg.stride / model_cfg.patch_len)))
    return {"context_len": int(context_len), "patch_len": int(patch), "stride": int(stride)}


def design_cfg(cfg: StudyConfig, params: dict | None) -> StudyConfig:
    """The study as one run sees it: ``params``' design keys (``feature_set``,
    ``normalization``, ``context_len``) replace the study's values. Window ends stay those of
    the study (``splits.context_len`` pinned to its window context), so every design is scored
    on the same windows. Without design keys: ``cfg`` itself."""
    given = params or {}
    design = {k: given[k] for k in DESIGN_KEYS if k in given}
    if not design:
        return cfg
    model = {}
    if "normalization" in design:
        model["normalization"] = design["normalization"]
    if "context_len" in design:
        if design["context_len"] > window_context(cfg):
            raise ValueError(f"design context_len {design['context_len']} exceeds the study's window "
                             f"context {window_context(cfg)} (set splits.context_len or hpo.context_len)")
        model.update(scaled_patching(cfg.model, design["context_len"]))
    return dataclasses.replace(
        cfg, features=replace_section(cfg.features, set=design.get("feature_set", cfg.features.set)),
        model=replace_section(cfg.model, **model),
        splits=replace_section(cfg.splits, context_len=window_context(cfg)))


def cell_name(budget: str, horizon: int, tag: str = "") -> str:
    """``<budget>-h<h>``, plus ``-<axis tag>`` for a variant of a study with axes."""
    return f"{budget}-h{horizon}{'-' + tag if tag else ''}"


def cfg_cell(cfg: StudyConfig, budget: str, horizon: int) -> str:
    """The cell name of ``budget`` x ``horizon`` in the variant ``cfg``."""
    return cell_name(budget, horizon, axis_tag(cfg))


def cells(cfg: StudyConfig, budgets: tuple[str, ...] = (), horizons: tuple[int, ...] = (),
          ) -> list[tuple[str, int]]:
    """The study's (budget, horizon) cells, narrowed by ``--only`` filters (empty: all)."""
    out = [(b, h) for b in cfg.model.budgets for h in cfg.target.horizons
           if (not budgets or b in budgets) and (not horizons or h in horizons)]
    if not out:
        raise ValueError(f"--only matches no cell (budgets {list(cfg.model.budgets)}, "
                         f"horizons {list(cfg.target.horizons)})")
    return out


def split_params(params: dict, where: str) -> tuple[dict, dict]:
    """Split a cell's parameters into architecture and training values; reject unknown keys."""
    unknown = sorted(set(params) - set(ARCH_KEYS) - set(TRAIN_KEYS) - set(DESIGN_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown parameter {unknown[0]!r} (architecture: "
                         f"{', '.join(ARCH_KEYS)}; training: {', '.join(TRAIN_KEYS)}; "
                         f"design: {', '.join(DESIGN_KEYS)})")
    arch = {k: params[k] for k in ARCH_KEYS if k in params}
    if arch and len(arch) != len(ARCH_KEYS):
        missing = [k for k in ARCH_KEYS if k not in arch]
        raise ValueError(f"{where}: an explicit architecture needs all of {', '.join(ARCH_KEYS)} "
                         f"(missing {', '.join(missing)})")
    return arch, {k: params[k] for k in TRAIN_KEYS if k in params}


@dataclass(frozen=True)
class RunSpec:
    budget: str
    horizon: int
    seed: int
    model_args: ModelArgs
    train: TrainConfig
    params: dict              # the cell's chosen hyperparameters, as given
    config: dict              # fully resolved run config (config.json)
    digest: str
    replicate: int = 0        # which replicate seed set the seed belongs to
    tag: str = ""             # axis values of the study variant ("" without axes)

    @property
    def run_id(self) -> str:
        return make_run_id(self.budget, self.horizon, self.seed, self.digest, self.replicate, self.tag)

    @property
    def precision(self) -> str:
        """The concrete precision the run trains and predicts in ("fp32" or "bf16")."""
        return self.config["model"]["precision"]

    @property
    def cell(self) -> str:
        return cell_name(self.budget, self.horizon, self.tag)


def n_inputs(cfg: StudyConfig) -> int:
    return len(input_columns(cfg.features.set))


def seed_sets(cfg: StudyConfig) -> list[tuple[int, ...]]:
    """The study's replicate seed sets (``replicates`` of them; set 0 = ``seeds``); a
    ValueError naming the seed when two sets would share one (checked before any work)."""
    try:
        return replicate_seed_sets(cfg.seeds, cfg.replicates)
    except ValueError as exc:
        raise ValueError(f"study {cfg.name!r}: {exc}") from None


def run_precision(cfg: StudyConfig) -> str:
    """The concrete precision ("fp32"/"bf16") of the study's runs on the device they name:
    what actually runs, not the preference, so "auto" never enters an id or config.json."""
    return resolve_precision(cfg.model.precision, device_type(cfg.model.device))


# Split keys left out of ids at 0 (unset): runs from before each key keep their ids.
UNSET_SPLITS = ("train_years", "context_len", "train_assets")


def embedded_assets(cfg: StudyConfig) -> int:
    """Rows of the asset table: every asset of the panel with ``model.asset_embedding``, else 0
    (a ValueError when the study is not a panel)."""
    if not cfg.model.asset_embedding:
        return 0
    if not is_panel(cfg.data):
        raise ValueError("model.asset_embedding: needs a panel (data.source a list of sources)")
    return len(asset_names(cfg.data))


def model_identity(model: dict, precision: str) -> dict:
    """The model section as it enters an id: the resolved precision replaces the preference;
    fp32, what every run trained in before precision was a key, is left out so those ids hold
    (and so is ``asset_embedding`` when off)."""
    out = {k: v for k, v in model.items() if k != "precision" and not (k == "asset_embedding" and not v)}
    return out if precision == "fp32" else {**out, "precision": precision}


def make_spec(cfg: StudyConfig, budget: str, horizon: int, seed: int, params: dict | None = None,
              *, max_epochs: int | None = None, replicate: int = 0) -> RunSpec:
    """Resolve one run: study sections + cell parameters -> model args, train config, id."""
    params = dict(params or {})
    arch, train_params = split_params(params, f"cell {cfg_cell(cfg, budget, horizon)}")
    cfg = design_cfg(cfg, params)
    if max_epochs:
        train_params.setdefault("max_epochs", max_epochs)
    train = replace_section(cfg.train, **train_params)
    # Fixed mode runs the table's shapes as given (a reproduction); misses are flagged in
    # the plan and the report. Search mode keeps the tolerance guard.
    margs = model_args_for(cfg.model, budget, n_inputs(cfg), train.dropout, arch or None,
                           enforce_budget=cfg.hpo.mode != "fixed", n_assets=embedded_assets(cfg))
    precision = run_precision(cfg)
    run_cfg: dict = {
        "study": cfg.name, "budget": budget, "horizon": horizon, "seed": seed,
        "data": config_to_dict(cfg.data), "features": config_to_dict(cfg.features),
        "target": {**config_to_dict(cfg.target), "horizon": horizon},
        "splits": config_to_dict(cfg.splits), "model": {**config_to_dict(cfg.model), "precision": precision},
        "model_args": margs.to_dict(), "train": config_to_dict(train), "params": params,
        "replicate": replicate,
    }
    axes = axis_values(cfg)
    if axes:
        run_cfg["axes"] = axes
    # The id must not change with presentation-only keys (name lists of other budgets/horizons,
    # the axes naming values already in the sections, guard minima, an unset data size, fp32); the
    # replicate is named in the id's readable part (the seed already tells runs apart).
    identity = {k: v for k, v in run_cfg.items() if k not in ("study", "replicate", "axes")}
    identity["data"] = identity_fields(identity["data"])
    # no statistics token: the model args of runs from before the key (ids unchanged)
    identity["model_args"] = {k: v for k, v in identity["model_args"].items()
                              if not (k in ("revin_stats", "n_assets") and not v)}
    identity["splits"] = {k: v for k, v in identity["splits"].items()
                          if k != "min_train_windows" and not (k in UNSET_SPLITS and v == 0)}
    identity["target"] = {k: v for k, v in identity["target"].items() if k != "horizons"}
    identity["train"] = {k: v for k, v in identity["train"].items() if not (k == "compute_budget" and v == 0)}
    identity["model"] = model_identity({k: v for k, v in identity["model"].items()
                                        if k not in ("budgets", "architectures")}, precision)
    digest = config_hash(identity)
    return RunSpec(budget, horizon, seed, margs, train, params, run_cfg, digest, replicate, axis_tag(cfg))


def final_dir(cfg: StudyConfig, spec: RunSpec) -> Path:
    return cfg.study_dir / "final" / spec.run_id


def start_run_dir(run: RunDir, spec: RunSpec, prep: PreparedData, split_report: list) -> None:
    """Write config/env/splits once, when the run directory is first created."""
    run.create()
    if run.read_config() is None:
        run.write_json(run.CONFIG, {**spec.config, "config_hash": spec.digest})
        run.write_json(run.ENV, environment_record({"dataset": prep.name, **prep.hashes}))
        run.write_json(run.SPLITS, split_report)
        run.write_status("pending")
