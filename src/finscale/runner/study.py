"""Execute a study: data -> features -> hpo -> final -> evaluate -> scaling -> report, resumably.

Consumes: the study config and run options (phases, ``--only`` filters, data dir).
Produces: everything under ``runs/<study>/`` (see DESIGN §3) and returns a summary.
Guarantees: idempotent — finished work is skipped (done runs, existing eval.json, HPO
trials already in storage), interrupted runs resume from checkpoints; a stop request
(signal, ``STOP`` file, critical temperature) checkpoints the current run and raises
:class:`StudyStopped` naming the command that resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finscale.axes import axis_values, variants
from finscale.config import StudyConfig
from finscale.control import StopRequest
from finscale.hpo.results import final_specs
from finscale.prepare import PreparedData, prepare
from finscale.rundir import RunDir
from finscale.runner import PHASES
from finscale.runner.final import execute_final
from finscale.spec import RunSpec, cells, cfg_cell, final_dir
from finscale.splits import final_split, tuning_splits
from finscale.train import Controls, RunInterrupted, TrainingFailed

log = logging.getLogger(__name__)


# A stopped study is a stopped run: one exception (status + reason) for both.
StudyStopped = RunInterrupted


@dataclass
class RunOptions:
    phases: tuple[str, ...] = PHASES
    budgets: tuple[str, ...] = ()          # --only budget=...
    horizons: tuple[int, ...] = ()         # --only horizon=...
    axes: dict = field(default_factory=dict)  # --only <axis key>=value: {key: [value text]}
    data_dir: str | None = None
    on_event: Callable[..., None] = lambda kind, **info: None
    monitor: bool = True


@dataclass
class StudySummary:
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    scaling: list | None = None            # HorizonScaling per horizon (scaling phase)
    report: Path | None = None


def _monitor(cfg: StudyConfig, run: RunDir, enabled: bool):
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from finscale.monitor import HardwareMonitor

    return HardwareMonitor(cfg.monitor, run.file("hardware.jsonl"))


def _track_final(cfg: StudyConfig, run: RunDir) -> None:
    """MLflow (optional): log the finished run dir; idempotent and never raises."""
    from finscale import tracking

    if tracking.enabled(cfg):
        tracking.track_final_run(cfg, run.path)


def run_hpo_phase(cfg: StudyConfig, opts: RunOptions, stop: StopRequest) -> None:
    if cfg.hpo.mode != "search":
        opts.on_event("phase_skip", phase="hpo", reason="hpo.mode is 'fixed'")
        return
    from finscale.hpo import run_cell

    todo = [(var, b, h) for var in variants(cfg, opts.axes) for b, h in cells(var, opts.budgets, opts.horizons)]
    for i, (var, budget, h) in enumerate(todo):
        if stop.reason():
            raise StudyStopped("stopped", stop.reason())
        opts.on_event("hpo_cell", index=i, total=len(todo), cell=cfg_cell(var, budget, h))
        run_cell(var, budget, h, data_dir=opts.data_dir, should_stop=stop.reason, on_event=opts.on_event)
        if stop.reason():
            raise StudyStopped("stopped", stop.reason())


def _variant_specs(cfg: StudyConfig, opts: RunOptions) -> list[tuple[StudyConfig, RunSpec]]:
    """(axis variant, spec) of every final run the options select."""
    return [(var, spec) for var in variants(cfg, opts.axes)
            for spec in final_specs(var, opts.budgets, opts.horizons)]


class _Preps:
    """Prepared data per (data, features) section: variants that share them share one."""

    def __init__(self, cfg: StudyConfig, prep: PreparedData | None, data_dir):
        self.data_dir, self.cache = data_dir, {}
        if prep is not None:
            self.cache[self._key(cfg)] = prep

    @staticmethod
    def _key(cfg: StudyConfig) -> str:
        return repr((cfg.data, cfg.features))

    def __call__(self, cfg: StudyConfig) -> PreparedData:
        key = self._key(cfg)
        if key not in self.cache:
            self.cache[key] = prepare(cfg, self.data_dir)
        return self.cache[key]


def run_final_phase(cfg: StudyConfig, prep: PreparedData | _Preps, opts: RunOptions,
                    stop: StopRequest, summary: StudySummary) -> None:
    preps = prep if isinstance(prep, _Preps) else _Preps(cfg, prep, opts.data_dir)
    specs = _variant_specs(cfg, opts)
    t0, trained = time.monotonic(), 0
    for i, (var, spec) in enumerate(specs):
        run = RunDir(final_dir(cfg, spec))
        eta = (time.monotonic() - t0) / trained * (len(specs) - i) if trained else None
        opts.on_event("final_run", index=i, total=len(specs), run_id=spec.run_id, eta_s=eta,
                      state=run.state)
        if run.state == "done":
            summary.skipped.append(spec.run_id)
            _track_final(cfg, run)  # tracking: cheap when already tracked
            continue
        run.create()
        with _monitor(cfg, run, opts.monitor) as mon:
            controls = Controls(should_stop=stop.reason, monitor=mon, on_event=opts.on_event)
            try:
                execute_final(var, preps(var), spec, controls=controls)
            except RunInterrupted as exc:
                raise StudyStopped(exc.status, f"{spec.run_id}: {exc}") from exc
            except TrainingFailed as exc:
                log.error("%s failed: %s", spec.run_id, exc)
                summary.failed.append(spec.run_id)
                _track_final(cfg, run)  # tracking
                continue
        trained += 1
        summary.done.append(spec.run_id)
        _track_final(cfg, run)  # tracking


def run_evaluate_phase(cfg: StudyConfig, prep: PreparedData | _Preps, opts: RunOptions) -> None:
    from finscale.runner.evaluation import evaluate_final_run

    preps = prep if isinstance(prep, _Preps) else _Preps(cfg, prep, opts.data_dir)
    specs = [(v, s) for v, s in _variant_specs(cfg, opts) if RunDir(final_dir(v, s)).state == "done"]
    for i, (var, spec) in enumerate(specs):
        opts.on_event("evaluate_run", index=i, total=len(specs), run_id=spec.run_id)
        evaluate_final_run(var, preps(var), spec)
        _track_final(cfg, RunDir(final_dir(cfg, spec)))  # tracking: adds eval.json


def check_data_sizes(cfg: StudyConfig, preps: _Preps, opts: RunOptions) -> None:
    """Build every selected variant's splits (final, and tuning when HPO will search) before
    anything trains, so a data size (``splits.train_years``) or an axis value that leaves too
    few windows fails the study up front, naming the value."""
    from finscale.prepare import horizon_labels

    tune = "hpo" in opts.phases and cfg.hpo.mode == "search"
    for var in variants(cfg, opts.axes):
        prep = preps(var)
        for h in var.target.horizons:
            if opts.horizons and h not in opts.horizons:
                continue
            ok, ctx = np.isfinite(horizon_labels(prep, var, h)), var.model.context_len
            try:
                final_split(prep.dates, ok, var.splits, ctx, h)
                if tune:
                    tuning_splits(prep.dates, ok, var.splits, ctx, h, var.hpo.split)
            except ValueError as exc:
                where = ", ".join(f"{k}={v!r}" for k, v in axis_values(var).items())
                raise ValueError(f"{'axes ' + where + ': ' if where else ''}{exc}") from None


def run_study(cfg: StudyConfig, opts: RunOptions | None = None) -> StudySummary:
    opts = opts or RunOptions()
    unknown = [p for p in opts.phases if p not in PHASES]
    if unknown:
        raise ValueError(f"--phase {unknown[0]!r}: expected one of {', '.join(PHASES)}")
    summary = StudySummary()
    cfg.study_dir.mkdir(parents=True, exist_ok=True)
    with StopRequest(cfg.study_dir / "STOP") as stop:
        prep = None
        if any(p in opts.phases for p in ("data", "features", "hpo", "final", "evaluate")):
            opts.on_event("phase", phase="data+features")
            prep = _Preps(cfg, None, opts.data_dir)
            check_data_sizes(cfg, prep, opts)
        if "hpo" in opts.phases:
            opts.on_event("phase", phase="hpo")
            run_hpo_phase(cfg, opts, stop)
        if "final" in opts.phases:
            opts.on_event("phase", phase="final")
            run_final_phase(cfg, prep, opts, stop, summary)
        if "evaluate" in opts.phases:
            opts.on_event("phase", phase="evaluate")
            run_evaluate_phase(cfg, prep, opts)
        if "scaling" in opts.phases:
            opts.on_event("phase", phase="scaling")
            from finscale.scaling import run_scaling

            summary.scaling = run_scaling(cfg)
        if "report" in opts.phases:
            opts.on_event("phase", phase="report")
            from finscale.report import build_report

            summary.report = build_report(cfg)
    return summary
