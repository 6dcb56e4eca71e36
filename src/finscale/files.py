"""Atomic file writing: the one home for "write a temp file, then rename it into place".

Consumes: a destination path and bytes/JSON/a frame. Produces: the file, complete or not at
all. Guarantees: a reader never sees a half-written file; a failed write leaves the previous
file (if any) untouched and no temp file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(data: bytes, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write_bytes((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), path)


def atomic_write_parquet(df: pd.DataFrame, path: Path,
                         writer: Callable[[pd.DataFrame, Path], None] | None = None) -> None:
    """Write ``df`` as Parquet atomically (``writer`` lets tests interrupt the write)."""
    with atomic_path(path) as tmp:
        (writer or (lambda d, p: d.to_parquet(p, index=False)))(df, tmp)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
