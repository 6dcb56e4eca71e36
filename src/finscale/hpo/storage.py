"""Optuna storages for HPO studies: sqlite (default), journal files, any RDB URL.

Consumes: a storage spec (``""`` -> ``sqlite:///<study_dir>/optuna.db``; ``journal:<path>``
-> an Optuna journal file; any SQLAlchemy URL such as ``postgresql://user@host/db``).
Produces: an Optuna storage object and a printable (password-free) description of it.
Guarantees: relational storages record a heartbeat for every running trial, and a trial
whose worker died (no heartbeat for ``grace_s`` seconds) is failed and re-queued with the
same parameters by :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`. Journal files
have no heartbeat in Optuna; :mod:`finscale.hpo.ledger` re-queues their dead local trials.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:"
HEARTBEAT_S = 10          # seconds between heartbeats of a running trial
GRACE_FACTOR = 3          # a trial is stale after GRACE_FACTOR missed heartbeats
MAX_RETRY = 3             # a trial that killed its worker this often stays FAIL
SQLITE_TIMEOUT_S = 60     # sqlite: wait this long for a write lock held by another worker


@dataclass(frozen=True)
class StorageSpec:
    """Where a study lives; picklable, so spawned workers can open the same storage."""

    url: str                   # sqlite:///..., postgresql://..., or journal:<absolute path>
    heartbeat_s: int = HEARTBEAT_S
    grace_s: int | None = None  # None: GRACE_FACTOR * heartbeat_s

    @property
    def kind(self) -> str:
        if self.url.startswith(JOURNAL_PREFIX):
            return "journal"
        return self.url.split(":", 1)[0].split("+", 1)[0]

    @property
    def shared(self) -> bool:
        """True for server databases that workers on other machines may join."""
        return self.kind not in ("sqlite", "journal")

    def display(self) -> str:
        """The URL without its password (safe for logs, tables and best_params.json)."""
        if self.kind == "journal":
            return self.url
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)


def default_storage_url(study_dir: Path) -> str:
    return f"sqlite:///{(Path(study_dir) / 'optuna.db').resolve()}"


def resolve_storage(spec: str, study_dir: Path, *, heartbeat_s: int | None = None,
                    grace_s: int | None = None) -> StorageSpec:
    """A :class:`StorageSpec` from ``hpo.storage`` / ``--storage`` (empty = default sqlite)."""
    spec = (spec or "").strip()
    if not spec:
        url = default_storage_url(study_dir)
    elif spec.startswith(JOURNAL_PREFIX):
        path = spec[len(JOURNAL_PREFIX):]
        if not path:
            raise ValueError(f"hpo.storage {spec!r}: expected journal:<path of a journal file>")
        url = JOURNAL_PREFIX + str(Path(path).expanduser().resolve())
    elif "://" in spec:
        url = _with_driver(spec)
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            # relative sqlite path: pin it now so workers started elsewhere use the same file
            url = f"sqlite:///{Path(url[len('sqlite:///'):]).resolve()}"
    else:
        raise ValueError(f"hpo.storage {spec!r}: expected an Optuna storage URL (sqlite:///path, "
                         "postgresql://user@host/db, ...) or journal:<path>")
    hb = HEARTBEAT_S if heartbeat_s is None else int(heartbeat_s)
    if hb < 1 or (grace_s is not None and grace_s < 1):
        raise ValueError(f"heartbeat_s={heartbeat_s}, grace_s={grace_s}: expected positive seconds")
    return StorageSpec(url, hb, grace_s)


# URL schemes without a driver, and the DB-API modules that can serve them, preferred first
# (SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3; the postgres extra installs psycopg2).
_DRIVERS = {"postgresql": ("psycopg", "psycopg2"), "postgres": ("psycopg", "psycopg2"),
            "mysql": ("mysqldb", "pymysql")}
_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "mysqldb": "mysqlclient",
             "pymysql": "pymysql"}


def _with_driver(url: str) -> str:
    """Name an installed driver in a driver-less server URL; ValueError if none is installed."""
    scheme, rest = url.split("://", 1)
    if scheme not in _DRIVERS:
        return url
    for module in _DRIVERS[scheme]:
        if importlib.util.find_spec(module) is not None:
            return f"{'postgresql' if scheme == 'postgres' else scheme}+{module}://{rest}"
    wanted = " or ".join(_PACKAGES[m] for m in _DRIVERS[scheme])
    raise ValueError(f"hpo.storage {scheme}://...: no database driver installed; install {wanted} "
                     "(e.g. pip install -e '.[postgres]')")


def retry_callback(max_retry: int | None = MAX_RETRY) -> RetryHeartbeatStaleTrialCallback:
    """Re-queue a failed trial as WAITING with its parameters and its reported epochs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)


def open_storage(spec: StorageSpec) -> optuna.storages.BaseStorage:
    """The Optuna storage object; creates the sqlite/journal file's directory if needed."""
    if spec.kind == "journal":
        path = Path(spec.url[len(JOURNAL_PREFIX):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    lock: contextlib.AbstractContextManager = contextlib.nullcontext()
    if spec.kind == "sqlite":
        path = Path(spec.url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs: dict = {"creator": _sqlite_connector(str(path))}
        lock = _schema_lock(path)
    else:
        engine_kwargs = {"pool_pre_ping": True}  # servers drop idle connections between trials
    grace = spec.grace_s or GRACE_FACTOR * spec.heartbeat_s
    with warnings.catch_warnings(), lock:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(spec.url, engine_kwargs=engine_kwargs, heartbeat_interval=spec.heartbeat_s,
                          grace_period=grace, heartbeat_stale_trial_callback=retry_callback())


@contextlib.contextmanager
def _schema_lock(db: Path):
    """Hold ``<db>.lock`` (flock, across processes) while Optuna creates or checks the
    schema: two processes creating one fresh SQLite file at the same moment otherwise race
    ("UNIQUE constraint failed: alembic_version"). The kernel drops the lock of a killed
    process."""
    import fcntl

    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sqlite_connector(path: str):
    """sqlite connections in WAL mode: readers never block the writer, and a commit costs no
    fsync of the whole database (synchronous=NORMAL is crash-safe in WAL for a killed
    process; only a power loss may drop the last commits). WAL needs a local filesystem —
    use ``journal:<path>`` on NFS."""
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent; first switch needs the file alone
        except sqlite3.OperationalError as exc:
            log.debug("%s: staying in rollback-journal mode (%s)", path, exc)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    return connect


def has_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None
