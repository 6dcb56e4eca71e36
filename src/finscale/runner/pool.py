"""The one local pool of worker processes (``--workers N`` of ``finscale run`` and ``finscale hpo``).

Consumes: a :class:`PhaseJob` (the study, one phase, the phase's resolved units: HPO cells,
or final runs to train or evaluate) and the command that starts a worker (a fresh
interpreter running :func:`finscale.runner.study.worker_main`, the only worker entry point).
Produces: the merged :class:`PhaseResult` of N worker processes, each of which claims units
of the job with the per-unit locks (:func:`~finscale.runner.study.claimed`) until every
unit has been handled; their progress events are forwarded to ``on_event`` in this process.
Guarantees:
- no unit is trained twice (the locks), and a unit's result does not depend on N: each worker
  runs its units with ``threads`` torch threads, seeded exactly as a serial run;
- a stop request (signal, STOP file) reaches every worker (SIGTERM to each, and each polls
  the STOP file itself); each checkpoints its unit and exits with :data:`EXIT_STOPPED`;
- a worker that dies (crash, ``kill -9``) is replaced, up to ``retries`` times per phase: the
  kernel released its unit's lock, so the replacement (or a waiting worker) claims the unit
  and resumes it from its checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from finscale.config import StudyConfig
from finscale.repro import worker_env

log = logging.getLogger(__name__)


class WorkerFailed(ValueError):
    """A phase's worker failed for good; the CLI prints it as one ``error:`` line."""

EXIT_STOPPED = 3        # a worker that checkpointed and stopped on request
EXIT_FAULT = 4          # a worker that logged a one-line error (full disk, bad input): not restarted
POLL_S = 0.2            # how often the parent forwards events and checks its workers
UNIT_EVENTS = ("hpo_cell", "final_run", "evaluate_run")
QUIET_EVENTS = ("batch",)   # too frequent to cross a pipe; the bars show epochs instead


@dataclass(frozen=True)
class PhaseJob:
    """Everything a worker needs to run one phase; picklable."""

    cfg: StudyConfig
    phase: str                               # hpo | final | evaluate
    # The resolved units (runner.study.phase_units: Cells, or (variant, spec) per final run),
    # never the --only filters: a worker trains exactly what the parent selected.
    units: tuple = ()
    data_dir: str | None = None
    monitor: bool = True
    threads: int = 1
    index: int = 0
    events_fd: int | None = None             # where the worker writes its events (JSON lines)
    stop_files: tuple[str, ...] = ()         # extra files that request a stop (Ray driver)
    log_level: int = logging.WARNING


@dataclass
class PhaseResult:
    """What the workers of one phase did; merged across workers."""

    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    stopped: list | None = None              # [status, message] when a worker stopped
    units_seen: dict = field(default_factory=dict)   # progress: units announced, per event kind

    def merge(self, other: dict) -> None:
        self.done += [u for u in other.get("done", []) if u not in self.done]
        self.failed += [u for u in other.get("failed", []) if u not in self.failed]
        self.skipped += [u for u in other.get("skipped", []) if u not in self.skipped]
        self.stopped = self.stopped or other.get("stopped")

    def finish(self) -> PhaseResult:
        """A unit one worker trained and another then found done counts as done."""
        self.skipped = [u for u in self.skipped if u not in self.done and u not in self.failed]
        return self


def pool_size(cfg: StudyConfig) -> int:
    """Local worker processes of the one pool: ``run.workers`` (``--workers`` of ``finscale run``
    and ``finscale hpo``). The deprecated ``hpo.workers`` is read as the same setting when
    ``run.workers`` is left at 1."""
    return cfg.run.workers if cfg.run.workers > 1 else cfg.hpo.workers


def unit_name(unit) -> str:
    """A unit's name in events and results: an HPO cell's name or a final run's id."""
    return unit.name if hasattr(unit, "name") else unit[1].run_id


def event_writer(fd: int | None) -> Callable[..., None]:
    """An ``on_event`` that writes each event as one JSON line to ``fd`` (None: drop them)."""
    if fd is None:
        return lambda kind, **info: None
    stream = os.fdopen(fd, "w", buffering=1)
    lock = threading.Lock()   # the hardware monitor's thread may report too

    def write(kind: str, **info) -> None:
        if kind in QUIET_EVENTS or stream.closed:
            return
        with lock:
            try:
                stream.write(json.dumps({"kind": kind, **info}, default=str) + "\n")
            except (BrokenPipeError, ValueError):  # the parent is gone: ParentWatch stops us
                with contextlib.suppress(OSError, ValueError):
                    stream.close()

    return write


class _Worker:
    """One worker process and the thread that reads its events into a shared queue."""

    def __init__(self, job: PhaseJob, command: list[str], events: queue.Queue):
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=(write_fd,),
                                     env=worker_env(job.threads))  # the thread policy, set before torch loads
        os.close(write_fd)
        stdin = self.proc.stdin
        assert stdin is not None  # stdin=PIPE
        stdin.write(pickle.dumps(replace(job, events_fd=write_fd)))
        stdin.close()
        self.index = job.index
        self.reader = threading.Thread(target=self._read, args=(read_fd, events), daemon=True)
        self.reader.start()

    def _read(self, fd: int, events: queue.Queue) -> None:
        with os.fdopen(fd) as stream:
            for line in stream:
                try:
                    events.put((self.index, json.loads(line)))
                except json.JSONDecodeError:
                    pass   # a torn last line of a killed worker

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)


def run_pool(job: PhaseJob, workers: int, command: list[str], *, should_stop: Callable[[], str | None],
             on_event: Callable[..., None], retries: int) -> PhaseResult:
    """Run ``workers`` processes on ``job`` until all exit; replace ones that died."""
    events: queue.Queue = queue.Queue()
    pool = [_Worker(replace(job, index=i), command, events) for i in range(workers)]
    result, signalled, restarts = PhaseResult(), False, 0
    try:
        while pool:
            _forward(events, on_event, result)
            if not signalled and should_stop():
                for w in pool:
                    w.signal(signal.SIGTERM)
                signalled = True
            for w in [w for w in pool if w.proc.poll() is not None]:
                pool.remove(w)
                w.reader.join()
                _forward(events, on_event, result)
                code = w.proc.returncode
                if code in (0, EXIT_STOPPED) or signalled:
                    continue
                if code == EXIT_FAULT:  # the same fault would end a replacement too
                    raise WorkerFailed(f"{job.phase} worker {w.index} stopped on the error logged above")
                if restarts >= retries:
                    raise WorkerFailed(f"{job.phase} worker {w.index} exited with code {code} and "
                                       f"run.retries={retries} restarts are used up (see its log above)")
                restarts += 1
                log.warning("%s worker %d died (exit code %s); starting a replacement (%d/%d): its "
                            "unit resumes from its checkpoint", job.phase, w.index, code, restarts, retries)
                pool.append(_Worker(replace(job, index=w.index), command, events))
            time.sleep(POLL_S)
    except BaseException:
        for w in pool:   # never leave orphans behind
            w.signal(signal.SIGTERM)
        for w in pool:
            w.proc.wait()
        raise
    _forward(events, on_event, result)
    if signalled and not result.stopped:
        result.stopped = ["stopped", should_stop() or "stop requested"]
    return result.finish()


def _forward(events: queue.Queue, on_event: Callable[..., None], result: PhaseResult) -> None:
    while True:
        try:
            _index, event = events.get_nowait()
        except queue.Empty:
            return
        kind = event.pop("kind")
        if kind == "worker_result":
            result.merge(event)
        elif kind in UNIT_EVENTS:
            # Number units across workers; a unit a worker found already handled by another
            # (it claims every unit in turn) is not shown twice.
            unit = event.get("cell") or event.get("run_id")
            seen = result.units_seen.setdefault(kind, [])
            if unit not in seen:
                seen.append(unit)
                on_event(kind, **{**event, "index": len(seen) - 1})
        else:
            on_event(kind, **event)
