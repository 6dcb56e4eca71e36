"""Reproducibility: one seed for Python/NumPy/torch, determinism flags, provenance record.

Produces: ``environment_record()`` — versions, device, host and git sha — stored as
``env.json`` in every run directory, so any number can be traced to the code and data
that made it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import socket
import subprocess
import sys
from collections.abc import MutableMapping
from pathlib import Path

import numpy as np

PACKAGES = ("finscale", "torch", "numpy", "pandas", "optuna", "scikit-learn", "scipy", "ta-lib")


# The thread policy (docs/performance.md): idle OpenMP threads sleep at once instead of
# spinning. libgomp's default spin made the smoke study's training 2.5-6x slower on a 2-core
# machine shared with other jobs (a spinning thread holds a core another thread of the same
# parallel region needs); PASSIVE kept the slowdown beside one busy process at ~1.6x and costs
# nothing measurable alone. Read by the OpenMP runtime when torch loads: set before import.
THREAD_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_thread_env(environ: dict | None = None) -> dict:
    """Put the thread-runtime defaults into ``environ`` (default ``os.environ``) where the user
    has not set them (their value wins). Effective only before torch is imported (the CLI
    calls it first thing); returns the values in effect."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    for key, value in THREAD_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return {k: env[k] for k in THREAD_ENV_DEFAULTS}


def worker_env(threads: int) -> dict:
    """The environment of a worker process that runs units with ``threads`` torch threads:
    this process's, the thread-runtime defaults, and OMP/MKL pools of ``threads`` from the
    start (the worker also calls ``torch.set_num_threads(threads)``)."""
    env = dict(os.environ)
    apply_thread_env(env)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def unit_threads(threads: int, workers: int) -> int:
    """Torch threads for one unit: ``threads`` (``run.threads``) when pinned, else the cores
    shared among ``workers`` processes. CPU float results depend on the thread count, so a
    pinned value is what makes metrics identical across machines and worker counts."""
    return threads or max(1, (os.cpu_count() or 1) // workers)


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch from ``seed``; ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (e.g. base seed, budget, horizon, trial)."""
    import hashlib

    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


REPLICATE_SEED_RANGE = 1_000_000  # derived seeds stay short, so run ids stay readable


def replicate_seed_sets(seeds, replicates: int) -> list[tuple[int, ...]]:
    """``replicates`` disjoint seed sets of ``len(seeds)`` seeds each, derived deterministically.

    Set 0 is ``seeds`` exactly (so the run ids of a study without replicates never change);
    set r >= 1 maps each seed s to ``derive_seed("replicate", r, s) % 10**6``. The sets are
    checked to be pairwise disjoint (and each free of duplicates): a collision raises a
    ValueError naming the seed and both replicates, so no run is ever shared by two replicates.
    """
    seeds = tuple(int(s) for s in seeds)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ValueError(f"replicates: {replicates!r}; expected an integer >= 1")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct seeds, got {list(seeds)}")
    sets = [seeds] + [tuple(derive_seed("replicate", r, s) % REPLICATE_SEED_RANGE for s in seeds)
                      for r in range(1, replicates)]
    owner: dict[int, int] = {}
    for r, group in enumerate(sets):
        for s in group:
            if s in owner:
                where = "twice in replicate" if owner[s] == r else f"in replicates {owner[s]} and"
                raise ValueError(f"seeds {list(seeds)} with replicates={replicates}: seed {s} occurs "
                                 f"{where} {r}; the replicate seed sets must be disjoint (change a seed)")
            owner[s] = r
    return sets


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_sha(cwd: Path | None = None) -> str | None:
    """The checkout's HEAD sha (with '+dirty' if modified), or None outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def device_record() -> dict:
    import torch

    rec: dict = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                 "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                 "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    if torch.cuda.is_available():
        rec["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    rec["mps"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return rec


def environment_record(data_hashes: dict | None = None) -> dict:
    """Versions, device, host, git sha and (optionally) the data hashes a run used."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": {p: _version(p) for p in PACKAGES},
        "device": device_record(),
        "git_sha": git_sha(),
        "data": data_hashes or {},
    }
