"""The one local pool of worker processes (``--workers N`` of ``finscale run`` and ``finscale hpo``).

Consumes: a :class:`PoolSetup` (the study, data dir, threads per unit), a feed of units
(:class:`finscale.runner.schedule.StudyUnits`: HPO cells, final runs and evaluations,
released as their dependencies finish) and the command that starts a worker (a fresh
interpreter running :func:`finscale.runner.study.worker_main`, the only worker entry point).
Produces: the merged :class:`PhaseResult` of N worker processes started ONCE per study: each
imports torch and prepares the data once, then runs one unit after another as the parent
hands them out (pickled on its stdin), claiming each with its per-unit lock
(:func:`~finscale.runner.study.claimed`); their progress events are forwarded to ``on_event``
in this process. Guarantees:
- no unit is trained twice (the locks), and a unit's result does not depend on N or on which
  worker ran it after what: each unit runs with ``threads`` torch threads, seeded by itself
  exactly as in a serial run;
- a stop request (signal, STOP file) reaches every worker (SIGTERM to each, and each polls
  the STOP file itself); each checkpoints its unit and exits with :data:`EXIT_STOPPED`;
- a worker that dies (crash, ``kill -9``) is replaced, up to ``retries`` times per phase: the
  kernel released its unit's lock, and the unit is handed out again first (to the replacement
  or an idle worker), resuming from its checkpoint.
:class:`PhaseJob` is one phase's units for the Ray executor (:mod:`finscale.runner.cluster`).
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
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from finscale.config import StudyConfig
from finscale.repro import worker_env
from finscale.stopping import ParentWatch, StopRequest

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


@dataclass(frozen=True)
class PoolSetup:
    """What a persistent pool worker needs once, before its first unit; picklable."""

    cfg: StudyConfig
    data_dir: str | None = None
    monitor: bool = True
    threads: int = 1
    index: int = 0
    events_fd: int | None = None             # where the worker writes its events (JSON lines)
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


class AnyStop:
    """The first stop reason of several requests (the study's STOP file and signals, the
    parent's death, the stop files of a Ray driver)."""

    def __init__(self, *requests):
        self.requests = requests

    def reason(self) -> str | None:
        return next((r for q in self.requests if (r := q.reason())), None)


def serve(setup: PoolSetup, stream, on_event: Callable[..., None], run_unit: Callable[..., dict]) -> int:
    """A pool worker's loop: ``run_unit(phase, unit, stop, on_event)`` for each ``(phase, unit)``
    unpickled from ``stream`` until it ends (the parent closed it: no more units, or the parent
    is gone), each result reported as a ``unit_result`` event. Returns the exit code:
    :data:`EXIT_STOPPED` once a stop request interrupted a unit (which checkpointed), else 0."""
    with StopRequest(setup.cfg.study_dir / "STOP") as own:
        stop = AnyStop(own, ParentWatch())
        while True:
            try:
                phase, unit = pickle.load(stream)
            except EOFError:
                return 0
            result = run_unit(phase, unit, stop, on_event)
            on_event("unit_result", phase=phase, unit=unit_name(unit), **result)
            if result["stopped"]:
                return EXIT_STOPPED


class _Worker:
    """One persistent worker process, fed one unit at a time on its stdin, and the thread
    that reads its events into a shared queue (then a ``None`` event: the process ended)."""

    def __init__(self, setup: PoolSetup, index: int, command: list[str], events: queue.Queue):
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=(write_fd,),
                                     env=worker_env(setup.threads))  # the thread policy, set before torch loads
        os.close(write_fd)
        assert self.proc.stdin is not None
        self.stdin = self.proc.stdin
        self.index, self.closed = index, False
        self.unit: tuple | None = None   # unit: (phase, unit) being worked on
        self.send(replace(setup, index=index, events_fd=write_fd))
        self.reader = threading.Thread(target=self._read, args=(read_fd, events), daemon=True)
        self.reader.start()

    def _read(self, fd: int, events: queue.Queue) -> None:
        with os.fdopen(fd) as stream:
            for line in stream:
                try:
                    events.put((self.index, json.loads(line)))
                except json.JSONDecodeError:
                    pass   # a torn last line of a killed worker
        events.put((self.index, None))

    def send(self, item) -> None:
        """Hand the worker its setup, a unit, or (``close``) the end of its work."""
        try:
            pickle.dump(item, self.stdin)
            self.stdin.flush()
        except (BrokenPipeError, OSError):
            pass   # it died: the pool sees its exit code and re-queues the unit

    def close(self) -> None:
        """No more units: an idle worker reads end-of-file and exits 0."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.stdin.close()

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)


def run_pool(setup: PoolSetup, workers: int, command: list[str], feed, *, should_stop: Callable[[], str | None],
             on_event: Callable[..., None], retries: int) -> PhaseResult:
    """Run ``workers`` persistent processes on the units ``feed`` releases
    (:class:`finscale.runner.schedule.StudyUnits`) until none is left; replace ones that died
    (``retries`` times per phase) and hand their unit out again."""
    events: queue.Queue = queue.Queue()
    pool = {i: _Worker(setup, i, command, events) for i in range(workers)}
    state = _PoolState(feed, on_event)
    signalled = False
    restarts: dict[str, int] = {}
    try:
        while pool:
            state.forward(events, pool)
            if not signalled and (should_stop() or state.result.stopped):  # a worker may see it first
                for w in pool.values():
                    w.signal(signal.SIGTERM)
                    w.close()
                signalled = True
            for w in [w for w in pool.values() if w.proc.poll() is not None]:
                w.reader.join()
                state.forward(events, pool, block=False)   # its last events, result included
                del pool[w.index]
                code, lost = w.proc.returncode, w.unit
                if code in (0, EXIT_STOPPED) and lost is None or signalled:
                    continue
                phase = lost[0] if lost else "idle"
                if code == EXIT_FAULT:  # the same fault would end a replacement too
                    raise WorkerFailed(f"{phase} worker {w.index} stopped on the error logged above")
                if lost is not None:
                    feed.requeue(*lost)
                if lost is None and not state.work_left(pool):
                    continue
                restarts[phase] = restarts.get(phase, 0) + 1
                if restarts[phase] > retries:
                    raise WorkerFailed(f"{phase} worker {w.index} exited with code {code} and "
                                       f"run.retries={retries} restarts are used up (see its log above)")
                log.warning("%s worker %d died (exit code %s); starting a replacement (%d/%d): its "
                            "unit resumes from its checkpoint", phase, w.index, code, restarts[phase], retries)
                pool[w.index] = _Worker(setup, w.index, command, events)
            if not signalled:
                state.dispatch(pool)
    except BaseException:
        for w in pool.values():   # never leave orphans behind
            w.signal(signal.SIGTERM)
            w.close()
        for w in pool.values():
            w.proc.wait()
        raise
    state.forward(events, pool, block=False)
    if signalled and not state.result.stopped:
        state.result.stopped = ["stopped", should_stop() or "stop requested"]
    return state.result.finish()


class _PoolState:
    """The parent's side of the pool: hands out units, forwards events, merges results."""

    def __init__(self, feed, on_event: Callable[..., None]):
        self.feed, self.on_event = feed, on_event
        self.result = PhaseResult()
        self.phases_started: set[str] = set()

    def work_left(self, pool: dict) -> bool:
        return bool(self.feed.ready) or any(w.unit is not None for w in pool.values())

    def dispatch(self, pool: dict) -> None:
        """Give each idle worker a ready unit; close them all once nothing is left."""
        for w in pool.values():
            if w.unit is not None or w.closed:
                continue
            item = self.feed.next([x.unit for x in pool.values() if x.unit is not None])
            if item is None:
                break
            if item[0] not in self.phases_started:  # progress: the phase's first unit
                self.phases_started.add(item[0])
                self.on_event("phase", phase=item[0])
            w.unit = item
            w.send(item)
        if not self.work_left(pool):
            for w in pool.values():
                w.close()

    def forward(self, events: queue.Queue, pool: dict, block: bool = True) -> None:
        """Forward the workers' events (waiting up to POLL_S for the first one)."""
        timeout = POLL_S if block else 0
        while True:
            try:
                index, event = events.get(timeout=timeout) if timeout else events.get_nowait()
            except queue.Empty:
                return
            timeout = 0
            if event is not None:
                self._event(index, event, pool)

    def _event(self, index: int, event: dict, pool: dict) -> None:
        kind = event.pop("kind")
        if kind == "unit_result":
            w = pool.get(index)
            unit = w.unit if w is not None else None
            if w is not None:
                w.unit = None
            self.result.merge(event)
            if unit is not None and not event.get("stopped"):
                self.feed.finished(*unit)
        elif kind in UNIT_EVENTS:
            # Number units across workers and phases; a unit a worker found already handled by
            # another (it claims every unit in turn) is not shown twice.
            unit = event.get("cell") or event.get("run_id")
            seen = self.result.units_seen.setdefault(kind, [])
            if unit not in seen:
                seen.append(unit)
                total = int(self.feed.totals.get(kind) or event.get("total") or 0)
                self.on_event(kind, **{**event, "index": len(seen) - 1, "total": max(total, len(seen))})
        else:
            self.on_event(kind, **event)
