"""Checkpoints: atomic save, safe load, latest-valid discovery, RNG state capture.

A checkpoint is a dict of tensors and plain Python values (no pickled classes), written to
a temp file and renamed, and always read back with ``torch.load(weights_only=True)`` so a
file from elsewhere cannot execute code. ``step-N.pt`` files hold everything needed to
continue a run exactly; ``best.pt`` holds the best weights and their metrics.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finscale.files import atomic_path

log = logging.getLogger(__name__)

FULL_BYTES = 1 << 20   # a failed write with less free space than this is a full disk
STEP_RE = re.compile(r"^step-(\d+)\.pt$")


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` atomically (temp file + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:  # closed here even on failure, so the temp's space is freed
                torch.save(state, fh)
        except (RuntimeError, OSError) as exc:  # torch reports a failed write as "enforce fail"
            free = shutil.disk_usage(path.parent).free
            cause = "no space left on device" if free < FULL_BYTES else f"write failed: {exc}"
            raise OSError(f"{path}: cannot write checkpoint ({cause}; {free} bytes free)") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with ``weights_only=True``; a corrupt file raises ValueError naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise ValueError(f"checkpoint {path}: unreadable ({exc})") from exc


def step_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``step-N.pt``, newest last."""
    if not Path(ckpt_dir).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(ckpt_dir).iterdir() if (m := STEP_RE.match(p.name))]
    return sorted(found)


def latest_valid_checkpoint(ckpt_dir: Path) -> dict | None:
    """The newest ``step-N.pt`` that loads; unreadable ones are logged and skipped."""
    for _step, path in reversed(step_checkpoints(ckpt_dir)):
        try:
            return load_checkpoint(path)
        except ValueError as exc:
            log.warning("skipping %s: %s", path, exc)
    return None


def prune_step_checkpoints(ckpt_dir: Path, keep: int = 2) -> None:
    """Delete all but the newest ``keep`` step checkpoints."""
    found = step_checkpoints(ckpt_dir)
    for _, path in found[:len(found) - keep]:
        path.unlink(missing_ok=True)


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form ``weights_only`` loading accepts."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
