"""Study configuration: frozen dataclasses per stage, TOML loading, overrides, hashing.

Consumes: a TOML file (optional) and ``section.key=value`` override strings.
Produces: a validated, immutable :class:`StudyConfig` whose sections are handed to the
stages (``build_model(cfg.model)``), and a stable hash of it.
Guarantees: precedence defaults < file < overrides; unknown keys, wrong types and
out-of-range values raise :class:`ConfigError` naming the key and the bad value.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
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
        value = default
        return field(default_factory=lambda: value, metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


# --------------------------------------------------------------------------- sections

@dataclass(frozen=True, kw_only=True)
class DataConfig:
    source: str = _opt("sample:sp500", doc="sample:sp500|sample:nasdaq|yfinance:TICKER|file:PATH")
    name: str = _opt("", doc="dataset name in the store; default derived from the source")
    data_dir: str = _opt("", doc="data directory; default $FINSCALE_DATA or ./data")
    adjusted: bool = _opt(False, doc="file sources: adjust OHLC by 'Adj Close'")
    min_rows: int = _opt(250, min=1, doc="fewer validated rows is an error")


@dataclass(frozen=True, kw_only=True)
class FeaturesConfig:
    set: str = _opt("a20", doc="feature set name (see `finscale features list`)")


@dataclass(frozen=True, kw_only=True)
class TargetConfig:
    kind: str = _opt("threshold", choices=("threshold", "direction"))
    threshold: float = _opt(0.01, min=0.0, max=1.0, doc="relative rise above Close[t]")
    price: str = _opt("high", choices=("high", "close"), doc="prices compared to the threshold")
    horizons: tuple[int, ...] = _opt((1, 2, 3, 5), min=1, max=260)


@dataclass(frozen=True, kw_only=True)
class SplitsConfig:
    scheme: str = _opt("contiguous", choices=("contiguous", "scattered", "walk_forward"))
    train_start: str = _opt("", doc="first date of training (ISO); empty = start of data")
    val_start: str = _opt("", doc="first validation date (ISO); empty = use fractions")
    test_start: str = _opt("", doc="first test date (ISO); empty = use fractions")
    test_end: str = _opt("", doc="last test date (ISO); empty = end of data")
    val_fraction: float = _opt(0.15, min=0.0, max=0.9)
    test_fraction: float = _opt(0.15, min=0.0, max=0.9)
    embargo_days: int = _opt(0, min=0, doc="extra rows between regions on top of the horizon purge")
    min_eval_windows: int = _opt(100, min=1, doc="guard 4: smaller val/test regions are errors")
    chunk_days: int = _opt(250, min=10, doc="scattered: chunk length in rows")
    val_chunk_fraction: float = _opt(0.2, min=0.01, max=0.9, doc="scattered: share of val chunks")
    folds: int = _opt(4, min=1, doc="walk_forward: number of folds")
    fold_mode: str = _opt("expanding", choices=("expanding", "rolling"))
    fold_val_days: int = _opt(250, min=10, doc="walk_forward: validation block length in rows")
    seed: int = _opt(0, min=0, doc="seed of the scattered chunk shuffle")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    channel_mode: str = _opt("mixed", choices=("mixed", "independent"))
    context_len: int = _opt(80, min=2, max=4096)
    patch_len: int = _opt(16, min=1)
    stride: int = _opt(8, min=1)
    budgets: tuple[str, ...] = _opt(("cpu-s", "cpu-m", "cpu-l", "cpu-xl"),
                                    doc="budget names: a ladder entry or a size like '2M'")
    budget_tolerance: float = _opt(0.25, min=0.0, max=10.0)
    architectures: dict = _opt({}, doc="explicit shapes per budget: {budget: {d_model=..}}")
    normalization: str = _opt("revin", choices=("none", "zscore", "revin", "zscore+revin"))
    positional: str = _opt("learned", choices=("learned", "sinusoidal"))
    head_dropout: float = _opt(0.0, min=0.0, max=0.95)
    d_ff_ratio: int = _opt(4, min=1, max=16)
    device: str = _opt("auto", choices=("auto", "cpu", "cuda", "mps"))
    compile: bool = _opt(False, doc="torch.compile on CUDA")
    activation_checkpointing: bool = _opt(False)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    max_epochs: int = _opt(30, min=1)
    batch_size: int = _opt(128, min=1)
    lr: float = _opt(3e-4, min=1e-12, max=1.0, doc="peak learning rate (> 0)")
    weight_decay: float = _opt(1e-3, min=0.0, max=10.0)
    beta1: float = _opt(0.9, min=0.0, max=0.999999)
    beta2: float = _opt(0.999, min=0.0, max=0.999999)
    warmup_fraction: float = _opt(0.05, min=0.0, max=1.0)
    warmup_steps: int = _opt(0, min=0, doc="if > 0, overrides warmup_fraction")
    dropout: float = _opt(0.1, min=0.0, max=0.95)
    patience: int = _opt(5, min=1)
    min_delta: float = _opt(0.0, min=0.0)
    monitor_metric: str = _opt("val_loss", choices=("val_loss", "val_auc"))
    grad_clip: float = _opt(1.0, min=0.0, doc="0 disables clipping")
    grad_accum: int = _opt(1, min=1)
    pos_weight: float = _opt(0.0, min=0.0, doc="BCE pos_weight; 0 = none")
    collapse_std: float = _opt(1e-3, min=0.0, doc="prediction std below this = collapsed")
    eval_batch_size: int = _opt(1024, min=1)
    checkpoint_every: int = _opt(1, min=1, doc="epochs between step checkpoints")


@dataclass(frozen=True, kw_only=True)
class HpoConfig:
    mode: str = _opt("search", choices=("search", "fixed"),
                     doc="search: Optuna per cell; fixed: use [hpo.table] entries, no trials")
    trials: int = _opt(8, min=1)
    split: str = _opt("scattered", choices=("scattered", "walk_forward"))
    storage: str = _opt("", doc="Optuna storage URL; default sqlite under the study dir")
    pruner: str = _opt("median", choices=("median", "hyperband", "none"))
    sampler_seed: int = _opt(0, min=0)
    workers: int = _opt(1, min=1)
    heartbeat_s: int = _opt(10, min=1, doc="RDB storages: trial heartbeat; a dead worker's trial is retried")
    grace_s: int = _opt(0, min=0, doc="seconds without heartbeat before a retry; 0 = 3 x heartbeat_s")
    max_epochs: int = _opt(0, min=0, doc="epochs per trial; 0 = train.max_epochs")
    lr: tuple[float, ...] = _opt((1e-4, 3e-3), min=1e-12, doc="[low, high] log range, or [v] (> 0)")
    weight_decay: tuple[float, ...] = _opt((1e-5, 1e-1), min=0.0)
    dropout: tuple[float, ...] = _opt((0.0, 0.3), min=0.0, max=0.95)
    warmup_fraction: tuple[float, ...] = _opt((0.0, 0.1), min=0.0, max=1.0)
    batch_size: tuple[int, ...] = _opt((64, 128, 256), min=1, doc="categorical choices")
    aspect: tuple[float, ...] = _opt((0.5, 64.0), min=0.0,
                                     doc="[low, high] d_model/num_layers of searched shapes")
    fixed: dict = _opt({}, doc="search mode: values pinned per cell, {'2M-h1': {batch_size=..}}")
    table: dict = _opt({}, doc="fixed mode: full params per cell, {'2M-h1': {d_model=.., lr=..}}")


@dataclass(frozen=True, kw_only=True)
class MonitorConfig:
    backend: str = _opt("auto", choices=("auto", "nvml", "linux", "macos", "none"))
    interval_s: float = _opt(10.0, min=0.1)
    normal_c: float = _opt(70.0)
    warning_c: float = _opt(85.0)
    critical_c: float = _opt(95.0)
    resume_c: float = _opt(80.0)
    sysfs_root: str = _opt("/sys/class/thermal")
    require_sensor: bool = _opt(False)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    bootstrap_resamples: int = _opt(1000, min=10)
    block_len: int = _opt(0, min=0, doc="bootstrap block length; 0 = max(horizon, 5)")
    cost_bps: float = _opt(1.0, min=0.0)
    ece_bins: int = _opt(10, min=2)
    scaling_resamples: int = _opt(1000, min=10)


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    mlflow: bool = _opt(False)
    uri: str = _opt("", doc="MLflow tracking URI; default file store under the study dir")


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    name: str = _opt("default")
    seeds: tuple[int, ...] = _opt((0, 1), min=0)
    output_dir: str = _opt("runs", doc="study directory is <output_dir>/<name>")
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
    for text in overrides:
        _apply_override(raw, *parse_override(text))
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


def section_from_dict(cls: type, raw: dict) -> Any:
    """Rebuild one section from a dict (e.g. a run's config.json)."""
    return _build(cls, raw, "")


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
        rows.append((prefix + f.name, _type_name(tp) if not isinstance(tp, types.GenericAlias)
                     else str(tp), default, f.metadata.get("doc", "")))
    return rows
