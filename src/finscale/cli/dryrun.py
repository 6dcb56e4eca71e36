"""`finscale run --dry-run`: the plan of the work left, printed (offline, writes nothing).

Sections: the data pin, the final split's periods (windows per horizon), every unit of work
with measured parameters beside its budget label, and -- for a GPU study or with ``--gpu`` --
the same units on a named GPU class (device plan, step memory vs device memory, activation
checkpointing, hours at an assumed MFU) with the total.
"""

from __future__ import annotations

from finscale.cli.common import console, print_table
from finscale.cli.progress import fmt_seconds


def print_plan(cfg, budgets, horizons, data_dir, axes=None, gpu: str | None = None,
               mfu: float | None = None) -> int:
    """Print the plan; 1 when a unit is invalid (search mode: a shape outside its budget)."""
    from finscale.model.compute import format_bytes
    from finscale.runner.plan import build_plan, remaining_plan

    _print_data(cfg, data_dir)
    periods = _print_periods(cfg, data_dir)
    rows, finished = remaining_plan(cfg, build_plan(cfg, only_budgets=budgets, only_horizons=horizons,
                                                    data_dir=data_dir, only_axes=axes))
    exact = rows[0].extra.get("windows_exact") if rows else True
    print_table(f"plan for study {cfg.name!r} ({cfg.hpo.mode} mode): work left",
                ["phase", "cell", "seed/trials", "architecture", "params", "non-emb", "train GFLOP/sample",
                 "memory", "est. time", "note"],
                [[r.phase, r.extra.get("cell", f"{r.budget}-h{r.horizon}"), r.seed, r.arch, r.params,
                  r.non_embedding, None if r.train_flops is None else r.train_flops / 1e9,
                  "" if r.memory is None else format_bytes(r.memory), fmt_seconds(r.est_s),
                  r.problem or _note(r)] for r in rows])
    total = sum(r.est_s or 0 for r in rows)
    done = f" ({finished} finished unit(s) skipped)" if finished else ""
    console.print(f"{len(rows)} units of work left{done}; estimated total {fmt_seconds(total)} on this machine"
                  + ("" if exact else " (window counts estimated from dates: data not stored)"))
    flagged = {r.extra["cell"]: r.extra["budget_flag"] for r in rows if r.extra.get("budget_flag")}
    for cell, flag in flagged.items():
        console.print(f"FLAGGED (run as given, {cfg.hpo.mode} mode): cell {cell}: {flag}")
    if gpu or cfg.model.device == "cuda":
        _print_gpu(cfg, rows, gpu or "H100", mfu, periods)
    problems = {r.extra.get("cell", f"{r.budget}-h{r.horizon}"): r.problem for r in rows if r.problem}
    for cell, problem in problems.items():
        console.print(f"MISSES BUDGET / INVALID: cell {cell}: {problem}")
    return 1 if problems else 0


def _note(r) -> str:
    flag = r.extra.get("budget_flag", "")
    return f"{r.run_id}; FLAG: {flag}" if flag else r.run_id


def _print_data(cfg, data_dir) -> None:
    from finscale.data import pin_status, resolve_data_dir

    console.print(pin_status(cfg.data, resolve_data_dir(str(data_dir) if data_dir else None,
                                                        cfg.data.data_dir)))


def _print_periods(cfg, data_dir) -> dict[int, int]:
    """The final split's periods; returns the validation windows per horizon."""
    from finscale.runner.periods import final_periods

    periods = final_periods(cfg, data_dir)
    hs = list(cfg.target.horizons)
    exact = all(p.exact for p in periods)
    what = "window ends" if exact else "dates (estimated: NYSE sessions, data not stored)"
    print_table(f"final split (guard 4: val/test need >= {cfg.splits.min_eval_windows} windows)",
                ["period", what, *[f"windows h{h}" for h in hs], "note"],
                [[p.region, f"{p.first}..{p.last}", *[p.windows.get(h) for h in hs], p.problem]
                 for p in periods])
    return next((p.windows for p in periods if p.region == "val"), {})


def _print_gpu(cfg, rows, gpu_name: str, mfu: float | None, val_windows: dict[int, int]) -> None:
    from finscale.model.compute import ASSUMED_MFU, GPU_CLASSES, GPU_LAYER_STEP_S, format_bytes
    from finscale.runner.gpu_plan import gpu_rows

    gpu = GPU_CLASSES[gpu_name]
    mfu = ASSUMED_MFU if mfu is None else mfu
    grows = gpu_rows(cfg, rows, gpu, mfu, val_windows)
    print_table(f"on one {gpu.name} ({gpu.bf16_flops / 1e12:.0f} TFLOP/s dense bf16, "
                f"{gpu.memory_bytes / 1e9:.0f} GB; assumed MFU {mfu:.0%}; max epochs)",
                ["phase", "cell", "seed/trials", "label", "measured params", "device plan",
                 "checkpointing", "step memory / device", "est. minutes", "note"],
                [[g.phase, g.cell, g.seed, g.label, g.params, g.device_plan, g.checkpointing,
                  "" if g.memory is None else f"{format_bytes(g.memory)} / {format_bytes(g.device_memory)}",
                  None if g.hours is None else f"{g.hours * 60:.1f}",
                  g.problem or (f"FLAG: {g.budget_flag}" if g.budget_flag else "")] for g in grows])
    total = sum(g.hours or 0 for g in grows)
    unfit = sum(1 for g in grows if g.problem)
    console.print(f"estimated total on one {gpu.name}: {total:.2f} GPU-hours ({total * 60:.0f} min) at MFU "
                  f"{mfu:.0%} plus {GPU_LAYER_STEP_S * 1e3:.2g} ms per layer per step of kernel launches "
                  f"(upper bound: every run at its maximum epochs){'' if not unfit else f'; {unfit} unit(s) flagged'}")
