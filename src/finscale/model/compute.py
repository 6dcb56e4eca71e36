"""Analytic compute and training-memory accounting for PatchTST.

Consumes: :class:`ModelArgs` only (nothing is allocated, so a 2B model is sized for free).
Produces: FLOPs per sample (forward; training = forward + backward), a training-memory
breakdown in bytes for fp32 or bf16 mixed precision with or without activation
checkpointing, and the largest micro-batch that fits a memory size.
Guarantees: FLOPs count matmul work only (2 per multiply-add), the convention of
``torch.utils.flop_counter.FlopCounterMode``; the tests hold the estimate within 5% of it.
The memory estimate counts the tensors autograd saves, per device type (CUDA: fused
attention, bool dropout masks; CPU: the unfused attention path; the CPU form is validated
against the saved-tensor bytes of a real step), plus weights, gradients and AdamW states and
one block of in-flight backward memory. ``max_micro_batch`` keeps 10% headroom on top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from finscale.model.params import estimate_parameters
from finscale.model.patchtst import ModelArgs, patch_layout

__all__ = ["flops_per_sample", "memory_estimate", "max_micro_batch", "parse_memory", "format_bytes",
           "PRECISIONS", "DEVICE_TYPES", "GPU_CLASSES", "GpuClass", "ASSUMED_MFU",
           "GPU_LAYER_STEP_S"]

PRECISIONS = ("fp32", "bf16")
DEVICE_TYPES = ("cuda", "cpu")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class GpuClass:
    """A GPU for time and memory planning: dense bf16 tensor peak (no sparsity) and memory."""

    name: str
    bf16_flops: float
    memory_bytes: int


# Vendor datasheet numbers (SXM parts). H100 and H200 share the Hopper tensor cores (989
# TFLOP/s dense bf16); the H200 has 141 GB of HBM3e instead of 80 GB.
GPU_CLASSES = {
    "H100": GpuClass("H100", 989e12, 80 * 10**9),
    "H200": GpuClass("H200", 989e12, 141 * 10**9),
    "A100": GpuClass("A100", 312e12, 80 * 10**9),
}
# Model FLOP utilisation assumed for time estimates until benchmarks/gpu.py has measured it:
# well-tuned large transformer training reaches 40-50 % on Hopper; small-sequence PatchTST
# steps (11 tokens) launch many small kernels, so the plan takes a cautious 35 %.
ASSUMED_MFU = 0.35
# Kernel-launch floor per encoder layer per optimiser step (forward + backward, ~30 kernels
# of a few microseconds): PatchTST sequences are ~11 tokens, so small models are launch-bound
# and a FLOP-only estimate would read "0 hours". An assumption until benchmarks/gpu.py measures it.
GPU_LAYER_STEP_S = 1.5e-4

# Headroom kept free by max_micro_batch: allocator fragmentation, CUDA context, workspaces.
RESERVE_FRACTION = 0.10


def _geometry(args: ModelArgs) -> tuple[int, int, int]:
    """(sequences per sample, tokens per sequence, values per patch token)."""
    n, _ = patch_layout(args.context_len, args.patch_len, args.stride)
    if args.channel_mode == "independent":
        return args.n_inputs, n, args.patch_len
    return 1, n, args.patch_len * args.n_inputs


def flops_per_sample(args: ModelArgs) -> dict[str, int]:
    """Matmul FLOPs per sample: ``forward`` and ``train`` (forward + backward).

    Per sequence of n tokens: patch projection 2*n*patch_dim*d; per block QKV 6nd^2,
    scores and weighted values 4n^2*d, output projection 2nd^2, MLP 4nd*d_ff; head 2*n*d per
    target. Backward costs twice the forward, except that the patch projection needs no
    input gradient when its input needs none (RevIN off: the raw window is a leaf).
    """
    seqs, n, patch_dim = _geometry(args)
    d, f = args.d_model, args.d_ff
    embed = 2 * n * patch_dim * d
    block = 8 * n * d * d + 4 * n * n * d + 4 * n * d * f
    head = 2 * n * d * args.n_targets
    forward = seqs * (embed + args.num_layers * block + head)
    train = 3 * forward - (0 if args.revin else seqs * embed)
    return {"forward": forward, "train": train}


def _activation_bytes(args: ModelArgs, precision: str, device_type: str) -> dict[str, int]:
    """Bytes autograd saves per sample: ``block`` (one encoder block), ``block_input`` (what
    a checkpointed block keeps) and ``outside`` (RevIN/patching, embedding, final norm, head).

    The residual stream and LayerNorm inputs are fp32 in both precisions (autocast adds bf16
    matmul outputs to an fp32 stream); matmul inputs/outputs are 4 or 2 bytes. On CUDA,
    attention is a fused kernel (saves q, k, v, output and log-sum-exp; dropout keeps only
    an RNG seed) and dropout masks are bool; on CPU, attention with dropout runs the unfused
    math path in fp32 (scaled q, k, v copies, probabilities, mask, dropped probabilities),
    without dropout the fused CPU kernel, and masks have the tensor's dtype. Dropout saves
    nothing when p == 0.
    """
    if device_type not in DEVICE_TYPES:
        raise ValueError(f"device_type: {device_type!r} is not one of {list(DEVICE_TYPES)}")
    seqs, n, patch_dim = _geometry(args)
    d, f, h = args.d_model, args.d_ff, args.num_heads
    tokens = seqs * n
    lo = 4 if precision == "fp32" else 2
    cuda = device_type == "cuda"
    drop = args.dropout > 0

    def mask(itemsize: int) -> int:
        return (1 if cuda else itemsize) if drop else 0

    if cuda:  # fused kernel: q, k, v (views of the qkv output), output, log-sum-exp
        attention = lo * 4 * d + 4 * h
    elif drop:  # CPU math path: fp32 scaled q, k, v copies, probabilities, mask, dropped
        attention = 4 * 3 * d + 4 * h * n * 3
    else:  # CPU fused kernel: its output is the projection input below (shared storage)
        attention = lo * 3 * d + 4 * h
    block = (4 * d + 8 + lo * d          # LN1 input (residual) + stats, qkv input
             + attention + lo * d + mask(lo) * d  # attention, proj input, dropout mask
             + 4 * d + 8 + lo * d         # LN2 input + stats, fc1 input
             + 2 * lo * f + mask(lo) * d)  # fc1 output, fc2 input, residual mask
    revin = 4 * (args.context_len + patch_layout(args.context_len, args.patch_len, args.stride)[1]) \
        * args.n_inputs if args.revin else 0
    head_mask = (1 if cuda else lo) * d if args.head_dropout > 0 else 0
    outside = revin + tokens * (lo * patch_dim + mask(4) * d + 4 * d + 8 + lo * d + head_mask)
    return {"block": tokens * block, "block_input": tokens * 4 * d, "outside": outside}


def memory_estimate(args: ModelArgs, batch_size: int, precision: str = "fp32",
                    checkpointing: bool = False, device_type: str = "cuda") -> dict[str, int]:
    """Training memory in bytes: weights, grads, optimizer, weight_copies, activations, total.

    ``bf16`` means bf16 autocast over fp32 master weights (weights, grads and AdamW states
    stay fp32; ``weight_copies`` are autocast's bf16 casts). ``activations`` = what autograd
    saves (``activations_saved``; with checkpointing each block keeps only its input) plus
    one block's worth in flight during backward (its gradients, or its recomputation).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {list(PRECISIONS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    n_params = estimate_parameters(args)["total"]
    act = _activation_bytes(args, precision, device_type)
    per_layer = act["block_input"] if checkpointing else act["block"]
    saved = (args.num_layers * per_layer + act["outside"]) * batch_size
    in_flight = act["block"] * (2 if checkpointing else 1) * batch_size
    out = {
        "weights": 4 * n_params,
        "grads": 4 * n_params,
        "optimizer": 8 * n_params,  # AdamW exp_avg + exp_avg_sq, fp32
        "weight_copies": 2 * n_params if precision == "bf16" else 0,
        "activations": saved + in_flight,
    }
    out["total"] = sum(out.values())
    out["activations_saved"] = saved
    return out


def max_micro_batch(args: ModelArgs, memory_bytes: int, precision: str = "fp32",
                    checkpointing: bool = False, device_type: str = "cuda",
                    reserve_fraction: float = RESERVE_FRACTION) -> int:
    """Largest batch whose estimated training memory fits ``memory_bytes`` (0 if none)."""
    usable = memory_bytes * (1.0 - reserve_fraction)
    one = memory_estimate(args, 1, precision, checkpointing, device_type)
    per_sample = one["activations"]
    fixed = one["total"] - per_sample
    if fixed + per_sample > usable:
        return 0
    return int((usable - fixed) // per_sample)


def format_bytes(n: float) -> str:
    """Decimal units, e.g. 1.2GB (the inverse of :func:`parse_memory`, to 3 digits)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}PB"


def parse_memory(text: str | int) -> int:
    """Bytes from "80GB" (10^9), "80GiB" (2^30), "512MB", or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _MEMORY.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"memory {text!r}: expected a size such as 80GB, 24GiB or 512MB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
