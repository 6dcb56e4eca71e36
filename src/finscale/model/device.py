"""Device selection and accelerator options (bf16 autocast, torch.compile, checkpointing).

Consumes: a device preference ("auto", "cpu", "cuda", "cuda:1", "mps"), a precision preference
(``model.precision``) and the model flags of ``ModelConfig``. Produces: a ``torch.device``, the
concrete precision ("fp32" or "bf16"), an autocast context, a prepared model.
Guarantees: "auto" picks cuda > mps > cpu; an explicit device that is not available is a
``ValueError`` naming it. A precision preference always resolves to "fp32" or "bf16" before
it names a run (:func:`resolve_precision`): ``bf16-cuda`` (the default) = bf16 on CUDA, fp32
elsewhere; ``auto`` = bf16 on CUDA and on CPUs with native bf16 (avx512_bf16, AMX, ARM bf16),
fp32 elsewhere. bf16 is autocast over fp32 weights around the model's forward only; the loss,
metrics and the sigmoid stay fp32 (see docs/performance.md). torch.compile is CUDA only.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import cast

import torch
from torch import nn

__all__ = ["PRECISIONS", "select_device", "device_type", "cpu_bf16_support", "resolve_precision",
           "autocast_for", "precision_for", "prepare_model"]

PRECISIONS = ("bf16-cuda", "auto", "fp32", "bf16")
# CPU flags of native bf16 arithmetic, best first: x86 AMX tiles, AVX-512 BF16, ARMv8.6 BF16.
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")

log = logging.getLogger(__name__)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def select_device(pref: str = "auto") -> torch.device:
    """The device to train on: ``auto`` = cuda if available, else mps, else cpu."""
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise ValueError(f"device {pref!r}: expected auto, cpu, cuda[:N] or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {pref!r}: CUDA is not available on this machine "
                             "(use model.device = \"auto\" or \"cpu\")")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {pref!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not _mps_available():
        raise ValueError(f"device {pref!r}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {pref!r}: expected auto, cpu, cuda[:N] or mps")
    return device


def device_type(pref: str) -> str:
    """The device type ("cpu", "cuda", "mps") a preference names, without requiring it here:
    "auto" is this machine's choice; an explicit "cuda:1" is "cuda" even where CUDA is absent
    (a study planned on a laptop for a GPU box names its runs as the GPU box will train them)."""
    if pref == "auto":
        return select_device("auto").type
    try:
        kind = torch.device(pref).type
    except RuntimeError as exc:
        raise ValueError(f"device {pref!r}: expected auto, cpu, cuda[:N] or mps") from exc
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {pref!r}: expected auto, cpu, cuda[:N] or mps")
    return kind


def cpu_bf16_support(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's native bf16 instruction set (``amx_bf16``, ``avx512_bf16`` or ARM ``bf16``)
    from the kernel's CPU flags, or None (no such flag, or no /proc/cpuinfo: macOS, Windows).

    ``torch.backends.cpu.get_cpu_capability()`` names only the vector width ("AVX512" on a CPU
    with and without AVX-512 BF16), so the flags are read directly.
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / aarch64 spelling
            flags.update(value.split())
    return next((f for f in _CPU_BF16_FLAGS if f in flags), None)


def _cuda_bf16() -> bool:
    # Where CUDA is absent (planning for another machine) assume a bf16-capable GPU (Ampere+).
    return not torch.cuda.is_available() or torch.cuda.is_bf16_supported()


def resolve_precision(pref: str, kind: str) -> str:
    """The concrete precision ("fp32" or "bf16") of preference ``pref`` on device type ``kind``.

    A ValueError names the key for an unknown preference or bf16 on MPS (not supported here).
    """
    if pref not in PRECISIONS:
        raise ValueError(f"model.precision = {pref!r}: expected one of {', '.join(PRECISIONS)}")
    if pref == "bf16" and kind == "mps":
        raise ValueError("model.precision = 'bf16': supported on cuda and cpu, not mps (use fp32 or auto)")
    if pref in ("fp32", "bf16"):
        return pref
    if kind == "cuda":
        return "bf16" if _cuda_bf16() else "fp32"
    if kind == "cpu" and pref == "auto" and cpu_bf16_support() is not None:
        return "bf16"
    return "fp32"


def precision_for(device: torch.device, pref: str = "bf16-cuda") -> str:
    """The concrete precision of ``pref`` on ``device`` (default: bf16 on CUDA, else fp32)."""
    return resolve_precision(pref, device.type)


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on ``device`` when ``precision`` is "bf16"; a no-op context for "fp32".

    Wrap the model's forward only: the caller casts the logits to float before the loss or
    the sigmoid (on CPU, autocast runs linear layers and attention in bf16; LayerNorm keeps
    its input's dtype; BCE-with-logits is on autocast's fp32 list).
    """
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision {precision!r}: expected fp32 or bf16 (resolve it first)")
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device, *, compile: bool = False,
                  checkpointing: bool = False) -> nn.Module:
    """Move to ``device``, set activation checkpointing, optionally compile (CUDA only).

    Returns the module to CALL; when compiled it wraps ``model``, so save and load state
    through the original ``model`` (its state_dict keys carry no ``_orig_mod.`` prefix).
    """
    model.to(device)
    # a plain attribute the model reads; torch's stubs type Module attributes as Tensor | Module
    model.checkpointing = checkpointing  # type: ignore[assignment]
    if compile and device.type == "cuda":
        return cast(nn.Module, torch.compile(model))  # an OptimizedModule wrapping ``model``
    if compile:
        log.info("torch.compile requested but skipped on %s (CUDA only)", device.type)
    return model
