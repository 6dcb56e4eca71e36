"""Study loading: TOML file + ``section.key=value`` overrides -> a checked :class:`StudyConfig`.

Consumes: a TOML file (optional) and override strings. Produces: a validated, immutable
:class:`StudyConfig` and a stable hash of it. Guarantees: precedence defaults < file <
overrides; unknown keys, wrong types and out-of-range values raise :class:`ConfigError`
naming the key and the bad value; NaN and inf are rejected in every float key, list item,
axis value and table value (a float key may allow them only by documenting it with
``nonfinite=True`` in its schema metadata; none does); axes are checked before anything runs.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

from finscale.config.schema import (
    ConfigError,
    SplitsConfig,
    StudyConfig,
    check_expected_excess,
    check_name,
)

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
        _check_finite_tree(key, value)
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
        if not math.isfinite(value) and not meta.get("nonfinite"):  # nan < min is False: say so here
            raise ConfigError(f"{key}: {value!r} is not a finite number (NaN and inf are not allowed)")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
    _check_range(key, value, meta)
    return value


def _check_finite_tree(key: str, value: Any) -> None:
    """No NaN/inf anywhere inside a table's values (e.g. ``hpo.table``, ``hpo.fixed``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite_tree(f"{key}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite_tree(f"{key}[{i}]", v)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number (NaN and inf are not allowed)")


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
    if len(set(m.budgets)) != len(m.budgets):
        twice = next(b for b in m.budgets if m.budgets.count(b) > 1)
        raise ConfigError(f"model.budgets: {twice!r} is listed twice (expected distinct budgets)")
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
    check_expected_excess(cfg)
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
    _check_data_pin(cfg)


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


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_data_pin(cfg: StudyConfig) -> None:
    """data.sha256 is 64 lowercase hex digits and pins one dataset; data.start < data.end;
    a test period that ends after the data's end names the gap."""
    d = cfg.data
    if d.sha256 and not _SHA256.fullmatch(d.sha256):
        raise ConfigError(f"data.sha256: {d.sha256!r} is not a sha256 (expected 64 lowercase "
                          "hex digits, as `finscale data fetch` prints it, or empty)")
    if d.sha256 and not isinstance(d.source, str):
        raise ConfigError("data.sha256: pins one dataset, but data.source is a list (a panel)")
    start, end = _parse_date("data.start", d.start), _parse_date("data.end", d.end)
    if start and end and end <= start:
        raise ConfigError(f"data.end: {d.end} is not after data.start {d.start}")
    test_end = _parse_date("splits.test_end", cfg.splits.test_end)
    if end and test_end and test_end > end:
        raise ConfigError(f"splits.test_end: {cfg.splits.test_end} is after data.end {d.end} "
                          "(the test period would have no data at its end)")


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
    """Parse ``section.key=value``; the value is read as TOML, else as a bare string, and then
    as the key's type: a string key keeps the text as typed (``splits.val_start=2015-01-01``
    is the string "2015-01-01", not a TOML date). An unknown key is an error that offers the
    closest known key; nothing heavy is imported, so a typo fails at once."""
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
    tp = _override_type(keys)
    if _wants_text(tp, value):
        value = raw.strip()
    if tp is not None:  # a bad value names the --set, not the study file
        try:
            _coerce(".".join(keys), tp, value, _override_meta(keys))
        except ConfigError as exc:
            raise ConfigError(f"--set {text.strip()}: {exc}") from None
    return keys, value


def _override_meta(keys: list[str]) -> dict:
    cls = StudyConfig
    for part in keys[:-1]:
        cls = typing.get_type_hints(cls)[part]
    return dict({f.name: f for f in fields(cls)}[keys[-1]].metadata)


def _wants_text(tp: Any, value: Any) -> bool:
    """True when the key holds a string and TOML read the typed text as something else."""
    if isinstance(value, (str, list, dict)) or tp is None:
        return False
    if typing.get_origin(tp) is types.UnionType:
        return str in typing.get_args(tp)
    return tp is str


def study_keys(cls: type = StudyConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the study schema (``train.lr``, ``splits.val_start``, ...)."""
    hints, out = typing.get_type_hints(cls), []
    for f in fields(cls):
        tp = hints[f.name]
        out += study_keys(tp, f"{prefix}{f.name}.") if _is_section(tp) else [prefix + f.name]
    return out


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, study_keys(), n=1, cutoff=0.6)
    if not close:  # a right key in the wrong section: match on the last part
        tails = {k.rpartition(".")[2]: k for k in study_keys()}
        close = [tails[t] for t in difflib.get_close_matches(key.rpartition(".")[2], tails, n=1, cutoff=0.8)]
    return f"; did you mean {close[0]}?" if close else ""


def _override_type(keys: list[str]) -> Any:
    """The type of the study key ``keys`` (None: a whole section or a free-form table entry);
    ConfigError naming an unknown key, with the closest known one."""
    cls = StudyConfig
    for i, part in enumerate(keys):
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        dotted = ".".join(keys[:i + 1])
        if part not in known:
            raise ConfigError(f"--set {'.'.join(keys)}: unknown key {dotted}{_did_you_mean('.'.join(keys))}")
        tp = hints[part]
        if _is_section(tp):
            if i == len(keys) - 1:
                return None
            cls = tp
            continue
        if i < len(keys) - 1:
            if tp is dict:  # e.g. hpo.fixed.<cell>.<key>: checked when the study is built
                return None
            raise ConfigError(f"--set {'.'.join(keys)}: {dotted} is a key, not a section")
        return tp
    return None


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
    if study and Path(study).is_file():  # a folder named like a shipped study does not shadow it
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


def _anchor_output_dir(raw: dict, path: Path) -> None:
    """A relative ``output_dir`` written in a study file is relative to that file (as paths in
    a config file are), not to wherever the command runs; ``--set output_dir=`` and the default
    (``runs``, unset in the file) stay relative to the working directory."""
    value = raw.get("output_dir")
    if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
        raw["output_dir"] = str(path.resolve().parent / value)


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
        _anchor_output_dir(raw, p)
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
