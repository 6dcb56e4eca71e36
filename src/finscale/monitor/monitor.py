"""HardwareMonitor: a background thread sampling sensors, and the trainer's thermal gate.

Consumes: a MonitorConfig and, optionally, the run's ``hardware.jsonl`` path.
Produces: one JSON line per sample (time, state, backend, max_c, temperatures, pressure,
extra, error); ``check()`` / ``wait_until_cool()`` / ``at_boundary()`` answers for the
trainer; ``summary()`` for run metadata and the report.
Guarantees: sampling happens every ``interval_s`` on a daemon thread, never per batch, so
``check()`` is a lock and a dict lookup; ``stop()`` returns promptly (the thread sleeps on an
Event); an unreadable sensor is state ``unavailable`` (logged once per process and
reason), and with ``require_sensor`` it is a ValueError at ``start()``.

Trainer integration (at a step or epoch boundary)::

    with HardwareMonitor(cfg.monitor, run_dir / "hardware.jsonl") as mon:
        for step ...:
            if mon.at_boundary(stop_event) == "stop":   # pauses inside while too hot
                checkpoint(); status = "thermal_stop"; break
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from finscale.config import MonitorConfig
from finscale.monitor.policy import action_for, classify, is_cool, validate_thresholds
from finscale.monitor.sensors import Backend, Reading, make_reading, open_backend

__all__ = ["HardwareMonitor", "SensorUnavailableError", "iter_readings", "read_hardware_log"]

log = logging.getLogger(__name__)

# Unavailable-sensor reasons already logged in this process: once is enough, even across
# the many runs (and monitors) of one study.
_LOGGED_UNAVAILABLE: set[str] = set()
_LOG_LOCK = threading.Lock()


class SensorUnavailableError(ValueError):
    """``require_sensor`` is set but no sensor could be read."""


def _require(cfg: MonitorConfig, reading: Reading) -> None:
    if cfg.require_sensor and not reading.readable:
        raise SensorUnavailableError(
            f"monitor.require_sensor is true but no temperature sensor could be read "
            f"(monitor.backend={cfg.backend!r}: {reading.error}); fix the sensor, choose "
            f"another monitor.backend, or set monitor.require_sensor=false to run without "
            f"thermal protection")


def _log_unavailable_once(reading: Reading) -> None:
    key = f"{reading.backend}: {reading.error}"
    with _LOG_LOCK:
        if key in _LOGGED_UNAVAILABLE:
            return
        _LOGGED_UNAVAILABLE.add(key)
    log.warning("thermal monitor: sensor unavailable (%s); training is NOT thermally "
                "protected and the report will say so", key)


class HardwareMonitor:
    """Samples sensors in a background thread and turns readings into trainer actions."""

    def __init__(self, cfg: MonitorConfig, log_path: Path | str | None = None):
        validate_thresholds(cfg)
        self.cfg = cfg
        self.log_path = Path(log_path) if log_path is not None else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backend: Backend | None = None
        self._latest: Reading | None = None
        self._state: str | None = None
        self._states: Counter = Counter()
        self._max_c: float | None = None
        self._paused_s = 0.0
        self._pauses = 0
        self._unavailable_error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> HardwareMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> HardwareMonitor:
        """Open the backend, take a first reading synchronously (so ``check()`` is meaningful
        at once), then sample every ``interval_s`` in a daemon thread."""
        if self._thread is not None:
            return self
        backend, first = open_backend(self.cfg)
        try:
            _require(self.cfg, first)
        except SensorUnavailableError:
            backend.close()
            raise
        self._backend = backend
        self._stop.clear()
        self._record(first)
        self._thread = threading.Thread(target=self._loop, name="finscale-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sampling; the thread wakes at once because it sleeps on an Event."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._backend is not None:
            self._backend.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        backend = self._backend
        assert backend is not None  # start() opens the backend before it starts this thread
        while not self._stop.wait(self.cfg.interval_s):
            try:
                reading = backend.read()
            except Exception as exc:  # a backend bug must not kill monitoring silently
                reading = make_reading(backend.name, {}, errors=[f"read failed: {exc!r}"])
            self._record(reading)

    def _record(self, reading: Reading) -> None:
        state = classify(reading, self.cfg)
        with self._lock:
            self._latest, self._state = reading, state
            self._states[state] += 1
            if reading.max_c is not None:
                self._max_c = max(reading.max_c, self._max_c or reading.max_c)
            if state == "unavailable" and self._unavailable_error is None:
                self._unavailable_error = reading.error
        if state == "unavailable":
            _log_unavailable_once(reading)
        elif state in ("warning", "critical"):
            log.info("thermal monitor: %s at %s °C (%s)", state, reading.max_c, reading.pressure)
        if self.log_path is not None:
            self._append(self.log_path, state, reading)

    def _append(self, log_path: Path, state: str, reading: Reading) -> None:
        # Append-only log: one write() of one whole line in O_APPEND mode. Rewriting the
        # file atomically per sample would cost O(samples); readers skip a torn last line.
        line = json.dumps({"state": state, **reading.to_dict()}, default=str) + "\n"
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            log.warning("thermal monitor: cannot append to %s: %s", self.log_path, exc)

    # ------------------------------------------------------------------ trainer API
    def latest(self) -> Reading | None:
        """The most recent reading (None before ``start()``)."""
        with self._lock:
            return self._latest

    def state(self) -> str | None:
        with self._lock:
            return self._state

    def check(self) -> str:
        """'continue' | 'pause' | 'stop' for the latest reading; cheap and non-blocking."""
        with self._lock:
            state = self._state
        return "continue" if state is None else action_for(state)

    def wait_until_cool(self, stop_event: threading.Event | None = None,
                        poll_s: float | None = None) -> str:
        """Block until the latest reading is below ``resume_c`` ('continue'), turns critical
        ('stop'), or ``stop_event`` is set / the monitor stops ('stop'). Call it after
        ``check()`` returned 'pause'. A sensor that becomes unreadable while paused ends the
        pause ('continue'): the unavailable state is recorded and reported. Paused time is
        added to ``summary()['paused_s']``."""
        poll = poll_s if poll_s is not None else min(self.cfg.interval_s, 1.0)
        started = None
        try:
            while True:
                with self._lock:
                    reading, state = self._latest, self._state
                if state == "critical":
                    return "stop"
                if reading is None or state == "unavailable" or is_cool(reading, self.cfg):
                    return "continue"
                if (stop_event is not None and stop_event.is_set()) or self._stop.is_set():
                    return "stop"
                if started is None:
                    started = time.monotonic()
                    with self._lock:
                        self._pauses += 1
                    log.warning("thermal pause: %s °C (%s); waiting until below %s °C",
                                reading.max_c, state, self.cfg.resume_c)
                (stop_event or self._stop).wait(poll)
        finally:
            if started is not None:
                waited = time.monotonic() - started
                with self._lock:
                    self._paused_s += waited
                log.warning("thermal pause ended after %.1f s", waited)

    def at_boundary(self, stop_event: threading.Event | None = None) -> str:
        """The whole trainer gate: 'continue', or 'stop' (critical, or stop_event set while
        paused). Pauses inside (``wait_until_cool``) while the hardware is too hot."""
        action = self.check()
        if action == "pause":
            action = self.wait_until_cool(stop_event)
        return action

    def summary(self) -> dict:
        """Backend, samples, max_c, paused_s, pauses, states seen (counts), unavailable."""
        with self._lock:
            return {
                "backend": self._backend.name if self._backend else self.cfg.backend,
                "samples": sum(self._states.values()),
                "max_c": self._max_c,
                "paused_s": round(self._paused_s, 3),
                "pauses": self._pauses,
                "states": dict(self._states),
                "last_state": self._state,
                "unavailable": self._states["unavailable"] > 0,
                "unavailable_reason": self._unavailable_error,
            }


def iter_readings(cfg: MonitorConfig, count: int | None = None) -> Iterator[tuple[Reading, str]]:
    """(reading, state) every ``interval_s`` in the caller's thread — for live display
    (``finscale monitor``), not training. ``count`` None runs until the caller stops."""
    validate_thresholds(cfg)
    backend, reading = open_backend(cfg)
    try:
        _require(cfg, reading)
        n = 0
        while True:
            yield reading, classify(reading, cfg)
            n += 1
            if count is not None and n >= count:
                return
            time.sleep(cfg.interval_s)
            reading = backend.read()
    finally:
        backend.close()


def read_hardware_log(path: Path | str) -> list[dict]:
    """The samples of a hardware.jsonl; a torn last line (killed mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.debug("%s: skipping a torn line", path)
    return rows
