"""Data layer: sources -> validation -> raw store with manifest entries.

Consumes: a source spec (``sample:sp500``, ``yfinance:SPY``, ``file:prices.csv``,
``synthetic:planted?seed=1``).
Produces: ``DATA_DIR/raw/<NAME>.parquet`` and an append-only manifest entry (sha256, rows,
first/last date, columns, source; synthetic markets add their parameters and the
base-rate and Bayes-optimal log-loss of the default targets). Guarantees: validation
happens before any write; writes are atomic; ``verify`` names every missing or changed file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from finscale.config import NAME_PATTERN, NAME_RULE, DataConfig
from finscale.data.pin import check_pin, content_sha256
from finscale.data.sources import SourceSpec, fetch, load_sample, parse_source
from finscale.data.store import Manifest, resolve_data_dir, sha256_file, store_frame, verify
from finscale.data.validate import DataError, validate_ohlcv

__all__ = [
    "DataError", "Manifest", "SourceSpec", "check_pin", "content_sha256", "dataset_entry", "ensure_dataset", "fetch",
    "fetch_dataset", "load_raw", "load_sample", "parse_source", "pin_status", "raw_path", "resolve_data_dir",
    "sha256_file", "validate_ohlcv", "verify",
]

log = logging.getLogger(__name__)


def raw_path(name: str) -> str:
    """Path of a raw dataset relative to DATA_DIR."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise DataError(f"dataset name {name!r}: not a valid name ({NAME_RULE}); "
                        "set one with --name / data.name")
    return f"raw/{name}.parquet"


def fetch_dataset(source: str, data_dir: Path, *, name: str = "", adjusted: bool = False,
                  min_rows: int = 1, start: str = "", end: str = "", sha256: str = "") -> dict:
    """Fetch, validate, cut to ``start..end`` and store one dataset; returns its new manifest
    entry (with the content hash). A ``sha256`` pin that the data miss is an error naming
    both hashes, raised before anything is written."""
    spec = parse_source(source)
    name = name or spec.default_name
    rel = raw_path(name)
    frame = fetch(spec, adjusted=adjusted, min_rows=min_rows, start=start, end=end)
    content = content_sha256(frame)
    check_pin(content, sha256, f"{spec} ({len(frame):,} rows)")
    extra = synthetic_entry(spec.target) if spec.kind == "synthetic" else {}
    entry = store_frame(Path(data_dir), rel, frame, {
        "name": name, "kind": "raw", "source": str(spec), "adjusted": adjusted,
        "content_sha256": content, "start": start, "end": end, **extra,
    })
    log.info("stored %s: %d rows %s..%s", rel, entry["rows"], entry["first_date"], entry["last_date"])
    return entry


def synthetic_entry(target: str) -> dict:
    """Manifest fields of a synthetic market: its parameters and the known optimum (and, for
    the teacher, its spectrum)."""
    from finscale.data.synthetic import generate, parse_synthetic
    from finscale.data.synthetic_truth import DEFAULT_TARGETS, truth_summary
    from finscale.data.teacher import TeacherNetwork

    spec = parse_synthetic(target)
    market = generate(spec)
    targets = DEFAULT_TARGETS
    if spec.variant == "teacher":
        # horizon 1 only: the Monte Carlo of longer horizons evaluates the wide teacher on
        # rows x paths every simulated day (minutes on 30,000 days); the evaluation stage
        # computes a study's own horizons when it scores them
        targets = tuple(t for t in DEFAULT_TARGETS if t["horizon"] == 1)
    entry = {"variant": spec.variant, "params": spec.params(), "truth": truth_summary(market, targets)}
    if isinstance(market.network, TeacherNetwork):
        # each component's share of the nonlinear drift's variance (the planted spectrum)
        entry["spectrum"] = list(market.network.spectrum)
    return {"synthetic": entry}


def dataset_entry(data_dir: Path, name: str) -> dict | None:
    return Manifest(data_dir).latest(raw_path(name))


def load_raw(data_dir: Path, name: str) -> pd.DataFrame:
    """The stored raw frame; raises if it is missing or its hash no longer matches."""
    rel = raw_path(name)
    entry = dataset_entry(data_dir, name)
    path = Path(data_dir) / rel
    if entry is None or not path.exists():
        raise FileNotFoundError(f"dataset {name!r} not found in {data_dir} "
                                f"(run: finscale data fetch SOURCE --name {name})")
    found = sha256_file(path)
    if found != entry["sha256"]:
        raise DataError(f"{path}: sha256 differs from the manifest entry (file changed: found "
                        f"{found}, manifest {entry['sha256']}); run `finscale data verify` and re-fetch it")
    frame = pd.read_parquet(path)
    frame["Date"] = frame["Date"].astype("datetime64[ns]")
    return frame


def ensure_dataset(cfg: DataConfig, data_dir: Path) -> tuple[str, dict]:
    """The study's dataset name and entry, fetching it first if it is not stored yet.

    A stored dataset must come from the study's source and date range; with ``data.sha256``
    its content is re-hashed from the stored file (before any training reads it)."""
    source = cfg.source
    if not isinstance(source, str):  # a panel's assets are stored by ensure_panel
        raise DataError(f"data.source is a panel of {len(source)} sources; expected one source here")
    name = cfg.name or parse_source(source).default_name
    entry = dataset_entry(data_dir, name)
    if entry is None or not (Path(data_dir) / entry["path"]).exists():
        return name, fetch_dataset(source, data_dir, name=name, adjusted=cfg.adjusted,
                                   min_rows=cfg.min_rows, start=cfg.start, end=cfg.end,
                                   sha256=cfg.sha256)
    if entry.get("source") != parse_source(source).__str__():
        raise DataError(f"dataset {name!r} in {data_dir} came from {entry.get('source')}, but the "
                        f"study names {cfg.source}; set data.name to a different name")
    stored = (entry.get("start", ""), entry.get("end", ""))
    if stored != (cfg.start, cfg.end):
        raise DataError(f"dataset {name!r} in {data_dir} was stored for dates "
                        f"{stored[0] or 'first'}..{stored[1] or 'last'}, but the study names "
                        f"data.start..data.end = {cfg.start or 'first'}..{cfg.end or 'last'}; "
                        "set data.name to a different name")
    if cfg.sha256:
        check_pin(content_sha256(load_raw(data_dir, name)), cfg.sha256,
                  f"the stored dataset {Path(data_dir) / entry['path']}")
    return name, entry


def pin_status(cfg: DataConfig, data_dir: Path) -> str:
    """One line on the study's data pin for plans: the expected hash and whether the stored
    dataset (if any) matches it. Reads only; never fetches."""
    if not isinstance(cfg.source, str):
        return "data: a panel (each asset stored with its own hash; data.sha256 pins one dataset)"
    name = cfg.name or parse_source(cfg.source).default_name
    cut = f" {cfg.start or 'first'}..{cfg.end or 'last'}" if cfg.start or cfg.end else " (all dates)"
    line = f"data: {cfg.source}{cut}, "
    line += f"pinned content sha256 {cfg.sha256}" if cfg.sha256 else \
        "NOT PINNED (data.sha256 empty: a refetch may differ)"
    entry = dataset_entry(data_dir, name)
    if entry is None or not (Path(data_dir) / entry["path"]).exists():
        return line + "; not stored yet (fetched and checked at the first run)"
    try:
        found = content_sha256(load_raw(data_dir, name))
    except (DataError, OSError, ValueError) as exc:
        return line + f"; stored dataset unreadable ({exc})"
    if not cfg.sha256:
        return line + f"; stored {name} has {found}"
    return line + ("; stored dataset matches" if found == cfg.sha256 else
                   f"; STORED DATASET DIFFERS (found {found})")

