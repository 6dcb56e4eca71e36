"""The study plan: every HPO cell and final run, with parameters, FLOPs, memory and time.

Consumes: the study config (and the stored or bundled data when available, read-only).
Produces: :class:`PlanRow` per unit of work for ``--dry-run`` and ``finscale status``.
Guarantees: works offline and without stored data (window counts are then estimated from
the split dates and say so); entries that miss their budget are flagged with both numbers
instead of aborting the plan (fixed mode runs them as given and keeps the flag).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finscale.config import StudyConfig
from finscale.hpo.results import cell_params
from finscale.model import flops_per_sample, memory_estimate
from finscale.model.budgets import ARCH_KEYS, budget_miss, measured_parameters, parse_budget
from finscale.rundata import window_context
from finscale.runspec import RunSpec, cell_name, cfg_cell, make_spec, seed_sets, split_params
from finscale.selection import Cell, Selection, variant_cells
from finscale.study_axes import axis_values

log = logging.getLogger(__name__)

# Fraction of the matmul peak a small transformer reaches in training, for time estimates
# only (measured 0.1-0.5 on CPU in benchmarks/bench_model.py; we take the cautious end).
UTILISATION = 0.15
STEP_OVERHEAD_S = 2e-3


@dataclass
class PlanRow:
    phase: str                 # hpo | final
    budget: str
    horizon: int
    seed: str                  # seed, or "N trials"
    arch: str
    params: int | None
    non_embedding: int | None
    train_flops: int | None    # per sample
    memory: int | None         # bytes at the run's batch size
    est_s: float | None
    run_id: str = ""
    problem: str = ""
    extra: dict = field(default_factory=dict)


def arch_label(spec_args) -> str:
    a = spec_args
    return f"d{a.d_model}-l{a.num_layers}-h{a.num_heads}-f{a.d_ff}"


def window_counts(cfg: StudyConfig, data_dir=None) -> tuple[dict[int, int], bool]:
    """Training windows per horizon for the final split; (counts, exact?)."""
    try:
        from finscale.rundata import peek_frame

        frame = peek_frame(cfg, data_dir)
    except (FileNotFoundError, ValueError) as exc:
        log.info("plan: no local data (%s); estimating window counts from dates", exc)
        return _estimated_counts(cfg), False
    from finscale import labels, splits

    counts = {}
    for h in cfg.target.horizons:
        y = labels.make_labels(frame, cfg.target, h)
        s = splits.final_split(frame["Date"], np.isfinite(y), cfg.splits, window_context(cfg), h)
        counts[h] = len(s.train)
    return counts, True


def _estimated_counts(cfg: StudyConfig) -> dict[int, int]:
    """Training windows per horizon estimated from the split dates (NYSE sessions)."""
    from finscale.runner.periods import estimated_periods

    return next(p.windows for p in estimated_periods(cfg) if p.region == "train")


_PEAK: dict[str, float] = {}


def device_peak_flops() -> float:
    """Measured fp32 matmul FLOP/s of this machine's CPU (cached; ~0.2 s)."""
    import torch

    if "cpu" not in _PEAK:
        a = torch.randn(1024, 1024)
        a @ a
        t0, reps = time.perf_counter(), 5
        for _ in range(reps):
            a @ a
        _PEAK["cpu"] = 2 * 1024**3 * reps / (time.perf_counter() - t0)
    return _PEAK["cpu"]


def _estimate_seconds(spec: RunSpec, flops: int, windows: int, epochs: int) -> float:
    steps = epochs * -(-windows // spec.train.batch_size)
    return flops * windows * epochs / (device_peak_flops() * UTILISATION) + steps * STEP_OVERHEAD_S


def _row(cfg, phase, budget, h, seed, params, windows, epochs, seed_label, replicate=0) -> PlanRow:
    try:
        spec = make_spec(cfg, budget, h, seed, params, max_epochs=epochs, replicate=replicate)
    except ValueError as exc:
        return PlanRow(phase, budget, h, seed_label, _arch_from_params(params), None, None, None,
                       None, None, problem=str(exc))
    counts = measured_parameters(spec.model_args)
    flops = flops_per_sample(spec.model_args)["train"]
    # The memory of the device the study names; "auto" plans for a GPU when the study's
    # budgets are GPU-sized, i.e. whenever CUDA is what auto would pick on such a machine.
    device_type = "cpu" if cfg.model.device == "cpu" or (cfg.model.device == "auto" and not _has_cuda()) \
        else "cuda"
    precision = "bf16" if device_type == "cuda" else "fp32"
    mem = memory_estimate(spec.model_args, spec.train.batch_size, precision,
                          cfg.model.activation_checkpointing, device_type=device_type)["total"]
    from finscale.train import fit_compute_budget  # train.compute_budget sets the epochs

    epochs_run = fit_compute_budget(spec.train, spec.model_args, windows).max_epochs
    row = PlanRow(phase, budget, h, seed_label, arch_label(spec.model_args), counts["total"],
                  counts["non_embedding"], flops, mem,
                  _estimate_seconds(spec, flops, windows, epochs_run),
                  run_id=spec.run_id if phase == "final" else cfg_cell(cfg, budget, h))
    # Guard 10 in fixed (reproduction) mode: a table shape is run as given, its measured
    # count beside the label, and a miss is flagged here (search mode refuses it above).
    row.extra.update(model_args=spec.model_args, epochs=epochs_run,
                     batch_size=spec.train.batch_size, grad_accum=spec.train.grad_accum,
                     budget_flag=budget_miss(counts["total"], budget, cfg.model.budget_tolerance))
    return row


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _arch_from_params(params: dict) -> str:
    p = params or {}
    return "d{}-l{}-h{}-f{}".format(*(p.get(k, "?") for k in ARCH_KEYS))


def build_plan(cfg: StudyConfig, *, only_budgets=None, only_horizons=None, data_dir=None,
               only_axes: dict | None = None) -> list[PlanRow]:
    """Every selected HPO cell and final run of the study (each axis variant), in execution order."""
    for budget in cfg.model.budgets:
        parse_budget(budget)   # a bad label is an error even when --only leaves it out
    sel = Selection(tuple(only_budgets or ()), tuple(only_horizons or ()), dict(only_axes or {}))
    rows = []
    for var, var_cells in variant_cells(cfg, sel):
        counts, exact = window_counts(var, data_dir)
        var_rows = [row for c in var_cells for row in _cell_plan(c, counts[c.horizon])]
        for row in var_rows:
            row.extra["windows_exact"] = exact
            row.extra["train_windows"] = counts[row.horizon]
            row.extra["cell"] = cfg_cell(var, row.budget, row.horizon)
            row.extra.update(axis_values(var))
        rows += var_rows
    return rows


def _cell_plan(c: Cell, windows: int) -> list[PlanRow]:
    """The cell's HPO row (search mode), then one row per final run (replicate x seed)."""
    cfg, budget, h, rows = c.cfg, c.budget, c.horizon, []
    if cfg.hpo.mode == "search":
        fixed = cfg.hpo.fixed.get(c.name, cfg.hpo.fixed.get(cell_name(budget, h), {}))
        arch, _ = split_params(fixed, f"hpo.fixed.{c.name}")
        epochs = cfg.hpo.max_epochs or cfg.train.max_epochs
        row = _row(cfg, "hpo", budget, h, cfg.seeds[0], arch, windows, epochs, f"{cfg.hpo.trials} trials")
        if row.est_s is not None:
            row.est_s *= cfg.hpo.trials
        row.extra["units"] = cfg.hpo.trials
        rows.append(row)
    params, _source = _plan_params(cfg, budget, h)
    for replicate, seeds in enumerate(seed_sets(cfg)):
        for seed in seeds:
            rows.append(_row(cfg, "final", budget, h, seed, params, windows, 0, str(seed), replicate))
    return rows


def _plan_params(cfg: StudyConfig, budget: str, h: int) -> tuple[dict, str]:
    try:
        return cell_params(cfg, budget, h)
    except ValueError as exc:
        return {}, str(exc)


def remaining_plan(cfg: StudyConfig, rows: list[PlanRow]) -> tuple[list[PlanRow], int]:
    """(the rows with work left, how many units are already finished).

    A final run is finished when its run directory says ``done``; an HPO cell when its
    trials.csv (written as the cell ends) counts ``hpo.trials`` finished trials. A partly
    searched cell stays, with its estimate scaled to the trials left.
    """
    from finscale.rundir import RunDir

    left, finished = [], 0
    for row in rows:
        if row.phase == "final":
            if row.run_id and RunDir(cfg.study_dir / "final" / row.run_id).state == "done":
                finished += 1
                continue
        elif row.phase == "hpo":
            cell = row.run_id or cell_name(row.budget, row.horizon)  # with axes: the tagged cell
            done = _finished_trials(cfg.study_dir / "hpo" / cell / "trials.csv")
            if done >= cfg.hpo.trials:
                finished += 1
                continue
            if done and row.est_s is not None:
                row.est_s *= (cfg.hpo.trials - done) / cfg.hpo.trials
                row.seed = f"{cfg.hpo.trials - done} of {cfg.hpo.trials} trials"
        left.append(row)
    return left, finished


def _finished_trials(trials_csv) -> int:
    if not trials_csv.exists():
        return 0
    frame = pd.read_csv(trials_csv)
    counted = frame["role"] == "counted" if "role" in frame else True
    return int((frame["state"].str.upper().isin(["COMPLETE", "PRUNED", "FAIL"]) & counted).sum())
