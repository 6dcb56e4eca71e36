"""Device selection and accelerator options (bf16 autocast, torch.compile, checkpointing).

Consumes: a device preference ("auto", "cpu", "cuda", "cuda:1", "mps") and the model flags of
``ModelConfig``. Produces: a ``torch.device``, an autocast context, a prepared model.
Guarantees: "auto" picks cuda > mps > cpu; an explicit device that is not available is a
``ValueError`` naming it. bf16 autocast is used on CUDA only (on CPU bf16 matmuls are several
times slower than fp32, so CPU stays fp32); torch.compile is applied on CUDA only.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

__all__ = ["select_device", "autocast_for", "precision_for", "prepare_model"]

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


def precision_for(device: torch.device) -> str:
    """"bf16" (autocast over fp32 weights) on CUDA with bf16 support, else "fp32"."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    if precision_for(device) == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device, *, compile: bool = False,
                  checkpointing: bool = False) -> nn.Module:
    """Move to ``device``, set activation checkpointing, optionally compile (CUDA only).

    Returns the module to CALL; when compiled it wraps ``model``, so save and load state
    through the original ``model`` (its state_dict keys carry no ``_orig_mod.`` prefix).
    """
    model.to(device)
    model.checkpointing = checkpointing
    if compile and device.type == "cuda":
        return torch.compile(model)
    if compile:
        log.info("torch.compile requested but skipped on %s (CUDA only)", device.type)
    return model
