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

from finscale.config import StudyConfig
from finscale.control import StopRequest
from finscale.hpo.results import final_specs
from finscale.prepare import PreparedData, prepare
from finscale.rundir import RunDir
from finscale.runner import PHASES
from finscale.runner.final import execute_final
from finscale.spec import cells, final_dir, seed_sets
from finscale.train import Controls, RunInterrupted, TrainingFailed

log = logging.getLogger(__name__)


# A stopped study is a stopped run: one exception (status + reason) for both.
StudyStopped = RunInterrupted


@dataclass
class RunOptions:
    phases: tuple[str, ...] = PHASES
    budgets: tuple[str, ...] = ()          # --only budget=...
    horizons: tuple[int, ...] = ()         # --only horizon=...
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

    todo = cells(cfg, opts.budgets, opts.horizons)
    for i, (budget, h) in enumerate(todo):
        if stop.reason():
            raise StudyStopped("stopped", stop.reason())
        opts.on_event("hpo_cell", index=i, total=len(todo), cell=f"{budget}-h{h}")
        run_cell(cfg, budget, h, data_dir=opts.data_dir, should_stop=stop.reason, on_event=opts.on_event)
        if stop.reason():
            raise StudyStopped("stopped", stop.reason())


def run_final_phase(cfg: StudyConfig, prep: PreparedData, opts: RunOptions,
                    stop: StopRequest, summary: StudySummary) -> None:
    specs = final_specs(cfg, opts.budgets, opts.horizons)
    t0, trained = time.monotonic(), 0
    for i, spec in enumerate(specs):
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
                execute_final(cfg, prep, spec, controls=controls)
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


def run_evaluate_phase(cfg: StudyConfig, prep: PreparedData, opts: RunOptions) -> None:
    from finscale.runner.evaluation import evaluate_final_run

    specs = [s for s in final_specs(cfg, opts.budgets, opts.horizons) if RunDir(final_dir(cfg, s)).state == "done"]
    for i, spec in enumerate(specs):
        opts.on_event("evaluate_run", index=i, total=len(specs), run_id=spec.run_id)
        evaluate_final_run(cfg, prep, spec)
        _track_final(cfg, RunDir(final_dir(cfg, spec)))  # tracking: adds eval.json


def run_study(cfg: StudyConfig, opts: RunOptions | None = None) -> StudySummary:
    opts = opts or RunOptions()
    unknown = [p for p in opts.phases if p not in PHASES]
    if unknown:
        raise ValueError(f"--phase {unknown[0]!r}: expected one of {', '.join(PHASES)}")
    seed_sets(cfg)  # colliding replicate seed sets: an error before any work
    summary = StudySummary()
    cfg.study_dir.mkdir(parents=True, exist_ok=True)
    with StopRequest(cfg.study_dir / "STOP") as stop:
        prep = None
        if any(p in opts.phases for p in ("data", "features", "hpo", "final", "evaluate")):
            opts.on_event("phase", phase="data+features")
            prep = prepare(cfg, opts.data_dir)
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
