"""Optuna studies per (budget, horizon) cell: storage, sampler, pruner, resume.

Consumes: the study config, a cell, and optionally a trial count and storage (defaults from
``[hpo]``; storage default ``sqlite:///<study_dir>/optuna.db``).
Produces: an Optuna study named ``<study>/<budget>-h<h>`` (so ``optuna-dashboard <storage>``
lists one study per cell) holding exactly N counting trials (rule in
:mod:`finscale.hpo.ledger`), and the cell's outputs (:mod:`finscale.hpo.outputs`).
Guarantees:
- resumable: ``load_if_exists``; a rerun only runs the slots still free plus re-queued
  trials; an interrupted trial (signal, STOP file) checkpoints and is re-queued, and a
  killed worker's trial is re-queued once its heartbeat lapses (relational storages) or its
  process is gone (journal files, same host), then resumes from its checkpoint;
- this process runs the cell's trials one after another; local parallelism is across cells,
  in the runner's one worker pool (:mod:`finscale.runner.pool`, ``--workers``); processes on
  other machines join a cell by running the same command with the same ``--storage``, and the
  storage's ledger splits the N trials between them (docs/architecture.md);
- sampling depends only on (``hpo.sampler_seed``, cell, trial slot) and the finished trials
  before it: each trial gets a TPE sampler seeded from its slot (:class:`SlotSeededSampler`),
  so a search killed at any moment and resumed picks the same parameters as an uninterrupted
  one; ``constant_liar`` is used on storages that other machines may join (server databases,
  journal files), where trials of one cell can run concurrently;
- the study's name carries a hash of the values that change trial results
  (:mod:`finscale.hpo.identity`), so changed settings start a new search;
- storage failures (full disk, database outage) raise :class:`StorageError`, one line naming
  the storage and the cause.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from finscale import tracking
from finscale.config import StudyConfig
from finscale.hpo.failures import (  # noqa: F401 (StorageError is public here)
    StorageError,
    WorkerFailed,
    quiet_optuna_trial_failures,
    storage_error,
)
from finscale.hpo.identity import study_name
from finscale.hpo.ledger import FINISHED, requeue_dead_local, requeue_faulted, study_ledger
from finscale.hpo.objective import Objective, SurplusTrial
from finscale.hpo.outputs import cell_outputs
from finscale.hpo.sampler import SlotSeededSampler, make_sampler  # noqa: F401 (public here)
from finscale.hpo.space import cell_space
from finscale.hpo.storage import StorageSpec, has_heartbeat, open_storage, resolve_storage, retry_callback
from finscale.rundata import PreparedData, prepare
from finscale.runspec import cfg_cell
from finscale.train import Controls, RunInterrupted, TrainingFailed

log = logging.getLogger(__name__)

METRIC_NAME = "val_log_loss"   # the objective, as optuna-dashboard labels it


def make_pruner(cfg: StudyConfig, max_steps: int) -> optuna.pruners.BasePruner:
    """hpo.pruner: median (default), hyperband (resource = epochs across folds) or none."""
    if cfg.hpo.pruner == "median":
        return optuna.pruners.MedianPruner()
    if cfg.hpo.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_steps))
    return optuna.pruners.NopPruner()


def open_study(cfg: StudyConfig, budget: str, horizon: int, storage, *, sampler=None,
               pruner=None) -> optuna.Study:
    """Create the cell's study or load it (``load_if_exists``): the same name joins it.
    The objective is named (``metric_names``) so optuna-dashboard shows what it is."""
    study = optuna.create_study(storage=storage, study_name=study_name(cfg, budget, horizon),
                                direction="minimize", sampler=sampler, pruner=pruner,
                                load_if_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if study.metric_names != [METRIC_NAME]:
            study.set_metric_names([METRIC_NAME])
    return study


def reap_stale(study: optuna.Study, storage) -> None:
    """Re-queue trials of dead workers: a dead pid on this host at once (any storage), and on
    relational storages also trials whose heartbeat lapsed (workers on other hosts); and
    trials ended by an environment fault (full disk, storage outage), which never count."""
    requeue_faulted(study)
    requeue_dead_local(study)
    if has_heartbeat(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


# --------------------------------------------------------------------------- one worker

@dataclass(frozen=True)
class WorkerJob:
    """One process's share of a cell's search: the cell, its storage and trial count."""

    cfg: StudyConfig
    budget: str
    horizon: int
    storage: StorageSpec
    n_trials: int
    prep: PreparedData


def _worker_study(job: WorkerJob, storage, objective: Objective) -> optuna.Study:
    """The cell's study with a slot-seeded TPE sampler and the study's pruner."""
    cfg = job.cfg
    study = open_study(cfg, job.budget, job.horizon, storage)
    study.sampler = SlotSeededSampler(cfg, cfg_cell(job.cfg, job.budget, job.horizon), job.n_trials,
                                      constant_liar=job.storage.shared or job.storage.kind == "journal",
                                      study=study)
    study.pruner = make_pruner(cfg, len(objective.folds) * (cfg.hpo.max_epochs or cfg.train.max_epochs))
    return study


def work(job: WorkerJob, *, controls: Controls | None = None, on_trainer=None) -> str:
    """Run trials of the cell until its N slots are claimed and no retry waits.

    Returns "done", or "stopped" when a stop request interrupted a trial (which is
    checkpointed and re-queued for the next run).
    """
    cell = cfg_cell(job.cfg, job.budget, job.horizon)
    _follow_verbosity()
    quiet_optuna_trial_failures()
    objective = Objective(job.cfg, job.budget, job.horizon, job.prep, n_trials=job.n_trials,
                          controls=controls, on_trainer=on_trainer)
    storage = open_storage(job.storage)
    study = _worker_study(job, storage, objective)
    # Stops optimize() once the storage holds N trials of any state, including ones other
    # workers are running, so a worker does not ask for a slot it cannot get. It counts
    # replaced/surplus trials too, so it may stop early, never late: the loop below then
    # recounts with the ledger's rule and goes on.
    stop_at_n = MaxTrialsCallback(job.n_trials, states=None)
    should_stop = controls.should_stop if controls is not None else (lambda: None)

    def stop_requested(study: optuna.Study, _trial) -> None:
        if should_stop():  # finish this trial's bookkeeping, then ask for no more
            study.stop()

    while True:
        if should_stop():
            return "stopped"
        reap_stale(study, storage)
        led = study_ledger(study)
        todo = led.remaining(job.n_trials) + len(led.in_state(TrialState.WAITING))
        if todo == 0:
            return "done"
        try:
            study.optimize(objective, n_trials=todo, catch=(TrainingFailed, SurplusTrial),
                           callbacks=[stop_at_n, stop_requested, tracking.optuna_callback(job.cfg, cell),
                                      _trial_events(controls, cell, job.n_trials)],
                           gc_after_trial=True)
        except (RunInterrupted, KeyboardInterrupt) as exc:
            _requeue_interrupted(study, objective.current, cell)
            if isinstance(exc, KeyboardInterrupt):
                raise
            return "stopped"
        except Exception as exc:
            if isinstance(exc, OSError) or storage_error(job.storage, exc) is not None:
                _requeue_faulted_now(study)  # an environment fault: the trial must run again
            raise


def _follow_verbosity() -> None:
    """Optuna logs every trial at INFO; follow finscale's verbosity (-v shows them)."""
    optuna.logging.set_verbosity(max(logging.getLogger("finscale").getEffectiveLevel(), logging.INFO))


def _finished(study: optuna.Study) -> int:
    return len(study_ledger(study).in_state(*FINISHED))


def _trial_events(controls: Controls | None, cell: str, n_trials: int):
    """An Optuna callback reporting each finished trial to ``controls.on_event`` ("trial")."""
    on_event = controls.on_event if controls is not None else None

    def callback(study: optuna.Study, trial) -> None:
        if on_event is not None:
            on_event("trial", cell=cell, number=trial.number, state=trial.state.name.lower(),
                     value=trial.value, done=_finished(study), total=n_trials)

    return callback


def _requeue_interrupted(study: optuna.Study, number: int | None, cell: str) -> None:
    """Optuna marked the interrupted trial FAIL; queue a copy so the next run resumes it."""
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if frozen is None or frozen.state != TrialState.FAIL:
        return
    retry_callback(max_retry=None)(study, frozen)
    log.warning("cell %s: trial %d interrupted; re-queued to resume from its checkpoint", cell, number)


def _requeue_faulted_now(study: optuna.Study) -> None:
    """Re-queue the faulted trial at once if the storage still takes writes; if it does not
    (the fault is the storage), the next run's :func:`reap_stale` does it."""
    try:
        requeue_faulted(study)
    except Exception as exc:  # never mask the fault being reported
        log.debug("re-queueing faulted trials failed (%s); the next run does it", exc)


# --------------------------------------------------------------------------- a cell

def run_cell(cfg: StudyConfig, budget: str, horizon: int, *, trials: int | None = None,
             storage: str | None = None, data_dir=None,
             should_stop: Callable[[], str | None] | None = None, heartbeat_s: int | None = None,
             grace_s: int | None = None, on_event: Callable[..., None] | None = None,
             prep: PreparedData | None = None) -> dict:
    """Run (or resume, or just report) the cell's search; write its outputs; return a summary.

    Blocks until the cell holds exactly N finished counting trials (waiting, if needed, for
    trials that workers elsewhere are running, or whose dead worker's heartbeat must lapse),
    or until ``should_stop`` returns a reason (summary["stopped"]). ``on_event``: progress
    observer, told ``hpo_trials`` (cell, done, total) first, then each trial and epoch.
    ``prep``: the study's prepared data when the caller holds it (a worker keeps it across
    units); else it is prepared here.
    """
    if cfg.hpo.mode != "search":
        raise ValueError(f"hpo.mode is {cfg.hpo.mode!r}: cells use [hpo.table], there is nothing "
                         "to search (set hpo.mode = \"search\")")
    n_trials = trials or cfg.hpo.trials
    if n_trials < 1:
        raise ValueError(f"--trials {n_trials}: expected a positive number")
    spec = resolve_storage(cfg.hpo.storage if storage is None else storage, cfg.study_dir,
                           heartbeat_s=heartbeat_s or cfg.hpo.heartbeat_s,
                           grace_s=grace_s or cfg.hpo.grace_s or None)
    cell_space(cfg, budget, horizon)  # configuration errors surface before any worker starts
    prep = prep if prep is not None else prepare(cfg, data_dir)
    _follow_verbosity()
    try:
        return _search(cfg, budget, horizon, spec, prep, n_trials, should_stop, on_event)
    except Exception as exc:
        if (err := storage_error(spec, exc)) is not None:
            raise err from None
        raise


def _search(cfg: StudyConfig, budget: str, horizon: int, spec: StorageSpec, prep: PreparedData,
            n_trials: int, should_stop, on_event) -> dict:
    """Run trials here until the cell is done or stopped; write its outputs; return the summary."""
    store = open_storage(spec)
    study = open_study(cfg, budget, horizon, store)
    reap_stale(study, store)  # trials an environment fault ended run again, never count
    study.set_user_attr("n_trials", n_trials)
    study.set_user_attr("cell", {"budget": budget, "horizon": horizon, "split": cfg.hpo.split})
    job = WorkerJob(cfg, budget, horizon, spec, n_trials, prep)
    controls = Controls(should_stop=should_stop or (lambda: None), on_event=on_event)
    if on_event is not None:
        on_event("hpo_trials", cell=cfg_cell(cfg, budget, horizon), budget=budget,
                 done=_finished(study), total=n_trials)
    t0, stopped = time.monotonic(), None
    while not (led := study_ledger(study)).done(n_trials):
        if should_stop is not None and (stopped := should_stop()):
            break
        if led.remaining(n_trials) or led.in_state(TrialState.WAITING) or led.faulted():
            if work(job, controls=controls) == "stopped":
                stopped = (should_stop and should_stop()) or "a worker was stopped"
                break
            continue
        # Every slot is claimed, some by workers elsewhere (or dead ones awaiting their grace).
        log.info("cell %s: waiting for %d running trial(s)", cfg_cell(cfg, budget, horizon),
                 len(led.in_state(TrialState.RUNNING)))
        time.sleep(min(spec.heartbeat_s, 5))
        reap_stale(study, store)
    summary = cell_outputs(cfg, budget, horizon, study, spec, n_trials)
    return {**summary, "elapsed_s": time.monotonic() - t0, "stopped": stopped}
