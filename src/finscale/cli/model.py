"""`finscale model describe`: architecture, measured parameters, FLOPs and memory per budget."""

from __future__ import annotations

import argparse

from finscale.cli.commands import COMMANDS
from finscale.cli.common import Output, add_json_arg, add_study_args, load_study_from_args
from finscale.config import StudyConfig, load_study
from finscale.model import (
    LADDERS,
    ModelArgs,
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
    group = sub.add_parser("model", help=COMMANDS["model"])
    gsub = group.add_subparsers(dest="model_command", metavar="COMMAND")
    p = gsub.add_parser(
        "describe", help="architecture, measured params, FLOPs and memory of budgets",
        description="Print, per budget, the architecture the study trained (from its final run "
                    "directories, else its HPO best parameters) when it has, else the one it "
                    "would use (explicit [model.architectures] entry, else the default grid "
                    "choice); its measured total / non-embedding / head parameters against the "
                    "budget, FLOPs per sample, training memory at several batch sizes and the "
                    "largest micro-batch that fits --memory. Memory is sized for the device the "
                    "study would train on here (model.device) unless --device-type is given.")
    add_study_args(p)
    p.add_argument("--budget", default=None, metavar="NAME",
                   help="a budget (cpu-s, 2M, 20k, ...), a ladder name (cpu, paper) or 'all' "
                        "(every ladder); default: the study's model.budgets")
    p.add_argument("--memory", default=None, metavar="SIZE",
                   help="memory for the micro-batch search, e.g. 80GB, 24GiB (default: this "
                        "machine's: the GPU's memory on CUDA, else the RAM)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="bf16 = bf16 autocast over fp32 weights, or fp32 (default: bf16 on CUDA, "
                        "fp32 otherwise, as training does)")
    p.add_argument("--device-type", choices=DEVICE_TYPES, default=None,
                   help="kernels the memory estimate assumes (default: the study's device here)")
    p.add_argument("--checkpointing", action="store_true",
                   help="activation checkpointing (default: model.activation_checkpointing)")
    p.add_argument("--inputs", type=int, default=None, metavar="N",
                   help="number of model inputs (default: the study's feature set)")
    add_json_arg(p)
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


def _budget_names(text: str | None, cfg: StudyConfig) -> list[str]:
    if text is None:
        return list(cfg.model.budgets)
    if text == "all":
        return [name for ladder in LADDERS.values() for name in ladder]
    if text in LADDERS:
        return list(LADDERS[text])
    parse_budget(text)  # raises a ValueError naming the bad budget
    return [text]


def _machine(cfg: StudyConfig, args: argparse.Namespace) -> tuple[str, str, int, str]:
    """(device type, precision, memory bytes, memory label) the estimate is sized for."""
    import torch

    from finscale.model import select_device

    device = select_device(cfg.model.device)
    device_type = args.device_type or ("cuda" if device.type == "cuda" else "cpu")
    precision = args.precision or ("bf16" if device_type == "cuda" else "fp32")
    if args.memory is not None:
        return device_type, precision, parse_memory(args.memory), args.memory
    if device.type == "cuda":
        total = torch.cuda.mem_get_info(device.index or 0)[1]
        return device_type, precision, total, f"{format_bytes(total)} ({torch.cuda.get_device_name(device.index or 0)})"
    import psutil

    total = psutil.virtual_memory().total
    return device_type, precision, total, f"{format_bytes(total)} RAM ({device.type})"


def trained_architectures(cfg: StudyConfig, budget: str) -> list[tuple[str, ModelArgs]]:
    """(source, model args) of the architectures the study trained for ``budget``: its final
    runs' config.json (grouped by architecture), else its HPO cells' best parameters."""
    from finscale.hpo.results import read_best
    from finscale.rundir import RunDir

    found: dict[tuple, tuple[list[str], ModelArgs]] = {}
    for path in sorted((cfg.study_dir / "final").glob(f"*/{RunDir.CONFIG}")):
        conf = RunDir(path.parent).read_config() or {}
        if conf.get("budget") != budget or not conf.get("model_args"):
            continue
        margs = ModelArgs(**conf["model_args"])
        key = (margs.d_model, margs.num_layers, margs.num_heads, margs.d_ff)
        found.setdefault(key, ([], margs))[0].append(f"h{conf.get('horizon')}/s{conf.get('seed')}")
    if found:
        return [(f"final runs {', '.join(runs)}", margs) for runs, margs in found.values()]
    out = []
    for h in cfg.target.horizons:
        best = read_best(cfg, budget, h)
        if best is not None:
            params = best.get("params") or {}
            arch = {k: params[k] for k in ("d_model", "num_layers", "num_heads", "d_ff") if k in params}
            if len(arch) == 4:
                out.append((f"HPO best h{h}", arch))
    return [(src, model_args_for(cfg.model, budget, _n_inputs(cfg), cfg.train.dropout, arch=arch))
            for src, arch in out]


def _architectures(cfg: StudyConfig, names: list[str], n_inputs: int, fallback_dropout: float):
    """(budget, source, model args) rows: trained architectures first, else the planned one."""
    m = cfg.model
    for name in names:
        trained = trained_architectures(cfg, name) if name in m.budgets else []
        if trained:
            yield from ((name, src, margs) for src, margs in trained)
            continue
        source = "study table" if name in (m.architectures or {}) else "default grid"
        yield name, source, model_args_for(m, name, n_inputs, fallback_dropout)


def describe(args: argparse.Namespace) -> int:
    cfg = _study(args)
    n_inputs = args.inputs if args.inputs is not None else _n_inputs(cfg)
    device_type, precision, memory, memory_label = _machine(cfg, args)
    checkpointing = args.checkpointing or cfg.model.activation_checkpointing
    names = _budget_names(args.budget, cfg)
    m = cfg.model
    out = Output(args.json)
    out.line(f"inputs {n_inputs} ({cfg.features.set}), context {m.context_len}, patch "
             f"{m.patch_len}/stride {m.stride}, {m.channel_mode} channels, {m.positional} "
             f"positions, normalization {m.normalization}, d_ff = {m.d_ff_ratio} x d_model, "
             f"tolerance ±{m.budget_tolerance:.0%}",
             study=cfg.name, inputs=n_inputs, device_type=device_type, precision=precision,
             memory_bytes=memory, checkpointing=checkpointing)
    arch_rows, mem_rows = [], []
    for name, source, margs in _architectures(cfg, names, n_inputs, cfg.train.dropout):
        counts = measured_parameters(margs)
        flops = flops_per_sample(margs)
        budget = parse_budget(name)
        arch = f"{margs.d_model}/{margs.num_layers}/{margs.num_heads}/{margs.d_ff}"
        arch_rows.append([name, budget, arch, source, counts["total"], round(counts["total"] / budget, 2),
                          counts["non_embedding"], counts["head"],
                          flops["forward"] if args.json else _si(flops["forward"]),
                          flops["train"] if args.json else _si(flops["train"])])
        mem = [memory_estimate(margs, b, precision, checkpointing, device_type) for b in BATCH_SIZES]
        fit = max_micro_batch(margs, memory, precision, checkpointing, device_type)
        sizes = [mem[0]["total"] - mem[0]["activations"], mem[0]["activations"]] + [x["total"] for x in mem]
        mem_rows.append([name, arch, *(sizes if args.json else [format_bytes(x) for x in sizes]), fit])
    out.table("architectures", "Architectures (parameters measured from the built model)",
              ["budget", "params", "d_model/layers/heads/d_ff", "source", "total", "x budget",
               "non-embedding", "head", "FLOPs/sample fwd", "FLOPs/sample train"], arch_rows,
              keys=["budget", "budget_params", "architecture", "source", "params_total", "x_budget",
                    "params_non_embedding", "params_head", "flops_forward", "flops_train"])
    plan = f"{precision}{' + checkpointing' if checkpointing else ''}, {device_type} kernels, AdamW"
    out.table("memory", f"Training memory ({plan}); max micro-batch for {memory_label} with 10% headroom",
              ["budget", "d_model/layers/heads/d_ff", "weights+grads+AdamW", "activations/sample"]
              + [f"batch {b}" for b in BATCH_SIZES] + ["max micro-batch"], mem_rows,
              keys=["budget", "architecture", "state_bytes", "activation_bytes_per_sample"]
              + [f"batch_{b}_bytes" for b in BATCH_SIZES] + ["max_micro_batch"])
    return out.done()


def _si(n: int) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)
