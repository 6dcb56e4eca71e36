"""Window datasets (zero-copy views, batches, epoch orders) and train-only normalisation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from finscale.config import SplitsConfig
from finscale.splits import final_split, tuning_splits
from finscale.windows import Normalizer, WindowDataset, epoch_order, iterate_batches, training_rows


def series(n: int = 300, c: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=(n, c)) * np.arange(1, c + 1) + np.arange(c) * 10).astype(np.float32)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    labels[-3:] = np.nan
    return values, labels


# --------------------------------------------------------------------------- WindowDataset

def test_dataset_is_a_view_of_the_base_array():
    values, labels = series()
    ds = WindowDataset(values, labels, np.arange(20, 290), 16)
    assert ds.values is values
    assert np.shares_memory(ds.windows, values)
    assert ds.windows.base is not None and not ds.windows.flags.owndata


def test_batches_hold_the_right_windows_and_labels():
    values, labels = series()
    L = 16
    ends = np.arange(L - 1, 297, 3)
    ds = WindowDataset(values, labels, ends, L)
    idx = np.array([5, 0, len(ends) - 1, 5])
    x, y = ds.get_batch(idx)
    assert x.shape == (4, L, 6) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (4,) and y.dtype == torch.float32
    for row, i in enumerate(idx):
        t = ends[i]
        np.testing.assert_array_equal(x[row].numpy(), values[t - L + 1:t + 1])  # last row is day t
        assert y[row].item() == labels[t]
    np.testing.assert_array_equal(ds.labels_at_ends, labels[ends])
    assert not np.shares_memory(x.numpy(), values)  # a batch is a new array, the base stays untouched


def test_dataset_rejects_bad_ends():
    values, labels = series()
    with pytest.raises(ValueError, match="ends"):
        WindowDataset(values, labels, np.array([3]), 16)  # window would start before row 0
    with pytest.raises(ValueError, match="ends"):
        WindowDataset(values, labels, np.array([300]), 16)
    with pytest.raises(ValueError, match="no label"):
        WindowDataset(values, labels, np.array([50, 298]), 16)  # label of row 298 unknown
    with pytest.raises(ValueError, match="values/labels"):
        WindowDataset(values, labels[:-1], np.array([50]), 16)


def test_epoch_order_is_a_pure_permutation_of_seed_and_epoch():
    a = epoch_order(1000, seed=7, epoch=3)
    assert np.array_equal(np.sort(a), np.arange(1000))
    assert np.array_equal(a, epoch_order(1000, seed=7, epoch=3))
    assert not np.array_equal(a, epoch_order(1000, seed=7, epoch=4))
    assert not np.array_equal(a, epoch_order(1000, seed=8, epoch=3))


def test_iterate_batches_visits_every_window_once_in_order():
    values, labels = series()
    ds = WindowDataset(values, labels, np.arange(15, 297), 16)
    order = epoch_order(len(ds), 0, 0)
    batches = list(iterate_batches(ds, 50, order))
    assert [len(y) for _, y in batches] == [50] * 5 + [len(ds) - 250]
    seen = torch.cat([y for _, y in batches]).numpy()
    np.testing.assert_array_equal(seen, labels[ds.ends[order]])
    sequential = torch.cat([x[:, -1, 0] for x, _ in iterate_batches(ds, 64)]).numpy()
    np.testing.assert_array_equal(sequential, values[ds.ends, 0])
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(ds, 0))


# --------------------------------------------------------------------------- Normalizer

def test_zscore_statistics_come_from_training_contexts_only():
    values, _ = series()
    L, train_ends = 10, np.array([40, 45, 100])  # contexts: rows 31..45 and 91..100
    norm = Normalizer.fit(values, train_ends, L, "zscore")
    rows = np.r_[31:46, 91:101]
    np.testing.assert_allclose(norm.mean, values[rows].astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(norm.std, values[rows].astype(np.float64).std(axis=0), rtol=1e-6)
    assert norm.n_rows == len(rows)
    np.testing.assert_array_equal(np.flatnonzero(training_rows(300, train_ends, L)), rows)


@pytest.mark.parametrize("scheme", ["contiguous", "scattered", "walk_forward"])
def test_changing_validation_and_test_rows_leaves_statistics_unchanged(scheme):
    n, L, h = 600, 12, 3
    values, labels = series(n)
    dates = pd.bdate_range("2001-01-01", periods=n)
    cfg = SplitsConfig(min_eval_windows=5, embargo_days=2, chunk_days=40, folds=2, fold_val_days=60)
    ok = np.isfinite(labels)
    split = (final_split(dates, ok, cfg, L, h) if scheme == "contiguous"
             else tuning_splits(dates, ok, cfg, L, h, scheme)[-1])
    base = Normalizer.fit(values, split.train, L, "zscore", exempt=[1])
    covered = training_rows(n, split.train, L)
    changed = values.copy()
    changed[~covered] = np.random.default_rng(1).normal(1e3, 1e2, size=changed[~covered].shape)
    assert not np.array_equal(changed, values)
    after = Normalizer.fit(changed, split.train, L, "zscore", exempt=[1])
    assert after.to_dict() == base.to_dict()
    eval_rows = [split.val] + ([split.test] if split.test is not None else [])
    for ends in eval_rows:  # no evaluation window's context row was used for the statistics
        assert not covered[ends].any()


def test_transform_zscores_training_rows_and_passes_exempt_columns():
    values, _ = series()
    train_ends = np.arange(20, 200)
    norm = Normalizer.fit(values, train_ends, 21, "zscore", exempt=[2, 4])
    out = norm.transform(values)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == values.shape
    np.testing.assert_array_equal(out[:, [2, 4]], values[:, [2, 4]])
    trained = out[:200, [0, 1, 3, 5]].astype(np.float64)
    np.testing.assert_allclose(trained.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(trained.std(axis=0), 1, atol=1e-5)
    assert not np.shares_memory(out, values)


@pytest.mark.parametrize("kind", ["none", "revin"])
def test_non_zscore_kinds_are_identity(kind):
    values, _ = series()
    norm = Normalizer.fit(values, np.arange(20, 100), 10, kind)
    np.testing.assert_array_equal(norm.transform(values), values)


def test_zscore_revin_zscores_here():
    values, _ = series()
    a = Normalizer.fit(values, np.arange(20, 100), 10, "zscore").transform(values)
    b = Normalizer.fit(values, np.arange(20, 100), 10, "zscore+revin").transform(values)
    np.testing.assert_array_equal(a, b)


def test_constant_and_nan_columns_do_not_blow_up():
    values, _ = series()
    values[:, 0] = 5.0
    values[:, 1] = np.nan
    norm = Normalizer.fit(values, np.arange(20, 100), 10, "zscore")
    assert norm.std[0] == 1.0 and norm.mean[0] == 5.0 and (norm.mean[1], norm.std[1]) == (0.0, 1.0)
    out = norm.transform(values)
    assert np.all(out[:, 0] == 0) and np.isfinite(out[:, 2:]).all()


def test_round_trip_through_json():
    values, _ = series()
    norm = Normalizer.fit(values, np.arange(20, 150), 10, "zscore", exempt=[3])
    back = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(back.transform(values), norm.transform(values))
    assert back.to_dict() == norm.to_dict()


def test_normalizer_errors_name_the_problem():
    values, _ = series()
    with pytest.raises(ValueError, match="model.normalization"):
        Normalizer.fit(values, np.arange(20, 50), 10, "minmax")
    with pytest.raises(ValueError, match="exempt"):
        Normalizer.fit(values, np.arange(20, 50), 10, "zscore", exempt=[6])
    with pytest.raises(ValueError, match="train_ends"):
        Normalizer.fit(values, np.array([], dtype=np.int64), 10, "zscore")
    with pytest.raises(ValueError, match="missing keys"):
        Normalizer.from_dict({"kind": "zscore"})
    norm = Normalizer.fit(values, np.arange(20, 50), 10, "zscore")
    with pytest.raises(ValueError, match="values"):
        norm.transform(values[:, :3])
