"""Shared fixtures: real files in temporary directories, the bundled sample, the CLI."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One torch/OpenMP thread per process, set before torch loads and inherited by every CLI
# subprocess: `make test` runs two pytest workers on two cores, and more threads than cores
# make OpenMP's spinning threads slow tiny models down many-fold. Tests that check thread
# handling set `run.threads` themselves.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    """One data dir per test module: the smoke study's sample fetched and featurised once."""
    d = tmp_path_factory.mktemp("data")
    r = run_cli("features", "build", "smoke", "--data", "sp500", "--feature-set", "a20", "--data-dir", str(d))
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture(scope="session")
def sp500():
    from finscale.data import load_sample

    return load_sample("sp500")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `finscale ARGS` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "finscale", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    # Every CLI failure, in every test, must be a message, never a traceback.
    assert "Traceback" not in proc.stderr, f"finscale {' '.join(args)}:\n{proc.stderr}"
    return proc


@pytest.fixture
def cli():
    return run_cli


# --------------------------------------------------------------------------- PostgreSQL

def _pg_bin() -> Path | None:
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server():
    """A throwaway PostgreSQL server on 127.0.0.1 (Debian `postgresql` binaries) with an
    empty database ``finscale_hpo``: yields (url, stop); ``stop()`` kills it at once (an
    outage), and it is stopped and removed on exit. Fails under CI when PostgreSQL or
    psycopg2 are missing (.ci/services installs them); skips elsewhere."""
    import shutil
    import tempfile

    bindir = _pg_bin()
    missing = None if bindir else "PostgreSQL server binaries (initdb, pg_ctl) not found"
    try:
        import psycopg2
    except ImportError:
        missing = missing or "psycopg2 is not installed (pip install -e '.[postgres]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must provide them (.ci/services installs postgresql)")
        pytest.skip(f"{missing}; install the Debian package `postgresql` to run this test")
    root = Path(tempfile.mkdtemp(prefix="finscale-pg-"))  # not under pytest's root-only tmp
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), root / "data"

    def pg(*cmd, check=True):
        subprocess.run([*as_user, *cmd], check=check, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start", "-o",
       f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
    stop = lambda: pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")  # noqa: E731
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE finscale_hpo")
        conn.close()
        yield f"postgresql+psycopg2://postgres:secret@127.0.0.1:{port}/finscale_hpo", stop
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
