"""Splits: hand-computed window counts, purge/embargo properties, guard 4, no test in tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from finscale.config import SplitsConfig
from finscale.splits import SplitSizeError, final_split, split_report, tuning_splits

L, H = 5, 2  # context_len, horizon of the hand-computed examples: a window spans 7 rows


def dates(n: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2000-01-03", periods=n)


def ok(n: int, horizon: int = H) -> np.ndarray:
    """label_ok as make_labels gives it: the last ``horizon`` labels are unknown."""
    mask = np.ones(n, dtype=bool)
    mask[n - horizon:] = False
    return mask


def cfg(**kw) -> SplitsConfig:
    """Hand-count configs: walk-forward folds tile the pre-TEST rows unless a test says so."""
    return SplitsConfig(**{"min_eval_windows": 1, "fold_end": "test_start", **kw})


def by_rows(n: int, val_row: int, test_row: int, **kw) -> SplitsConfig:
    d = dates(n)
    return cfg(val_start=str(d[val_row].date()), test_start=str(d[test_row].date()), **kw)


# --------------------------------------------------------------------------- hand counts

def test_contiguous_counts_by_dates():
    n = 100  # train rows 0..59, val rows 60..79, test rows 80..99
    s = final_split(dates(n), ok(n), by_rows(n, 60, 80), L, H)
    assert (len(s.train), len(s.val), len(s.test)) == (54, 14, 14)  # rows - 7 + 1 each
    assert (s.train[0], s.train[-1]) == (4, 57)
    assert (s.val[0], s.val[-1]) == (64, 77)
    assert (s.test[0], s.test[-1]) == (84, 97)


def test_contiguous_embargo_shrinks_regions_before_each_boundary():
    n = 100  # embargo 3: train rows 0..56, val rows 60..76, test rows 80..99
    s = final_split(dates(n), ok(n), by_rows(n, 60, 80, embargo_days=3), L, H)
    assert (len(s.train), len(s.val), len(s.test)) == (51, 11, 14)
    assert s.train[-1] + H + 3 < s.val[0] - L + 1


def test_contiguous_counts_by_fractions():
    n = 200  # 15% test = rows 170..199, 15% val = rows 140..169
    s = final_split(dates(n), ok(n), cfg(val_fraction=0.15, test_fraction=0.15), L, H)
    assert (len(s.train), len(s.val), len(s.test)) == (134, 24, 24)
    assert s.val[0] == 140 + L - 1 and s.test[0] == 170 + L - 1


def test_train_start_and_test_end_bound_the_split():
    n, d = 120, dates(120)
    c = by_rows(n, 60, 80, train_start=str(d[10].date()), test_end=str(d[99].date()))
    s = final_split(d, ok(n), c, L, H)
    assert (len(s.train), len(s.test)) == (44, 14)  # train rows 10..59, test rows 80..99
    assert s.train[0] == 14 and s.test[-1] == 97


def test_unknown_labels_are_excluded():
    n = 100
    label_ok = ok(n)
    label_ok[70] = False
    s = final_split(dates(n), label_ok, by_rows(n, 60, 80), L, H)
    assert len(s.val) == 13 and 70 not in s.val


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_scattered_counts_two_chunks(seed):
    # pre-test rows 0..59 (test starts at row 62, embargo 2): chunks 0..29 and 30..59, one is
    # validation (24 windows); training keeps 28 rows of the other chunk (22 windows).
    n = 90
    c = by_rows(n, 40, 62, embargo_days=2, chunk_days=30, val_chunk_fraction=0.5, seed=seed)
    (s,) = tuning_splits(dates(n), ok(n), c, L, H, "scattered")
    assert s.test is None
    assert (len(s.train), len(s.val)) == (22, 24)
    val_chunk = s.val[0] // 30
    assert set(s.val // 30) == {val_chunk} and set((s.train - L + 1) // 30) == {1 - val_chunk}


def test_scattered_remainder_joins_last_chunk_and_adjacent_val_chunks_merge():
    # 5 chunks of 20 rows over pre-test rows 0..104 (last chunk 80..104 takes the remainder).
    n = 140
    c = cfg(test_fraction=35 / 140, val_fraction=0.1, chunk_days=20, val_chunk_fraction=0.6, seed=0)
    (s,) = tuning_splits(dates(n), ok(n), c, L, H, "scattered")
    chunk = np.minimum(np.arange(105) // 20, 4)
    val_chunks = sorted(set(chunk[s.val]))
    assert len(val_chunks) == 3  # round(0.6 * 5)
    val_rows = np.isin(chunk, val_chunks)
    # brute force: every window fully inside validation rows, every training window clear of
    # them and starting at least lookback (0) + H rows after the last validation row before it
    expect_val = [t for t in range(L - 1, 105 - H) if val_rows[t - L + 1:t + H + 1].all()]
    expect_train = [t for t in range(L - 1, 105 - H)
                    if not val_rows[max(t - L + 1 - H, 0):t + H + 1].any()]
    assert s.val.tolist() == expect_val and s.train.tolist() == expect_train


def test_scattered_is_deterministic_per_seed_and_differs_across_seeds():
    n = 2000
    runs = {seed: tuning_splits(dates(n), ok(n), cfg(chunk_days=20, seed=seed), L, H, "scattered")[0]
            for seed in range(5)}
    again = tuning_splits(dates(n), ok(n), cfg(chunk_days=20, seed=3), L, H, "scattered")[0]
    assert np.array_equal(again.val, runs[3].val) and np.array_equal(again.train, runs[3].train)
    vals = {tuple(s.val.tolist()) for s in runs.values()}
    assert len(vals) == 5


@pytest.mark.parametrize("mode, fold1_train", [("expanding", 74), ("rolling", 54)])
def test_walk_forward_counts(mode, fold1_train):
    # pre-test rows 0..99; folds of 20 rows: fold 0 val rows 60..79, fold 1 val rows 80..99.
    n = 130
    c = by_rows(n, 90, 100, folds=2, fold_val_days=20, fold_mode=mode)
    f0, f1 = tuning_splits(dates(n), ok(n), c, L, H, "walk_forward")
    assert (len(f0.train), len(f0.val), len(f1.train), len(f1.val)) == (54, 14, fold1_train, 14)
    assert (f0.val[0], f0.val[-1], f1.val[0], f1.val[-1]) == (64, 77, 84, 97)
    assert f1.train[0] == (4 if mode == "expanding" else 24) and f1.train[-1] == 77
    assert f0.name != f1.name and f0.test is None


def test_walk_forward_embargo_gap():
    n = 130
    c = by_rows(n, 90, 100, folds=2, fold_val_days=20, embargo_days=4)
    for s in tuning_splits(dates(n), ok(n), c, L, H, "walk_forward"):
        assert s.train[-1] + H + 4 < s.val[0] - L + 1


def test_contiguous_tuning_split_equals_final_without_test():
    n = 100
    c = by_rows(n, 60, 80, embargo_days=2)
    final = final_split(dates(n), ok(n), c, L, H)
    (tune,) = tuning_splits(dates(n), ok(n), c, L, H, "contiguous")
    assert tune.test is None
    assert np.array_equal(tune.train, final.train) and np.array_equal(tune.val, final.val)


# --------------------------------------------------------------------------- properties

def _separated(a: np.ndarray, b: np.ndarray, context_len: int, horizon: int, gap: int) -> bool:
    """Every span of ``a`` and every span of ``b`` have at least ``gap`` rows between them."""
    a0, a1 = (a - context_len + 1)[:, None], (a + horizon)[:, None]
    b0, b1 = (b - context_len + 1)[None, :], (b + horizon)[None, :]
    return bool(((a1 + gap < b0) | (b1 + gap < a0)).all())


def _labels_disjoint(a: np.ndarray, b: np.ndarray, horizon: int, gap: int) -> bool:
    a0, a1 = (a + 1)[:, None], (a + horizon)[:, None]
    b0, b1 = (b + 1)[None, :], (b + horizon)[None, :]
    return bool(((a1 + gap < b0) | (b1 + gap < a0)).all())


def _check_windows(ends, label_ok, n, context_len, horizon):
    assert np.all(np.diff(ends) > 0) and ends.dtype == np.int64
    assert np.all(ends - context_len + 1 >= 0) and np.all(ends + horizon < n)
    assert label_ok[ends].all()


configs = st.fixed_dictionaries({
    "n": st.integers(300, 700),
    "context_len": st.integers(1, 20),
    "horizon": st.integers(1, 10),
    "embargo": st.integers(0, 10),
    "scheme": st.sampled_from(["contiguous", "scattered", "walk_forward"]),
    "chunk_days": st.integers(30, 60),
    "val_chunk_fraction": st.floats(0.1, 0.5),
    "folds": st.integers(1, 4),
    "fold_val_days": st.integers(30, 60),
    "fold_mode": st.sampled_from(["expanding", "rolling"]),
    "seed": st.integers(0, 10_000),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=configs)
def test_property_no_straddle_purge_embargo_no_test(p):
    n, L_, h, emb = p["n"], p["context_len"], p["horizon"], p["embargo"]
    rng = np.random.default_rng(p["seed"])
    label_ok = ok(n, h) & (rng.random(n) > 0.03)
    c = cfg(embargo_days=emb, chunk_days=p["chunk_days"], val_chunk_fraction=p["val_chunk_fraction"],
            folds=p["folds"], fold_val_days=p["fold_val_days"], fold_mode=p["fold_mode"],
            seed=p["seed"], val_fraction=0.15, test_fraction=0.15)
    test_lo = n - round(n * 0.15)
    val_lo = test_lo - round(n * 0.15)
    final = final_split(dates(n), label_ok, c, L_, h)
    # contiguous final split: each region's spans inside its own rows
    assert final.train[-1] + h <= val_lo - 1 - emb
    assert final.val[0] - L_ + 1 >= val_lo and final.val[-1] + h <= test_lo - 1 - emb
    assert final.test[0] - L_ + 1 >= test_lo
    try:
        splits = tuning_splits(dates(n), label_ok, c, L_, h, p["scheme"])
    except ValueError as exc:  # an impossible configuration must say which key
        assert "splits." in str(exc)
        assume(False)
    for s in [final, *splits]:
        regions = s.regions()
        for _, ends in regions:
            _check_windows(ends, label_ok, n, L_, h)
        for i, (_, a) in enumerate(regions):
            for _, b in regions[i + 1:]:
                assert _separated(a, b, L_, h, emb)
                assert _labels_disjoint(a, b, h, emb)
    for s in splits:  # tuning never reaches the test period (nor the embargo before it)
        assert s.test is None
        assert max(s.train[-1], s.val[-1]) + h < test_lo - emb
    if p["scheme"] == "walk_forward":
        _check_walk_forward(splits, c, test_lo, L_, h)
    if p["scheme"] == "scattered":
        _check_scattered(splits[0], c, test_lo, L_, h)


def _check_walk_forward(splits, c, test_lo, L_, h):
    hi = test_lo - 1 - c.embargo_days
    first = hi + 1 - c.folds * c.fold_val_days
    assert len(splits) == c.folds
    for i, s in enumerate(splits):
        lo = first + i * c.fold_val_days
        assert s.val[0] - L_ + 1 >= lo and s.val[-1] + h <= lo + c.fold_val_days - 1
        assert s.train[-1] + h <= lo - 1 - c.embargo_days


def _check_scattered(s, c, test_lo, L_, h):
    """Val windows lie in chunks holding no training row; no val window crosses into a train chunk."""
    n_pre = test_lo - c.embargo_days
    n_chunks = n_pre // c.chunk_days
    chunk_of = np.minimum(np.arange(n_pre) // c.chunk_days, n_chunks - 1)
    val_chunks = set(chunk_of[s.val])
    for t in s.val:
        assert set(chunk_of[t - L_ + 1:t + h + 1]) <= val_chunks
    for t in s.train:
        assert not set(chunk_of[t - L_ + 1:t + h + 1]) & val_chunks


# --------------------------------------------------------------------------- guards and errors

def test_size_guard_names_counts_and_dates():
    n, d = 100, dates(100)
    with pytest.raises(SplitSizeError) as err:
        final_split(d, ok(n), by_rows(n, 60, 80, min_eval_windows=100), L, H)
    msg = str(err.value)
    assert "val region has 14 windows" in msg and "min_eval_windows=100" in msg
    assert f"{d[60].date()}..{d[79].date()}" in msg


def test_size_guard_fires_for_walk_forward_folds():
    n = 130
    c = by_rows(n, 90, 100, folds=2, fold_val_days=20, min_eval_windows=15)
    with pytest.raises(SplitSizeError, match="walk_forward-f0.*14 windows"):
        tuning_splits(dates(n), ok(n), c, L, H, "walk_forward")


def test_size_guard_counts_windows_not_rows():
    n = 100  # 14 val windows although the region has 20 rows: 14 >= 14 passes, 15 fails
    split = final_split(dates(n), ok(n), by_rows(n, 60, 80, min_eval_windows=14), L, H)
    assert len(split.val) == 14
    with pytest.raises(SplitSizeError, match="val region has 14 windows"):
        final_split(dates(n), ok(n), by_rows(n, 60, 80, min_eval_windows=15), L, H)


@pytest.mark.parametrize("kw, keys", [
    ({"val_start": "2000-03-01", "test_start": "2000-02-01"}, ["splits.val_start", "splits.test_start"]),
    ({"val_start": "2000-03-01", "test_start": "2000-03-01"}, ["splits.val_start", "splits.test_start"]),
    ({"val_start": "2000-02-01", "test_start": "2030-01-01"}, ["splits.test_start"]),
    ({"val_start": "1990-01-01", "test_start": "2000-03-01"}, ["splits.val_start"]),
    ({"val_start": "2000-02-01"}, ["splits.val_start", "splits.test_start"]),
    ({"val_start": "2000-02-30", "test_start": "2000-03-01"}, ["splits.val_start"]),
    ({"train_start": "2030-01-01"}, ["splits.train_start"]),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, ["splits.val_fraction"]),
])
def test_impossible_splits_name_the_keys(kw, keys):
    with pytest.raises(ValueError) as err:
        final_split(dates(100), ok(100), cfg(**kw), L, H)
    for key in keys:
        assert key in str(err.value)


def test_scattered_chunk_errors_name_the_key():
    with pytest.raises(ValueError, match="splits.chunk_days"):
        tuning_splits(dates(100), ok(100), cfg(chunk_days=6), L, H, "scattered")  # < window span
    with pytest.raises(ValueError, match="splits.chunk_days"):
        tuning_splits(dates(100), ok(100), cfg(chunk_days=60), L, H, "scattered")  # one chunk
    with pytest.raises(ValueError, match="hpo.split"):
        tuning_splits(dates(100), ok(100), cfg(), L, H, "random")


def test_walk_forward_without_training_rows_names_the_keys():
    with pytest.raises(ValueError, match="splits.folds x splits.fold_val_days"):
        tuning_splits(dates(100), ok(100), cfg(folds=5, fold_val_days=20), L, H, "walk_forward")


def test_label_ok_length_must_match():
    with pytest.raises(ValueError, match="label_ok"):
        final_split(dates(100), ok(99), cfg(), L, H)


# --------------------------------------------------------------------------- report

def test_split_report_rows():
    n, d = 100, dates(100)
    labels = np.where(np.arange(n) % 4 == 0, 1.0, 0.0).astype(np.float32)
    labels[-H:] = np.nan
    s = final_split(d, np.isfinite(labels), by_rows(n, 60, 80), L, H)
    rows = split_report(s, d, labels)
    assert [r["region"] for r in rows] == ["train", "val", "test"]
    val = rows[1]
    assert val["split"] == "contiguous" and val["windows"] == 14
    assert (val["first_date"], val["last_date"]) == (str(d[64].date()), str(d[77].date()))
    assert val["base_rate"] == pytest.approx(np.mean(labels[64:78]))


# --------------------------------------------------------------------------- CLI

def test_cli_splits_show_every_scheme(tmp_path, cli):
    pytest.importorskip("finscale.features")
    pytest.importorskip("finscale.labels")
    study = tmp_path / "s.toml"
    study.write_text('name = "t"\n[target]\nhorizons = [1, 5]\n')
    res = cli("splits", "show", str(study), "--data-dir", str(tmp_path / "data"))
    assert res.returncode == 0, res.stderr
    for word in ("contiguous", "scattered-s0", "walk_forward-f0", "test", "val", "train"):
        assert word in res.stdout
    bad = cli("splits", "show", str(study), "--data-dir", str(tmp_path / "data"),
              "--scheme", "contiguous", "--set", "splits.min_eval_windows=100000")
    assert bad.returncode == 1 and "min_eval_windows=100000" in bad.stderr


# --------------------------------------------------------------------------- issue 19

def _leaks(split, lookback: int, context_len: int, horizon: int) -> int:
    """Training windows whose inputs, indicator warm-up included, reach a validation label row."""
    label_rows = np.zeros(int(max(split.val.max(), split.train.max())) + horizon + 1, dtype=bool)
    for s in split.val:
        label_rows[s + 1:s + horizon + 1] = True
    cs = np.concatenate(([0], np.cumsum(label_rows)))
    first = np.maximum(split.train - context_len + 1 - lookback, 0)
    return int(np.sum(cs[split.train + 1] - cs[first] > 0))


@pytest.mark.parametrize("horizon", [1, 5])
def test_scattered_training_inputs_never_reach_validation_labels(sp500, horizon):
    """Guard 3 with indicator lookback: sma_200 of a training window after a validation chunk
    must not average the prices that decide that chunk's labels (bundled data, default
    study's split settings, embargo_days = 0)."""
    from finscale.config import load_study
    from finscale.features import build_features, set_lookback
    from finscale.labels import make_labels

    study = load_study(None, ['hpo.split="scattered"'])
    frame, _ = build_features(sp500, study.features.set)
    y = make_labels(frame, study.target, horizon)
    lookback, L_ = set_lookback(study.features.set), study.model.context_len
    args = (frame["Date"], np.isfinite(y), study.splits, L_, horizon, "scattered")
    (fixed,) = tuning_splits(*args, lookback)
    assert _leaks(fixed, lookback, L_, horizon) == 0
    (naive,) = tuning_splits(*args, 0)  # without the lookback embargo the check fails
    assert _leaks(naive, lookback, L_, horizon) > 0
    bigger = SplitsConfig(**{**study.splits.__dict__, "embargo_days": lookback + horizon + 40})
    (wider,) = tuning_splits(frame["Date"], np.isfinite(y), bigger, L_, horizon, "scattered", lookback)
    assert len(wider.train) < len(fixed.train)  # embargo_days raises the automatic gap


def test_walk_forward_folds_end_before_the_final_validation_period():
    n = 400
    c = by_rows(n, 300, 350, folds=2, fold_val_days=40, fold_end="val_start")
    folds = tuning_splits(dates(n), ok(n), c, L, H, "walk_forward")
    assert all(f.val[-1] + H <= 299 for f in folds)          # labels end before val_start
    assert folds[-1].val[-1] + H == 299 and folds[0].val[0] - L + 1 == 220
    old = tuning_splits(dates(n), ok(n), cfg(**{**c.__dict__, "fold_end": "test_start"}), L, H,
                        "walk_forward")
    assert old[-1].val[-1] + H == 349


def test_scattered_validation_chunks_are_stratified_over_time():
    n = 2000
    for seed in range(5):
        (s,) = tuning_splits(dates(n), ok(n), cfg(chunk_days=20, val_chunk_fraction=0.2, seed=seed),
                             L, H, "scattered")
        chunks = np.unique(s.val // 20)
        # 1700 pre-test rows = 85 chunks, 17 chosen: one in each group of 5 consecutive chunks
        assert len(chunks) == 17 and np.array_equal(np.unique(chunks // 5), np.arange(17))
