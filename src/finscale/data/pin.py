"""Dataset pins: the date range a study's data is cut to and the content hash it must have.

Consumes: a validated canonical raw frame (see ``validate``) and the study's ``data.start``,
``data.end`` and ``data.sha256``. Produces: the frame clipped to the date range and its
content hash. Guarantees: the hash depends on the data only (dates and float64 values of
Date/Open/High/Low/Close/Volume), never on the file format, the library versions that wrote
it or the source it came from, so a yfinance fetch and a ``file:`` import of the same bars
pin alike; a mismatch is a :class:`DataError` naming the expected and the found hash.

Why content and not file bytes: the store writes Parquet, whose bytes change with the pyarrow
version; and Yahoo restates adjusted prices after every dividend, so the same ``end`` date
refetched later gives other numbers -- the pin is what notices.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from finscale.data.validate import OHLCV_COLUMNS, DataError

__all__ = ["content_sha256", "clip_dates", "check_pin", "identity_fields", "HASH_COLUMNS"]

HASH_COLUMNS = OHLCV_COLUMNS


def content_sha256(frame: pd.DataFrame) -> str:
    """sha256 of the bars: a header line, then the dates (int64 days since 1970-01-01) and
    each column's float64 values, little-endian, column by column."""
    missing = [c for c in HASH_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"content hash: frame lacks column(s) {', '.join(missing)}")
    digest = hashlib.sha256((",".join(HASH_COLUMNS) + "\n").encode())
    days = frame["Date"].to_numpy(dtype="datetime64[D]").astype("<i8")
    digest.update(days.tobytes())
    for col in HASH_COLUMNS[1:]:
        digest.update(np.ascontiguousarray(frame[col].to_numpy(dtype="<f8")).tobytes())
    return digest.hexdigest()


def clip_dates(frame: pd.DataFrame, start: str = "", end: str = "") -> pd.DataFrame:
    """Rows with ``start <= Date <= end`` (either bound may be empty), re-indexed."""
    keep = np.ones(len(frame), dtype=bool)
    if start:
        keep &= (frame["Date"] >= pd.Timestamp(start)).to_numpy()
    if end:
        keep &= (frame["Date"] <= pd.Timestamp(end)).to_numpy()
    return frame.loc[keep].reset_index(drop=True)


def check_pin(found: str, expected: str, where: str) -> None:
    """DataError naming both hashes when ``expected`` is set and differs from ``found``."""
    if expected and found != expected:
        raise DataError(f"data.sha256: {where} has content sha256 {found}, expected {expected} "
                        "(the data changed; import the pinned snapshot with data.source = "
                        "\"file:PATH\", or set data.sha256 to the new hash on purpose)")


def identity_fields(data: dict) -> dict:
    """A data section (as a dict) for run and HPO-study identities: the pin is a check, not a
    change of what is trained (the data hashes are recorded in env.json), and an unset date
    range leaves the identities of studies written before these keys existed unchanged."""
    return {k: v for k, v in data.items()
            if k != "sha256" and not (k in ("start", "end") and v == "")}
