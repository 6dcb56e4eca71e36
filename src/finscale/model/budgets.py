"""Parameter budgets: named ladders, the architecture grid, and budget -> ModelArgs.

Consumes: a budget name ("cpu-m", "2M", "20k", "1.5B", "80000") and ``ModelConfig``.
Produces: :class:`ModelArgs` whose MEASURED total parameter count (guard 10: counted from
the model built on the meta device, so a 2B model costs no memory) lies within
``budget_tolerance`` of the budget.
Guarantees: an explicit architecture whose count misses its budget is rejected with both
numbers, so a study can never label a 0.2M model "2M".

Default architecture when none is given (``default_architecture``): among the grid entries
within tolerance that use the study's ``d_ff_ratio``, the one minimising
``|ln(params/budget)| + 0.5 * |ln((d_model/num_layers) / 16)|``, i.e. close to the budget with
a width/depth ratio near 16 (Kaplan et al. 2020 find loss nearly flat in this ratio over a
wide range; 16 makes the paper budgets deep, like the reference study's shapes), ties
broken by fewer parameters. ``num_heads`` is the largest power of two <= 16
dividing ``d_model`` with a head width >= 32 (1 for narrow models).

CPU ladder (default study: mixed mode, 25 inputs, context 80, patch 16/stride 8, batch 128,
fused AdamW, grad clipping). Measured CPU cost of one epoch of 3,500 training windows plus a
750-window validation pass, ONE thread, ``time.process_time`` (the 2 cores were shared with
other jobs, so wall-clock numbers were meaningless; two idle threads are ~1.5x faster):

    budget   default arch (d/L/h)   params    train samples/s   s/epoch   validation
    cpu-s    5k     8 / 1 / 1        4,291       ~19,600          0.18      7 ms
    cpu-m    25k   24 / 2 / 1       24,603       ~12,300          0.28     17 ms
    cpu-l    100k  48 / 3 / 1      105,075        ~5,900          0.59     33 ms
    cpu-xl   500k  80 / 6 / 2      500,771        ~1,700          2.08    127 ms

The ladder spans 100x. One epoch of every budget costs ~3.1 s; the default study's ~100 runs
(4 budgets x 4 horizons x (4 HPO trials of <= 4 epochs + 2 seeds of <= 6 epochs)) are at most
~450 epochs, ~110 per budget, i.e. <= ~350 CPU-seconds of training (~4 minutes on two
threads; pruning and early stopping cut it further), inside the 10-minute target. cpu-xl is
two thirds of that; a 1M budget would cost ~4.5 s per epoch and blow the target.
"""

from __future__ import annotations

import math
import re
from itertools import product

import torch

from finscale.model.params import count_parameters, estimate_parameters
from finscale.model.patchtst import ModelArgs, build_model

__all__ = [
    "ARCH_KEYS", "LADDERS", "parse_budget", "architectures_for_budget",
    "default_architecture", "default_heads", "model_args_for", "measured_parameters",
    "check_budget", "budget_miss", "revin_flags",
]

# Named ladders: data, not code. Budgets are TOTAL measured parameters.
LADDERS: dict[str, dict[str, int]] = {
    "cpu": {"cpu-s": 5_000, "cpu-m": 25_000, "cpu-l": 100_000, "cpu-xl": 500_000},
    "paper": {"2M": 2_000_000, "20M": 20_000_000, "200M": 200_000_000, "2B": 2_000_000_000},
}

# Widths are multiples of 8 (16 from 64 up, 64 from 256 up: tensor-core friendly on GPUs).
GRID_D_MODEL = (8, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768,
                1024, 1280, 1536, 2048, 2560, 3072, 4096)
GRID_LAYERS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256)
GRID_HEADS = (1, 2, 4, 8, 16, 32)
MIN_HEAD_DIM = 8
TARGET_ASPECT = 16.0  # d_model / num_layers of the default choice

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmbg]?)\s*$", re.IGNORECASE)


def parse_budget(name: str | int) -> int:
    """Parameters of a budget: a ladder name ("cpu-s") or a size ("20k", "2M", "1.5B", "8000")."""
    if isinstance(name, int) and not isinstance(name, bool):
        value = name
    else:
        for ladder in LADDERS.values():
            if name in ladder:
                return ladder[name]
        match = _SIZE.match(str(name))
        if not match:
            names = ", ".join(n for ladder in LADDERS.values() for n in ladder)
            raise ValueError(f"budget {name!r}: expected a ladder name ({names}) or a size such "
                             "as 20k, 2M, 1.5B")
        value = round(float(match.group(1)) * _SUFFIX[match.group(2).lower()])
    if value < 1:
        raise ValueError(f"budget {name!r}: expected a positive number of parameters")
    return value


def default_heads(d_model: int) -> int:
    """Largest power of two <= 16 dividing d_model with head width >= 32 (else 1)."""
    heads = 1
    for h in (2, 4, 8, 16):
        if d_model % h == 0 and d_model // h >= 32:
            heads = h
    return heads


def revin_flags(normalization: str) -> tuple[bool, bool]:
    """(RevIN in the model, its statistics fed back as a token) for a ``model.normalization``."""
    return "revin" in normalization, normalization.endswith("revin_stats")


def _base_args(n_inputs: int, context_len: int, patch_len: int, stride: int, channel_mode: str,
               positional: str, revin: bool, n_targets: int, revin_stats: bool = False) -> ModelArgs:
    return ModelArgs(n_inputs=n_inputs, context_len=context_len, patch_len=patch_len, stride=stride,
                     d_model=8, num_layers=1, num_heads=1, d_ff=8, channel_mode=channel_mode,
                     positional=positional, revin=revin, revin_stats=revin_stats, n_targets=n_targets)


def architectures_for_budget(budget: int, *, n_inputs: int, context_len: int, patch_len: int,
                             stride: int, channel_mode: str, tolerance: float = 0.25,
                             d_ff_ratios: tuple[int, ...] = (4,), positional: str = "learned",
                             revin: bool = True, n_targets: int = 1, all_heads: bool = True,
                             revin_stats: bool = False) -> list[dict]:
    """Grid entries whose total parameters lie within ``budget * (1 ± tolerance)``.

    Each entry is ``{d_model, num_layers, num_heads, d_ff, params}``; with ``all_heads`` every
    head count dividing d_model (head width >= 8) is listed, else only ``default_heads``.
    Sorted by distance to the budget, then d_model, num_layers, num_heads.
    """
    base = _base_args(n_inputs, context_len, patch_len, stride, channel_mode, positional, revin, n_targets,
                      revin_stats)
    lo, hi = budget * (1 - tolerance), budget * (1 + tolerance)
    out = []
    for d, layers, ratio in product(GRID_D_MODEL, GRID_LAYERS, d_ff_ratios):
        args = base.replace(d_model=d, num_layers=layers, d_ff=ratio * d, num_heads=default_heads(d))
        params = estimate_parameters(args)["total"]
        if not lo <= params <= hi:
            continue
        heads = [h for h in GRID_HEADS if d % h == 0 and d // h >= MIN_HEAD_DIM] if all_heads \
            else [default_heads(d)]
        out += [{"d_model": d, "num_layers": layers, "num_heads": h, "d_ff": ratio * d, "params": params}
                for h in heads]
    out.sort(key=lambda a: (abs(a["params"] - budget), a["d_model"], a["num_layers"], a["num_heads"]))
    return out


def default_architecture(budget: int, **grid_kwargs) -> dict:
    """The deterministic default grid choice for a budget (rule in the module docstring)."""
    grid_kwargs["all_heads"] = False
    candidates = architectures_for_budget(budget, **grid_kwargs)
    if not candidates:
        raise ValueError(f"budget {budget:,}: no grid architecture within tolerance "
                         f"{grid_kwargs.get('tolerance', 0.25):.0%} for these inputs/patching; "
                         "give an explicit [model.architectures] entry or a larger budget")

    def score(a: dict) -> tuple[float, int]:
        aspect = a["d_model"] / a["num_layers"]
        return (abs(math.log(a["params"] / budget)) + 0.5 * abs(math.log(aspect / TARGET_ASPECT)),
                a["params"])

    return min(candidates, key=score)


def measured_parameters(args: ModelArgs) -> dict[str, int]:
    """Counts measured from the model built on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        model = build_model(args)
    return count_parameters(model)


def check_budget(args: ModelArgs, budget_name: str, tolerance: float) -> int:
    """Measured total parameters; ValueError naming both numbers if outside the tolerance."""
    budget = parse_budget(budget_name)
    total = measured_parameters(args)["total"]
    if abs(total - budget) > tolerance * budget:
        raise ValueError(
            f"architecture d_model={args.d_model} num_layers={args.num_layers} d_ff={args.d_ff} "
            f"has {total:,} parameters, but budget {budget_name!r} is {budget:,} ± {tolerance:.0%} "
            f"({math.ceil(budget * (1 - tolerance)):,}..{math.floor(budget * (1 + tolerance)):,}); "
            "fix the architecture or its budget label")
    return total


def budget_miss(total: int, budget_name: str, tolerance: float) -> str:
    """"" when ``total`` measured parameters lie within ``tolerance`` of the budget, else a
    one-line flag naming both numbers (e.g. "measured 35.7M = 1.79x the 20M label")."""
    budget = parse_budget(budget_name)
    if abs(total - budget) <= tolerance * budget:
        return ""
    return (f"measured {total:,} parameters = {total / budget:.2f}x the {budget_name} label "
            f"(outside ±{tolerance:.0%})")


# The four values that fix a PatchTST shape (with "params", the keys of an explicit entry).
ARCH_KEYS = ("d_model", "num_layers", "num_heads", "d_ff")
_ARCH_KEYS = {*ARCH_KEYS, "params"}


def model_args_for(model_cfg, budget_name: str, n_inputs: int, dropout: float,
                   arch: dict | None = None, *, enforce_budget: bool = True,
                   n_assets: int = 0) -> ModelArgs:
    """ModelArgs for a budget: ``arch`` if given, else ``model_cfg.architectures[budget]``,
    else the default grid choice; checked against the budget's tolerance unless
    ``enforce_budget`` is False (fixed-table reproduction: a published shape is run as
    published and its miss is flagged by :func:`budget_miss`, never hidden). ``n_assets`` > 0:
    the asset table of a panel (``model.asset_embedding``), counted in the budget check."""
    budget = parse_budget(budget_name)
    revin, revin_stats = revin_flags(model_cfg.normalization)
    base = _base_args(n_inputs, model_cfg.context_len, model_cfg.patch_len, model_cfg.stride,
                      model_cfg.channel_mode, model_cfg.positional, revin, 1, revin_stats)
    base = base.replace(dropout=dropout, head_dropout=model_cfg.head_dropout)
    if arch is None:
        arch = (model_cfg.architectures or {}).get(budget_name)
    if arch is None:
        arch = default_architecture(
            budget, n_inputs=n_inputs, context_len=base.context_len, patch_len=base.patch_len,
            stride=base.stride, channel_mode=base.channel_mode, tolerance=model_cfg.budget_tolerance,
            d_ff_ratios=(model_cfg.d_ff_ratio,), positional=base.positional, revin=base.revin,
            revin_stats=base.revin_stats)
    args = base.replace(**_arch_fields(arch, budget_name, model_cfg.d_ff_ratio), n_assets=n_assets)
    if enforce_budget:
        check_budget(args, budget_name, model_cfg.budget_tolerance)
    return args


def _arch_fields(arch: dict, budget_name: str, d_ff_ratio: int) -> dict:
    """Validate an architecture table; d_ff defaults to d_ff_ratio*d_model, heads to the rule."""
    if not isinstance(arch, dict):
        raise ValueError(f"model.architectures.{budget_name}: expected a table, got {arch!r}")
    unknown = sorted(set(arch) - _ARCH_KEYS)
    if unknown:
        raise ValueError(f"model.architectures.{budget_name}: unknown key {unknown[0]!r} "
                         f"(known: d_model, num_layers, num_heads, d_ff)")
    for key in ("d_model", "num_layers"):
        if key not in arch:
            raise ValueError(f"model.architectures.{budget_name}: missing {key}")
    d = arch["d_model"]
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"model.architectures.{budget_name}.d_model: expected a positive integer, got {d!r}")
    return {"d_model": d, "num_layers": arch["num_layers"],
            "num_heads": arch.get("num_heads", default_heads(d)),
            "d_ff": arch.get("d_ff", d_ff_ratio * d)}
