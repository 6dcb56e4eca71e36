"""OHLCV validation: every rule a daily bar file must satisfy before it is stored.

Consumes: a frame as read from a source (any column case, dates as strings or datetimes).
Produces: the canonical raw frame — ``Date`` (datetime64[ns], tz-naive, strictly
increasing) and float64 ``Open High Low Close Volume`` on a RangeIndex.
Guarantees: any violation raises :class:`DataError` naming the origin (file/source), the
column, the row/date and the rule, with any offending value cut to ~80 characters
(:func:`shown`); nothing is written by this module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("Open", "High", "Low", "Close")
OHLCV_COLUMNS = ("Date", *PRICE_COLUMNS, "Volume")


MAX_SHOWN = 80   # characters of an offending value shown in an error line


class DataError(ValueError):
    """Input data violates a validation rule."""


def shown(value: object, limit: int = MAX_SHOWN, *, quote: bool = True) -> str:
    """``repr(value)`` (``str`` if not ``quote``) cut to ``limit`` characters, saying how
    long it was: an error line names the bad value without embedding a 10 MB cell."""
    text = repr(value) if quote else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def _canonical_columns(frame: pd.DataFrame, origin: str) -> dict[str, str]:
    """Map canonical names (Date, Open, ..., Adj Close) to the frame's columns, case-insensitively."""
    by_lower: dict[str, str] = {}
    for col in frame.columns:
        key = str(col).strip().lower().replace("_", " ")
        if key in by_lower:
            raise DataError(f"{origin}: duplicated column {shown(col)} (also {shown(by_lower[key])})")
        by_lower[key] = col
    wanted = {name.lower(): name for name in (*OHLCV_COLUMNS, "Adj Close")}
    return {canon: by_lower[low] for low, canon in wanted.items() if low in by_lower}


def _row_label(dates: pd.Series, i: int) -> str:
    value = dates.iloc[i] if i < len(dates) else None
    return f"row {i + 1}" + (f" ({shown(value, quote=False)})" if value is not None and not pd.isna(value) else "")


def _parse_dates(raw: pd.Series, origin: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        parsed = pd.to_datetime(raw, errors="coerce", utc=False, format="mixed")
        bad = parsed.isna() & raw.notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{origin}: column Date, row {i + 1}: unparseable date {shown(raw.iloc[i])}")
    missing = parsed.isna()
    if missing.any():
        i = int(np.flatnonzero(missing.to_numpy())[0])
        raise DataError(f"{origin}: column Date, row {i + 1}: missing date")
    if getattr(parsed.dt, "tz", None) is not None:
        # A timestamp such as 2020-01-02 00:00-05:00 is the trading day 2020-01-02.
        parsed = parsed.dt.tz_localize(None)
    return parsed.dt.normalize().astype("datetime64[ns]")


def _check_dates(dates: pd.Series, origin: str) -> None:
    dup = dates.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{origin}: column Date, {_row_label(dates, i)}: duplicate date "
                        f"{dates.iloc[i].date()}")
    backwards = dates.diff().dt.days.to_numpy()[1:] <= 0
    if backwards.any():
        i = int(np.flatnonzero(backwards)[0]) + 1
        raise DataError(f"{origin}: column Date, {_row_label(dates, i)}: dates not increasing "
                        f"({dates.iloc[i - 1].date()} then {dates.iloc[i].date()})")


def _numeric(frame: pd.DataFrame, col: str, origin: str, dates: pd.Series) -> np.ndarray:
    raw = frame[col]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64")
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        kind = "non-numeric" if pd.notna(raw.iloc[i]) and not isinstance(raw.iloc[i], float) \
            and np.isnan(values[i]) else "NaN/inf"
        raise DataError(f"{origin}: column {col}, {_row_label(dates, i)}: {kind} value "
                        f"{shown(raw.iloc[i])}")
    return values


def _first_violation(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def _check_prices(out: pd.DataFrame, origin: str) -> None:
    dates = out["Date"]
    for col in PRICE_COLUMNS:
        i = _first_violation(out[col].to_numpy() <= 0)
        if i is not None:
            raise DataError(f"{origin}: column {col}, {_row_label(dates, i)}: non-positive price "
                            f"{out[col].iloc[i]}")
    o, h, lo, c = (out[k].to_numpy() for k in PRICE_COLUMNS)
    # Tiny tolerance: vendors round OHLC independently.
    tol = 1e-9 * np.maximum(h, 1.0)
    i = _first_violation(h + tol < np.maximum(o, c))
    if i is not None:
        raise DataError(f"{origin}: column High, {_row_label(dates, i)}: High {h[i]} is below "
                        f"max(Open, Close) = {max(o[i], c[i])}")
    i = _first_violation(lo - tol > np.minimum(o, c))
    if i is not None:
        raise DataError(f"{origin}: column Low, {_row_label(dates, i)}: Low {lo[i]} is above "
                        f"min(Open, Close) = {min(o[i], c[i])}")


def validate_ohlcv(frame: pd.DataFrame, *, origin: str, min_rows: int = 1,
                   volume_optional: bool = False, adjusted: bool = False) -> pd.DataFrame:
    """Validate and canonicalise a daily OHLCV frame (see module docstring).

    ``volume_optional``: the source declares that it has no volume (index data); the
    Volume column is then NaN. ``adjusted``: scale Open/High/Low/Close by
    ``Adj Close / Close`` (all four, consistently); requires an ``Adj Close`` column.
    """
    if frame is None or len(frame) == 0:
        raise DataError(f"{origin}: empty data (no rows)")
    cols = _canonical_columns(frame, origin)
    needed = [c for c in OHLCV_COLUMNS if not (c == "Volume" and volume_optional)]
    missing = [c for c in needed if c not in cols]
    if missing:
        raise DataError(f"{origin}: missing column(s) {', '.join(missing)} "
                        f"(found: {shown(', '.join(map(str, frame.columns)), 2 * MAX_SHOWN, quote=False)})")
    dates = _parse_dates(frame[cols["Date"]].reset_index(drop=True), origin)
    _check_dates(dates, origin)
    body = frame.reset_index(drop=True)
    out = pd.DataFrame({"Date": dates})
    for col in PRICE_COLUMNS:
        out[col] = _numeric(body, cols[col], origin, dates)
    if "Volume" in cols:
        out["Volume"] = _numeric(body, cols["Volume"], origin, dates)
        i = _first_violation(out["Volume"].to_numpy() < 0)
        if i is not None:
            raise DataError(f"{origin}: column Volume, {_row_label(dates, i)}: negative volume "
                            f"{out['Volume'].iloc[i]}")
    else:
        out["Volume"] = np.nan
    _check_prices(out, origin)
    if adjusted:
        out = _adjust(out, body, cols, origin, dates)
    if len(out) < min_rows:
        raise DataError(f"{origin}: {len(out)} rows, fewer than the minimum {min_rows} "
                        "(data.min_rows)")
    return out


def _adjust(out: pd.DataFrame, body: pd.DataFrame, cols: dict, origin: str,
            dates: pd.Series) -> pd.DataFrame:
    if "Adj Close" not in cols:
        raise DataError(f"{origin}: --adjusted needs an 'Adj Close' column (not found)")
    adj = _numeric(body, cols["Adj Close"], origin, dates)
    i = _first_violation(adj <= 0)
    if i is not None:
        raise DataError(f"{origin}: column Adj Close, {_row_label(dates, i)}: non-positive {adj[i]}")
    factor = adj / out["Close"].to_numpy()
    for col in PRICE_COLUMNS:
        out[col] = out[col].to_numpy() * factor
    return out
