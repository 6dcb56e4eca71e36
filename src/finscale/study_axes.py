"""Study axes: the ``[axes]`` table turns one study into a product of variants.

Consumes: the raw study table (keys given in the file and by ``--set``) and a loaded
:class:`~finscale.config.StudyConfig`. Produces: the study's variants — one StudyConfig per
combination of axis values, whose ``axes`` holds exactly one value per key (so a variant's
variants are itself) — a readable tag per variant (``zscore-context_len40``) and the axis
values of a variant. Guarantees: an axis key must be a study key that changes runs; every value
is validated like ``--set``; a key given both as an axis and elsewhere (file section or
``--set``) is an error; no axes means one variant, the study itself, with the tag "".
"""

from __future__ import annotations

import itertools
import re
import tomllib
from typing import Any

from finscale.config import StudyConfig, config_to_dict, flatten_axes, study_from_dict

_SAFE = re.compile(r"[^A-Za-z0-9_.]+")


def axis_values(cfg: StudyConfig) -> dict:
    """``{key: value}`` of a variant (keys with one value); {} without axes."""
    return {k: v[0] for k, v in flatten_axes(cfg.axes).items() if isinstance(v, list) and len(v) == 1}


def value_text(key: str, value: Any) -> str:
    """One axis value in a tag: strings as they are, numbers/booleans after the key's name."""
    leaf = key.rpartition(".")[2]
    text = value if isinstance(value, str) else f"{leaf}{str(value).lower()}"
    return _SAFE.sub("_", text)


def axis_tag(cfg: StudyConfig) -> str:
    """The readable part of a variant's cells and run ids ("" without axes)."""
    return "-".join(value_text(k, v) for k, v in axis_values(cfg).items())


def _set(d: dict, key: str, value: Any) -> None:
    *path, leaf = key.split(".")
    for part in path:
        d = d[part]
    d[leaf] = value


def variants(cfg: StudyConfig, only: dict | None = None) -> list[StudyConfig]:
    """One study config per combination of axis values (in the file's order), narrowed by
    ``only`` (``{key: [value text, ...]}`` from ``--only key=value``)."""
    axes = flatten_axes(cfg.axes)
    if not axes:
        if only:
            raise ValueError(f"--only {next(iter(only))}=...: the study has no [axes]")
        return [cfg]
    _check_only(axes, only or {})
    out = []
    for combo in itertools.product(*axes.values()):
        pick = dict(zip(axes, combo))
        if any(not _matches(pick[k], texts) for k, texts in (only or {}).items()):
            continue
        d = config_to_dict(cfg)
        for key, value in pick.items():
            _set(d, key, value)
        d["axes"] = {k: [v] for k, v in pick.items()}
        out.append(study_from_dict(d, origin="axes " + ", ".join(f"{k}={v!r}" for k, v in pick.items())))
    return out


def _parse(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _matches(value: Any, texts: list[str]) -> bool:
    return any(_parse(t) == value or str(value) == t for t in texts)


def _check_only(axes: dict, only: dict) -> None:
    for key, texts in only.items():
        if key not in axes:
            raise ValueError(f"--only {key}=...: not an axis of the study (axes: {', '.join(axes)})")
        for t in texts:
            if not any(_matches(v, [t]) for v in axes[key]):
                raise ValueError(f"--only {key}={t}: not one of the axis values {axes[key]!r}")

