"""From a study to a run's data: dataset -> processed features -> labels -> split -> windows.

Consumes: the study config and DATA_DIR. Produces: :class:`PreparedData` (the processed
frame's input matrix, dates and data hashes) and, per horizon, ``RunData`` for the final
split (plus its test dataset) or for each tuning split (no test windows exist there).
Guarantees: labels come from the run's own horizon (guard 2); normalisation statistics come
from training windows only (guard 5); evaluation regions meet the size guard (guard 4).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from finscale import features, labels, splits
from finscale.config import StudyConfig
from finscale.data import Manifest, ensure_dataset, resolve_data_dir
from finscale.data.panel import ensure_panel, is_panel
from finscale.train import RunData
from finscale.windows import Normalizer, WindowDataset, fit_panel_normalizer

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    name: str                 # dataset name in the store
    frame: pd.DataFrame       # processed frame (Date, inputs, price_close, price_high)
    inputs: list[str]
    values: np.ndarray        # (T, C) float32 raw inputs, before normalisation
    hashes: dict              # {"raw": sha256, "processed": sha256}; panels: {name: sha256} each
    data_dir: Path | None = None
    # Panels only: asset names and the asset index of each row (assets' rows concatenated in
    # the order of data.source, each block in date order). Empty / None for one source.
    assets: tuple[str, ...] = ()
    asset_index: np.ndarray | None = None
    feature_set: str = ""     # the set ``inputs`` come from
    # Other feature sets of the same rows, built on demand by :func:`prepared_for`.
    other_sets: dict = field(default_factory=dict, repr=False)

    @property
    def dates(self) -> pd.Series:
        return self.frame["Date"]

    @property
    def is_panel(self) -> bool:
        return self.asset_index is not None

    def asset_rows(self) -> list[tuple[str, int, int]]:
        """(name, first row, end row) of each asset; one block for a single source."""
        if not self.is_panel:
            return [(self.name, 0, len(self.frame))]
        out = []
        for a, name in enumerate(self.assets):
            rows = np.flatnonzero(self.asset_index == a)
            out.append((name, int(rows[0]), int(rows[-1]) + 1))
        return out


def window_context(cfg: StudyConfig) -> int:
    """Days of context the splits place window ends for: ``splits.context_len``, else the
    longest context any design of the study uses (``model.context_len`` and, in search mode,
    every searched ``hpo.context_len``). Every design then has the same windows (its own
    shorter context ends on the same days), so paired comparisons stay paired."""
    if cfg.splits.context_len:
        return cfg.splits.context_len
    searched = cfg.hpo.context_len if cfg.hpo.mode == "search" else ()
    return max((cfg.model.context_len, *searched))


def prepare(cfg: StudyConfig, data_dir: str | Path | None = None) -> PreparedData:
    """Fetch (if needed) and build (if needed) the study's processed feature frame."""
    data_dir = resolve_data_dir(str(data_dir) if data_dir else None, cfg.data.data_dir)
    if is_panel(cfg.data):
        return _prepare_panel(cfg, Path(data_dir))
    name, raw_entry = ensure_dataset(cfg.data, data_dir)
    frame = features.ensure_processed(data_dir, name, cfg.features.set)
    entry = Manifest(data_dir).latest(features.processed_path(name, cfg.features.set))
    inputs = features.input_columns(cfg.features.set)
    values = np.ascontiguousarray(frame[inputs].to_numpy(dtype=np.float32))
    assert entry is not None  # ensure_processed stored it
    return PreparedData(name, frame, inputs, values,
                        {"raw": raw_entry["sha256"], "processed": entry["sha256"]}, Path(data_dir),
                        feature_set=cfg.features.set)


def _prepare_panel(cfg: StudyConfig, data_dir: Path) -> PreparedData:
    """Each asset's processed frame (features per asset), concatenated with an asset index."""
    frames, raw, processed = [], {}, {}
    manifest = Manifest(data_dir)
    for name, entry in ensure_panel(cfg.data, data_dir):
        frames.append(features.ensure_processed(data_dir, name, cfg.features.set))
        raw[name] = entry["sha256"]
        stored = manifest.latest(features.processed_path(name, cfg.features.set))
        assert stored is not None  # ensure_processed stored it
        processed[name] = stored["sha256"]
    names = tuple(raw)
    index = np.concatenate([np.full(len(f), a, dtype=np.int64) for a, f in enumerate(frames)])
    frame = pd.concat(frames, ignore_index=True)
    inputs = features.input_columns(cfg.features.set)
    values = np.ascontiguousarray(frame[inputs].to_numpy(dtype=np.float32))
    log.info("panel of %d assets: %s (%d rows)", len(names), ", ".join(names), len(frame))
    return PreparedData("panel-" + "+".join(names), frame, inputs, values,
                        {"raw": raw, "processed": processed}, data_dir, names, index, cfg.features.set)


def prepared_for(prep: PreparedData, cfg: StudyConfig) -> PreparedData:
    """``prep`` when it holds ``cfg``'s feature set, else that set on the SAME rows (built
    once and kept on ``prep``): a design's windows must be the study's windows. A set whose
    rows differ (another warm-up length) is a ValueError naming both sets."""
    want = cfg.features.set
    if not prep.feature_set or prep.feature_set == want:
        return prep
    if want not in prep.other_sets:
        if prep.data_dir is None:
            raise ValueError(f"feature set {want!r}: the prepared data has no data directory")
        other = prepare(cfg, prep.data_dir)
        if not np.array_equal(other.dates.to_numpy(), prep.dates.to_numpy()):
            raise ValueError(f"feature sets {prep.feature_set!r} and {want!r} cover different days "
                             f"({len(prep.frame)} vs {len(other.frame)} rows); a design search needs "
                             "sets with the same warm-up")
        prep.other_sets[want] = other
    return prep.other_sets[want]


STATIONARY_SET = "a20_rel"


def stationary_values(prep: PreparedData, set_name: str = STATIONARY_SET) -> np.ndarray:
    """The stationary feature set's inputs on ``prep``'s rows (NaN where it has no value).

    Baselines fitted on raw price levels extrapolate on a test period whose prices lie above
    every training row; the scale-free set (built once, stored like any processed set) gives
    them a fair chance. Rows are matched by date.
    """
    if prep.data_dir is None:
        raise ValueError("stationary_values: the prepared data has no data directory")
    cols = features.input_columns(set_name)
    parts = []
    for name, lo, hi in prep.asset_rows():
        frame = features.ensure_processed(prep.data_dir, name, set_name)
        parts.append(frame.set_index("Date")[cols].reindex(pd.DatetimeIndex(prep.dates[lo:hi])))
    return np.ascontiguousarray(np.concatenate([p.to_numpy(dtype=np.float64) for p in parts]))


def horizon_labels(prep: PreparedData, cfg: StudyConfig, horizon: int) -> np.ndarray:
    """Labels of the run's horizon: the only labels a run of that horizon ever sees (per asset:
    an asset's last h rows have no label, they never read the next asset's prices)."""
    if not prep.is_panel:
        return labels.make_labels(prep.frame, cfg.target, horizon)
    return np.concatenate([labels.make_labels(prep.frame.iloc[lo:hi], cfg.target, horizon)
                           for _name, lo, hi in prep.asset_rows()])


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
    if prep.asset_index is not None:  # a panel
        values, norm_record = fit_panel_normalizer(prep.values, prep.asset_index, list(prep.assets),
                                                   split.train, m.context_len, m.normalization, exempt)
    else:
        norm = Normalizer.fit(prep.values, split.train, m.context_len, m.normalization, exempt)
        values, norm_record = norm.transform(prep.values), norm.to_dict()
    train = WindowDataset(values, y, split.train, m.context_len, prep.asset_index)
    val = WindowDataset(values, y, split.val, m.context_len, prep.asset_index)
    prior = float(np.mean(y[split.train]))
    report = splits.split_report(split, prep.dates, y)
    return RunData(train=train, val=val, prior=prior, normalizer=norm_record,
                   split_report=report, serving=serving_spec(prep, cfg, horizon)), values


def final_data(prep: PreparedData, cfg: StudyConfig, horizon: int) -> tuple[RunData, WindowDataset]:
    """The contiguous final split: RunData for training/early stopping, and the test set."""
    y = horizon_labels(prep, cfg, horizon)
    split = splits.final_split(prep.dates, np.isfinite(y), cfg.splits, window_context(cfg), horizon,
                               prep.asset_index)
    if prep.is_panel:
        _check_assets_tested(prep, split)
    split = pool_assets(prep, cfg, split)
    data, values = _run_data(prep, cfg, y, split, horizon)
    if cfg.hpo.mode == "search":  # the tuning splits' dates and base rates beside the final ones
        data.split_report += _tuning_report(prep, cfg, horizon, y)
    assert split.test is not None  # the final split has a test region
    test = WindowDataset(values, y, split.test, cfg.model.context_len, prep.asset_index)
    return data, test


def pool_assets(prep: PreparedData, cfg: StudyConfig, split: splits.Split) -> splits.Split:
    """``splits.train_assets`` = k > 0: the training windows of the panel's first k assets only
    (D grows by pooling); validation and test keep every asset. A k above the number of assets,
    or a pool with fewer than ``splits.min_train_windows`` windows, is a ValueError."""
    k, n = cfg.splits.train_assets, len(prep.assets) if prep.is_panel else 1
    if not k:
        return split
    if k > n:
        raise ValueError(f"splits.train_assets: {k} is more than the {n} asset{'s' * (n != 1)} of "
                         f"data.source (expected 0 = all, or 1..{n})")
    if not prep.is_panel:
        return split
    assert prep.asset_index is not None  # a panel has one
    train = split.train[prep.asset_index[split.train] < k]
    if len(train) < cfg.splits.min_train_windows:
        raise ValueError(f"splits.train_assets={k}: {len(train)} training windows in split "
                         f"{split.name!r}, fewer than splits.min_train_windows="
                         f"{cfg.splits.min_train_windows}; pool more assets or lower the minimum")
    log.info("split %s: training windows of the first %d of %d assets (%d of %d windows)",
             split.name, k, n, len(train), len(split.train))
    return dataclasses.replace(split, train=train)


def _check_assets_tested(prep: PreparedData, split: splits.Split) -> None:
    """Every asset of a panel must reach the common test period (else a one-line error)."""
    assert prep.asset_index is not None and split.test is not None  # a panel's final split
    counts = np.bincount(prep.asset_index[split.test], minlength=len(prep.assets))
    for name, n in zip(prep.assets, counts):
        if n == 0:
            _n, lo, hi = next(r for r in prep.asset_rows() if r[0] == name)
            test_from = prep.dates.iloc[split.test].min().date()
            raise ValueError(f"asset {name!r}: no test windows (its data ends "
                             f"{prep.dates.iloc[hi - 1].date()}, the common test period starts "
                             f"{test_from}); drop the asset or move the split dates")


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
    folds = splits.tuning_splits(prep.dates, np.isfinite(y), cfg.splits, window_context(cfg),
                                 horizon, cfg.hpo.split, features.set_lookback(cfg.features.set),
                                 prep.asset_index)
    return [pool_assets(prep, cfg, s) for s in folds]


def tuning_data(prep: PreparedData, cfg: StudyConfig, horizon: int) -> list[RunData]:
    """RunData per tuning split (scattered: one; walk-forward: one per fold). No test windows."""
    y = horizon_labels(prep, cfg, horizon)
    return [_run_data(prep, cfg, y, split, horizon)[0] for split in _tuning_splits(prep, cfg, horizon, y)]


def check_splits(prep: PreparedData, cfg: StudyConfig, horizons, *, tuning: bool) -> None:
    """Guard 4 before any training: every horizon's final split (and, with ``tuning``, its
    HPO tuning splits) has enough evaluation windows; raises the split's ValueError if not."""
    for h in horizons:
        y = horizon_labels(prep, cfg, h)
        final = splits.final_split(prep.dates, np.isfinite(y), cfg.splits, window_context(cfg), h,
                                   prep.asset_index)
        if prep.is_panel:
            _check_assets_tested(prep, final)
        pool_assets(prep, cfg, final)
        if tuning:
            _tuning_splits(prep, cfg, h, y)


def peek_frame(cfg: StudyConfig, data_dir: str | Path | None = None) -> pd.DataFrame:
    """The processed frame without writing anything (for plans): stored, or built in memory
    from stored raw data or the bundled sample. FileNotFoundError when neither exists."""
    from finscale.data import dataset_entry, fetch, load_raw, parse_source

    source = cfg.data.source
    if not isinstance(source, str):  # plans estimate a panel's windows from dates
        raise ValueError("data.source is a panel: no single frame to peek at")
    data_dir = resolve_data_dir(str(data_dir) if data_dir else None, cfg.data.data_dir)
    spec = parse_source(source)
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
