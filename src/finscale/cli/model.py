"""`finscale model describe`: architecture, measured parameters, FLOPs and memory per budget."""

from __future__ import annotations

import argparse

from finscale.cli.common import add_study_args, console, load_study_from_args, print_table
from finscale.config import StudyConfig, load_study
from finscale.model import (
    LADDERS,
    flops_per_sample,
    max_micro_batch,
    measured_parameters,
    memory_estimate,
    model_args_for,
    parse_budget,
    parse_memory,
)
from finscale.model.compute import DEVICE_TYPES, PRECISIONS, format_bytes

BATCH_SIZES = (1, 32, 128, 512)
DEFAULT_INPUTS = 25  # a20: 5 OHLCV + 20 indicators, used if the features package is absent


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("model", help="PatchTST architectures, parameter budgets, compute")
    gsub = group.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    p = gsub.add_parser(
        "describe", help="architecture, measured params, FLOPs and memory of a budget",
        description="Print the architecture chosen for a budget (explicit [model.architectures] "
                    "entry, else the default grid choice), its measured total / non-embedding / "
                    "head parameters against the budget, FLOPs per sample, training memory at "
                    "several batch sizes and the largest micro-batch that fits --memory.")
    add_study_args(p)
    p.add_argument("--budget", required=True,
                   help="a budget (cpu-s, 2M, 20k, ...), a ladder name (cpu, paper) or 'all'")
    p.add_argument("--memory", default="80GB", help="accelerator memory for the micro-batch "
                   "search, e.g. 80GB, 24GiB (default 80GB)")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16",
                   help="bf16 = bf16 autocast over fp32 weights (default), or fp32")
    p.add_argument("--device-type", choices=DEVICE_TYPES, default="cuda",
                   help="kernels the memory estimate assumes (default cuda)")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    p.add_argument("--inputs", type=int, default=None,
                   help="number of model inputs (default: the study's feature set)")
    p.set_defaults(handler=describe)
    group.set_defaults(handler=lambda args: group.print_help() or 2)


def _study(args: argparse.Namespace) -> StudyConfig:
    try:
        return load_study_from_args(args)
    except FileNotFoundError:
        if args.study is not None:
            raise
        return load_study(None, args.overrides)  # no shipped default study: built-in defaults


def _n_inputs(cfg: StudyConfig) -> int:
    try:
        from finscale.features import input_columns
    except ImportError:
        return DEFAULT_INPUTS
    return len(input_columns(cfg.features.set))


def _budget_names(text: str) -> list[str]:
    if text == "all":
        return [name for ladder in LADDERS.values() for name in ladder]
    if text in LADDERS:
        return list(LADDERS[text])
    parse_budget(text)  # raises a ValueError naming the bad budget
    return [text]


def describe(args: argparse.Namespace) -> int:
    cfg = _study(args)
    n_inputs = args.inputs if args.inputs is not None else _n_inputs(cfg)
    memory = parse_memory(args.memory)
    names = _budget_names(args.budget)
    m = cfg.model
    console.print(f"inputs {n_inputs} ({cfg.features.set}), context {m.context_len}, patch "
                  f"{m.patch_len}/stride {m.stride}, {m.channel_mode} channels, {m.positional} "
                  f"positions, normalization {m.normalization}, d_ff = {m.d_ff_ratio} x d_model, "
                  f"tolerance ±{m.budget_tolerance:.0%}")
    arch_rows, mem_rows = [], []
    for name in names:
        margs = model_args_for(m, name, n_inputs, cfg.train.dropout)
        counts = measured_parameters(margs)
        flops = flops_per_sample(margs)
        budget = parse_budget(name)
        source = "study table" if name in (m.architectures or {}) else "default grid"
        arch_rows.append([name, f"{budget:,}", f"{margs.d_model}/{margs.num_layers}/{margs.num_heads}"
                          f"/{margs.d_ff}", source, f"{counts['total']:,}",
                          f"{counts['total'] / budget:.2f}", f"{counts['non_embedding']:,}",
                          f"{counts['head']:,}", _si(flops["forward"]), _si(flops["train"])])
        mem = [memory_estimate(margs, b, args.precision, args.checkpointing, args.device_type)
               for b in BATCH_SIZES]
        fit = max_micro_batch(margs, memory, args.precision, args.checkpointing, args.device_type)
        mem_rows.append([name, format_bytes(mem[0]["total"] - mem[0]["activations"]),
                         format_bytes(mem[0]["activations"])] + [format_bytes(x["total"]) for x in mem] + [f"{fit:,}"])
    print_table("Architectures (parameters measured from the built model)",
                ["budget", "params", "d_model/layers/heads/d_ff", "source", "total", "x budget",
                 "non-embedding", "head", "FLOPs/sample fwd", "FLOPs/sample train"], arch_rows)
    plan = (f"{args.precision}{' + checkpointing' if args.checkpointing else ''}, "
            f"{args.device_type} kernels, AdamW")
    print_table(f"Training memory ({plan}); max micro-batch for {args.memory} "
                "with 10% headroom",
                ["budget", "weights+grads+AdamW", "activations/sample"]
                + [f"batch {b}" for b in BATCH_SIZES] + ["max micro-batch"], mem_rows)
    return 0


def _si(n: int) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)
