"""Which study a reader means: a study name, a study file, or a study's run directory.

Consumes: what a user passes to ``finscale status|report`` or ``finscale.results`` (a shipped
study's name, a TOML path, or ``runs/<study>/``) and ``--set`` overrides.
Produces: the :class:`StudyConfig` whose ``study_dir`` holds the runs. A run directory is read
back through the ``study.json`` that ``finscale run`` writes there (the fully resolved study),
with ``output_dir`` pointing at the directory's parent, so it works from any working directory.
Guarantees: a study that never ran is a one-line :class:`ConfigError` naming the directory that
is missing (never an empty table, never a "not started" listing of runs that do not exist).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from finscale.config.loading import load_study, resolve_study_path, shipped_studies, study_from_dict
from finscale.config.schema import ConfigError, StudyConfig

STUDY_RECORD = "study.json"  # written by `finscale run` into runs/<study>/


def study_record(cfg: StudyConfig) -> dict:
    """What ``runs/<study>/study.json`` holds: the resolved study (defaults, file, --set)."""
    from finscale.config.loading import config_to_dict

    return {"study": config_to_dict(cfg)}


def _is_run_directory(path: Path) -> bool:
    return path.is_dir() and (
        (path / STUDY_RECORD).is_file() or (path / "final").is_dir() or (path / "hpo").is_dir())


def _from_run_directory(path: Path, overrides: list[str]) -> StudyConfig:
    record = path / STUDY_RECORD
    if record.is_file():
        try:
            raw = json.loads(record.read_text())["study"]
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"{record}: not a study record ({exc})") from None
        if overrides:
            raise ConfigError(f"{path}: --set applies to a study file, not to a run directory "
                              "(its study is fixed by study.json)")
        cfg = study_from_dict(raw, str(record))
    elif path.name in shipped_studies():  # run before study.json existed: the shipped study
        cfg = load_study(resolve_study_path(path.name), overrides)
    else:
        raise ConfigError(f"{path}: no {STUDY_RECORD} (written by `finscale run`); pass the study "
                          "file that produced this directory instead")
    # Wherever the directory now lies (moved, read from another working directory).
    return dataclasses.replace(cfg, output_dir=str(path.resolve().parent), name=path.name)


def open_study(study: Any = None, overrides: list[str] | tuple = (), *, must_exist: bool = True
               ) -> StudyConfig:
    """The study ``study`` names: a :class:`StudyConfig` as is, a study's run directory
    (``runs/<study>``), a study file or a shipped study's name (``default`` when None).
    ``must_exist``: raise a one-line error naming ``runs/<study>`` when it is missing."""
    if isinstance(study, StudyConfig):
        cfg = study
    else:
        path = Path(str(study)) if study is not None else None
        if path is not None and _is_run_directory(path):
            cfg = _from_run_directory(path, list(overrides))
        elif path is not None and not path.exists() and len(path.parts) > 1 and path.suffix != ".toml":
            raise ConfigError(f"{path.absolute()}: no such study directory (nor a study file)")
        else:
            cfg = load_study(resolve_study_path(study), list(overrides))
    if must_exist and not cfg.study_dir.is_dir():
        raise ConfigError(f"{cfg.study_dir.absolute()}: no such study directory (study {cfg.name!r} has not run "
                          f"here; run `finscale run` first, or pass the study's run directory)")
    return cfg
