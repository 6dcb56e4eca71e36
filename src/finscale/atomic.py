"""Atomic file writing: the one home for "write a temp file, then rename it into place".

Consumes: a destination path and bytes/JSON/a frame. Produces: the file, complete or not at
all. Guarantees: a reader never sees a half-written file; a failed write leaves the previous
file (if any) untouched and no temp file behind.

A process killed mid-write (kill -9) cannot remove its temp file, so every temp name carries
its writer (:func:`owner_tag`: host and pid); :func:`remove_litter` (run by ``finscale run``)
removes the temp files and folders of writers on this host that are gone, and never one whose
writer still runs (a concurrent process) or lives on another host (a shared filesystem).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

FULL_BYTES = 1 << 20   # a failed write with less free space than this is a full disk

# ".~<host>~<pid>~" inside a temp name: only names made by owner_tag() match
_OWNER = re.compile(r"\.~(?P<host>[^~/]+)~(?P<pid>\d+)~")


def owner_tag() -> str:
    """The part of a temp name that says which process writes it (see :func:`remove_litter`)."""
    return f".~{socket.gethostname()}~{os.getpid()}~"


def owned_tempdir(parent: Path, prefix: str) -> Path:
    """A new private folder ``<prefix>.~<host>~<pid>~<random>`` in ``parent``."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}", dir=parent))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{owner_tag()}", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:   # full disk, read-only folder: one line naming the file
        raise write_error(path, exc) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_error(path: Path, exc: OSError) -> OSError:
    """The OSError to raise when ``path`` could not be written: one line naming the file and
    the cause (a full disk says so, with the bytes left); the errno is kept. An error that
    already names the file is returned as it is."""
    if str(path) in str(exc):
        return exc
    try:
        free = shutil.disk_usage(path.parent if path.parent.exists() else path.anchor).free
    except OSError:
        free = None
    if free is not None and free < FULL_BYTES:
        cause = f"no space left on device; {free} bytes free"
    else:
        cause = exc.strerror or str(exc).splitlines()[0]
    err = OSError(f"{path}: cannot write ({cause})")
    err.errno = exc.errno
    return err


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


def _writer_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False   # alive, another user's
    return False


def remove_litter(*roots: Path, depth: int | None = None) -> int:
    """Remove, under each root (``depth`` folders deep at most), the temp files and folders
    (named with :func:`owner_tag`) whose writer on this host is no longer running; return how
    many. A reused pid keeps its litter (never a live writer's file removed, at worst a stale
    one kept until that pid exits)."""
    host, removed = socket.gethostname(), 0
    for root in (Path(r) for r in roots):
        for folder, dirs, files in os.walk(root):
            if depth is not None and len(Path(folder).relative_to(root).parts) >= depth:
                dirs[:] = []
            for name in [*dirs, *files]:
                m = _OWNER.search(name)
                if not m or m["host"] != host or not _writer_gone(int(m["pid"])):
                    continue
                path = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):   # a concurrent sweep got it first
                    if name in dirs:
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                    removed += 1
            dirs[:] = [d for d in dirs if not _OWNER.search(d)]
    if removed:
        log.info("removed %d temp file(s)/folder(s) left by killed processes", removed)
    return removed
