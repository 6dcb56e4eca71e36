"""One run directory (DESIGN §3): the files every stage writes and the report reads.

``runs/<study>/<phase>/<run_id>/`` holds config.json, env.json, status.json,
metrics.jsonl, hardware.jsonl, splits.json, ckpt/ (step-N.pt, best.pt) and (final phase,
after evaluation) eval.json and predictions.npz. :class:`RunDir` owns these names: other
modules use its members, never the literals. JSON files are written atomically;
metrics.jsonl is append-only except that a resumed run truncates the epochs its checkpoint
has not seen.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from finscale.atomic import atomic_write_bytes, atomic_write_json, now_iso

STATES = ("pending", "running", "paused", "done", "failed", "stopped", "thermal_stop", "pruned")


def make_run_id(budget: str, horizon: int, seed: int | str, digest: str, replicate: int = 0,
               tag: str = "") -> str:
    """Readable id plus a hash tail, e.g. ``cpu-s-h1-s0-3f9c1e2a``; replicate r >= 1 adds
    ``-r<r>`` (``cpu-s-h1-r1-s512003-...``), replicate 0 keeps the plain form; with study axes,
    their values follow the horizon (``cpu-s-h1-zscore-s0-…``)."""
    rep = f"-r{replicate}" if replicate else ""
    axes = f"-{tag}" if tag else ""
    return f"{budget}-h{horizon}{axes}{rep}-s{seed}-{digest[:8]}"


LOCK_FILE = ".lock"


class Busy(RuntimeError):
    """Another process holds the unit's lock (its message names the holder)."""


class UnitLock:
    """An exclusive, non-blocking lock on one unit of work (a run or an HPO cell directory).

    ``flock`` on ``<dir>/.lock``: the kernel drops it when the holder exits, even by kill -9,
    so a lock is never stale; the file records the holder's host and pid for messages. Works
    across processes on one machine (and on NFS v4 with working locks); a process must not
    lock the same directory twice. Use as ``with UnitLock(d).acquire(): ...``.
    """

    def __init__(self, directory: Path | str):
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if another process holds it."""
        assert self._fd is None, f"{self.path} already held by this object"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self._fd = fd
        return True

    def acquire(self) -> UnitLock:
        """Take the lock or raise :class:`Busy` naming the holder."""
        if not self.try_acquire():
            raise Busy(f"{self.path.parent} is in use by {self.holder()}")
        return self

    def holder(self) -> str:
        try:
            host, pid = self.path.read_text().split()
            return f"process {pid} on {host}"
        except (OSError, ValueError):
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> UnitLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class RunDir:
    """One run directory: its file names, and readers/writers of its documents."""

    CONFIG = "config.json"        # the fully resolved run config (+ config_hash)
    ENV = "env.json"              # versions, device, git sha, data hashes
    SPLITS = "splits.json"        # the split report (sizes, dates, base rates)
    STATUS = "status.json"        # pending|running|done|failed|... (kept current)
    METRICS = "metrics.jsonl"     # one line per epoch / eval / final
    HARDWARE = "hardware.jsonl"   # sensor readings
    EVAL = "eval.json"            # test metrics (final phase, evaluate stage)
    PREDICTIONS = "predictions.npz"   # test window ends, labels, probabilities
    BEST = "best.pt"              # under ckpt/: the best-validation weights
    BEST_KEPT = "best.kept.pt"    # under ckpt/: the previous best, until a step checkpoint covers best.pt
    # The files a tracker copies as artifacts (everything but checkpoints and the status).
    ARTIFACTS = (CONFIG, ENV, SPLITS, METRICS, HARDWARE, EVAL, PREDICTIONS)

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def ckpt(self) -> Path:
        return self.path / "ckpt"

    @property
    def best_ckpt(self) -> Path:
        return self.ckpt / self.BEST

    @property
    def kept_best_ckpt(self) -> Path:
        return self.ckpt / self.BEST_KEPT

    def step_ckpt(self, step: int) -> Path:
        return self.ckpt / f"step-{step}.pt"

    @property
    def hardware(self) -> Path:
        return self.file(self.HARDWARE)

    @property
    def predictions(self) -> Path:
        return self.file(self.PREDICTIONS)

    def file(self, name: str) -> Path:
        return self.path / name

    def create(self) -> RunDir:
        self.ckpt.mkdir(parents=True, exist_ok=True)
        return self

    # ---- JSON documents --------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(obj, self.file(name))

    def read_json(self, name: str) -> Any:
        path = self.file(name)
        return json.loads(path.read_text()) if path.exists() else None

    def read_config(self) -> dict | None:
        return self.read_json(self.CONFIG)

    def read_eval(self) -> dict | None:
        """eval.json (None before the run was evaluated)."""
        return self.read_json(self.EVAL)

    def write_eval(self, doc: dict) -> None:
        self.write_json(self.EVAL, doc)

    def write_predictions(self, **arrays: Any) -> None:
        import numpy as np

        np.savez(self.predictions, **arrays)

    def write_status(self, state: str, **extra: Any) -> None:
        assert state in STATES, state
        self.write_json(self.STATUS, {"state": state, "updated_at": now_iso(), **extra})

    def status(self) -> dict:
        return self.read_json(self.STATUS) or {"state": "pending"}

    @property
    def state(self) -> str:
        return self.status()["state"]

    # ---- metrics.jsonl ---------------------------------------------------------------
    def append_metrics(self, line: dict) -> None:
        with open(self.file(self.METRICS), "a") as fh:
            fh.write(json.dumps(line, default=_jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_metrics(self) -> list[dict]:
        path = self.file(self.METRICS)
        if not path.exists():
            return []
        lines = []
        for raw in path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                break  # a torn last line from a killed process: ignore it and what follows
        return lines

    def truncate_metrics(self, epochs_done: int) -> None:
        """Keep only the epoch lines a checkpoint at ``epochs_done`` epochs has seen."""
        kept = [m for m in self.read_metrics()
                if m.get("event") == "epoch" and m["epoch"] <= epochs_done]
        text = "".join(json.dumps(m, default=_jsonable) + "\n" for m in kept)
        atomic_write_bytes(text.encode(), self.file(self.METRICS))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
