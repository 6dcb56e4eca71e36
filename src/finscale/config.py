"""Study configuration: frozen dataclasses per stage, TOML loading, overrides, hashing.

Consumes: a TOML file (optional) and ``section.key=value`` override strings.
Produces: a validated, immutable :class:`StudyConfig` whose sections are handed to the
stages (``build_model(cfg.model)``), and a stable hash of it.
Guarantees: precedence defaults < file < overrides; unknown keys, wrong types and
out-of-range values raise :class:`ConfigError` naming the key and the bad value.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "StudyConfig",
    "load_study",
    "config_hash",
    "config_to_dict",
    "parse_override",
    "replace_section",
    "check_name",
    "NAME_PATTERN",
]

# Study, dataset and budget names become directory and file names (runs/<study>/...,
# data/raw/<name>.parquet, run ids): one safe path component, never '.', '..' or a separator.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "1-64 characters: letters, digits, '_', '-', '.', starting with a letter or digit"


def check_name(key: str, value: str) -> str:
    """``value`` if it is a safe name (:data:`NAME_PATTERN`), else :class:`ConfigError` naming ``key``."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ConfigError(f"{key}: {value!r} is not a valid name ({NAME_RULE})")
    return value


class ConfigError(ValueError):
    """A study file or override is invalid; the message names the key and value."""


def _opt(default: Any = dataclasses.MISSING, *, min=None, max=None, choices=None, doc="", **kw):
    """A dataclass field carrying validation metadata (range, allowed values, doc)."""
    meta = {"min": min, "max": max, "choices": choices, "doc": doc}
    if isinstance(default, (list, dict, tuple)) and "default_factory" not in kw:
        # a fresh copy per instance: one shared dict/list would leak edits between configs
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


# --------------------------------------------------------------------------- sections

@dataclass(frozen=True, kw_only=True)
class DataConfig:
    source: str | tuple[str, ...] = _opt("sample:sp500", doc="one source or a list of them (a **panel** of assets: features, labels and normalisation per asset, one calendar cut for all; see README). `sample:sp500`, `sample:nasdaq` (bundled, offline, 1999-2018), `yfinance:TICKER` (live, full adjusted history), `file:PATH` (CSV/Parquet), `synthetic:null|planted?key=value&...` (seeded synthetic market, see README)")
    name: str = _opt("", doc="dataset name in the store (default: from the source, e.g. `sp500`, `SPY`)")
    data_dir: str = _opt("", doc="data directory; `--data-dir` beats it, then `$FINSCALE_DATA`, then `./data`")
    adjusted: bool = _opt(False, doc="file sources: scale Open/High/Low/Close by `Adj Close / Close`")
    min_rows: int = _opt(250, min=1, doc="fewer validated rows is an error")


@dataclass(frozen=True, kw_only=True)
class FeaturesConfig:
    set: str = _opt("a20", doc="`a20` (5 OHLCV + 20 indicators = 25 inputs) or `a20_rel` (the same information made stationary: prices relative to Close, returns, z-scores). `finscale features list` shows all")


@dataclass(frozen=True, kw_only=True)
class TargetConfig:
    kind: str = _opt("threshold", choices=("threshold", "direction"), doc="`threshold`: y_t = 1 if max(P[t+1..t+h]) >= Close[t]·(1+threshold); `direction`: y_t = 1 if Close[t+h] > Close[t]")
    threshold: float = _opt(0.01, min=0.0, max=1.0, doc="relative rise (threshold kind)")
    price: str = _opt("high", choices=("high", "close"), doc="`high` compares the highs of the next h days, `close` the closes")
    horizons: tuple[int, ...] = _opt((1, 2, 3, 5), min=1, max=260, doc="one cell per horizon; each run trains on its own horizon's labels")


@dataclass(frozen=True, kw_only=True)
class SplitsConfig:
    scheme: str = _opt("contiguous", choices=("contiguous", "scattered", "walk_forward"), doc="scheme of the final runs (train/val/test by date); tuning uses `hpo.split`")
    train_start: str = _opt("", doc="first training date; empty = start of data")
    val_start: str = _opt("", doc="first validation date (set with `test_start`, or neither to use fractions)")
    test_start: str = _opt("", doc="first test date (set with `val_start`, or neither to use fractions)")
    test_end: str = _opt("", doc="last test date; empty = end of data")
    val_fraction: float = _opt(0.15, min=0.0, max=0.9, doc="validation region size when dates are empty")
    test_fraction: float = _opt(0.15, min=0.0, max=0.9, doc="test region size when dates are empty")
    embargo_days: int = _opt(0, min=0, doc="extra rows between regions on top of the purge (a window's whole span, context and label period, lies inside one region); tuning splits always embargo at least the feature set's lookback + horizon after each validation chunk, and this can only raise it")
    min_eval_windows: int = _opt(100, min=1, doc="validation/test regions with fewer windows are an error (guard 4)")
    train_years: int = _opt(0, min=0, doc="data size D: keep only the last N years of training rows before the validation start (0 = all); validation and test stay fixed, so every D is scored on the same test windows.")
    min_train_windows: int = _opt(100, min=1, doc="with `train_years` set, a training region with fewer windows is an error (a data size too small to train on)")
    chunk_days: int = _opt(250, min=10, doc="scattered tuning split: chunk length in rows")
    val_chunk_fraction: float = _opt(0.2, min=0.01, max=0.9, doc="scattered: share of chunks used for validation")
    folds: int = _opt(1, min=1, doc="walk-forward: number of folds (each costs one training per trial)")
    fold_mode: str = _opt("expanding", choices=("expanding", "rolling"), doc="walk-forward: `expanding` or `rolling` training window")
    fold_val_days: int = _opt(500, min=10, doc="walk-forward: validation block length in rows")
    fold_end: str = _opt("val_start", choices=("val_start", "test_start"),
                         doc="walk-forward: folds end just before the final `val_start` (default: tuning resembles the final evaluation) or `test_start`")
    seed: int = _opt(0, min=0, doc="seed of the scattered chunk assignment")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    channel_mode: str = _opt("mixed", choices=("mixed", "independent"), doc="`mixed`: one token per patch holding all inputs (Phase 6A design); `independent`: each input its own token sequence (original PatchTST)")
    context_len: int = _opt(80, min=2, max=4096, doc="days of history per sample")
    patch_len: int = _opt(16, min=1, doc="days per patch; the end is padded so the newest bar is always in the last patch")
    stride: int = _opt(8, min=1, doc="days between patch starts")
    budgets: tuple[str, ...] = _opt(("cpu-s", "cpu-m", "cpu-l", "cpu-xl"),
                                    doc='parameter budgets: ladder names (`cpu-s` 5k, `cpu-m` 25k, `cpu-l` 100k, `cpu-xl` 500k; `2M`, `20M`, `200M`, `2B`) or sizes like `"150k"`')
    budget_tolerance: float = _opt(0.25, min=0.0, max=10.0, doc="measured total parameters must lie within ±25% of the budget, or the run is refused")
    architectures: dict = _opt({}, doc="explicit shapes per budget: `[model.architectures.cpu-l] d_model = 48, num_layers = 3` (checked against the budget)")
    normalization: str = _opt("revin", choices=("none", "zscore", "revin", "zscore+revin"), doc="`none`, `zscore` (train-only statistics), `revin` (per-window, in the model), `zscore+revin`")
    positional: str = _opt("learned", choices=("learned", "sinusoidal"), doc="`learned` or `sinusoidal` positions")
    head_dropout: float = _opt(0.0, min=0.0, max=0.95, doc="dropout before the classification head")
    d_ff_ratio: int = _opt(4, min=1, max=16, doc="MLP width = ratio × d_model for grid architectures")
    device: str = _opt("auto", choices=("auto", "cpu", "cuda", "mps"), doc="`auto` (cuda > mps > cpu), `cpu`, `cuda`, `mps`; bf16 autocast on CUDA only")
    compile: bool = _opt(False, doc="`torch.compile` on CUDA")
    activation_checkpointing: bool = _opt(False, doc="recompute blocks in backward (large models on one GPU)")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    max_epochs: int = _opt(30, min=1, doc="epochs of a final run")
    batch_size: int = _opt(128, min=1, doc="samples per micro-batch")
    lr: float = _opt(3e-4, min=1e-12, max=1.0, doc="peak AdamW learning rate (> 0)")
    weight_decay: float = _opt(1e-3, min=0.0, max=10.0, doc="AdamW decay on weight matrices only (not norms, biases, positions)")
    beta1: float = _opt(0.9, min=0.0, max=0.999999, doc="AdamW beta1")
    beta2: float = _opt(0.999, min=0.0, max=0.999999, doc="AdamW beta2")
    warmup_fraction: float = _opt(0.05, min=0.0, max=1.0, doc="linear warm-up share of all optimiser steps, then cosine decay")
    warmup_steps: int = _opt(0, min=0, doc="if > 0, warm-up length in optimiser steps (overrides the fraction)")
    dropout: float = _opt(0.1, min=0.0, max=0.95, doc="dropout in attention/MLP/embedding")
    patience: int = _opt(5, min=1, doc="early stopping: epochs without improvement")
    min_delta: float = _opt(0.0, min=0.0, doc="early stopping: minimum improvement")
    monitor_metric: str = _opt("val_loss", choices=("val_loss", "val_auc"), doc="early stopping on validation log-loss or `val_auc`")
    grad_clip: float = _opt(1.0, min=0.0, doc="gradient-norm clipping (0 disables)")
    grad_accum: int = _opt(1, min=1, doc="micro-batches per optimiser step")
    pos_weight: float = _opt(0.0, min=0.0, doc="BCE-with-logits positive weight (0 = none)")
    collapse_std: float = _opt(1e-3, min=0.0, doc="predictions with a smaller std are flagged collapsed (guard 12)")
    eval_batch_size: int = _opt(1024, min=1, doc="batch size for validation/test prediction")
    checkpoint_every: int = _opt(1, min=1, doc="epochs between resumable checkpoints")


@dataclass(frozen=True, kw_only=True)
class HpoConfig:
    mode: str = _opt("search", choices=("search", "fixed"),
                     doc="`search`: an Optuna study per budget × horizon cell; `fixed`: take each cell's parameters from `[hpo.table]`, no search")
    trials: int = _opt(8, min=1, doc="trials per cell (in total, across workers and reruns)")
    split: str = _opt("walk_forward", choices=("scattered", "walk_forward"), doc="tuning split: `walk_forward` (default: folds end before the final validation period, see docs/statistics.md) or `scattered` (time-stratified chunks); never the test period")
    storage: str = _opt("", doc="Optuna storage URL (`sqlite:///…`, `postgresql://…`, `journal:PATH`); default `sqlite:///<study dir>/optuna.db`")
    pruner: str = _opt("median", choices=("median", "hyperband", "none"), doc="`median`, `hyperband` or `none`")
    sampler_seed: int = _opt(0, min=0, doc="seed of the TPE sampler and of trial seeds")
    workers: int = _opt(1, min=1, doc="local worker processes sharing the storage")
    heartbeat_s: int = _opt(10, min=1, doc="SQL storages: trial heartbeat; a killed worker's trial is re-queued (every worker of a storage must agree)")
    grace_s: int = _opt(0, min=0, doc="seconds without a heartbeat before that happens (0 = 3 × `heartbeat_s`)")
    max_epochs: int = _opt(0, min=0, doc="epochs per trial (0 = `train.max_epochs`)")
    lr: tuple[float, ...] = _opt((1e-4, 3e-3), min=1e-12, doc="log-uniform range of the learning rate (> 0); `[v]` fixes the value")
    weight_decay: tuple[float, ...] = _opt((1e-5, 1e-1), min=0.0, doc="log-uniform range of the weight decay; `[v]` fixes the value")
    dropout: tuple[float, ...] = _opt((0.0, 0.3), min=0.0, max=0.95, doc="uniform range of dropout; `[v]` fixes the value")
    warmup_fraction: tuple[float, ...] = _opt((0.0, 0.1), min=0.0, max=1.0, doc="uniform range of the warm-up fraction; `[v]` fixes the value")
    batch_size: tuple[int, ...] = _opt((64, 128, 256), min=1, doc="categorical choices")
    aspect: tuple[float, ...] = _opt((0.5, 64.0), min=0.0,
                                     doc="searched shapes keep d_model / num_layers in this range (the grid otherwise offers e.g. 128 layers of width 8)")
    fixed: dict = _opt({}, doc='search mode: values pinned per cell, e.g. `[hpo.fixed."cpu-s-h1"] batch_size = 128`')
    table: dict = _opt({}, doc="fixed mode: full parameters per cell (`d_model`, `num_layers`, `num_heads`, `d_ff`, `lr`, `dropout`, `weight_decay`, `warmup_steps`, …)")


@dataclass(frozen=True, kw_only=True)
class MonitorConfig:
    backend: str = _opt("auto", choices=("auto", "nvml", "linux", "macos", "none"), doc="`auto`, `nvml` (NVIDIA), `linux` (psutil / sysfs), `macos` (pmset/powermetrics), `none`")
    interval_s: float = _opt(10.0, min=0.1, doc="sampling interval of the background thread")
    normal_c: float = _opt(70.0, doc="below: normal; up to `warning_c`: acceptable")
    warning_c: float = _opt(85.0, doc="at or above: pause at the next step until below `resume_c`")
    critical_c: float = _opt(95.0, doc="at or above: checkpoint and stop the run (`thermal_stop`)")
    resume_c: float = _opt(80.0, doc="a paused run resumes below this")
    sysfs_root: str = _opt("/sys/class/thermal", doc="where Linux thermal zones are read")
    require_sensor: bool = _opt(False, doc="an unreadable sensor is an error instead of the state `unavailable`")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    bootstrap_resamples: int = _opt(1000, min=10, doc="moving-block bootstrap resamples for test CIs and paired tests")
    block_len: int = _opt(0, min=0, doc="bootstrap block length in days (0 = chosen from the data per horizon: Politis–White, at least the horizon; never below the horizon)")
    cost_bps: float = _opt(1.0, min=0.0, doc="backtest transaction cost per entry/exit, basis points")
    ece_bins: int = _opt(10, min=2, doc="calibration bins")
    scaling_resamples: int = _opt(1000, min=10, doc="resamples (seeds × test-day blocks) for scaling-law CIs")


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    mlflow: bool = _opt(False, doc="log runs to MLflow (optional extra `finscale[mlflow]`)")
    uri: str = _opt("", doc="tracking URI; default a file store under the study directory")


@dataclass(frozen=True)
class RunConfig:
    # How the study is executed, never what it computes: none of these keys enters a run id
    # or an HPO study name (runs/<study>/... are the same whichever executor trained them).
    workers: int = _opt(1, min=1, doc="local worker processes for HPO cells, final runs and evaluations (`--workers`); results do not depend on it (see `threads`)")
    threads: int = _opt(0, min=0, doc="torch intra-op threads (and Ray CPUs) per unit; 0 = all cores when serial, cores ÷ `workers` with local workers, 1 per Ray task. CPU results can depend on the thread count: pin it (e.g. 1) for metrics identical across worker counts and executors")
    executor: str = _opt("local", choices=("local", "ray"), doc="`local` (this machine, `workers` processes) or `ray` (Ray tasks on a cluster: `--executor ray`, extra `finscale[ray]`, see README \"Running on a cluster\")")
    address: str = _opt("", doc="Ray cluster address (`--address`, e.g. `auto` or `10.0.0.1:6379`); empty = `$RAY_ADDRESS`, else a local Ray instance")
    retries: int = _opt(2, min=0, doc="times a unit whose worker died (crash, kill, lost node) is restarted; it resumes from its checkpoint")


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    name: str = _opt("default", doc="study name; everything goes to `<output_dir>/<name>/`")
    seeds: tuple[int, ...] = _opt((0, 1), min=0, doc="final runs per cell, one per seed (>= 2 for honest uncertainty)")
    replicates: int = _opt(1, min=1, doc="replicate seed sets of the final phase (`--replicates K`): replicate 0 uses `seeds`, replicate r >= 1 as many seeds derived from them (disjoint, deterministic; run ids say `-r<r>-`); HPO is shared. The scaling stage fits each replicate alone and reports how often each verdict holds (`report/stability.csv`); 1 = stability not measured")
    output_dir: str = _opt("runs", doc="parent of the study directory")
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hpo: HpoConfig = field(default_factory=HpoConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    axes: dict = _opt({}, doc='`[axes]`: study keys that vary across the matrix, each a list of values, e.g. `"model.normalization" = ["revin", "zscore"]`, `"splits.train_years" = [2, 4, 8, 0]`; runs = budgets × horizons × seeds × the product of the axes (see README "Axes")')

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# --------------------------------------------------------------------------- coercion

def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, tp: Any, value: Any, meta: dict) -> Any:
    """Check ``value`` against type ``tp`` and range metadata; return the stored form."""
    origin = typing.get_origin(tp)
    if origin is types.UnionType:  # e.g. str | tuple[str, ...]: a list picks the tuple arm
        arms = typing.get_args(tp)
        arm = next((a for a in arms if typing.get_origin(a) is tuple), arms[0]) \
            if isinstance(value, (list, tuple)) else next(a for a in arms if typing.get_origin(a) is not tuple)
        return _coerce(key, arm, value, meta)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", item_tp, v, meta) for i, v in enumerate(value))
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
    _check_range(key, value, meta)
    return value


def _check_range(key: str, value: Any, meta: dict) -> None:
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ConfigError(f"{key}: {value!r} is not one of {list(meta['choices'])}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{key}: {value!r} is below the minimum {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{key}: {value!r} is above the maximum {meta['max']}")


def _build(cls: type, raw: dict, prefix: str) -> Any:
    """Build dataclass ``cls`` from a (possibly partial) mapping, rejecting unknown keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'study'}: expected a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s} (known keys of "
            f"[{prefix.rstrip('.') or 'study'}]: {', '.join(sorted(known))})"
        )
    kwargs = {}
    for name, value in raw.items():
        tp = hints[name]
        if _is_section(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(prefix + name, tp, value, dict(known[name].metadata))
    return cls(**kwargs)


def _check_study(cfg: StudyConfig) -> None:
    """Cross-field rules that no single key can check."""
    m, t, mon = cfg.model, cfg.target, cfg.monitor
    if m.patch_len > m.context_len:
        raise ConfigError(f"model.patch_len: {m.patch_len} exceeds model.context_len {m.context_len}")
    if m.stride > m.patch_len:
        raise ConfigError(f"model.stride: {m.stride} exceeds model.patch_len {m.patch_len} "
                          "(days between patches would never be seen)")
    if not t.horizons:
        raise ConfigError("target.horizons: expected at least one horizon, e.g. [1, 5]")
    if len(set(t.horizons)) != len(t.horizons):
        raise ConfigError(f"target.horizons: expected distinct horizons, got {list(t.horizons)}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds: expected distinct seeds, got {list(cfg.seeds)}")
    if not m.budgets:
        raise ConfigError("model.budgets: expected at least one budget")
    if not (mon.resume_c < mon.warning_c <= mon.critical_c):
        raise ConfigError(
            f"monitor: expected resume_c < warning_c <= critical_c, got "
            f"{mon.resume_c} / {mon.warning_c} / {mon.critical_c}")
    if cfg.splits.val_fraction + cfg.splits.test_fraction >= 1.0:
        raise ConfigError("splits: val_fraction + test_fraction must be below 1")
    for key in ("lr", "weight_decay", "dropout", "warmup_fraction", "aspect"):
        rng = getattr(cfg.hpo, key)
        if len(rng) not in (1, 2) or (len(rng) == 2 and rng[0] > rng[1]):
            raise ConfigError(f"hpo.{key}: expected [value] or [low, high], got {list(rng)}")
    _check_overridden_search(cfg)
    if isinstance(cfg.data.source, tuple):
        if not cfg.data.source:
            raise ConfigError("data.source: expected a source or a non-empty list of sources")
        if cfg.data.name:
            raise ConfigError(f"data.name: {cfg.data.name!r} names one dataset, but data.source is "
                              "a list (a panel's assets are named by their sources); remove data.name")
    check_name("name", cfg.name)
    if cfg.data.name:
        check_name("data.name", cfg.data.name)
    for i, budget in enumerate(m.budgets):
        check_name(f"model.budgets[{i}]", budget)
    _check_dates(cfg.splits)


def _parse_date(key: str, value: str) -> datetime.date | None:
    if not value:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not an ISO date (YYYY-MM-DD)") from None


def _check_dates(s: SplitsConfig) -> None:
    """Split dates parse and come in order train_start < val_start < test_start <= test_end."""
    keys = ("train_start", "val_start", "test_start", "test_end")
    dates = [(k, _parse_date(f"splits.{k}", getattr(s, k))) for k in keys]
    given = [(k, d) for k, d in dates if d is not None]
    for (k1, d1), (k2, d2) in zip(given, given[1:]):
        if d2 < d1 or (d2 == d1 and k2 != "test_end"):
            raise ConfigError(f"splits.{k2}: {d2.isoformat()} is not after splits.{k1} "
                              f"{d1.isoformat()} (expected {' < '.join(keys)})")


# A searched HPO value that a fixed training value would silently replace (guard 8):
# searched key -> the key that overrides it when positive.
OVERRIDES = {"warmup_fraction": "warmup_steps"}


def _check_overridden_search(cfg: StudyConfig) -> None:
    """ConfigError when HPO would search a value that a fixed value overrides."""
    if cfg.hpo.mode != "search":
        return
    for searched, fixed in OVERRIDES.items():
        rng = getattr(cfg.hpo, searched)
        if len(rng) < 2 or rng[0] == rng[1]:
            continue
        if getattr(cfg.train, fixed) > 0:
            raise ConfigError(
                f"hpo.{searched} is searched ({list(rng)}) but train.{fixed} = "
                f"{getattr(cfg.train, fixed)} overrides it, so every trial would train alike; "
                f"set train.{fixed} = 0 or fix hpo.{searched} = [value]")
        for cell, values in (cfg.hpo.fixed or {}).items():
            if isinstance(values, dict) and values.get(fixed, 0) and searched not in values:
                raise ConfigError(
                    f"hpo.{searched} is searched ({list(rng)}) but hpo.fixed.{cell}.{fixed} = "
                    f"{values[fixed]} overrides it; drop hpo.fixed.{cell}.{fixed} or also fix "
                    f"hpo.fixed.{cell}.{searched}")


# --------------------------------------------------------------------------- axes

# Keys that are already matrix dimensions, name outputs, or do not change a run's result.
NOT_AXES = ("name", "output_dir", "seeds", "axes", "model.budgets", "target.horizons",
            "model.architectures", "model.device", "model.compile", "data.data_dir", "hpo.storage",
            "hpo.workers", "hpo.heartbeat_s", "hpo.grace_s", "hpo.fixed", "hpo.table",
            "splits.min_eval_windows", "splits.min_train_windows")
NOT_AXIS_SECTIONS = ("monitor", "tracking")


def flatten_axes(raw: Any, where: str = "axes") -> dict:
    """``{"model.x": [...]}`` from the TOML table (dotted keys or nested tables)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table of key = [values], got {raw!r}")
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flatten_axes(value, f"{where}.{key}").items()})
        else:
            out[key] = value
    return out


def _field(key: str):
    """(type, metadata) of the study key ``a.b``; ConfigError naming it when unknown."""
    cls, parts = StudyConfig, key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in fields(cls)}
        if part not in known:
            raise ConfigError(f"axes.{key}: unknown study key {'.'.join(parts[:i + 1])!r}")
        tp = hints[part]
        if i < len(parts) - 1:
            if not _is_section(tp):
                raise ConfigError(f"axes.{key}: {'.'.join(parts[:i + 1])} is not a section")
            cls = tp
        elif _is_section(tp):
            raise ConfigError(f"axes.{key}: is a section; an axis names one key, e.g. {key}.<key>")
    return tp, dict(known[parts[-1]].metadata)


def _given(raw: dict, key: str) -> bool:
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_axes(file_raw: dict, overrides: list[tuple[list[str], Any]]) -> None:
    """Validate ``[axes]`` before the study is built (see the module docstring)."""
    axes = flatten_axes(file_raw.get("axes", {}))
    set_keys = {".".join(keys) for keys, _ in overrides}
    for key, values in axes.items():
        if key in NOT_AXES or key.split(".")[0] in NOT_AXIS_SECTIONS:
            raise ConfigError(f"axes.{key}: not allowed as an axis (it is a matrix dimension already, "
                              "names outputs, or does not change a run's result)")
        tp, meta = _field(key)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"axes.{key}: expected a non-empty list of values, got {values!r}")
        checked = [_coerce(f"axes.{key}[{i}]", tp, v, meta) for i, v in enumerate(values)]
        if len({repr(v) for v in checked}) != len(checked):
            raise ConfigError(f"axes.{key}: expected distinct values, got {values!r}")
        if _given(file_raw, key):
            raise ConfigError(f"axes.{key}: also set in the study file's [{key.rpartition('.')[0] or 'study'}] "
                              "section; give it in one place (remove one of them)")
        if key in set_keys:
            raise ConfigError(f"axes.{key}: also given by --set {key}=...; an axis key cannot be "
                              f"overridden (use --only {key}=VALUE to run some of its values)")



# --------------------------------------------------------------------------- loading

def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as TOML, else as a bare string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    path, raw = text.split("=", 1)
    keys = [k.strip() for k in path.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return keys, value


def _apply_override(raw: dict, keys: list[str], value: Any) -> None:
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {k} is not a section")
    node[keys[-1]] = value


def resolve_study_path(study: str | Path | None) -> Path:
    """A path as given, or a shipped study by name (``default`` when omitted)."""
    study = str(study) if study is not None else None
    if study and Path(study).exists():
        return Path(study)
    name = study or "default"
    if name.endswith(".toml") and study and not Path(name).name == name:
        raise FileNotFoundError(f"study file {study}: not found")
    shipped = resources.files("finscale") / "studies" / f"{Path(name).stem}.toml"
    if shipped.is_file():
        return Path(str(shipped))
    raise FileNotFoundError(f"study {study!r}: no such file and no shipped study of that name "
                            f"(shipped: {', '.join(shipped_studies())})")


def shipped_studies() -> list[str]:
    folder = resources.files("finscale") / "studies"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_study(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Load a study: defaults, then the TOML file (if any), then ``--set`` overrides."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"study file {p}: not found")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"study file {p}: invalid TOML: {exc}") from exc
    parsed = [parse_override(text) for text in overrides]
    try:
        check_axes(raw, parsed)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
    for keys, value in parsed:
        _apply_override(raw, keys, value)
    try:
        cfg = _build(StudyConfig, raw, "")
    except ConfigError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{exc}") from None
    _check_study(cfg)
    return cfg


def study_from_dict(raw: dict, origin: str = "study") -> StudyConfig:
    """Build and check a study from a plain dict (e.g. a resolved config embedded in a script)."""
    try:
        cfg = _build(StudyConfig, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    _check_study(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict:
    """Plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


def config_hash(cfg: Any) -> str:
    """sha256 of the canonical JSON form (of a config or a plain dict): key order is irrelevant."""
    data = config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replace_section(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that validates the changed values like the loader does."""
    hints = typing.get_type_hints(type(cfg))
    known = {f.name: f for f in fields(cfg)}
    checked = {}
    for k, v in changes.items():
        if k not in known:
            raise ConfigError(f"unknown key {k}")
        tp = hints[k]
        checked[k] = v if _is_section(tp) else _coerce(k, tp, v, dict(known[k].metadata))
    return dataclasses.replace(cfg, **checked)


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) rows for documentation and `config show --keys`."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        tp = hints[f.name]
        if _is_section(tp):
            rows += describe_fields(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((prefix + f.name, _type_name(tp) if not isinstance(tp, (types.GenericAlias, types.UnionType))
                     else str(tp), default, f.metadata.get("doc", "")))
    return rows


# --------------------------------------------------------------------------- key docs

KEYS_BEGIN = "<!-- keys {section}: generated from the doc= of finscale/config.py; do not edit -->"
KEYS_END = "<!-- /keys -->"


def toml_literal(value: Any) -> str:
    """A default as it is written in a study file (``"a20"``, ``false``, ``[1, 2]``, ``{}``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def key_table(section: str) -> str:
    """The Markdown key table of one study section ("" = top level), from field metadata."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, _tp, default, doc in describe_fields(StudyConfig):
        where, _, name = key.rpartition(".")
        if where == section:
            lines.append(f"| `{name}` | `{toml_literal(default)}` | {doc} |")
    return "\n".join(lines)


def render_key_docs(text: str) -> str:
    """``text`` with every generated key table (between KEYS_BEGIN/KEYS_END) rebuilt."""
    out, pos = [], 0
    pattern = re.compile(r"<!-- keys (\S*): generated[^\n]*-->\n.*?<!-- /keys -->", re.S)
    for match in pattern.finditer(text):
        section = "" if match.group(1) == "top" else match.group(1)
        out += [text[pos:match.start()], KEYS_BEGIN.format(section=match.group(1)), "\n",
                key_table(section), "\n", KEYS_END]
        pos = match.end()
    return "".join(out) + text[pos:]
