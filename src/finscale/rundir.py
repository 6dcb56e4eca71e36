"""One run directory (DESIGN §3): the files every stage writes and the report reads.

``runs/<study>/<phase>/<run_id>/`` holds config.json, env.json, status.json,
metrics.jsonl, hardware.jsonl, splits.json, ckpt/ and (final phase) eval.json. JSON files
are written atomically; metrics.jsonl is append-only except that a resumed run truncates
the epochs its checkpoint has not seen.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from finscale.files import atomic_write_bytes, atomic_write_json, now_iso

STATES = ("pending", "running", "paused", "done", "failed", "stopped", "thermal_stop", "pruned")


def make_run_id(budget: str, horizon: int, seed: int | str, digest: str, tag: str = "") -> str:
    """Readable id plus a hash tail, e.g. ``cpu-s-h1-s0-3f9c1e2a`` (with study axes, their
    values follow the horizon: ``cpu-s-h1-zscore-s0-…``)."""
    return f"{budget}-h{horizon}{'-' + tag if tag else ''}-s{seed}-{digest[:8]}"


class RunDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def ckpt(self) -> Path:
        return self.path / "ckpt"

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

    def write_status(self, state: str, **extra: Any) -> None:
        assert state in STATES, state
        self.write_json("status.json", {"state": state, "updated_at": now_iso(), **extra})

    def status(self) -> dict:
        return self.read_json("status.json") or {"state": "pending"}

    @property
    def state(self) -> str:
        return self.status()["state"]

    # ---- metrics.jsonl ---------------------------------------------------------------
    def append_metrics(self, line: dict) -> None:
        with open(self.file("metrics.jsonl"), "a") as fh:
            fh.write(json.dumps(line, default=_jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_metrics(self) -> list[dict]:
        path = self.file("metrics.jsonl")
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
        atomic_write_bytes(text.encode(), self.file("metrics.jsonl"))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
