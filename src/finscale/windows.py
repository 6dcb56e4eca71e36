"""Window datasets over one float32 array, epoch orders, and train-only normalisation.

Consumes: the processed input matrix ``values`` (T, C), the labels (T,) of one horizon, and
the window END rows of a region (from :mod:`finscale.splits`).
Produces: batches ``x`` (B, context_len, C) float32 and ``y`` (B,) float32 as torch tensors;
a :class:`Normalizer` whose statistics can be stored with a run (JSON-able dict).
Guarantees: the dataset is a zero-copy sliding view of ``values`` (a batch is one fancy-index
gather into one new contiguous array; no per-sample copies are ever kept); epoch orders are a
pure function of (seed, epoch), so a resumed run sees the same data order; z-score statistics
come from the rows covered by training windows' contexts only (validity guard 5).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "WindowDataset", "epoch_order", "iterate_batches", "Normalizer", "NORMALIZATIONS", "training_rows",
    "fit_panel_normalizer",
]

log = logging.getLogger(__name__)

# "revin_stats": RevIN whose per-window statistics are also given to the model (a token), so the
# level and scale it divides out stay visible (guard 17); the model owns both RevIN kinds.
NORMALIZATIONS = ("none", "zscore", "revin", "zscore+revin", "revin_stats", "zscore+revin_stats")
# A column whose training std is below this is constant in training: centre it, don't divide.
STD_FLOOR = 1e-8


class WindowDataset:
    """Windows ending at ``ends`` over ``values``: a view, not copies.

    ``values`` (T, C) is converted to float32 C-contiguous once (no copy when it already
    is); ``windows`` is ``sliding_window_view`` of it reshaped to (T-L+1, L, C), whose row
    ``t-L+1`` is the window ending at ``t``. ``assets`` (T,) int, panels only: the asset
    index of each row, so a window's asset is that of its end row (windows never cross assets).
    """

    def __init__(self, values: np.ndarray, labels: np.ndarray, ends: np.ndarray, context_len: int,
                 assets: np.ndarray | None = None):
        values = np.ascontiguousarray(values, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.float32)
        ends = np.asarray(ends, dtype=np.int64)
        if values.ndim != 2 or labels.shape != (len(values),):
            raise ValueError(f"values/labels: expected shapes (T, C) and (T,), got "
                             f"{values.shape} and {labels.shape}")
        if not 1 <= context_len <= len(values):
            raise ValueError(f"context_len: {context_len} is not in 1..{len(values)} (rows)")
        if ends.ndim != 1 or (len(ends) and (ends.min() < context_len - 1 or ends.max() >= len(values))):
            raise ValueError(f"ends: window end rows must lie in {context_len - 1}..{len(values) - 1}")
        if not np.isfinite(labels[ends]).all():
            bad = ends[~np.isfinite(labels[ends])]
            raise ValueError(f"ends: {len(bad)} windows have no label (first end row {bad[0]})")
        if assets is not None and np.shape(assets) != (len(values),):
            raise ValueError(f"assets: expected shape ({len(values)},), got {np.shape(assets)}")
        self.values, self.labels, self.ends, self.context_len = values, labels, ends, context_len
        self.assets = None if assets is None else np.asarray(assets, dtype=np.int64)
        # (T-L+1, C, L) view -> (T-L+1, L, C): each window is one contiguous block of values.
        view = np.lib.stride_tricks.sliding_window_view(values, context_len, axis=0)
        self.windows = view.transpose(0, 2, 1)
        self._starts = ends - (context_len - 1)

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def n_inputs(self) -> int:
        return self.values.shape[1]

    @property
    def labels_at_ends(self) -> np.ndarray:
        return self.labels[self.ends]

    def get_batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``idx`` (positions 0..len-1) as (B, L, C) and their labels (B,)."""
        starts = self._starts[np.asarray(idx, dtype=np.int64)]
        x = self.windows[starts]  # one gather into a new C-contiguous (B, L, C) array
        y = self.labels[starts + (self.context_len - 1)]
        return torch.from_numpy(x), torch.from_numpy(y)

    def get_assets(self, idx: np.ndarray) -> torch.Tensor | None:
        """The asset index (B,) of windows ``idx``; None for a single-asset dataset."""
        if self.assets is None:
            return None
        return torch.from_numpy(self.assets[self.ends[np.asarray(idx, dtype=np.int64)]])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Permutation of ``range(n)`` determined by (seed, epoch) alone (resume-safe)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def iterate_batches(ds: WindowDataset, batch_size: int,
                    order: np.ndarray | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches in ``order`` (default: sequential); the last batch may be smaller."""
    if batch_size < 1:
        raise ValueError(f"batch_size: {batch_size} must be >= 1")
    order = np.arange(len(ds)) if order is None else np.asarray(order, dtype=np.int64)
    for i in range(0, len(order), batch_size):
        yield ds.get_batch(order[i:i + batch_size])


class Normalizer:
    """Per-column z-scoring fitted on training rows; identity for ``none``/``revin``.

    RevIN (per-window instance normalisation) belongs to the model; for ``zscore+revin``
    this class does the z-score part only. Exempt columns (bounded oscillators) pass through.
    """

    def __init__(self, kind: str, mean: np.ndarray, std: np.ndarray, exempt: list[int], n_rows: int):
        if kind not in NORMALIZATIONS:
            raise ValueError(f"model.normalization: {kind!r} is not one of {list(NORMALIZATIONS)}")
        self.kind, self.exempt, self.n_rows = kind, sorted(int(c) for c in exempt), int(n_rows)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    @property
    def active(self) -> bool:
        return self.kind.startswith("zscore")

    @classmethod
    def fit(cls, values: np.ndarray, train_ends: np.ndarray, context_len: int, kind: str,
            exempt: Sequence[int] = ()) -> Normalizer:
        """Statistics from the rows inside training windows' contexts only."""
        values = np.asarray(values)
        n_cols = values.shape[1]
        if any(not 0 <= c < n_cols for c in exempt):
            raise ValueError(f"exempt: column indices {list(exempt)} outside 0..{n_cols - 1}")
        rows = training_rows(len(values), train_ends, context_len)
        mean, std = np.zeros(n_cols), np.ones(n_cols)
        if kind.startswith("zscore"):
            if not rows.any():
                raise ValueError("train_ends: no training windows to fit the normaliser on")
            mean, std = _column_stats(values[rows].astype(np.float64))
            mean[list(exempt)], std[list(exempt)] = 0.0, 1.0
        norm = cls(kind, mean, std, list(exempt), int(rows.sum()))
        log.info("normaliser %s fitted on %d training rows (%d exempt columns)", kind,
                 norm.n_rows, len(norm.exempt))
        return norm

    def transform(self, values: np.ndarray) -> np.ndarray:
        """A new float32 C-contiguous array; ``values`` is not modified."""
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != len(self.mean):
            raise ValueError(f"values: expected (T, {len(self.mean)}), got {values.shape}")
        if not self.active:
            return np.array(values, dtype=np.float32, order="C")
        return np.ascontiguousarray((values - self.mean) / self.std, dtype=np.float32)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "exempt": list(self.exempt), "n_rows": self.n_rows}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        missing = {"kind", "mean", "std", "exempt", "n_rows"} - set(d)
        if missing:
            raise ValueError(f"normaliser: missing keys {sorted(missing)}")
        if len(d["mean"]) != len(d["std"]):
            raise ValueError(f"normaliser: mean has {len(d['mean'])} columns, std {len(d['std'])}")
        return cls(d["kind"], np.array(d["mean"]), np.array(d["std"]), d["exempt"], d["n_rows"])


def fit_panel_normalizer(values: np.ndarray, assets: np.ndarray, names: list[str],
                         train_ends: np.ndarray, context_len: int, kind: str,
                         exempt: Sequence[int] = ()) -> tuple[np.ndarray, dict]:
    """Panels: each asset z-scored with statistics of ITS OWN training rows (guard 5).

    Returns the transformed (T, C) float32 matrix and a JSON-able record
    ``{"kind", "per_asset": {name: Normalizer.to_dict()}}``. An asset without training
    windows (a history that starts after the training period) uses the statistics of all
    assets' training rows, which is logged.
    """
    values, assets = np.asarray(values), np.asarray(assets)
    train_ends = np.asarray(train_ends, dtype=np.int64)
    pooled = None
    out = np.empty(values.shape, dtype=np.float32)
    record = {}
    for a, name in enumerate(names):
        rows = np.flatnonzero(assets == a)
        if not len(rows):
            continue
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        own = train_ends[(train_ends >= lo) & (train_ends < hi)] - lo
        if len(own):
            norm = Normalizer.fit(values[lo:hi], own, context_len, kind, exempt)
        else:
            pooled = pooled or Normalizer.fit(values, train_ends, context_len, kind, exempt)
            norm = pooled
            log.info("asset %s has no training windows: normalised with all assets' statistics", name)
        out[lo:hi] = norm.transform(values[lo:hi])
        record[name] = norm.to_dict()
    return out, {"kind": kind, "per_asset": record}


def training_rows(n: int, train_ends: np.ndarray, context_len: int) -> np.ndarray:
    """Mask of rows inside at least one training window's context ``[t-L+1, t]``."""
    ends = np.asarray(train_ends, dtype=np.int64)
    diff = np.zeros(n + 1, dtype=np.int64)
    np.add.at(diff, ends - (context_len - 1), 1)
    np.add.at(diff, ends + 1, -1)
    return np.cumsum(diff[:n]) > 0


def _column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring mean/std per column; all-NaN or constant columns map to centre-only."""
    finite = np.isfinite(x)
    count = finite.sum(axis=0)
    safe = np.where(finite, x, 0.0)
    mean = np.divide(safe.sum(axis=0), count, out=np.zeros(x.shape[1]), where=count > 0)
    var = np.divide((((safe - mean) * finite) ** 2).sum(axis=0), count,
                    out=np.zeros(x.shape[1]), where=count > 0)
    std = np.sqrt(var)
    std[std < STD_FLOOR] = 1.0
    return mean, std
