"""The Ray executor (``finscale run --executor ray [--address ADDR]``): a phase's units as Ray tasks.

Consumes: a :class:`~finscale.runner.pool.PhaseJob`, the phase's units (HPO cells, final run
ids) and the function that runs a job in a worker (:func:`finscale.runner.study.execute_job`).
Produces: the merged :class:`~finscale.runner.pool.PhaseResult` of one Ray task per unit, each
asking for the plan's resources: ``run.threads`` CPUs (default 1), one GPU when the
cluster has GPUs and ``model.device`` is ``auto``/``cuda`` (Ray sets CUDA_VISIBLE_DEVICES), and
on CPU the plan's memory estimate (runner/plan.py) as Ray ``memory``.
Guarantees:
- tasks claim their unit with the same per-unit locks as local workers, on the shared run
  directory (absolute paths: every node must mount it at the same path), so nothing is trained
  twice; a task whose worker or node died is retried ``run.retries`` times and resumes from
  the unit's checkpoint; a killed driver takes its tasks (and the local cluster it started,
  agents included: runner/reaper.py) with it, and rerunning resumes;
- HPO storage must be reachable from every node: a local SQLite file with more than one node
  is an error that says so (use PostgreSQL, or a journal file on the shared filesystem);
- a stop request on the driver (signal, STOP file) reaches every task through a stop file in
  the study directory: each checkpoints and returns, then the driver removes that file.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from finscale.config import StudyConfig, replace_section
from finscale.data.store import resolve_data_dir
from finscale.hpo.storage import resolve_storage
from finscale.runner.pool import PhaseJob, PhaseResult, unit_name

log = logging.getLogger(__name__)

POLL_S = 0.5
RAY_MISSING = "--executor ray needs Ray: pip install 'finscale[ray]' (or pip install ray)"
UNIT_EVENTS = {"hpo": ("hpo_cell", "cell"), "final": ("final_run", "run_id"),
               "evaluate": ("evaluate_run", "run_id")}


def import_ray():
    """Ray, imported on first use; a one-line error naming the extra when it is missing."""
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_MISSING) from None
    return ray


def connect(cfg: StudyConfig):
    """Join the cluster at ``run.address`` (else ``$RAY_ADDRESS``, else start a local Ray).

    ``ray.init`` replaces the driver's SIGTERM handler (with one that aborts: exit -6) and
    SIGINT's; ours are put back, so a stop request stops a Ray driver like a local run. A local
    cluster started here gets a reaper (runner/reaper.py) that removes its processes when the
    driver is killed (kill -9), which Ray's own fate sharing leaves 60 s or more behind."""
    ray = import_ray()
    if not ray.is_initialized():
        address = cfg.run.address or os.environ.get("RAY_ADDRESS") or None
        log.info("connecting to Ray at %s", address or "a new local instance")
        handlers = _signal_handlers()
        try:
            ray.init(address=address, include_dashboard=False, configure_logging=False)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if address is None:
            from finscale.runner import reaper

            reaper.start()
    return ray


def _signal_handlers() -> dict:
    """The current SIGTERM/SIGINT handlers (only the main thread may set them back)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)
            if signal.getsignal(sig) is not None}


def check_storage(cfg: StudyConfig, nodes: int) -> None:
    """HPO workers on several nodes need a storage each one reaches: not a local SQLite file."""
    if cfg.hpo.mode != "search":
        return
    spec = resolve_storage(cfg.hpo.storage, cfg.study_dir)
    if spec.kind == "sqlite" and nodes > 1:
        raise ValueError(f"hpo.storage {spec.display()!r} is a local SQLite file, which the Ray workers "
                         f"on the other {nodes - 1} node(s) cannot share: set hpo.storage to a "
                         "postgresql://... URL or journal:/shared/path/optuna.journal on the shared "
                         "filesystem")


def shared_paths(cfg: StudyConfig, data_dir: str | None) -> tuple[StudyConfig, str]:
    """Absolute output and data directories: a task runs in another process (or node)."""
    data = str(resolve_data_dir(data_dir, cfg.data.data_dir).resolve())
    return replace(cfg, output_dir=str(Path(cfg.output_dir).resolve())), data


def unit_resources(cfg: StudyConfig, memory: int | None, threads: int, has_gpus: bool) -> dict:
    """Ray task options of one unit: CPUs, a GPU when there are GPUs, host memory on CPU."""
    options = {"num_cpus": threads, "max_retries": cfg.run.retries, "retry_exceptions": False}
    if has_gpus and cfg.model.device in ("auto", "cuda"):
        options["num_gpus"] = 1
    elif memory:
        options["memory"] = int(memory)
    return options


def plan_memory(cfg: StudyConfig, job: PhaseJob) -> dict[str, int]:
    """Memory estimate (bytes) per unit name (cell name or run id), from the study plan."""
    from finscale.runner.plan import build_plan

    names = {unit_name(u) for u in job.units}
    memory = {}
    for row in build_plan(cfg, data_dir=job.data_dir):
        key = row.extra["cell"] if row.phase == "hpo" else row.run_id
        if row.memory and key in names:
            memory[key] = row.memory
    return memory


def _run_unit(execute: Callable, job: PhaseJob) -> dict:
    """The body of one Ray task: the job's phase restricted to its one unit."""
    logging.basicConfig(level=job.log_level, format="%(levelname)s %(name)s: %(message)s")
    return execute(job, lambda kind, **info: None)


def run_on_ray(job: PhaseJob, execute: Callable, *,
               should_stop: Callable[[], str | None], on_event: Callable[..., None]) -> PhaseResult:
    """One Ray task per unit of the job (resolved with absolute paths: :func:`shared_paths`);
    wait for all, forwarding a stop request; merge their results."""
    ray = connect(job.cfg)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    check_storage(job.cfg, len(nodes))
    cfg, data_dir = shared_paths(job.cfg, job.data_dir)
    cfg = replace(cfg, run=replace_section(cfg.run, executor="local", workers=1))
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    memory = plan_memory(cfg, replace(job, data_dir=data_dir)) if job.units else {}
    stop_file = cfg.study_dir / f".stop-{uuid.uuid4().hex[:12]}"
    base = replace(job, cfg=cfg, data_dir=data_dir, stop_files=(str(stop_file),))
    task = ray.remote(_run_unit)
    threads = job.cfg.run.threads or 1   # Ray's own default: one CPU per task
    base = replace(base, threads=threads)
    pending = {}
    for unit in job.units:
        options = unit_resources(cfg, memory.get(unit_name(unit)), threads, has_gpus)
        pending[task.options(**options).remote(execute, replace(base, units=(unit,)))] = unit_name(unit)
    return _wait(ray, pending, job.phase, stop_file, should_stop, on_event)


def _wait(ray, pending: dict, phase: str, stop_file: Path, should_stop, on_event) -> PhaseResult:
    result, total, kind_key = PhaseResult(), len(pending), UNIT_EVENTS[phase]
    reason = None
    try:
        while pending:
            if reason is None and (reason := should_stop()):
                stop_file.parent.mkdir(parents=True, exist_ok=True)
                stop_file.touch()   # every task polls it: each checkpoints and returns
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                unit = pending.pop(ref)
                try:
                    unit_result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise RuntimeError(f"{phase} unit {unit} failed on Ray after run.retries retries: "
                                       f"{str(exc).splitlines()[0]}") from None
                result.merge(_own_reason(unit_result, stop_file, reason))
                on_event(kind_key[0], index=total - len(pending) - 1, total=total, eta_s=None,
                         state="stopped" if unit_result.get("stopped") else "finished",
                         **{kind_key[1]: unit})
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
    finally:
        stop_file.unlink(missing_ok=True)
    return result.finish()


def _own_reason(unit_result: dict, stop_file: Path, reason: str | None) -> dict:
    """A task stopped by the driver's internal stop file reports the driver's own reason
    (``signal SIGTERM``, ``STOP file runs/<study>/STOP``), not that file."""
    stopped = unit_result.get("stopped")
    if stopped and reason:
        stopped = [stopped[0], stopped[1].replace(f"STOP file {stop_file}", reason)]
        unit_result = {**unit_result, "stopped": stopped}
    return unit_result
