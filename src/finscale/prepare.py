"""From a study to a run's data: dataset -> processed features -> labels -> split -> windows.

Consumes: the study config and DATA_DIR. Produces: :class:`PreparedData` (the processed
frame's input matrix, dates and data hashes) and, per horizon, ``RunData`` for the final
split (plus its test dataset) or for each tuning split (no test windows exist there).
Guarantees: labels come from the run's own horizon (guard 2); normalisation statistics come
from training windows only (guard 5); evaluation regions meet the size guard (guard 4).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from finscale import features, labels, splits
from finscale.config import StudyConfig
from finscale.data import Manifest, ensure_dataset, resolve_data_dir
from finscale.train import RunData
from finscale.windows import Normalizer, WindowDataset

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    name: str                 # dataset name in the store
    frame: pd.DataFrame       # processed frame (Date, inputs, price_close, price_high)
    inputs: list[str]
    values: np.ndarray        # (T, C) float32 raw inputs, before normalisation
    hashes: dict              # {"raw": sha256, "processed": sha256}
    data_dir: Path | None = None

    @property
    def dates(self) -> pd.Series:
        return self.frame["Date"]


def prepare(cfg: StudyConfig, data_dir: str | Path | None = None) -> PreparedData:
    """Fetch (if needed) and build (if needed) the study's processed feature frame."""
    data_dir = resolve_data_dir(str(data_dir) if data_dir else None, cfg.data.data_dir)
    name, raw_entry = ensure_dataset(cfg.data, data_dir)
    frame = features.ensure_processed(data_dir, name, cfg.features.set)
    entry = Manifest(data_dir).latest(features.processed_path(name, cfg.features.set))
    inputs = features.input_columns(cfg.features.set)
    values = np.ascontiguousarray(frame[inputs].to_numpy(dtype=np.float32))
    return PreparedData(name, frame, inputs, values,
                        {"raw": raw_entry["sha256"], "processed": entry["sha256"]}, Path(data_dir))


STATIONARY_SET = "a20_rel"


def stationary_values(prep: PreparedData, set_name: str = STATIONARY_SET) -> np.ndarray:
    """The stationary feature set's inputs on ``prep``'s rows (NaN where it has no value).

    Baselines fitted on raw price levels extrapolate on a test period whose prices lie above
    every training row; the scale-free set (built once, stored like any processed set) gives
    them a fair chance. Rows are matched by date.
    """
    if prep.data_dir is None:
        raise ValueError("stationary_values: the prepared data has no data directory")
    frame = features.ensure_processed(prep.data_dir, prep.name, set_name)
    cols = features.input_columns(set_name)
    aligned = frame.set_index("Date")[cols].reindex(pd.DatetimeIndex(prep.dates))
    return np.ascontiguousarray(aligned.to_numpy(dtype=np.float64))


def horizon_labels(prep: PreparedData, cfg: StudyConfig, horizon: int) -> np.ndarray:
    """Labels of the run's horizon: the only labels a run of that horizon ever sees."""
    return labels.make_labels(prep.frame, cfg.target, horizon)


def serving_spec(prep: PreparedData, cfg: StudyConfig, horizon: int) -> dict:
    """What ``best.pt`` must carry to score new data without the study: the feature set and
    its columns, the window length, the label rule and the data it was trained on."""
    t = cfg.target
    return {"feature_set": cfg.features.set, "inputs": list(prep.inputs),
            "context_len": cfg.model.context_len, "horizon": horizon,
            "target": {"kind": t.kind, "threshold": t.threshold, "price": t.price},
            "data": {"dataset": prep.name, "source": cfg.data.source, "adjusted": cfg.data.adjusted,
                     **prep.hashes}}


def _run_data(prep: PreparedData, cfg: StudyConfig, y: np.ndarray, split: splits.Split,
              horizon: int) -> tuple[RunData, np.ndarray]:
    m = cfg.model
    exempt = [prep.inputs.index(c) for c in features.bounded_columns(cfg.features.set)
              if c in prep.inputs]
    norm = Normalizer.fit(prep.values, split.train, m.context_len, m.normalization, exempt)
    values = norm.transform(prep.values)
    train = WindowDataset(values, y, split.train, m.context_len)
    val = WindowDataset(values, y, split.val, m.context_len)
    prior = float(np.mean(y[split.train]))
    report = splits.split_report(split, prep.dates, y)
    return RunData(train=train, val=val, prior=prior, normalizer=norm.to_dict(),
                   split_report=report, serving=serving_spec(prep, cfg, horizon)), values


def final_data(prep: PreparedData, cfg: StudyConfig, horizon: int) -> tuple[RunData, WindowDataset]:
    """The contiguous final split: RunData for training/early stopping, and the test set."""
    y = horizon_labels(prep, cfg, horizon)
    split = splits.final_split(prep.dates, np.isfinite(y), cfg.splits, cfg.model.context_len, horizon)
    data, values = _run_data(prep, cfg, y, split, horizon)
    if cfg.hpo.mode == "search":  # the tuning splits' dates and base rates beside the final ones
        data.split_report += _tuning_report(prep, cfg, horizon, y)
    test = WindowDataset(values, y, split.test, cfg.model.context_len)
    return data, test


def _tuning_report(prep: PreparedData, cfg: StudyConfig, horizon: int, y: np.ndarray) -> list[dict]:
    """Split-report rows of the tuning splits; none (logged) where they cannot be built — the
    HPO phase reports that error, the final runs do not depend on it."""
    try:
        folds = _tuning_splits(prep, cfg, horizon, y)
    except ValueError as exc:
        log.warning("horizon %d: tuning split %s not recorded: %s", horizon, cfg.hpo.split, exc)
        return []
    return [row for s in folds for row in splits.split_report(s, prep.dates, y)]


def _tuning_splits(prep: PreparedData, cfg: StudyConfig, horizon: int, y: np.ndarray) -> list:
    return splits.tuning_splits(prep.dates, np.isfinite(y), cfg.splits, cfg.model.context_len,
                                horizon, cfg.hpo.split, features.set_lookback(cfg.features.set))


def tuning_data(prep: PreparedData, cfg: StudyConfig, horizon: int) -> list[RunData]:
    """RunData per tuning split (scattered: one; walk-forward: one per fold). No test windows."""
    y = horizon_labels(prep, cfg, horizon)
    return [_run_data(prep, cfg, y, split, horizon)[0] for split in _tuning_splits(prep, cfg, horizon, y)]


def check_splits(prep: PreparedData, cfg: StudyConfig, horizons, *, tuning: bool) -> None:
    """Guard 4 before any training: every horizon's final split (and, with ``tuning``, its
    HPO tuning splits) has enough evaluation windows; raises the split's ValueError if not."""
    for h in horizons:
        valid = np.isfinite(horizon_labels(prep, cfg, h))
        splits.final_split(prep.dates, valid, cfg.splits, cfg.model.context_len, h)
        if tuning:
            splits.tuning_splits(prep.dates, valid, cfg.splits, cfg.model.context_len, h, cfg.hpo.split)


def peek_frame(cfg: StudyConfig, data_dir: str | Path | None = None) -> pd.DataFrame:
    """The processed frame without writing anything (for plans): stored, or built in memory
    from stored raw data or the bundled sample. FileNotFoundError when neither exists."""
    from finscale.data import dataset_entry, fetch, load_raw, parse_source

    data_dir = resolve_data_dir(str(data_dir) if data_dir else None, cfg.data.data_dir)
    spec = parse_source(cfg.data.source)
    name = cfg.data.name or spec.default_name
    try:
        return features.load_processed(data_dir, name, cfg.features.set)
    except FileNotFoundError:
        pass
    if dataset_entry(data_dir, name) is not None:
        raw = load_raw(data_dir, name)
    elif spec.kind in ("sample", "synthetic"):  # offline and deterministic: build in memory
        raw = fetch(spec)
    else:
        raise FileNotFoundError(f"dataset {name!r} is not stored in {data_dir}")
    return features.build_features(raw, cfg.features.set)[0]
