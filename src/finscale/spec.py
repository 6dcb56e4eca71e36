"""Run specifications: what one run (budget x horizon x seed) trains, and where.

Shared by the HPO trials and the final runs (so it sits below both in the layer order).
A spec joins the study's sections with the cell's chosen hyperparameters (from HPO or a
fixed table) into the model args and training config the run actually uses; its hash —
and so its run id — covers exactly the values that change the run's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finscale.axes import axis_tag, axis_values
from finscale.config import StudyConfig, TrainConfig, config_hash, config_to_dict, replace_section
from finscale.features import input_columns
from finscale.model import ARCH_KEYS, ModelArgs, model_args_for
from finscale.prepare import PreparedData
from finscale.repro import environment_record, replicate_seed_sets
from finscale.rundir import RunDir, make_run_id

TRAIN_KEYS = ("lr", "weight_decay", "dropout", "warmup_fraction", "warmup_steps", "batch_size",
              "max_epochs", "patience", "grad_clip", "pos_weight")


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
    unknown = sorted(set(params) - set(ARCH_KEYS) - set(TRAIN_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown parameter {unknown[0]!r} (architecture: "
                         f"{', '.join(ARCH_KEYS)}; training: {', '.join(TRAIN_KEYS)})")
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


def make_spec(cfg: StudyConfig, budget: str, horizon: int, seed: int, params: dict | None = None,
              *, max_epochs: int | None = None, replicate: int = 0) -> RunSpec:
    """Resolve one run: study sections + cell parameters -> model args, train config, id."""
    params = dict(params or {})
    arch, train_params = split_params(params, f"cell {cfg_cell(cfg, budget, horizon)}")
    if max_epochs:
        train_params.setdefault("max_epochs", max_epochs)
    train = replace_section(cfg.train, **train_params)
    margs = model_args_for(cfg.model, budget, n_inputs(cfg), train.dropout, arch or None)
    run_cfg = {
        "study": cfg.name, "budget": budget, "horizon": horizon, "seed": seed,
        "data": config_to_dict(cfg.data), "features": config_to_dict(cfg.features),
        "target": {**config_to_dict(cfg.target), "horizon": horizon},
        "splits": config_to_dict(cfg.splits), "model": config_to_dict(cfg.model),
        "model_args": margs.to_dict(), "train": config_to_dict(train), "params": params,
        "replicate": replicate,
    }
    axes = axis_values(cfg)
    if axes:
        run_cfg["axes"] = axes
    # The id must not change with presentation-only keys (name lists of other budgets/horizons,
    # the axes naming values already in the sections, guard minima, an unset data size); the
    # replicate is named in the id's readable part (the seed already tells runs apart).
    identity = {k: v for k, v in run_cfg.items() if k not in ("study", "replicate", "axes")}
    identity["splits"] = {k: v for k, v in identity["splits"].items()
                          if k != "min_train_windows" and not (k == "train_years" and v == 0)}
    identity["target"] = {k: v for k, v in identity["target"].items() if k != "horizons"}
    identity["model"] = {k: v for k, v in identity["model"].items() if k not in ("budgets", "architectures")}
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
