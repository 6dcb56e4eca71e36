"""Data sources: the bundled sample, live yfinance download, local CSV/Parquet files and
synthetic markets.

Consumes: a source spec string ``sample:sp500``, ``sample:nasdaq``, ``yfinance:TICKER``,
``file:PATH`` or ``synthetic:VARIANT?key=value&...`` (see ``synthetic``).
Produces: a validated canonical raw frame (see ``validate``).
Guarantees: nothing here writes to disk; network failures raise quickly with a clear
message instead of retrying for long.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finscale.data import synthetic
from finscale.data.pin import clip_dates
from finscale.data.validate import DataError, shown, validate_ohlcv

log = logging.getLogger(__name__)

SAMPLES = {"sp500": "arch.data.sp500", "nasdaq": "arch.data.nasdaq"}
YF_TIMEOUT_S = 10
# Daily bars are small (a century of one asset is ~3 MB of CSV); a file past this is not a bar
# file, and reading it would take minutes and many GB of memory before any rule could fail.
MAX_FILE_BYTES = 256 * 10**6


@dataclass(frozen=True)
class SourceSpec:
    kind: str      # sample | yfinance | file | synthetic
    target: str    # sample name, ticker, path or canonical synthetic parameters

    @property
    def default_name(self) -> str:
        if self.kind == "synthetic":
            return synthetic.parse_synthetic(self.target).default_name
        if self.kind == "file":
            return Path(self.target).stem
        return self.target.replace("^", "").replace("/", "_")

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"


def parse_source(spec: str) -> SourceSpec:
    kind, sep, target = spec.partition(":")
    if not sep or not target or kind not in ("sample", "yfinance", "file", "synthetic"):
        raise DataError(f"source {spec!r}: expected sample:NAME, yfinance:TICKER, file:PATH or "
                        f"synthetic:VARIANT?key=value&... ({'|'.join(synthetic.VARIANTS)})")
    if kind == "synthetic":  # stored in canonical form: every parameter, fixed order
        return SourceSpec(kind, synthetic.parse_synthetic(target).canonical)
    if kind == "sample" and target not in SAMPLES:
        raise DataError(f"source {spec!r}: unknown sample {target!r} (available: {', '.join(SAMPLES)})")
    return SourceSpec(kind, target)


def load_sample(name: str) -> pd.DataFrame:
    """The daily OHLCV bundled in the ``arch`` package (1999-01-04..2018-12-31), offline."""
    import importlib

    if name not in SAMPLES:
        raise DataError(f"sample {name!r}: unknown (available: {', '.join(SAMPLES)})")
    frame = importlib.import_module(SAMPLES[name]).load().reset_index()
    # arch ships the vendor's adjusted close; OHLC are as traded, so we keep them unadjusted.
    return validate_ohlcv(frame.drop(columns=["Adj Close"]), origin=f"sample:{name}")


def read_file(path: Path) -> pd.DataFrame:
    """Read CSV or Parquet as-is (validation happens afterwards)."""
    if not path.is_file():
        raise DataError(f"file {path}: not found")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"file {path}: {size / 1e6:,.0f} MB, larger than the {MAX_FILE_BYTES / 1e6:,.0f} MB "
                        "limit for a daily bar file (split it per asset, or keep only the needed rows)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            _check_csv_header(path)
            return pd.read_csv(path)
    except DataError:
        raise
    except (ValueError, OSError) as exc:
        raise DataError(f"file {path}: cannot be read ({shown(exc, 200, quote=False)})") from exc
    raise DataError(f"file {path}: unsupported extension {suffix!r} (expected .csv or .parquet)")


def _check_csv_header(path: Path) -> None:
    """pandas renames a repeated header ('Close' -> 'Close.1'): reject duplicates first."""
    import csv

    with open(path, newline="") as fh:
        try:
            header = next(csv.reader(fh), [])
        except csv.Error:  # a header field past the csv module's field limit
            raise DataError(f"file {path}: a header field is longer than {csv.field_size_limit():,} "
                            "characters (not the header of a bar file)") from None
    seen: dict[str, str] = {}
    for col in header:
        key = col.strip().lower()
        if key in seen:
            raise DataError(f"file {path}: duplicated column {shown(col.strip())} in the header")
        seen[key] = col


def yfinance_args(start: str = "", end: str = "") -> dict:
    """Keyword arguments of ``Ticker.history`` for the inclusive date range ``start..end``
    (empty: from the first bar / up to today). yfinance's ``end`` is exclusive, so the day
    after ``end`` is passed; an explicit end makes a refetch ask for the same bars."""
    kwargs = {"period": "max", "interval": "1d", "auto_adjust": True, "timeout": YF_TIMEOUT_S}
    if start:
        kwargs["start"] = pd.Timestamp(start).date().isoformat()
    if end:
        kwargs["end"] = (pd.Timestamp(end) + pd.Timedelta(days=1)).date().isoformat()
    return kwargs


def download_yfinance(ticker: str, start: str = "", end: str = "") -> pd.DataFrame:
    """Daily history from Yahoo Finance (``start..end`` inclusive, default all of it),
    adjusted (yfinance's default auto_adjust)."""
    try:
        import yfinance as yf
    except ImportError as exc:  # pragma: no cover - yfinance is a core dependency
        raise DataError("yfinance is not installed: pip install yfinance") from exc
    try:
        frame = yf.Ticker(ticker).history(**yfinance_args(start, end), raise_errors=True)
    except Exception as exc:  # yfinance raises many unrelated types for network trouble
        raise DataError(f"yfinance:{ticker}: download failed ({type(exc).__name__}: {exc}); "
                        "check the network connection and the ticker") from exc
    if frame is None or frame.empty:
        raise DataError(f"yfinance:{ticker}: no data returned (unknown ticker or no network)")
    return frame.reset_index()


def fetch(spec: SourceSpec, *, adjusted: bool = False, min_rows: int = 1, start: str = "",
          end: str = "") -> pd.DataFrame:
    """Load and validate the frame a source spec names, cut to ``start..end`` (inclusive)."""
    if spec.kind == "sample":
        frame = load_sample(spec.target)
    elif spec.kind == "synthetic":
        market = synthetic.generate(synthetic.parse_synthetic(spec.target))
        frame = validate_ohlcv(market.frame, origin=str(spec))
    elif spec.kind == "yfinance":
        raw = download_yfinance(spec.target, start, end)
        # Index tickers (e.g. ^GSPC) report zero volume everywhere: declared volume-less.
        volume_optional = spec.target.startswith("^")
        frame = validate_ohlcv(raw, origin=str(spec), volume_optional=volume_optional)
    else:
        frame = validate_ohlcv(read_file(Path(spec.target)), origin=f"file {spec.target}",
                               adjusted=adjusted)
    span = _date_span(frame)
    if start or end:
        frame = clip_dates(frame, start, end)
    if len(frame) < min_rows:
        cut = f" in {start or 'first'}..{end or 'last'} (data.start/data.end)" if start or end else ""
        raise DataError(f"{spec}: {len(frame)} rows{cut}, fewer than the minimum {min_rows} (data.min_rows); "
                        f"its Date column runs {span}{_outside(span, start, end)}")
    return frame


def _date_span(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "nowhere (no rows)"
    return f"{frame['Date'].min().date()}..{frame['Date'].max().date()}"


def _outside(span: str, start: str, end: str) -> str:
    """Which bound misses the data entirely, if one does (the common mistake: a typo'd year)."""
    first, _, last = span.partition("..")
    if start and last and start > last:
        return f": data.start {start} is after its last date"
    if end and first and end < first:
        return f": data.end {end} is before its first date"
    return ""
