"""Shared fixtures: real files in temporary directories, the bundled sample, the CLI."""

from __future__ import annotations

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
