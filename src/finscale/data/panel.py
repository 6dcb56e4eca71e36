"""Panels: a study whose ``data.source`` is a list of sources, one asset each.

Consumes: a :class:`~finscale.config.DataConfig` whose ``source`` is a list and DATA_DIR.
Produces: the assets' dataset names and raw manifest entries, in the order given; every asset
is stored and hashed exactly like a single-source dataset (``raw/<NAME>.parquet``).
Guarantees: every source is parsed, checked for duplicates and (when not stored yet) fetched
and validated BEFORE any asset is written, so a bad asset stops the study with a one-line
error naming it and nothing is written for it (or for the assets after it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from finscale.config import DataConfig
from finscale.data.pin import content_sha256
from finscale.data.sources import fetch, parse_source
from finscale.data.synthetic import is_panel_source, panel_members
from finscale.data.validate import DataError

__all__ = ["source_list", "is_panel", "asset_names", "ensure_panel"]

log = logging.getLogger(__name__)


def source_list(cfg: DataConfig) -> list[str]:
    """The study's sources as a list (one element for a single-source study); a synthetic
    panel element (``synthetic:panel?assets=24&...``) stands for its member sources."""
    if isinstance(cfg.source, str):
        return [cfg.source]
    out = []
    for i, text in enumerate(cfg.source):
        try:
            out += panel_members(text) if is_panel_source(text) else [text]
        except DataError as exc:
            raise DataError(f"data.source[{i}]: {exc}") from None
    return out


def is_panel(cfg: DataConfig) -> bool:
    return not isinstance(cfg.source, str)


def asset_names(cfg: DataConfig) -> list[str]:
    """Dataset names of a panel's assets (DataError on an unknown or duplicate source)."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, text in enumerate(source_list(cfg)):
        try:
            spec = parse_source(text)
        except DataError as exc:
            raise DataError(f"data.source[{i}]: {exc}") from None
        name = spec.default_name
        if name in seen:
            raise DataError(f"data.source[{i}]: asset {name!r} ({text}) duplicates "
                            f"data.source[{seen[name]}]; list each asset once")
        seen[name] = i
        names.append(name)
    return names


def ensure_panel(cfg: DataConfig, data_dir: Path) -> list[tuple[str, dict]]:
    """(name, raw entry) per asset, fetching the missing ones (all validated before any write)."""
    from finscale.data import dataset_entry, raw_path, synthetic_entry
    from finscale.data.store import store_frame

    names, sources = asset_names(cfg), source_list(cfg)
    pending = {}
    for name, text in zip(names, sources):
        spec = parse_source(text)
        entry = dataset_entry(data_dir, name)
        if entry is not None and (Path(data_dir) / entry["path"]).exists():
            if entry.get("source") != str(spec):
                raise DataError(f"asset {name!r}: stored in {data_dir} from {entry.get('source')}, "
                                f"but the study names {text}")
            continue
        try:
            pending[name] = (spec, fetch(spec, adjusted=cfg.adjusted, min_rows=cfg.min_rows,
                                         start=cfg.start, end=cfg.end))
        except DataError as exc:
            raise DataError(f"asset {name!r}: {exc}") from None
    for name, (spec, frame) in pending.items():
        extra = synthetic_entry(spec.target) if spec.kind == "synthetic" else {}
        entry = store_frame(Path(data_dir), raw_path(name), frame, {
            "name": name, "kind": "raw", "source": str(spec), "adjusted": cfg.adjusted,
            "content_sha256": content_sha256(frame), "start": cfg.start, "end": cfg.end, **extra})
        log.info("stored asset %s: %d rows %s..%s", name, entry["rows"], entry["first_date"],
                 entry["last_date"])
    stored = [(name, dataset_entry(data_dir, name)) for name in names]
    assert all(entry is not None for _, entry in stored)  # every asset is stored by now
    return cast(list[tuple[str, dict]], stored)
