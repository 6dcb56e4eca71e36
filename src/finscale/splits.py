"""Leak-free splits of window end rows: contiguous, scattered chunks, walk-forward folds.

Consumes: the processed frame's dates, a ``label_ok`` mask (False where the label of the
run's horizon is unknown), a :class:`~finscale.config.SplitsConfig`, ``context_len`` and
``horizon``.
Produces: :class:`Split` objects holding the END rows ``t`` of the windows of each region,
and a split report (windows, first/last date, base rate per region).
Guarantees (validity guards 3, 4 and 11):
- a window ending at ``t`` occupies rows ``[t-context_len+1, t+horizon]`` (inputs and label
  period) and belongs to a region only if that whole span lies inside the region's rows, so
  no window straddles a boundary and training label periods never reach an evaluation
  window (the purge is at least the horizon by construction);
- the spans of windows in different regions are separated by at least ``embargo_days`` rows
  on either side (serial correlation does not care about direction);
- in tuning splits, training rows AFTER a validation chunk start at least
  ``max(embargo_days, lookback + horizon)`` rows after its last row, where ``lookback`` is the
  feature set's longest indicator warm-up: a training window's inputs are computed from up to
  ``lookback`` rows before its first row, so without this gap e.g. an sma_200 input of a
  training window would average the prices that decide the validation labels (automatic;
  ``embargo_days`` can only raise it);
- tuning splits are built from the rows before the test start only (minus the embargo), so
  no tuning split can hold a test-period row;
- a validation or test region with fewer than ``min_eval_windows`` windows raises
  :class:`SplitSizeError` stating the counts and dates.
Panels (``assets``: the asset index of each row; rows of one asset contiguous and in date
order): regions are cut on the CALENDAR (the union of all assets' dates), so every asset is
cut at the same dates and the purge and embargo count calendar days; a window must lie in one
asset's rows. No asset's training label date can then fall in any asset's validation or test
span. Without ``assets`` the calendar is the dates themselves (identical to a single series).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finscale.config import SplitsConfig

__all__ = [
    "Split", "SplitSizeError", "final_split", "tuning_splits", "split_report", "TUNING_SCHEMES",
]

log = logging.getLogger(__name__)

TUNING_SCHEMES = ("contiguous", "scattered", "walk_forward")


class SplitSizeError(ValueError):
    """Guard 4: an evaluation region holds fewer windows than ``splits.min_eval_windows``."""


@dataclass(frozen=True, eq=False)
class Split:
    """Window END rows per region; ``test`` is None for tuning splits."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray | None = None

    def regions(self) -> list[tuple[str, np.ndarray]]:
        out = [("train", self.train), ("val", self.val)]
        return out + ([("test", self.test)] if self.test is not None else [])


@dataclass(frozen=True)
class _Bounds:
    """Row indices: training starts at ``train_lo``; test rows are ``[test_lo, test_hi]``."""

    train_lo: int
    val_lo: int
    test_lo: int
    test_hi: int


# --------------------------------------------------------------------------- row masks

def _rows(n: int, lo: int, hi: int) -> np.ndarray:
    """Boolean mask of rows ``lo..hi`` inclusive (empty when hi < lo)."""
    mask = np.zeros(n, dtype=bool)
    if hi >= lo:
        mask[max(lo, 0):hi + 1] = True
    return mask


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """Rows within ``k`` rows (either side) of a True row."""
    if k == 0:
        return mask.copy()
    n = len(mask)
    cs = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
    r = np.arange(n)
    return cs[np.minimum(r + k + 1, n)] - cs[np.maximum(r - k, 0)] > 0


def _windows_in(mask: np.ndarray, label_ok: np.ndarray, context_len: int, horizon: int,
                assets: np.ndarray | None = None) -> np.ndarray:
    """End rows of the windows whose whole span lies in ``mask`` (and in one asset) and whose
    label is known."""
    n = len(mask)
    cs = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
    t = np.arange(context_len - 1, n - horizon, dtype=np.int64)
    inside = cs[t + horizon + 1] - cs[t - context_len + 1] == context_len + horizon
    if assets is not None:  # assets are contiguous blocks: same first and last row -> one asset
        inside &= assets[t - context_len + 1] == assets[t + horizon]
    return t[inside & label_ok[t]]


def _after(mask: np.ndarray, k: int) -> np.ndarray:
    """Rows within ``k`` rows AFTER a True row (the row itself excluded)."""
    if k <= 0:
        return np.zeros_like(mask)
    n = len(mask)
    cs = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
    r = np.arange(n)
    return cs[r] - cs[np.maximum(r - k, 0)] > 0


def _train_mask(allowed: np.ndarray, eval_mask: np.ndarray, embargo: int, after: int = 0) -> np.ndarray:
    """Training rows: allowed rows at least ``embargo`` rows away from any evaluation row and
    at least ``after`` rows after one (the lookback embargo, see the module docstring)."""
    return allowed & ~_dilate(eval_mask, embargo) & ~_after(eval_mask, after)


def post_eval_embargo(cfg: SplitsConfig, lookback: int, horizon: int) -> int:
    """Rows kept free of training after every tuning validation chunk (module docstring)."""
    return max(int(cfg.embargo_days), int(lookback) + int(horizon))


# --------------------------------------------------------------------------- boundaries

@dataclass(frozen=True, eq=False)
class _Rows:
    """The rows being split and their calendar: region masks are built over ``calendar`` and
    mapped to rows by ``pos`` (row -> calendar position); ``assets`` None = one series."""

    dates: pd.DatetimeIndex
    ok: np.ndarray
    calendar: pd.DatetimeIndex
    pos: np.ndarray
    assets: np.ndarray | None


def _check_inputs(dates, label_ok, context_len: int, horizon: int, assets=None) -> _Rows:
    idx = pd.DatetimeIndex(dates)
    ok = np.asarray(label_ok, dtype=bool)
    if len(idx) != len(ok):
        raise ValueError(f"label_ok: length {len(ok)} differs from the {len(idx)} dates")
    if context_len < 1 or horizon < 1:
        raise ValueError(f"context_len={context_len}, horizon={horizon}: both must be >= 1")
    if assets is None:
        if len(idx) and not (idx.is_monotonic_increasing and idx.is_unique):
            raise ValueError("dates: expected increasing, unique dates")
        return _Rows(idx, ok, idx, np.arange(len(idx)), None)
    assets = np.asarray(assets, dtype=np.int64)
    if len(assets) != len(idx):
        raise ValueError(f"assets: length {len(assets)} differs from the {len(idx)} dates")
    starts = np.flatnonzero(np.diff(assets, prepend=-1))
    if len(set(assets[starts].tolist())) != len(starts):
        raise ValueError("assets: each asset's rows must be one contiguous block")
    for lo, hi in zip(starts, list(starts[1:]) + [len(idx)]):
        block = idx[lo:hi]
        if not (block.is_monotonic_increasing and block.is_unique):
            raise ValueError(f"dates: asset {assets[lo]} needs increasing, unique dates")
    calendar = pd.DatetimeIndex(np.unique(idx.values))
    return _Rows(idx, ok, calendar, calendar.searchsorted(idx), assets)


def _date(cfg: SplitsConfig, key: str) -> pd.Timestamp | None:
    text = getattr(cfg, key)
    if not text:
        return None
    try:
        return pd.Timestamp(text)
    except ValueError as exc:
        raise ValueError(f"splits.{key}: {text!r} is not an ISO date (YYYY-MM-DD)") from exc


def _bounds(dates: pd.DatetimeIndex, cfg: SplitsConfig) -> _Bounds:
    """Region boundaries from dates (train_start/test_end clip to the data) or fractions."""
    n = len(dates)
    if n == 0:
        raise ValueError("dates: no rows to split")
    first, last = dates[0].date(), dates[-1].date()
    start, end = _date(cfg, "train_start"), _date(cfg, "test_end")
    train_lo = 0 if start is None else int(dates.searchsorted(start, "left"))
    test_hi = n - 1 if end is None else int(dates.searchsorted(end, "right")) - 1
    if train_lo >= n:
        raise ValueError(f"splits.train_start: {cfg.train_start} is after the last date {last}")
    if test_hi < train_lo:
        raise ValueError(f"splits.test_end: {cfg.test_end} is before splits.train_start / "
                         f"the first date {first}")
    val, test = _date(cfg, "val_start"), _date(cfg, "test_start")
    if (val is None) != (test is None):
        raise ValueError("splits.val_start and splits.test_start: set both (dates) or neither "
                         "(fractions), got val_start="
                         f"{cfg.val_start!r}, test_start={cfg.test_start!r}")
    if val is None:
        rows = test_hi - train_lo + 1
        test_lo = test_hi + 1 - int(round(rows * cfg.test_fraction))
        val_lo = test_lo - int(round(rows * cfg.val_fraction))
        if val_lo <= train_lo:
            raise ValueError(f"splits.val_fraction + splits.test_fraction = {cfg.val_fraction} + "
                             f"{cfg.test_fraction} of {rows} rows leave no training rows")
    else:
        if not val < test:
            raise ValueError(f"splits.val_start {cfg.val_start} must be before splits.test_start "
                             f"{cfg.test_start}")
        val_lo, test_lo = (int(dates.searchsorted(d, "left")) for d in (val, test))
        if val_lo <= train_lo:
            raise ValueError(f"splits.val_start: {cfg.val_start} leaves no training rows (data "
                             f"{first}..{last}, training from {dates[train_lo].date()})")
        if test_lo > test_hi:
            raise ValueError(f"splits.test_start: {cfg.test_start} is after the last test date "
                             f"{dates[test_hi].date()} (data {first}..{last}, splits.test_end "
                             f"{cfg.test_end or 'empty'})")
    if cfg.train_years:
        # Data size D: the training period loses its start; validation and test do not move.
        keep_from = dates[val_lo] - pd.DateOffset(years=cfg.train_years)
        train_lo = max(train_lo, int(dates.searchsorted(keep_from, "left")))
    return _Bounds(train_lo, val_lo, test_lo, test_hi)


def _span(dates: pd.DatetimeIndex, mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    if not len(rows):
        return "no rows"
    return f"{dates[rows[0]].date()}..{dates[rows[-1]].date()} ({len(rows)} rows)"


def _guard(name: str, region: str, ends: np.ndarray, mask: np.ndarray, dates: pd.DatetimeIndex,
           cfg: SplitsConfig, context_len: int, horizon: int) -> None:
    """Guard 4 for evaluation regions; an empty training region is an error too."""
    minimum = cfg.min_eval_windows if region != "train" else 1
    if len(ends) >= minimum:
        if region == "train" and cfg.train_years and len(ends) < cfg.min_train_windows:
            raise SplitSizeError(
                f"splits.train_years={cfg.train_years}: the training region of the final split has "
                f"{len(ends)} windows, fewer than splits.min_train_windows={cfg.min_train_windows} "
                f"(rows {_span(dates, mask)}, context_len {context_len}, horizon {horizon}); use a "
                "larger data size or lower splits.min_train_windows")
        return
    raise SplitSizeError(
        f"split {name!r}: the {region} region has {len(ends)} windows, fewer than "
        f"{'splits.min_eval_windows=' if region != 'train' else ''}{minimum} "
        f"(rows {_span(dates, mask)}; each window spans context_len {context_len} + horizon "
        f"{horizon} = {context_len + horizon} rows, embargo_days {cfg.embargo_days}); widen the "
        "region (splits dates/fractions/chunk_days/fold_val_days) or lower splits.min_eval_windows")


def _make(name: str, masks: dict[str, np.ndarray], rows: _Rows,
          cfg: SplitsConfig, context_len: int, horizon: int) -> Split:
    """Window ends per region from calendar masks (mapped to rows, one asset per window)."""
    ends = {r: _windows_in(m[rows.pos], rows.ok, context_len, horizon, rows.assets)
            for r, m in masks.items()}
    for region in ("val", "test", "train"):
        if region in masks:
            _guard(name, region, ends[region], masks[region], rows.calendar, cfg, context_len, horizon)
    split = Split(name, ends["train"], ends["val"], ends.get("test"))
    log.info("split %s (context_len %d, horizon %d): %s", name, context_len, horizon,
             ", ".join(f"{r} {len(e)} windows" for r, e in split.regions()))
    return split


# --------------------------------------------------------------------------- public API

def final_split(dates, label_ok, cfg: SplitsConfig, context_len: int, horizon: int,
                assets=None) -> Split:
    """The contiguous train | val | test split used by final runs (the only one with test).
    ``assets``: the asset index of each row of a panel (module docstring)."""
    rows = _check_inputs(dates, label_ok, context_len, horizon, assets)
    idx = rows.calendar
    b, n, emb = _bounds(idx, cfg), len(idx), cfg.embargo_days
    masks = {
        "train": _rows(n, b.train_lo, b.val_lo - 1 - emb),
        "val": _rows(n, b.val_lo, b.test_lo - 1 - emb),
        "test": _rows(n, b.test_lo, b.test_hi),
    }
    return _make("contiguous", masks, rows, cfg, context_len, horizon)


def tuning_splits(dates, label_ok, cfg: SplitsConfig, context_len: int, horizon: int,
                  scheme: str, lookback: int = 0, assets=None) -> list[Split]:
    """Train/val splits for tuning, built from the pre-test rows only (never test rows).

    ``scheme``: "scattered" -> one split; "walk_forward" -> ``cfg.folds`` splits;
    "contiguous" -> the final split's train/val without test. ``lookback``: the feature
    set's longest warm-up (``features.set_lookback``), for the post-validation embargo.
    """
    if scheme not in TUNING_SCHEMES:
        raise ValueError(f"hpo.split: {scheme!r} is not one of {list(TUNING_SCHEMES)}")
    rows = _check_inputs(dates, label_ok, context_len, horizon, assets)
    idx = rows.calendar
    b = _bounds(idx, cfg)
    # The test period (and the embargo before it) is removed here, before any scheme runs.
    pretest = _rows(len(idx), b.train_lo, b.test_lo - 1 - cfg.embargo_days)
    if not pretest.any():
        raise ValueError(f"splits: no rows before the test start {idx[min(b.test_lo, len(idx) - 1)].date()} "
                         f"(minus embargo_days {cfg.embargo_days}) to tune on")
    if scheme == "contiguous":
        val = pretest & _rows(len(idx), b.val_lo, len(idx))
        masks = {"train": _train_mask(pretest, val, cfg.embargo_days), "val": val}
        return [_make("contiguous", masks, rows, cfg, context_len, horizon)]
    if scheme == "scattered":
        val = _scattered_val(pretest, cfg, context_len + horizon)
        after = post_eval_embargo(cfg, lookback, horizon)
        masks = {"train": _train_mask(pretest, val, cfg.embargo_days, after), "val": val}
        return [_make(f"scattered-s{cfg.seed}", masks, rows, cfg, context_len, horizon)]
    if cfg.fold_end == "val_start":
        # Folds end just before the final validation period: tuned on the most recent rows
        # that neither early stopping nor the test touches (the regime closest to the test).
        pretest &= _rows(len(idx), b.train_lo, b.val_lo - 1 - cfg.embargo_days)
        if not pretest.any():
            raise ValueError("splits.fold_end: no rows before splits.val_start to tune on")
    return [_make(f"walk_forward-f{i}", masks, rows, cfg, context_len, horizon)
            for i, masks in enumerate(_walk_forward_masks(pretest, cfg))]


def _scattered_val(pretest: np.ndarray, cfg: SplitsConfig, span: int) -> np.ndarray:
    """Validation rows: a seeded, time-stratified choice of ``chunk_days``-row chunks of the
    pre-test rows.

    The last chunk absorbs the remainder, so every chunk has ``chunk_days`` rows or more.
    """
    rows = np.flatnonzero(pretest)
    n_chunks = len(rows) // cfg.chunk_days
    if cfg.chunk_days < span:
        raise ValueError(f"splits.chunk_days: {cfg.chunk_days} rows cannot hold one window of "
                         f"context_len + horizon = {span} rows")
    if n_chunks < 2:
        raise ValueError(f"splits.chunk_days: {cfg.chunk_days} gives {n_chunks} chunk(s) of the "
                         f"{len(rows)} pre-test rows; scattered needs at least 2")
    n_val = int(np.clip(round(cfg.val_chunk_fraction * n_chunks), 1, n_chunks - 1))
    # Stratified over time: one chunk drawn from each of n_val consecutive groups of chunks,
    # so validation spans the whole period instead of clustering in a few (crisis) years.
    rng = np.random.default_rng(cfg.seed)
    chosen = np.array([rng.choice(group) for group in np.array_split(np.arange(n_chunks), n_val)])
    chunk_of_row = np.minimum(np.arange(len(rows)) // cfg.chunk_days, n_chunks - 1)
    val = np.zeros_like(pretest)
    val[rows[np.isin(chunk_of_row, chosen)]] = True
    return val


def _walk_forward_masks(pretest: np.ndarray, cfg: SplitsConfig) -> list[dict[str, np.ndarray]]:
    """Folds whose validation blocks tile the end of the given rows, oldest first. Training
    rows lie before each fold's validation block only, so the post-validation lookback
    embargo of scattered splits holds by construction.

    Expanding: training is every pre-test row before the block (minus the embargo).
    Rolling: training keeps the length the first fold has.
    """
    rows, n, emb = np.flatnonzero(pretest), len(pretest), cfg.embargo_days
    lo, hi = int(rows[0]), int(rows[-1])
    first_val = hi + 1 - cfg.folds * cfg.fold_val_days
    train_len = first_val - emb - lo
    if train_len < 1:
        raise ValueError(f"splits.folds x splits.fold_val_days = {cfg.folds} x {cfg.fold_val_days} "
                         f"rows (+ embargo {emb}) leaves no training rows of the {len(rows)} pre-test rows")
    folds = []
    for i in range(cfg.folds):
        val_lo = first_val + i * cfg.fold_val_days
        train_hi = val_lo - 1 - emb
        train_lo = lo if cfg.fold_mode == "expanding" else train_hi + 1 - train_len
        folds.append({"train": _rows(n, train_lo, train_hi),
                      "val": _rows(n, val_lo, val_lo + cfg.fold_val_days - 1)})
    return folds


def split_report(split: Split, dates, labels: np.ndarray) -> list[dict]:
    """Per region: windows, first/last window-end date, label base rate (JSON-able rows)."""
    idx = pd.DatetimeIndex(dates)
    y = np.asarray(labels, dtype=np.float64)
    rows = []
    for region, ends in split.regions():
        rate = float(np.nanmean(y[ends])) if len(ends) else None
        rows.append({
            "split": split.name, "region": region, "windows": int(len(ends)),
            "first_date": str(idx[ends].min().date()) if len(ends) else None,
            "last_date": str(idx[ends].max().date()) if len(ends) else None,
            "base_rate": rate,
        })
        log.info("split %s %s: %d windows %s..%s base rate %s", split.name, region, len(ends),
                 rows[-1]["first_date"], rows[-1]["last_date"],
                 "n/a" if rate is None else f"{rate:.4f}")
    return rows
