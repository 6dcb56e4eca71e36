"""Execute a study: data -> features -> hpo -> final -> evaluate -> scaling -> report, resumably.

Consumes: the study config and run options (phases, ``--only`` filters, data dir).
Produces: everything under ``runs/<study>/`` (see DESIGN §3) and returns a summary.
Guarantees: idempotent — finished work is skipped (done runs, existing eval.json, HPO
trials already in storage), interrupted runs resume from checkpoints; a stop request
(signal, ``STOP`` file, critical temperature) checkpoints the current run and raises
:class:`StudyStopped` naming the command that resumes.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from finscale.atomic import remove_litter
from finscale.checkpoint import CheckpointError
from finscale.config import StudyConfig
from finscale.data.store import resolve_data_dir
from finscale.hpo.results import cell_params, final_runs
from finscale.repro import unit_threads
from finscale.rundata import PreparedData, check_splits, prepare
from finscale.rundir import RunDir, UnitLock
from finscale.runner import PHASES
from finscale.runner.final import execute_final
from finscale.runner.pool import (
    EXIT_FAULT,
    AnyStop,
    PhaseJob,
    PoolSetup,
    event_writer,
    pool_size,
    run_pool,
    serve,
)
from finscale.runner.schedule import StudyUnits, phase_units
from finscale.runspec import RunSpec, final_dir, make_spec, seed_sets
from finscale.selection import Cell, Selection, selected_cells, variant_cells
from finscale.stopping import ParentWatch, StopNow, StopRequest, StopSource
from finscale.study_axes import axis_values
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

    def selection(self) -> Selection:
        return Selection(self.budgets, self.horizons, self.axes, self.units)


@dataclass
class StudySummary:
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    scaling: list | None = None            # HorizonScaling per horizon (scaling phase)
    report: Path | None = None


def claimed(units: list, lock_dir: Callable, stop: StopSource):
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
            if why := stop.reason():
                raise StudyStopped("stopped", why)
            time.sleep(CLAIM_POLL_S)


def _monitor(cfg: StudyConfig, run: RunDir, enabled: bool):
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from finscale.monitor import HardwareMonitor

    return HardwareMonitor(cfg.monitor, run.hardware)


def _track_final(cfg: StudyConfig, run: RunDir) -> None:
    """MLflow (optional): log the finished run dir; idempotent and never raises."""
    from finscale import tracking

    if tracking.enabled(cfg):
        child = tracking.track_final_run(cfg, run.path)
        if run.state == "done" and (run.path / "eval.json").exists():  # once, when evaluated
            from finscale.tracking_model import log_pyfunc

            log_pyfunc(cfg, run.path, child)


def run_hpo_phase(cfg: StudyConfig, opts: RunOptions, stop: StopSource,
                  units: list[Cell] | None = None, preps: _Preps | None = None) -> None:
    """Search each cell (``units``, default: the selected ones), one claimed cell at a time,
    on the prepared data in ``preps`` when given (else each cell prepares its own)."""
    if cfg.hpo.mode != "search":
        opts.on_event("phase_skip", phase="hpo", reason="hpo.mode is 'fixed'")
        return
    from finscale.hpo import run_cell
    from finscale.hpo.objective import cell_dir

    todo = selected_cells(cfg, opts.selection()) if units is None else units
    for i, (c, lock) in enumerate(claimed(todo, lambda c: cell_dir(c.cfg, c.budget, c.horizon), stop)):
        with lock:
            if why := stop.reason():
                raise StudyStopped("stopped", why)
            opts.on_event("hpo_cell", index=i, total=len(todo), cell=c.name)
            run_cell(c.cfg, c.budget, c.horizon, data_dir=opts.data_dir, should_stop=stop.reason,
                     on_event=opts.on_event, prep=preps(c.cfg) if preps is not None else None)
            if why := stop.reason():
                raise StudyStopped("stopped", why)


FinalUnit = tuple[StudyConfig, RunSpec]   # (axis variant, spec) of one final run


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


def run_final_phase(cfg: StudyConfig, prep: PreparedData | _Preps | None, opts: RunOptions,
                    stop: StopSource, summary: StudySummary, units: list[FinalUnit] | None = None) -> None:
    """Train each final run (``units``, default: the selected ones), one claimed run at a time."""
    preps = _preps(cfg, prep, opts)
    specs = final_runs(cfg, opts.selection()) if units is None else units
    t0, trained = time.monotonic(), 0
    for i, ((var, spec), lock) in enumerate(claimed(specs, lambda u: final_dir(*u), stop)):
        with lock:  # no other process trains this run while we hold it
            run = RunDir(final_dir(cfg, spec))
            eta = (time.monotonic() - t0) / trained * (len(specs) - i) if trained else None
            opts.on_event("final_run", index=i, total=len(specs), run_id=spec.run_id, eta_s=eta,
                          state=run.state, budget=spec.budget)
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
                 opts: RunOptions, stop: StopSource) -> bool:
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


def run_evaluate_phase(cfg: StudyConfig, prep: PreparedData | _Preps | None, opts: RunOptions,
                       stop: StopSource, units: list[FinalUnit] | None = None,
                       summary: StudySummary | None = None) -> None:
    """Evaluate each trained final run (``units``, default: the selected ones); a run whose
    best checkpoint is corrupt is recorded as failed (in ``summary``), never blocking the rest."""
    from finscale.evaluate.phase import evaluate_final_run

    preps = _preps(cfg, prep, opts)
    specs = [(v, s) for v, s in (final_runs(cfg, opts.selection()) if units is None else units)
             if RunDir(final_dir(v, s)).state == "done"]
    for i, ((var, spec), lock) in enumerate(claimed(specs, lambda u: final_dir(*u), stop)):
        with lock:
            if why := stop.reason():  # between units: the evaluated ones keep their eval.json
                raise StudyStopped("stopped", why)
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
    for var, var_cells in variant_cells(cfg, opts.selection()):
        searching = var.hpo.mode == "search" and "hpo" in opts.phases
        for c in var_cells:
            make_spec(var, c.budget, c.horizon, var.seeds[0])  # unknown budget or feature set -> ValueError
            if searching:
                from finscale.hpo.space import cell_space

                cell_space(var, c.budget, c.horizon)
            elif var.hpo.mode == "fixed":
                cell_params(var, c.budget, c.horizon)


def check_data_sizes(cfg: StudyConfig, preps: _Preps, opts: RunOptions) -> None:
    """Guard 4 and the data-size minimum for every selected variant before any training: a
    ``splits.train_years`` (or any axis value) that leaves too few windows fails up front,
    naming the axis values."""
    for var, var_cells in variant_cells(cfg, opts.selection()):
        horizons = sorted({c.horizon for c in var_cells})
        try:
            check_splits(preps(var), var, horizons,
                         tuning="hpo" in opts.phases and var.hpo.mode == "search")
        except ValueError as exc:
            where = ", ".join(f"{k}={v!r}" for k, v in axis_values(var).items())
            raise ValueError(f"{'axes ' + where + ': ' if where else ''}{exc}") from None


def _record_final_runs(cfg: StudyConfig, opts: RunOptions) -> None:
    """Once every cell is tuned, the study record lists the final run ids (unfiltered runs only)."""
    if not (opts.budgets or opts.horizons or opts.axes or opts.units):
        _record_study(cfg, [spec.run_id for _, spec in final_runs(cfg, opts.selection())])


def _record_study(cfg: StudyConfig, final_run_ids: list[str] | None = None) -> None:
    """``runs/<study>/study.json``: the resolved study, so ``finscale status|report RUNS_DIR`` and
    ``finscale.results(RUNS_DIR)`` read it back from any working directory; once the final
    phase starts, also the final run ids the study expects (``results()`` then needs no model
    code to tell current runs from stale ones)."""
    from finscale.atomic import atomic_write_json
    from finscale.config.studydir import STUDY_RECORD, study_record

    path = cfg.study_dir / STUDY_RECORD
    record = study_record(cfg)
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        old = None
    if old is not None and old.get("study") == record["study"]:
        if final_run_ids is None or old.get("final_runs") == final_run_ids:
            return
    if final_run_ids is not None:
        record["final_runs"] = final_run_ids
    atomic_write_json(record, path)


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
    if cfg.run.executor == "local" and pool_size(cfg) == 1 and cfg.run.threads:
        import torch

        torch.set_num_threads(cfg.run.threads)
    summary = StudySummary()
    cfg.study_dir.mkdir(parents=True, exist_ok=True)
    remove_litter(cfg.study_dir)   # temp files of killed writers; the data dir: raw/, processed/
    remove_litter(resolve_data_dir(opts.data_dir, cfg.data.data_dir), depth=1)
    _record_study(cfg)
    with StopRequest(cfg.study_dir / "STOP") as stop:
        prep = None
        if any(p in opts.phases for p in ("data", "features", "hpo", "final", "evaluate")):
            opts.on_event("phase", phase="data+features")
            prep = _Preps(cfg, None, opts.data_dir)
            if any(p in opts.phases for p in ("hpo", "final")):  # guard 4 before any training
                check_data_sizes(cfg, prep, opts)
        pooled = cfg.run.executor == "local" and pool_size(cfg) > 1
        if pooled:
            run_on_pool(cfg, opts, stop, summary)   # every parallel phase on one pool
        for phase in (p for p in PARALLEL_PHASES if p in opts.phases and not pooled):
            if phase == "final":
                _record_final_runs(cfg, opts)
            opts.on_event("phase", phase=phase)
            if cfg.run.executor == "ray":
                run_parallel(cfg, phase, opts, stop, summary)
            else:
                run_phase(cfg, phase, prep, opts, stop, summary)
        if "scaling" in opts.phases:  # study-level tests over the evaluated runs (SPA, MCS, Holm)
            from finscale.runner.inference import run_inference

            run_inference(cfg, opts.data_dir)
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
            from finscale import tracking

            if tracking.enabled(cfg):  # the study-level run: answer, verdicts, report.html
                tracking.track_study(cfg, summary.report.parent)
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

def run_phase(cfg: StudyConfig, phase: str, prep: PreparedData | _Preps | None, opts: RunOptions,
              stop: StopSource, summary: StudySummary, units: list | None = None) -> None:
    """One of :data:`PARALLEL_PHASES` in this process, claiming its units (default: the
    selected ones) one by one."""
    if phase == "hpo":
        run_hpo_phase(cfg, opts, stop, units, prep if isinstance(prep, _Preps) else None)
    elif phase == "final":
        run_final_phase(cfg, prep, opts, stop, summary, units)
    else:
        run_evaluate_phase(cfg, prep, opts, stop, units, summary)


def run_parallel(cfg: StudyConfig, phase: str, opts: RunOptions, stop: StopSource,
                 summary: StudySummary) -> None:
    """A phase as Ray tasks (one per unit); raises StudyStopped on a stop."""
    from finscale.runner.cluster import run_on_ray, shared_paths

    if phase == "hpo" and cfg.hpo.mode == "search":
        _create_storage(cfg)
    cfg = shared_paths(cfg, opts.data_dir)[0]   # units resolved with absolute paths
    units = phase_units(cfg, phase, opts.selection())
    if not units:
        return
    job = PhaseJob(cfg, phase, tuple(units), opts.data_dir, opts.monitor,
                   threads=unit_threads(cfg.run.threads, pool_size(cfg)), log_level=logging.getLogger().getEffectiveLevel())
    _merge(summary, run_on_ray(job, execute_job, should_stop=stop.reason, on_event=opts.on_event))


def run_on_pool(cfg: StudyConfig, opts: RunOptions, stop: StopRequest, summary: StudySummary) -> None:
    """The selected parallel phases on ``run.workers`` persistent local processes, started once:
    a cell's final runs train as soon as it is tuned, its runs evaluate as soon as they are
    trained (:class:`~finscale.runner.schedule.StudyUnits`); raises StudyStopped on a stop."""
    phases = tuple(p for p in PARALLEL_PHASES if p in opts.phases)
    if "hpo" in phases and cfg.hpo.mode == "search":
        _create_storage(cfg)
    elif "hpo" in phases:
        opts.on_event("phase_skip", phase="hpo", reason="hpo.mode is 'fixed'")
    tuned = (lambda: _record_final_runs(cfg, opts)) if "final" in phases else (lambda: None)
    feed = StudyUnits(cfg, phases, opts.selection(), on_tuned=tuned)
    if not feed.ready:
        return
    workers = pool_size(cfg)
    setup = PoolSetup(cfg, opts.data_dir, opts.monitor, threads=unit_threads(cfg.run.threads, workers),
                      log_level=logging.getLogger().getEffectiveLevel())
    # No more processes than units (a process costs an interpreter and a torch import); each
    # unit keeps the threads of an N-worker pool, so results do not change.
    _merge(summary, run_pool(setup, min(workers, feed.size()), WORKER_COMMAND, feed, should_stop=stop.reason,
                             on_event=opts.on_event, retries=cfg.run.retries))


def _merge(summary: StudySummary, result) -> None:
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


def _worker_process(threads: int) -> None:
    """A worker (pool process or Ray task) logs the units it defers and runs with ``threads``."""
    import torch

    global _defer_level
    _defer_level = logging.INFO
    torch.set_num_threads(threads)


def _run_units(cfg: StudyConfig, phase: str, preps: _Preps, units: list, stop, on_event, monitor: bool) -> dict:
    """``units`` of ``phase`` in this process: the :class:`PhaseResult` fields as a dict;
    ``stopped`` is [status, message] when a stop request interrupted a unit (which checkpointed)."""
    opts = RunOptions(phases=(phase,), data_dir=preps.data_dir, on_event=on_event, monitor=monitor)
    summary, stopped = StudySummary(), None
    try:
        run_phase(cfg, phase, preps, opts, stop, summary, units)
    except StudyStopped as exc:
        stopped = [exc.status, str(exc)]
    return {"done": summary.done, "skipped": summary.skipped, "failed": summary.failed, "stopped": stopped}


def execute_job(job: PhaseJob, on_event: Callable[..., None]) -> dict:
    """A Ray task: run the job's units in this process with ``job.threads`` torch threads."""
    _worker_process(job.threads)
    with StopRequest(job.cfg.study_dir / "STOP") as own:
        stop = AnyStop(own, ParentWatch(), *(StopRequest(Path(f)) for f in job.stop_files))
        return _run_units(job.cfg, job.phase, _Preps(job.cfg, None, job.data_dir), list(job.units), stop,
                          on_event, job.monitor)


def worker_main() -> None:
    """Entry point of a local pool worker: reads its pickled :class:`PoolSetup` from stdin,
    then runs each unit it is handed (:func:`~finscale.runner.pool.serve`) on data prepared once."""
    setup: PoolSetup = pickle.load(sys.stdin.buffer)
    logging.basicConfig(level=setup.log_level, format=f"%(levelname)s worker{setup.index} %(name)s: %(message)s")
    _worker_process(setup.threads)
    preps = _Preps(setup.cfg, None, setup.data_dir)
    try:
        code = serve(setup, sys.stdin.buffer, event_writer(setup.events_fd), lambda phase, unit, stop, on_event:
                     _run_units(setup.cfg, phase, preps, [unit], stop, on_event, setup.monitor))
    except (ValueError, OSError) as exc:  # full disk, bad input, storage down: one line, no traceback
        log.error("%s", exc)
        sys.exit(EXIT_FAULT)
    sys.exit(code)
