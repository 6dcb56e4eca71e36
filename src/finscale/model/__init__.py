"""PatchTST, parameter counting, budget -> architecture, compute/memory estimates, devices.

Consumes: ``ModelConfig`` (via ``model_args_for``) or explicit :class:`ModelArgs`.
Produces: a PatchTST returning logits; measured parameter counts; FLOP and memory estimates.
Modules: ``patchtst`` (the model), ``params`` (counts), ``budgets`` (ladders, grid, budget ->
args), ``compute`` (FLOPs, memory, micro-batch), ``device`` (device, autocast, compile).
"""

from finscale.model.budgets import (
                                    ARCH_KEYS,
                                    LADDERS,
                                    architectures_for_budget,
                                    default_architecture,
                                    measured_parameters,
                                    model_args_for,
                                    parse_budget,
                                    revin_flags,
)
from finscale.model.compute import flops_per_sample, max_micro_batch, memory_estimate, parse_memory
from finscale.model.device import (
    PRECISIONS,
    autocast_for,
    cpu_bf16_support,
    device_type,
    precision_for,
    prepare_model,
    resolve_precision,
    select_device,
)
from finscale.model.params import count_parameters, estimate_parameters
from finscale.model.patchtst import ModelArgs, PatchTST, RevIN, build_model, patch_layout

__all__ = [
    "ModelArgs", "PatchTST", "RevIN", "build_model", "patch_layout",
    "count_parameters", "estimate_parameters",
    "ARCH_KEYS", "LADDERS", "parse_budget", "architectures_for_budget",
    "default_architecture", "measured_parameters", "model_args_for", "revin_flags",
    "flops_per_sample", "memory_estimate", "max_micro_batch", "parse_memory",
    "select_device", "precision_for", "autocast_for", "prepare_model", "PRECISIONS",
    "device_type", "cpu_bf16_support", "resolve_precision",
]
