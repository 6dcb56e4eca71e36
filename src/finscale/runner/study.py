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
import pickle
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from finscale.axes import axis_values, variants
from finscale.checkpoint import CheckpointError
from finscale.config import StudyConfig
from finscale.control import ParentWatch, StopNow, StopRequest
from finscale.hpo.results import cell_params, final_specs
from finscale.prepare import PreparedData, check_splits, prepare
from finscale.repro import unit_threads
from finscale.rundir import RunDir, UnitLock
from finscale.runner import PHASES
from finscale.runner.final import execute_final
from finscale.runner.pool import EXIT_FAULT, EXIT_STOPPED, PhaseJob, event_writer, run_pool
from finscale.spec import RunSpec, cells, cfg_cell, final_dir, make_spec, seed_sets
from finscale.train import Controls, RunInterrupted, TrainingFailed

log = logging.getLogger(__name__)

CLAIM_POLL_S = 0.5     # how often a process waiting for another's unit checks its lock
_defer_level = logging.WARNING   # INFO in pool/Ray workers, where sharing units is the point
PARALLEL_PHASES = ("hpo", "final", "evaluate")   # phases whose units workers share
# A fresh interpreter per worker (not multiprocessing): nothing of the caller's __main__ re-runs.
WORKER_COMMAND = [sys.executable, "-c", "from finscale.runner.study import worker_main; worker_main()"]

# A stopped study is a stopped run: one exception (status + reason) for both.
StudyStopped = RunInterrupted


@dataclass
class RunOptions:
    phases: tuple[str, ...] = PHASES
    budgets: tuple[str, ...] = ()          # --only budget=...
    horizons: tuple[int, ...] = ()         # --only horizon=...
    axes: dict = field(default_factory=dict)  # --only <axis key>=value: {key: [value text]}
    units: tuple[str, ...] = ()            # only these HPO cells / final run ids (one Ray task)
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


def claimed(units: list, lock_dir: Callable, stop: StopRequest):
    """Yield ``(unit, lock)`` for each unit this process may work on, holding its lock.

    Units are claimed with :class:`~finscale.rundir.UnitLock` on ``lock_dir(unit)``: free ones
    first, in order; those another process holds are deferred and claimed once released
    (the holder may have finished them: callers re-check the unit's state under the lock).
    So concurrent processes never work on one unit at the same time, and each process returns
    only when every unit has been handled by someone. The caller releases each lock.
    """
    deferred = []
    for unit in units:
        lock = UnitLock(lock_dir(unit))
        if lock.try_acquire():
            yield unit, lock
        else:
            log.log(_defer_level, "%s: in use by %s; coming back to it later", lock.path.parent, lock.holder())
            deferred.append(unit)
    while deferred:
        progressed = False
        for unit in list(deferred):
            lock = UnitLock(lock_dir(unit))
            if lock.try_acquire():
                deferred.remove(unit)
                progressed = True
                yield unit, lock
        if deferred and not progressed:
            if stop.reason():
                raise StudyStopped("stopped", stop.reason())
            time.sleep(CLAIM_POLL_S)


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


def _selected(opts: RunOptions, unit: str) -> bool:
    return not opts.units or unit in opts.units


def run_hpo_phase(cfg: StudyConfig, opts: RunOptions, stop: StopRequest) -> None:
    if cfg.hpo.mode != "search":
        opts.on_event("phase_skip", phase="hpo", reason="hpo.mode is 'fixed'")
        return
    from finscale.hpo import run_cell
    from finscale.hpo.objective import cell_dir

    todo = [(var, b, h) for var in variants(cfg, opts.axes) for b, h in cells(var, opts.budgets, opts.horizons)
            if _selected(opts, cfg_cell(var, b, h))]
    for i, ((var, budget, h), lock) in enumerate(claimed(todo, lambda c: cell_dir(*c), stop)):
        with lock:
            if stop.reason():
                raise StudyStopped("stopped", stop.reason())
            opts.on_event("hpo_cell", index=i, total=len(todo), cell=cfg_cell(var, budget, h))
            run_cell(var, budget, h, data_dir=opts.data_dir, should_stop=stop.reason,
                     on_event=opts.on_event)
            if stop.reason():
                raise StudyStopped("stopped", stop.reason())


def _variant_specs(cfg: StudyConfig, opts: RunOptions) -> list[tuple[StudyConfig, RunSpec]]:
    """(axis variant, spec) of every final run the options select."""
    return [(var, spec) for var in variants(cfg, opts.axes)
            for spec in final_specs(var, opts.budgets, opts.horizons)]


class _Preps:
    """Prepared data per (data, features) sections: variants that share them share one."""

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


def _preps(cfg: StudyConfig, prep, opts: RunOptions) -> _Preps:
    return prep if isinstance(prep, _Preps) else _Preps(cfg, prep, opts.data_dir)


def run_final_phase(cfg: StudyConfig, prep: PreparedData | _Preps, opts: RunOptions,
                    stop: StopRequest, summary: StudySummary) -> None:
    preps = _preps(cfg, prep, opts)
    specs = [(v, s) for v, s in _variant_specs(cfg, opts) if _selected(opts, s.run_id)]
    t0, trained = time.monotonic(), 0
    for i, ((var, spec), lock) in enumerate(claimed(specs, lambda u: final_dir(*u), stop)):
        with lock:  # no other process trains this run while we hold it
            run = RunDir(final_dir(cfg, spec))
            eta = (time.monotonic() - t0) / trained * (len(specs) - i) if trained else None
            opts.on_event("final_run", index=i, total=len(specs), run_id=spec.run_id, eta_s=eta,
                          state=run.state)
            if run.state == "done":
                summary.skipped.append(spec.run_id)
                _track_final(cfg, run)  # tracking: cheap when already tracked
                continue
            if _train_final(var, preps(var), spec, run, opts, stop):
                trained += 1
                summary.done.append(spec.run_id)
            else:
                summary.failed.append(spec.run_id)
            _track_final(cfg, run)  # tracking


def _train_final(cfg: StudyConfig, prep: PreparedData, spec: RunSpec, run: RunDir,
                 opts: RunOptions, stop: StopRequest) -> bool:
    """Train one claimed final run; True when done, False when it failed (diverged)."""
    run.create()
    with _monitor(cfg, run, opts.monitor) as mon:
        controls = Controls(should_stop=stop.reason, monitor=mon, on_event=opts.on_event)
        try:
            execute_final(cfg, prep, spec, controls=controls)
        except RunInterrupted as exc:
            raise StudyStopped(exc.status, f"{spec.run_id}: {exc}") from exc
        except TrainingFailed as exc:
            log.error("%s failed: %s", spec.run_id, exc)
            return False
    return True


def run_evaluate_phase(cfg: StudyConfig, prep: PreparedData | _Preps, opts: RunOptions,
                       stop: StopRequest, summary: StudySummary | None = None) -> None:
    from finscale.runner.evaluation import evaluate_final_run

    preps = _preps(cfg, prep, opts)
    specs = [(v, s) for v, s in _variant_specs(cfg, opts)
             if _selected(opts, s.run_id) and RunDir(final_dir(v, s)).state == "done"]
    for i, ((var, spec), lock) in enumerate(claimed(specs, lambda u: final_dir(*u), stop)):
        with lock:
            if stop.reason():  # between units: the evaluated ones keep their eval.json
                raise StudyStopped("stopped", stop.reason())
            opts.on_event("evaluate_run", index=i, total=len(specs), run_id=spec.run_id)
            try:
                evaluate_final_run(var, preps(var), spec)
            except CheckpointError as exc:  # tampered best.pt: a failed run, not a blocked study
                log.error("%s failed: %s", spec.run_id, exc)
                RunDir(final_dir(var, spec)).write_status("failed", reason=str(exc))
                if summary is not None:
                    summary.failed.append(spec.run_id)
                continue
            _track_final(cfg, RunDir(final_dir(cfg, spec)))  # tracking: adds eval.json


def check_cells(cfg: StudyConfig, opts: RunOptions) -> None:
    """Everything checkable from the config alone, before any file is written: the budget
    labels, the feature set, the search space or fixed table of every selected cell."""
    for var in variants(cfg, opts.axes):
        searching = var.hpo.mode == "search" and "hpo" in opts.phases
        for budget, h in cells(var, opts.budgets, opts.horizons):
            make_spec(var, budget, h, var.seeds[0])  # unknown budget or feature set -> ValueError
            if searching:
                from finscale.hpo.space import cell_space

                cell_space(var, budget, h)
            elif var.hpo.mode == "fixed":
                cell_params(var, budget, h)


def check_data_sizes(cfg: StudyConfig, preps: _Preps, opts: RunOptions) -> None:
    """Guard 4 and the data-size minimum for every selected variant before any training: a
    ``splits.train_years`` (or any axis value) that leaves too few windows fails up front,
    naming the axis values."""
    for var in variants(cfg, opts.axes):
        horizons = sorted({h for _, h in cells(var, opts.budgets, opts.horizons)})
        try:
            check_splits(preps(var), var, horizons,
                         tuning="hpo" in opts.phases and var.hpo.mode == "search")
        except ValueError as exc:
            where = ", ".join(f"{k}={v!r}" for k, v in axis_values(var).items())
            raise ValueError(f"{'axes ' + where + ': ' if where else ''}{exc}") from None


def run_study(cfg: StudyConfig, opts: RunOptions | None = None) -> StudySummary:
    opts = opts or RunOptions()
    unknown = [p for p in opts.phases if p not in PHASES]
    if unknown:
        raise ValueError(f"--phase {unknown[0]!r}: expected one of {', '.join(PHASES)}")
    seed_sets(cfg)  # colliding replicate seed sets: an error before any work
    check_cells(cfg, opts)
    if "hpo" in opts.phases or "final" in opts.phases:  # a budget too big for this machine
        from finscale.runner.limits import check_memory

        check_memory(cfg, opts.budgets, opts.horizons, opts.axes, tuning="hpo" in opts.phases)
    if cfg.run.executor == "local" and cfg.run.workers == 1 and cfg.run.threads:
        import torch

        torch.set_num_threads(cfg.run.threads)
    summary = StudySummary()
    cfg.study_dir.mkdir(parents=True, exist_ok=True)
    with StopRequest(cfg.study_dir / "STOP") as stop:
        prep = None
        if any(p in opts.phases for p in ("data", "features", "hpo", "final", "evaluate")):
            opts.on_event("phase", phase="data+features")
            prep = _Preps(cfg, None, opts.data_dir)
            if any(p in opts.phases for p in ("hpo", "final")):  # guard 4 before any training
                check_data_sizes(cfg, prep, opts)
        for phase in (p for p in PARALLEL_PHASES if p in opts.phases):
            opts.on_event("phase", phase=phase)
            if cfg.run.executor == "ray" or cfg.run.workers > 1:
                run_parallel(cfg, phase, opts, stop, summary)
            else:
                run_phase(cfg, phase, prep, opts, stop, summary)
        if "scaling" in opts.phases:
            opts.on_event("phase", phase="scaling")
            from finscale.scaling import run_scaling

            with _stoppable(stop, "scaling"):
                summary.scaling = run_scaling(cfg)
        if "report" in opts.phases:
            opts.on_event("phase", phase="report")
            from finscale.report import build_report

            with _stoppable(stop, "report"):
                summary.report = build_report(cfg)
    return summary


@contextmanager
def _stoppable(stop: StopRequest, phase: str):
    """Scaling and report have no checkpoints (their files are written atomically and
    recomputed by the next run), so a stop request ends them at once as a stopped study."""
    try:
        with stop.immediate():
            yield
    except StopNow as exc:
        raise StudyStopped("stopped", f"{phase} phase: {exc}") from None


# --------------------------------------------------------------------------- parallel phases

def run_phase(cfg: StudyConfig, phase: str, prep: PreparedData | None, opts: RunOptions,
              stop: StopRequest, summary: StudySummary) -> None:
    """One of :data:`PARALLEL_PHASES` in this process (claiming its units one by one)."""
    if phase == "hpo":
        run_hpo_phase(cfg, opts, stop)
    elif phase == "final":
        run_final_phase(cfg, prep, opts, stop, summary)
    else:
        run_evaluate_phase(cfg, prep, opts, stop, summary)


def phase_units(cfg: StudyConfig, phase: str, opts: RunOptions) -> list[str]:
    """The units of ``phase`` (cell names or run ids, axis variants included), one Ray task each."""
    if phase == "hpo":
        return [cfg_cell(var, b, h) for var in variants(cfg, opts.axes)
                for b, h in cells(var, opts.budgets, opts.horizons)] if cfg.hpo.mode == "search" else []
    specs = _variant_specs(cfg, opts)
    if phase == "evaluate":
        specs = [(v, s) for v, s in specs if RunDir(final_dir(v, s)).state == "done"]
    return [s.run_id for _, s in specs if _selected(opts, s.run_id)]


def run_parallel(cfg: StudyConfig, phase: str, opts: RunOptions, stop: StopRequest,
                 summary: StudySummary) -> None:
    """A phase on ``run.workers`` local processes or as Ray tasks; raises StudyStopped on a stop."""
    workers = cfg.run.workers
    if phase == "hpo" and cfg.hpo.mode == "search":
        _create_storage(cfg)
    job = PhaseJob(cfg, phase, opts.budgets, opts.horizons, opts.units, opts.data_dir, opts.monitor,
                   threads=unit_threads(cfg.run.threads, workers), log_level=logging.getLogger().getEffectiveLevel())
    if cfg.run.executor == "ray":
        from finscale.runner.cluster import run_on_ray

        result = run_on_ray(job, phase_units(cfg, phase, opts), execute_job, should_stop=stop.reason,
                            on_event=opts.on_event)
    else:
        result = run_pool(job, workers, WORKER_COMMAND, should_stop=stop.reason, on_event=opts.on_event,
                          retries=cfg.run.retries)
    summary.done += result.done
    summary.skipped += result.skipped
    summary.failed += result.failed
    if result.stopped:
        raise StudyStopped(*result.stopped)


def _create_storage(cfg: StudyConfig) -> None:
    """Create the HPO storage's tables here, once: workers creating one SQLite schema at the
    same moment race ("table already exists")."""
    from finscale.hpo.storage import open_storage, resolve_storage

    open_storage(resolve_storage(cfg.hpo.storage, cfg.study_dir, heartbeat_s=cfg.hpo.heartbeat_s))


class _AnyStop:
    """The first stop reason of several requests (the study's STOP file and signals, plus the
    stop files of a Ray driver)."""

    def __init__(self, *requests: StopRequest):
        self.requests = requests

    def reason(self) -> str | None:
        return next((r for q in self.requests if (r := q.reason())), None)


def execute_job(job: PhaseJob, on_event: Callable[..., None]) -> dict:
    """The worker side: run the job's phase in this process with ``job.threads`` torch threads.

    Returns the :class:`PhaseResult` fields as a dict; ``stopped`` is [status, message] when a
    stop request interrupted a unit (which checkpointed).
    """
    import torch

    global _defer_level
    _defer_level = logging.INFO
    torch.set_num_threads(job.threads)
    cfg = job.cfg
    opts = RunOptions(phases=(job.phase,), budgets=job.budgets, horizons=job.horizons, units=job.units,
                      data_dir=job.data_dir, on_event=on_event, monitor=job.monitor)
    summary, stopped = StudySummary(), None
    with StopRequest(cfg.study_dir / "STOP") as own:
        stop = _AnyStop(own, ParentWatch(), *(StopRequest(f) for f in job.stop_files))
        prep = prepare(cfg, job.data_dir) if job.phase != "hpo" else None
        try:
            run_phase(cfg, job.phase, prep, opts, stop, summary)
        except StudyStopped as exc:
            stopped = [exc.status, str(exc)]
    return {"done": summary.done, "skipped": summary.skipped, "failed": summary.failed, "stopped": stopped}


def worker_main() -> None:
    """Entry point of a local worker process: reads its pickled :class:`PhaseJob` from stdin."""
    job: PhaseJob = pickle.load(sys.stdin.buffer)
    logging.basicConfig(level=job.log_level, format=f"%(levelname)s worker{job.index} %(name)s: %(message)s")
    on_event = event_writer(job.events_fd)
    try:
        result = execute_job(job, on_event)
    except (ValueError, OSError) as exc:  # full disk, bad input, storage down: one line, no traceback
        log.error("%s", exc)
        sys.exit(EXIT_FAULT)
    on_event("worker_result", **result)
    sys.exit(EXIT_STOPPED if result["stopped"] else 0)
