"""Limits checked before any work: will each budget's training fit in this machine's memory?

Consumes: the study config, the phases and ``--only`` filters of a run.
Produces: nothing, or a ``ValueError`` naming the budget, its estimated training memory
(:func:`finscale.model.memory_estimate` at the largest batch size it will train with, times
the local workers that train at once) and the memory available on the device.
Guarantees: runs before any file of the study is written and before any training, so a
budget that cannot fit fails in a second instead of swapping the machine for minutes and
dying after the cheaper units trained; ``run.memory_check = false`` skips it.
"""

from __future__ import annotations

import logging

from finscale.config import StudyConfig
from finscale.model import memory_estimate, select_device
from finscale.model.compute import format_bytes
from finscale.runspec import cells, make_spec
from finscale.study_axes import variants

log = logging.getLogger(__name__)


def available_memory(device) -> int | None:
    """Bytes free for training on ``device`` (None when it cannot be measured)."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    return None  # mps: unified memory, no reliable free figure


def _batch_size(cfg: StudyConfig, tuning: bool) -> int:
    sizes = [cfg.train.batch_size]
    if tuning:
        sizes += list(cfg.hpo.batch_size)
    return max(sizes)


def check_memory(cfg: StudyConfig, budgets=(), horizons=(), axes=None, *, tuning: bool = True) -> None:
    """ValueError when a selected budget's training memory exceeds what the device has free."""
    if not cfg.run.memory_check:
        return
    device = select_device(cfg.model.device)
    free = available_memory(device)
    if free is None:
        return
    parallel = cfg.run.workers if cfg.run.executor == "local" else 1
    precision = "bf16" if device.type == "cuda" else "fp32"
    seen = set()
    for var in variants(cfg, axes or {}):
        for budget, h in cells(var, budgets, horizons):
            spec = make_spec(var, budget, h, var.seeds[0])
            batch = _batch_size(var, tuning and var.hpo.mode == "search")
            key = (repr(spec.model_args), batch)
            if key in seen:
                continue
            seen.add(key)
            need = parallel * memory_estimate(spec.model_args, batch, precision,
                                              var.model.activation_checkpointing,
                                              device_type=device.type)["total"]
            if need > free:
                raise ValueError(
                    f"model.budgets: {budget} needs about {format_bytes(need)} to train on {device.type} "
                    f"(batch size {batch}{f', {parallel} workers' if parallel > 1 else ''}), but only "
                    f"{format_bytes(free)} is available; choose smaller budgets, a smaller batch size, "
                    "fewer workers or a larger device (run.memory_check = false skips this check)")
