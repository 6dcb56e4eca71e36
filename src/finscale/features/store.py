"""Processed-dataset artifacts: ``DATA_DIR/processed/<NAME>.<set>.parquet`` + manifest entry.

Consumes: a raw dataset stored by ``finscale.data`` (hash-checked on load). Produces: the
processed frame of :func:`build_features`, written atomically, and an append-only manifest
entry recording the input dataset's sha256, the feature list with lookbacks, the warm-up
rows dropped and the finscale version. Guarantees: :func:`load_processed` refuses a file
whose hash no longer matches its entry, or whose raw input has been replaced since.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from finscale.data import Manifest, load_raw, raw_path, sha256_file
from finscale.data.store import store_frame
from finscale.features.build import build_features
from finscale.features.registry import FEATURES, feature_names

log = logging.getLogger(__name__)


def processed_path(name: str, set_name: str) -> str:
    """Path of a processed dataset relative to DATA_DIR."""
    raw_path(name)  # validates the dataset name
    feature_names(set_name)  # validates the set name
    return f"processed/{name}.{set_name}.parquet"


def _build_command(data_dir: Path, name: str, set_name: str) -> str:
    return f"finscale features build --data {name} --feature-set {set_name} --data-dir {data_dir}"


def build_processed(data_dir: Path, name: str, set_name: str) -> tuple[Path, dict]:
    """Build ``set_name`` on raw dataset ``name``, store it, and return (path, manifest entry)."""
    data_dir = Path(data_dir)
    rel = processed_path(name, set_name)
    raw = load_raw(data_dir, name)  # raises if missing or changed since its manifest entry
    raw_entry = Manifest(data_dir).latest(raw_path(name))
    assert raw_entry is not None  # load_raw raised otherwise
    frame, info = build_features(raw, set_name)
    entry = store_frame(data_dir, rel, frame, {
        "name": name, "kind": "processed", "feature_set": set_name,
        "inputs": [{"path": raw_entry["path"], "sha256": raw_entry["sha256"]}],
        "features": [{"name": n, "lookback": FEATURES[n].lookback} for n in info["inputs"]],
        "lookback": info["lookback"], "warmup_rows_dropped": info["warmup_rows_dropped"],
    })
    log.info("stored %s: %d rows (%d warm-up rows dropped)", rel, entry["rows"],
             info["warmup_rows_dropped"])
    return data_dir / rel, entry


def _stale_reason(data_dir: Path, entry: dict) -> str | None:
    """Why a processed entry no longer matches its inputs (None if it still does)."""
    manifest = Manifest(data_dir)
    for source in entry.get("inputs", []):
        latest = manifest.latest(source["path"])
        if latest is None or latest["sha256"] != source["sha256"]:
            return f"its input {source['path']} changed since it was built"
        # The raw file itself, not only its manifest entry: a file edited or replaced on
        # disk must not feed a run through features built from its old contents. Raw bar
        # files are small (MBs), so hashing them on every load costs milliseconds.
        raw = Path(data_dir) / source["path"]
        if not raw.exists() or sha256_file(raw) != source["sha256"]:
            return f"its input file {raw} changed on disk since it was built"
    return None


def load_processed(data_dir: Path, name: str, set_name: str) -> pd.DataFrame:
    """The stored processed frame; raises FileNotFoundError (with the build command) if absent."""
    data_dir = Path(data_dir)
    rel = processed_path(name, set_name)
    path = data_dir / rel
    entry = Manifest(data_dir).latest(rel)
    if entry is None or not path.exists():
        raise FileNotFoundError(f"processed dataset {rel} not found in {data_dir} "
                                f"(run: {_build_command(data_dir, name, set_name)})")
    if sha256_file(path) != entry["sha256"]:
        raise ValueError(f"{path}: sha256 differs from its manifest entry (file changed); "
                         f"rebuild it: {_build_command(data_dir, name, set_name)}")
    stale = _stale_reason(data_dir, entry)
    if stale:
        raise ValueError(f"{path} is stale: {stale}; rebuild it: "
                         f"{_build_command(data_dir, name, set_name)}")
    frame = pd.read_parquet(path)
    frame["Date"] = frame["Date"].astype("datetime64[ns]")
    return frame


def ensure_processed(data_dir: Path, name: str, set_name: str) -> pd.DataFrame:
    """The processed frame, building it first if it is missing or stale."""
    processed_path(name, set_name)  # bad names are errors, not a reason to rebuild
    try:
        return load_processed(data_dir, name, set_name)
    except FileNotFoundError:
        log.info("processed %s.%s missing: building it", name, set_name)
    except ValueError as exc:
        log.warning("%s", exc)
    build_processed(data_dir, name, set_name)
    return load_processed(data_dir, name, set_name)
