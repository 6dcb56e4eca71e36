"""The scaling stage's outputs: ``runs/<study>/scaling/h<h>.json``, one per horizon.

Consumes: a study's evaluated final runs (through :func:`finscale.study_runs.collect`).
Produces: per horizon the serialised :class:`~finscale.scaling.fit.HorizonScaling` (fits,
bootstrap samples, comparisons, verdicts, the run ids used, each replicate's fits),
``stability.json`` (how often each finding holds across replicate seed sets, see
:mod:`finscale.scaling.stability`) and ``cache.json`` (bootstrap
results keyed by their inputs, so rerunning the stage on unchanged runs refits nothing).
Guarantees: files are written atomically; :func:`read_scaling` only reads — the report
builds from these files and fits nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from finscale.atomic import atomic_write_json
from finscale.config import StudyConfig
from finscale.scaling.fit import FitCache, HorizonScaling, fit_study
from finscale.scaling.stability import build_stability, read_stability
from finscale.study_axes import axis_tag, axis_values, variants
from finscale.study_runs import collect

log = logging.getLogger(__name__)

CACHE_NAME = "cache.json"
STABILITY_NAME = "stability.json"


def scaling_dir(cfg: StudyConfig) -> Path:
    """``scaling/``; a variant of a study with axes has ``scaling/<axis tag>/``."""
    tag = axis_tag(cfg)
    return cfg.study_dir / "scaling" / tag if tag else cfg.study_dir / "scaling"


def axes_path(cfg: StudyConfig) -> Path:
    return cfg.study_dir / "scaling" / "axes.json"


def result_path(cfg: StudyConfig, horizon: int) -> Path:
    return scaling_dir(cfg) / f"h{horizon}.json"


def stability_path(cfg: StudyConfig) -> Path:
    return scaling_dir(cfg) / STABILITY_NAME


def read_study_stability(cfg: StudyConfig) -> dict | None:
    """The stored ``stability.json`` (None when the scaling stage has not written it)."""
    return read_stability(stability_path(cfg))


def run_scaling(cfg: StudyConfig) -> list[HorizonScaling]:
    """Fit every horizon of the study from its evaluated runs and write the results.

    With ``[axes]``: every variant's fits (in its own folder), then ``axes.json`` (joint
    L(N, D) fit, per-axis comparisons and curves); returns the first variant's results."""
    vars_ = variants(cfg)
    if not axis_values(vars_[0]):
        results = _scale_one(cfg)
    else:
        per_variant = [_scale_one(var) for var in vars_]
        from finscale.scaling.variant_fits import axes_results

        atomic_write_json(axes_results(cfg), axes_path(cfg))
        results = per_variant[0]
    _scale_money(cfg)
    return results


def _scale_money(cfg: StudyConfig) -> None:
    """``compute.json`` (envelope over compute, N_opt, HPO compute) and ``economics.json``
    (Sharpe vs N and C, cost sweep, panel IC) over every final run of the study."""
    from finscale.scaling.compute import compute_path, compute_results
    from finscale.scaling.economics import economics_path, economics_results

    sr = collect(cfg)
    atomic_write_json(compute_results(cfg, sr), compute_path(cfg))
    atomic_write_json(economics_results(cfg, sr), economics_path(cfg))


def read_money(cfg: StudyConfig) -> tuple[dict | None, dict | None]:
    """The stored ``compute.json`` and ``economics.json`` (None before the stage wrote them)."""
    from finscale.scaling.compute import compute_path
    from finscale.scaling.economics import economics_path

    return _read_json(compute_path(cfg)), _read_json(economics_path(cfg))


def read_axes(cfg: StudyConfig) -> dict | None:
    """The stored ``axes.json`` (None for a study without axes or before the stage ran)."""
    return _read_json(axes_path(cfg))


def _scale_one(cfg: StudyConfig) -> list[HorizonScaling]:
    sr = collect(cfg)
    if sr.runs.empty:
        results = [HorizonScaling(h, reason="no final runs") for h in sorted(cfg.target.horizons)]
        cache = FitCache()
    else:
        cache = FitCache(_read_cache(scaling_dir(cfg) / CACHE_NAME))
        results = [_with_expected(cfg, sr, hs) for hs in fit_study(cfg, sr, cache)]
    for hs in results:
        atomic_write_json(hs.to_dict(), result_path(cfg, hs.horizon))
    evals = sr.current(sr.evals)
    atomic_write_json(build_stability(results, evals, sr.baselines, cfg.replicates), stability_path(cfg))
    atomic_write_json(cache.used, scaling_dir(cfg) / CACHE_NAME)
    log.info("scaling results written to %s", scaling_dir(cfg))
    return results


def _with_expected(cfg: StudyConfig, sr, hs: HorizonScaling) -> HorizonScaling:
    """``hs`` with the study's expected curve (``[evaluate.expected_excess]``) beside its fit."""
    if not cfg.evaluate.expected_excess or "optimal_log_loss" not in sr.evals:
        return hs
    from dataclasses import replace

    from finscale.scaling.expected import expected_curve

    evals = sr.current(sr.evals)
    known = evals.loc[evals["horizon"] == hs.horizon, "optimal_log_loss"].dropna()
    optimum = float(known.mean()) if len(known) else None
    return replace(hs, expected=expected_curve(hs, cfg.evaluate.expected_excess, optimum,
                                               cfg.evaluate.expected_tolerance))


def read_scaling(cfg: StudyConfig) -> list[HorizonScaling] | None:
    """The stored results of the study's horizons; None when the stage never ran.

    A horizon without a file gets a result whose reason says to run the scaling phase."""
    paths = {h: result_path(cfg, h) for h in sorted(cfg.target.horizons)}
    if not any(p.exists() for p in paths.values()):
        return None
    out = []
    for h, path in paths.items():
        doc = _read_json(path)
        out.append(HorizonScaling.from_dict(doc) if doc is not None else
                   HorizonScaling(h, reason=f"no scaling result ({path} is missing); "
                                            "run the study's scaling phase"))
    return out


def _read_cache(path: Path) -> dict:
    """The previous run's fit cache; anything unreadable just means refitting."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rerun the scaling phase") from exc
