"""The study plan on a named GPU class: device plan, memory vs device memory, hours.

Consumes: the plan rows of :mod:`.plan` (their model args, batch, epochs and window counts)
and a :class:`~finscale.model.compute.GpuClass` with an assumed model FLOP utilisation.
Produces: one :class:`GpuRow` per unit of work and the total hours, for ``--dry-run``.
Guarantees: analytic only (nothing is allocated, no GPU needed); a run whose estimated step
memory exceeds the device (less the allocator headroom) is flagged with the largest
micro-batch that fits, never silently planned. Hours are upper bounds: every run is costed
at its maximum epochs (early stopping usually ends it sooner).
"""

from __future__ import annotations

from dataclasses import dataclass

from finscale.config import StudyConfig
from finscale.model.compute import (
    GPU_LAYER_STEP_S,
    RESERVE_FRACTION,
    GpuClass,
    flops_per_sample,
    max_micro_batch,
    memory_estimate,
)
from finscale.runner.plan import PlanRow


@dataclass
class GpuRow:
    phase: str
    cell: str
    seed: str
    label: str              # the budget label
    params: int | None      # measured
    budget_flag: str        # "" or the miss, as the plan flags it
    device_plan: str
    checkpointing: bool
    memory: int | None      # estimated bytes of one training step
    device_memory: int
    hours: float | None
    problem: str = ""


def run_flops(row: PlanRow, val_windows: int, checkpointing: bool) -> float:
    """Matmul FLOPs of one unit at its maximum epochs: training (plus one recomputed forward
    per sample with checkpointing) and a validation pass per epoch."""
    args = row.extra["model_args"]
    f = flops_per_sample(args)
    per_epoch = (f["train"] + (f["forward"] if checkpointing else 0)) * row.extra["train_windows"] \
        + f["forward"] * val_windows
    return float(per_epoch * row.extra["epochs"] * row.extra.get("units", 1))


def launch_seconds(row: PlanRow, checkpointing: bool) -> float:
    """The kernel-launch floor: layers x optimiser steps x GPU_LAYER_STEP_S (x 4/3 with
    checkpointing: the forward runs twice)."""
    steps = -(-row.extra["train_windows"] // row.extra["batch_size"]) * row.extra["epochs"]
    layers = row.extra["model_args"].num_layers
    return steps * row.extra.get("units", 1) * layers * GPU_LAYER_STEP_S * (4 / 3 if checkpointing else 1)


def gpu_rows(cfg: StudyConfig, rows: list[PlanRow], gpu: GpuClass, mfu: float,
             val_windows: dict[int, int]) -> list[GpuRow]:
    """Each plan row on ``gpu`` (bf16 autocast, the study's checkpointing setting)."""
    ckpt = cfg.model.activation_checkpointing
    usable = int(gpu.memory_bytes * (1 - RESERVE_FRACTION))
    out = []
    for r in rows:
        cell = r.extra.get("cell", f"{r.budget}-h{r.horizon}")
        if "model_args" not in r.extra:  # the spec itself was invalid: the plan says why
            out.append(GpuRow(r.phase, cell, r.seed, r.budget, None, "", "-", ckpt, None,
                              gpu.memory_bytes, None, r.problem))
            continue
        args, batch, accum = r.extra["model_args"], r.extra["batch_size"], r.extra["grad_accum"]
        mem = memory_estimate(args, batch, "bf16", ckpt, device_type="cuda")["total"]
        plan = f"cuda bf16, batch {batch}" + (f" x {accum} accum" if accum > 1 else "")
        problem = ""
        if mem > usable:
            fit = max_micro_batch(args, gpu.memory_bytes, "bf16", ckpt, "cuda")
            hint = (f"largest micro-batch that fits: {fit} (set train.batch_size={fit}, "
                    f"train.grad_accum={-(-batch // fit)})" if fit else "no micro-batch fits")
            hint += "" if ckpt or not fit else "; or model.activation_checkpointing = true"
            problem = f"step memory ~{mem / 1e9:.1f} GB > {usable / 1e9:.0f} GB usable on {gpu.name}; {hint}"
        seconds = run_flops(r, val_windows.get(r.horizon, 0), ckpt) / (gpu.bf16_flops * mfu) \
            + launch_seconds(r, ckpt)
        out.append(GpuRow(r.phase, cell, r.seed, r.budget, r.params, r.extra.get("budget_flag", ""),
                          plan, ckpt, mem, gpu.memory_bytes, seconds / 3600, problem or r.problem))
    return out
