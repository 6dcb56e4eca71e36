"""Study configuration schema: one frozen dataclass per stage, with each key's type, range,
allowed values and documentation (``doc=``), plus safe names.

Consumes nothing; produces the types :class:`StudyConfig` and its sections. Guarantees:
every key carries the metadata the loader (:mod:`.loading`) checks and the key tables in
docs/study.md (:mod:`.keydocs`) are generated from.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    source: str | tuple[str, ...] = _opt("sample:sp500", doc="one source or a list of them (a **panel** of assets: features, labels and normalisation per asset, one calendar cut for all; see docs/data.md). `sample:sp500`, `sample:nasdaq` (bundled, offline, 1999-2018), `yfinance:TICKER` (live, full adjusted history), `file:PATH` (CSV/Parquet), `synthetic:null|planted?key=value&...` (seeded synthetic market, see docs/data.md)")
    name: str = _opt("", doc="dataset name in the store (default: from the source, e.g. `sp500`, `SPY`)")
    data_dir: str = _opt("", doc="data directory; `--data-dir` beats it, then `$FINSCALE_DATA`, then `./data`")
    adjusted: bool = _opt(False, doc="file sources: scale Open/High/Low/Close by `Adj Close / Close`")
    min_rows: int = _opt(250, min=1, doc="fewer validated rows is an error")
    start: str = _opt("", doc="first date kept (ISO `YYYY-MM-DD`; empty = the first bar); yfinance asks for bars from it")
    end: str = _opt("", doc="last date kept (ISO; empty = up to today): an explicit end makes a yfinance refetch ask for the same bars (Yahoo may still restate adjusted prices; `sha256` catches that)")
    sha256: str = _opt("", doc="pin: the content hash the dataset must have (64 hex digits; the dates and float64 OHLCV values, independent of file format and source; `finscale data fetch` prints it). Checked at fetch, before anything is written, and again before training; a mismatch names both hashes. Empty = not pinned")


@dataclass(frozen=True, kw_only=True)
class FeaturesConfig:
    set: str = _opt("a20", doc="`a20` (5 OHLCV + 20 indicators = 25 inputs) , `a20_rel` (the same information made stationary: prices relative to Close, returns, z-scores) or `returns` (its four price returns alone, for calibration markets). `finscale features list` shows all")


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
    train_assets: int = _opt(0, min=0, doc="panels, data size D by pooling: training windows come from the first N assets of `data.source` only (0 = all); validation and test cover every asset, so every N is scored on the same test windows (docs/panels.md)")
    min_train_windows: int = _opt(100, min=1, doc="with `train_years` set, a training region with fewer windows is an error (a data size too small to train on)")
    chunk_days: int = _opt(250, min=10, doc="scattered tuning split: chunk length in rows")
    val_chunk_fraction: float = _opt(0.2, min=0.01, max=0.9, doc="scattered: share of chunks used for validation")
    folds: int = _opt(1, min=1, doc="walk-forward: number of folds (each costs one training per trial)")
    fold_mode: str = _opt("expanding", choices=("expanding", "rolling"), doc="walk-forward: `expanding` or `rolling` training window")
    fold_val_days: int = _opt(500, min=10, doc="walk-forward: validation block length in rows")
    fold_end: str = _opt("val_start", choices=("val_start", "test_start"),
                         doc="walk-forward: folds end just before the final `val_start` (default: tuning resembles the final evaluation) or `test_start`")
    seed: int = _opt(0, min=0, max=2**32 - 1, doc="seed of the scattered chunk assignment (< 2^32)")
    context_len: int = _opt(0, min=0, max=4096, doc="window ends are placed as if every window had this many days of context (0 = the longest context the study uses: `model.context_len` or the largest searched `hpo.context_len`), so every design of a study is scored on the SAME validation and test windows (paired comparisons across sizes and baselines stay valid)")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    channel_mode: str = _opt("mixed", choices=("mixed", "independent"), doc="`mixed`: one token per patch holding all inputs (Phase 6A design); `independent`: each input its own token sequence (original PatchTST)")
    context_len: int = _opt(80, min=2, max=4096, doc="days of history per sample")
    patch_len: int = _opt(16, min=1, doc="days per patch; the end is padded so the newest bar is always in the last patch")
    stride: int = _opt(8, min=1, doc="days between patch starts")
    budgets: tuple[str, ...] = _opt(("cpu-s", "cpu-m", "cpu-l", "cpu-xl"),
                                    doc='parameter budgets: ladder names (`cpu-s` 5k, `cpu-m` 25k, `cpu-l` 100k, `cpu-xl` 500k; `2M`, `20M`, `200M`, `2B`) or sizes like `"150k"`')
    budget_tolerance: float = _opt(0.25, min=0.0, max=10.0, doc="measured total parameters must lie within ±25% of the budget, or the run is refused; in fixed mode (`hpo.mode = \"fixed\"`, e.g. a published table) the shape runs as given and the miss is flagged in the plan, `finscale doctor` and the report")
    architectures: dict = _opt({}, doc="explicit shapes per budget: `[model.architectures.cpu-l] d_model = 48, num_layers = 3` (checked against the budget)")
    normalization: str = _opt("revin", choices=("none", "zscore", "revin", "zscore+revin", "revin_stats", "zscore+revin_stats"), doc="`none`, `zscore` (train-only statistics), `revin` (per-window, in the model), `zscore+revin`; `revin_stats` / `zscore+revin_stats`: RevIN whose per-window (mean, log std) are given back to the model as one extra token, so the level and volatility RevIN divides out stay visible")
    positional: str = _opt("learned", choices=("learned", "sinusoidal"), doc="`learned` or `sinusoidal` positions")
    head_dropout: float = _opt(0.0, min=0.0, max=0.95, doc="dropout before the classification head")
    d_ff_ratio: int = _opt(4, min=1, max=16, doc="MLP width = ratio × d_model for grid architectures")
    device: str = _opt("auto", choices=("auto", "cpu", "cuda", "mps"), doc="`auto` (cuda > mps > cpu), `cpu`, `cuda`, `mps`; precision: see `precision`")
    precision: str = _opt("bf16-cuda", choices=("bf16-cuda", "auto", "fp32", "bf16"), doc="`bf16-cuda` (default: bf16 autocast on CUDA, fp32 elsewhere), `auto` (bf16 also on CPUs with native bf16: avx512_bf16, AMX, ARM bf16), `fp32`, `bf16`; autocast around the forward only, loss and metrics in fp32. Resolved to fp32/bf16 on the planning machine; a bf16 run has its own run id. CPU bf16 measured no faster at 5k-25k parameters, 1.2-1.5x from 100k (docs/performance.md)")
    compile: bool = _opt(False, doc="`torch.compile` on CUDA")
    activation_checkpointing: bool = _opt(False, doc="recompute blocks in backward (large models on one GPU)")
    asset_embedding: bool = _opt(False, doc="panels: a learned vector per asset (one per asset of `data.source`, initialised at zero) added to every token, so one model can learn per-asset offsets; counted as embedding parameters (docs/panels.md)")


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
    compute_budget: float = _opt(0.0, min=0.0, doc="IsoFLOP studies: training FLOPs per run (e.g. `3e12`); each run trains the whole number of epochs closest to it (≥ 1, overriding `max_epochs`), so compute is held fixed across sizes; 0 = off. Set `patience` ≥ the epochs so early stopping does not cut it short (docs/compute.md)")


@dataclass(frozen=True, kw_only=True)
class HpoConfig:
    mode: str = _opt("search", choices=("search", "fixed"),
                     doc="`search`: an Optuna study per budget × horizon cell; `fixed`: take each cell's parameters from `[hpo.table]`, no search")
    trials: int = _opt(8, min=1, doc="trials per cell (in total, across workers and reruns)")
    split: str = _opt("walk_forward", choices=("scattered", "walk_forward"), doc="tuning split: `walk_forward` (default: folds end before the final validation period, see docs/statistics.md) or `scattered` (time-stratified chunks); never the test period")
    storage: str = _opt("", doc="Optuna storage URL (`sqlite:///…`, `postgresql://…`, `journal:PATH`); default `sqlite:///<study dir>/optuna.db`")
    pruner: str = _opt("median", choices=("median", "hyperband", "none"), doc="`median`, `hyperband` or `none`")
    sampler_seed: int = _opt(0, min=0, max=2**32 - 1, doc="seed of the TPE sampler and of trial seeds (< 2^32)")
    workers: int = _opt(1, min=1, doc="deprecated: read as `run.workers` when that is 1 (one worker pool runs HPO cells, final runs and evaluations; see docs/architecture.md)")
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
    feature_set: tuple[str, ...] = _opt((), doc="design search: input sets to choose from per cell, e.g. `[\"a20\", \"a20_rel\"]` (empty = `features.set`); with `normalization` and `context_len` below, each size is compared at its own best validated design")
    normalization: tuple[str, ...] = _opt((), choices=("none", "zscore", "revin", "zscore+revin", "revin_stats", "zscore+revin_stats"), doc="design search: normalisations to choose from per cell (empty = `model.normalization`)")
    context_len: tuple[int, ...] = _opt((), min=2, max=4096, doc="design search: context lengths in days to choose from per cell (empty = `model.context_len`); patch length and stride scale with it (the study's `patch_len / context_len` and `stride / patch_len` ratios, so the token count stays the same)")
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
    bootstrap_resamples: int = _opt(1000, min=10, max=100_000, doc="moving-block bootstrap resamples for test CIs and paired tests (at most 100,000: memory grows with resamples × test windows)")
    block_len: int = _opt(0, min=0, doc="bootstrap block length in days (0 = chosen from the data per horizon: Politis–White, at least the horizon; never below the horizon)")
    cost_bps: float = _opt(1.0, min=0.0, doc="backtest transaction cost per entry/exit, basis points")
    ece_bins: int = _opt(10, min=2, doc="calibration bins")
    scaling_resamples: int = _opt(1000, min=10, max=100_000, doc="resamples (seeds × test-day blocks) for scaling-law CIs (at most 100,000)")
    expected_excess: dict = _opt({}, doc='calibration markets: the expected test log-loss above the known optimum per budget, from the oracle sweep `python -m benchmarks law`, e.g. `"cpu-s" = 0.12`; the scaling stage records the expected curve, `expected_slope` and `expected_covered` in `scaling/h<h>.json` and the report draws it (docs/controls.md)')
    expected_tolerance: float = _opt(0.02, min=0.0, doc="nats: how close each budget's mean test log-loss must come to its expected value (`within_tolerance` in `scaling/h<h>.json`)")


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    mlflow: bool = _opt(False, doc="log runs to MLflow (optional extra `finscale[mlflow]`)")
    uri: str = _opt("", doc="tracking URI; default a file store under the study directory")
    pyfunc: bool = _opt(True, doc="with `mlflow`: also log each final run's model as an MLflow pyfunc wrapping `Run.predict` (`mlflow.pyfunc.load_model(uri).predict(bars)`; several seconds per run)")


@dataclass(frozen=True)
class RunConfig:
    # How the study is executed, never what it computes: none of these keys enters a run id
    # or an HPO study name (runs/<study>/... are the same whichever executor trained them).
    workers: int = _opt(1, min=1, doc="local worker processes for HPO cells, final runs and evaluations (`--workers`); results do not depend on it (see `threads`)")
    threads: int = _opt(0, min=0, doc="torch intra-op threads (and Ray CPUs) per unit; 0 = all cores when serial, cores ÷ `workers` with local workers, 1 per Ray task. CPU results can depend on the thread count: pin it (e.g. 1) for metrics identical across worker counts, executors and machines. On a machine shared with other jobs, more threads than free cores made OpenMP spin and slowed small models many-fold (measured: a two-replicate smoke study took 173 s with 2 threads beside other jobs, 43 s with 1); finscale now sets `OMP_WAIT_POLICY=PASSIVE` (unless set) so idle threads sleep, which keeps all cores usable beside other work (docs/performance.md)")
    executor: str = _opt("local", choices=("local", "ray"), doc="`local` (this machine, `workers` processes) or `ray` (Ray tasks on a cluster: `--executor ray`, extra `finscale[ray]`, see docs/usage.md \"Running on a cluster\")")
    address: str = _opt("", doc="Ray cluster address (`--address`, e.g. `auto` or `10.0.0.1:6379`); empty = `$RAY_ADDRESS`, else a local Ray instance")
    retries: int = _opt(2, min=0, doc="times a unit whose worker died (crash, kill, lost node) is restarted; it resumes from its checkpoint")
    memory_check: bool = _opt(True, doc="before any training, compare each budget's estimated training memory (× local `workers`) with the memory available on the device and stop with an error when it does not fit; false skips the check (e.g. when the estimate is known to be pessimistic)")


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    name: str = _opt("default", doc="study name; everything goes to `<output_dir>/<name>/`")
    seeds: tuple[int, ...] = _opt((0, 1), min=0, max=2**32 - 1, doc="final runs per cell, one per seed (>= 2 for honest uncertainty; each < 2^32, what NumPy and scikit-learn accept)")
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
    axes: dict = _opt({}, doc='`[axes]`: study keys that vary across the matrix, each a list of values, e.g. `"model.normalization" = ["revin", "zscore"]`, `"splits.train_years" = [2, 4, 8, 0]`; runs = budgets × horizons × seeds × the product of the axes (see docs/studies.md "Axes")')

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def check_expected_excess(cfg: StudyConfig) -> None:
    """ConfigError unless ``[evaluate.expected_excess]`` maps budgets of the study to nats >= 0."""
    for budget, value in cfg.evaluate.expected_excess.items():
        if budget not in cfg.model.budgets:
            raise ConfigError(f"evaluate.expected_excess.{budget}: not a budget of the study "
                              f"(model.budgets: {', '.join(cfg.model.budgets)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"evaluate.expected_excess.{budget}: expected a number >= 0 (nats above "
                              f"the known optimum), got {value!r}")
