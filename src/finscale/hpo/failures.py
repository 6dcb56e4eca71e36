"""HPO failures reported in one line: storage errors and Optuna's failed-trial logs.

Consumes: exceptions raised while a cell's search runs. Produces: :class:`StorageError`
(a ``ValueError``: the CLI prints it as one ``error:`` line naming the storage and the cause)
and a logging filter that keeps Optuna from printing tracebacks of failed trials.
Guarantees: a trial stopped on purpose (signal, STOP file) or ended by a disk or storage
failure adds no log record of its own (the command reports it once); other failed trials keep
Optuna's one-line record without the traceback.
"""

from __future__ import annotations

import logging
import sqlite3

from finscale.hpo.storage import StorageSpec
from finscale.train import RunInterrupted


def _storage_cause(exc: BaseException | None) -> BaseException | None:
    """The database exception ``exc`` is or chains (e.g. behind Optuna's AssertionError)."""
    import sqlalchemy.exc

    while exc is not None:
        if isinstance(exc, (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class WorkerFailed(ValueError):
    """A worker process ended on an error it reported in its own one-line log message."""


class StorageError(ValueError):
    """The Optuna storage failed (disk full, read-only, database down); one-line message."""


def storage_error(spec: StorageSpec, exc: BaseException) -> StorageError | None:
    """A :class:`StorageError` if ``exc`` (or an exception it chains) came from the storage."""
    seen = _storage_cause(exc)
    if seen is None:
        return None
    cause = getattr(seen, "orig", None) or seen
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return StorageError(f"HPO storage {spec.display()}: {text}")


class _QuietTrialFailures(logging.Filter):
    """Optuna logs a failed trial with its traceback. Drop that traceback always, and the
    records themselves when the failure is reported elsewhere in one line: a trial we
    stopped on purpose (signal, STOP file, Ctrl-C; it is re-queued and says so) and storage
    or disk errors (the command's error message names the path and cause)."""

    QUIET = (RunInterrupted, KeyboardInterrupt, OSError)

    def __init__(self) -> None:
        super().__init__()
        self._silenced: set[str | None] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        trial = message.split(" failed ", 1)[0] if " failed " in message else None
        if exc is not None:
            record.exc_info, record.exc_text = None, None
            if isinstance(exc, self.QUIET) or _storage_cause(exc) is not None:
                self._silenced.add(trial)
                return False
        elif trial in self._silenced and "failed with value" in message:
            self._silenced.discard(trial)
            return False
        return True


def quiet_optuna_trial_failures() -> None:
    """Install the filter on Optuna's optimize logger (idempotent)."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _QuietTrialFailures) for f in logger.filters):
        logger.addFilter(_QuietTrialFailures())
