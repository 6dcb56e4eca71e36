"""Checkpoints: atomic save, safe load, latest-valid discovery, RNG state capture.

A checkpoint is a dict of tensors and plain Python values (no pickled classes), written to
a temp file and renamed, and always read back with ``torch.load(weights_only=True)`` so a
file from elsewhere cannot execute code. ``step-N.pt`` files hold everything needed to
continue a run exactly; ``best.pt`` holds the best weights and their metrics.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from finscale.atomic import FULL_BYTES, atomic_path

log = logging.getLogger(__name__)

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


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: a link, missing or wrong-typed entries, weights
    that are not finite. The message names the file."""


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint file that does not load at all (truncated, not a torch file)."""


# What each kind of checkpoint must hold (entry -> type); other entries are free.
REQUIRED = {
    "best": {"model_args": dict, "model": dict, "epoch": int, "config_hash": str},
    "step": {"model_args": dict, "model": dict, "optimizer": dict, "scheduler": dict, "trainer": dict,
             "rng": dict, "config_hash": str, "seed": int},
}


def check_state(state: Any, path: Path, require: str | None = None) -> None:
    """CheckpointError unless ``state`` is a dict with the entries of ``require`` (a key of
    :data:`REQUIRED`; None checks none) and every floating-point weight is finite (NaN
    weights would give NaN probabilities silently)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict of entries, found {type(state).__name__}")
    for key, tp in (REQUIRED.get(require, {}) if require is not None else {}).items():
        if key not in state:
            raise CheckpointError(f"checkpoint {path}: missing entry {key!r}")
        if not isinstance(state[key], tp) or (tp is int and isinstance(state[key], bool)):
            raise CheckpointError(f"checkpoint {path}: entry {key!r} is {type(state[key]).__name__}, "
                                  f"expected {tp.__name__}")
    weights = state.get("model")
    if weights is None:
        return
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint {path}: entry 'model' is {type(weights).__name__}, expected a dict")
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"checkpoint {path}: weight {str(name)[:80]!r} is not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"checkpoint {path}: weight {str(name)[:80]!r} holds NaN or inf values")


@contextlib.contextmanager
def not_fitting(path: Path) -> Iterator[None]:
    """Errors raised while applying a loaded checkpoint's contents (``load_state_dict`` of
    the wrong shapes, a missing key) as a :class:`CheckpointError` naming the file."""
    try:
        yield
    except (KeyError, TypeError, RuntimeError, ValueError, IndexError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path}: does not fit this run "
                              f"({str(exc).splitlines()[0][:200]})") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", require: str | None = None) -> dict:
    """Load with ``weights_only=True`` and :func:`check_state`. A symbolic link, a file that
    does not load (:class:`UnreadableCheckpoint`) or one whose contents fail the check raise
    :class:`CheckpointError` (a ValueError) naming the file."""
    path = Path(path)
    if path.is_symlink():  # we write regular files only: a link was put there by someone else
        raise CheckpointError(f"checkpoint {path}: is a symbolic link (to {os.readlink(path)}); "
                              "checkpoints are regular files")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise UnreadableCheckpoint(f"checkpoint {path}: unreadable ({str(exc)[:200]})") from exc
    check_state(state, path, require)
    return state


def save_best(state: dict, best: Path, kept: Path) -> None:
    """Write a new ``best`` checkpoint, first moving the one the last step checkpoint knows
    to ``kept`` (once per step checkpoint). A kill before the next step checkpoint resumes
    from that checkpoint, whose best epoch is the kept file's, not the new one's:
    :func:`resume_best` puts it back. :func:`commit_best` drops it once a step is saved."""
    if best.exists() and not kept.exists():
        os.replace(best, kept)
    save_checkpoint(state, best)


def commit_best(kept: Path) -> None:
    """A step checkpoint now covers ``best.pt``: the kept earlier best is no longer needed."""
    kept.unlink(missing_ok=True)


def resume_best(best: Path, kept: Path, epoch: int, config_hash: str) -> dict:
    """The best checkpoint of a resumed run whose step state says its best epoch is ``epoch``
    (0-based): ``best``, or ``kept`` when the run died after writing a newer best but before
    the step checkpoint covering it (``kept`` becomes ``best`` again; the epoch is redone).
    :class:`CheckpointError` naming the file when neither is the run's."""
    found: tuple[Path, dict] | None = None
    for path in [p for p in (best, kept) if p.exists()] or [best]:  # neither: best's error
        state = load_checkpoint(path, require="best")  # unreadable/tampered: raises, naming it
        if state["epoch"] == epoch and state["config_hash"] == config_hash:
            if path is kept:
                os.replace(kept, best)
            commit_best(kept)
            return state
        found = found or (path, state)
    assert found is not None  # the loop loads best or kept (load_checkpoint raises otherwise)
    path, state = found
    raise CheckpointError(f"checkpoint {path}: is from epoch {state['epoch'] + 1} of config "
                          f"{state['config_hash'][:12]}, but this run's best epoch is {epoch + 1}")


def step_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``step-N.pt``, newest last."""
    if not Path(ckpt_dir).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(ckpt_dir).iterdir() if (m := STEP_RE.match(p.name))]
    return sorted(found)


def latest_valid_checkpoint(ckpt_dir: Path, require: str | None = None) -> dict | None:
    """The newest ``step-N.pt`` that loads; unreadable ones (e.g. torn by a crash) are
    logged and skipped. One that loads but fails :func:`check_state` (tampered, NaN
    weights) raises :class:`CheckpointError`: it is never resumed from, nor passed over."""
    for _step, path in reversed(step_checkpoints(ckpt_dir)):
        try:
            return {**load_checkpoint(path, require=require), "_path": str(path)}
        except UnreadableCheckpoint as exc:
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
    np_state = cast(tuple, np.random.get_state())  # legacy=True (the default): the tuple form
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
