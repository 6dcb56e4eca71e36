"""Graceful stop: SIGINT/SIGTERM or a ``STOP`` file in the study directory.

The trainer polls :meth:`StopRequest.reason` at step boundaries; a non-None reason makes it
checkpoint and end the run, so the next ``finscale run`` resumes where it stopped.
Phases without checkpoints (scaling, report: their outputs are written atomically and
recomputed by the next run) run inside :meth:`StopRequest.immediate`: there a signal, or a
STOP file seen by a watcher thread, raises :class:`StopNow` at once in the main thread.
A STOP file stops every process working on the study (each sees it), so no process deletes
it: it stays until a person removes it, and :func:`resume_command` says so.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import shlex
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


WATCH_S = 0.5   # how often immediate() looks for the STOP file


class StopNow(RuntimeError):
    """A stop request arrived inside :meth:`StopRequest.immediate`; the message is the reason."""


class StopSource(Protocol):
    """Anything a phase polls between units: a reason to stop, or None to go on."""

    def reason(self) -> str | None: ...


class StopRequest:
    """Collects stop requests; use as a context manager to install signal handlers."""

    def __init__(self, stop_file: Path | str | None = None):
        self.stop_file = Path(stop_file) if stop_file else None
        self._reason: str | None = None
        self._previous: dict = {}
        self._last_check = 0.0
        self._immediate = False

    def request(self, reason: str) -> None:
        if self._reason is None:
            log.warning("stop requested: %s", reason)
            self._reason = reason

    def reason(self) -> str | None:
        if self._reason is None and self.stop_file is not None and self.stop_file.exists():
            self.request(f"STOP file {self.stop_file}")
        return self._reason

    def _on_signal(self, signum, frame) -> None:
        self.request(f"signal {signal.Signals(signum).name}")
        if self._immediate:
            raise StopNow(self._reason)

    @contextlib.contextmanager
    def immediate(self) -> Iterator[None]:
        """Inside the block a stop request raises :class:`StopNow` at once (not at the next
        check); a request made before it raises on entry. Signals need the handlers
        installed (``with StopRequest(...)``, main thread); the STOP file is watched by a
        thread that interrupts the main thread with SIGTERM when it appears."""
        if self.reason():
            raise StopNow(self._reason)
        done = threading.Event()
        watch = threading.Thread(target=self._watch, args=(done,), daemon=True, name="stop-file-watch")
        self._immediate = True
        if self._previous and self.stop_file is not None:
            watch.start()
        try:
            yield
        finally:
            self._immediate = False
            done.set()
            if watch.is_alive():
                watch.join()

    def _watch(self, done: threading.Event) -> None:
        while not done.wait(WATCH_S):
            if self.stop_file is not None and self.stop_file.exists():
                self.request(f"STOP file {self.stop_file}")
                if not done.is_set():
                    _thread.interrupt_main(signal.SIGTERM)  # runs _on_signal in the main thread
                return

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class ParentWatch:
    """A worker process's stop request: the process that started it is gone (killed), so
    nobody collects its results; the worker checkpoints its unit and stops, resumable."""

    def __init__(self):
        self.ppid = os.getppid()

    def reason(self) -> str | None:
        return None if os.getppid() == self.ppid else f"parent process {self.ppid} is gone"


def resume_command(stop_file: Path, command: str) -> str:
    """The shell command that resumes: ``command``, preceded by removing the STOP file when
    one is present (otherwise the resumed run would stop again at once)."""
    if Path(stop_file).exists():
        return f"rm {shlex.quote(str(stop_file))} && {command}"
    return command


def _thread_failure_as_one_line(hook_args) -> None:
    log.warning("background thread %s stopped: %s: %s",
                hook_args.thread.name if hook_args.thread else "?",
                hook_args.exc_type.__name__, hook_args.exc_value)


def quiet_thread_failures() -> None:
    """Make a library's dying background thread (e.g. Optuna's heartbeat when its database
    went away) one warning line instead of a traceback; the main thread reports the cause."""
    threading.excepthook = _thread_failure_as_one_line
