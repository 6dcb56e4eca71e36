"""The data store: content hashes, the append-only manifest and stored frames (written atomically).

Layout: ``DATA_DIR/raw/<NAME>.parquet``, ``DATA_DIR/processed/<NAME>.<set>.parquet`` and
``DATA_DIR/manifest.json`` (``{"schema_version": 1, "entries": [...]}``). Every write goes
to a temporary file in the same directory and is renamed into place, so a crash leaves the
previous file (and manifest) intact. Entries are never edited; the latest entry for a path
is the one ``verify`` checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from finscale.atomic import atomic_write_json, atomic_write_parquet, now_iso
from finscale.version import __version__

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def resolve_data_dir(flag: str | None = None, cfg_dir: str = "") -> Path:
    """DATA_DIR: ``--data-dir`` flag, else the study's ``data.data_dir``, else $FINSCALE_DATA, else ./data."""
    return Path(flag or cfg_dir or os.environ.get("FINSCALE_DATA") or "data")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()



class Manifest:
    """Append-only record of every stored dataset in one DATA_DIR."""

    def __init__(self, data_dir: Path | str):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / MANIFEST

    def _load(self) -> dict:
        if not self.path.exists():
            return {"schema_version": SCHEMA_VERSION, "entries": []}
        try:
            doc = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: not valid JSON ({exc})") from exc
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{self.path}: schema_version {doc.get('schema_version')!r}, "
                             f"expected {SCHEMA_VERSION}")
        return doc

    def entries(self) -> list[dict]:
        return list(self._load()["entries"])

    def latest(self, rel_path: str) -> dict | None:
        found = [e for e in self.entries() if e["path"] == rel_path]
        return found[-1] if found else None

    def latest_by_path(self) -> dict[str, dict]:
        return {e["path"]: e for e in self.entries()}

    def add(self, entry: dict) -> dict:
        doc = self._load()
        entry = {**entry, "created_at": entry.get("created_at", now_iso()),
                 "finscale_version": __version__}
        doc["entries"].append(entry)
        atomic_write_json(doc, self.path)
        return entry


def store_frame(data_dir: Path, rel_path: str, frame: pd.DataFrame, entry: dict,
                writer: Callable[[pd.DataFrame, Path], None] | None = None) -> dict:
    """Write ``frame`` to ``DATA_DIR/rel_path`` and append its manifest entry (hash, rows, dates)."""
    path = Path(data_dir) / rel_path
    atomic_write_parquet(frame, path, writer)
    dates = frame["Date"]
    full = {"path": rel_path, "sha256": sha256_file(path), "rows": int(len(frame)),
            "first_date": str(dates.iloc[0].date()), "last_date": str(dates.iloc[-1].date()),
            "columns": [str(c) for c in frame.columns], **entry}
    return Manifest(data_dir).add(full)


def verify(data_dir: Path) -> list[dict]:
    """Re-hash the latest entry of every path; one row per path with status ok|missing|changed."""
    rows = []
    for rel, entry in sorted(Manifest(data_dir).latest_by_path().items()):
        path = Path(data_dir) / rel
        if not path.exists():
            status = "missing"
        else:
            status = "ok" if sha256_file(path) == entry["sha256"] else "changed"
        rows.append({"path": rel, "name": entry.get("name", ""), "status": status,
                     "sha256": entry["sha256"], "rows": entry.get("rows")})
    return rows
