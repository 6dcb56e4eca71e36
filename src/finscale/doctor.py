"""Environment checks for ``finscale doctor`` / ``make verify``.

Consumes: optionally a study config (for its data dir, output dir, monitor policy, plan
and Optuna storage) and a data directory.
Produces: a list of :class:`Check` rows (name, status ok|warning|error, detail, fix).
Guarantees: checks only read — nothing is downloaded, trained or created (a sqlite Optuna
file that does not exist yet is not created). A missing optional package or an unreadable
sensor is a warning (an error only when the study sets ``monitor.require_sensor``); a
changed or missing data file, an unusable device the study asks for, an unreachable
Optuna storage, or a study that needs more disk or memory than the machine has are errors.

Disk estimate (``estimate_disk``): every training run leaves ``best.pt`` (fp32 weights,
4 B/param) and the two newest ``step-N.pt`` (weights + AdamW's two moment buffers,
12 B/param each) on disk — 28 B/param — plus ~1 MB of JSON logs, predictions and pickle
overhead. Final runs count once per seed; HPO cells once per trial and fold. On top, the
largest run briefly holds a third step checkpoint (a temp file, 12 B/param) before the
oldest is pruned.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from finscale.config import MonitorConfig, StudyConfig
from finscale.model.compute import format_bytes

__all__ = ["Check", "OK", "WARNING", "ERROR", "OPTIONAL_PACKAGES", "run_checks", "exit_code",
           "estimate_disk", "format_bytes", "check_python", "check_torch", "check_cpu_bf16", "check_talib", "check_optional",
           "check_sensors", "check_resources", "check_data", "check_storage"]

log = logging.getLogger(__name__)

OK, WARNING, ERROR = "ok", "warning", "error"
MIN_PYTHON = (3, 11)
KEPT_BYTES_PER_PARAM = 4 + 2 * 12       # best.pt + the two step-N.pt kept after a run
STEP_BYTES_PER_PARAM = 12                # one step-N.pt: fp32 weights + AdamW exp_avg, exp_avg_sq
RUN_OVERHEAD_BYTES = 1_000_000           # JSON files, metrics, hardware log, predictions.npz
LOW_DISK_BYTES = 1_000_000_000           # without a study: warn below 1 GB free

# (import name, distribution, what needs it, install command)
OPTIONAL_PACKAGES = (
    ("yfinance", "yfinance", "live downloads (yfinance:TICKER sources)", "pip install yfinance"),
    ("pynvml", "nvidia-ml-py", "NVIDIA GPU temperature sensors", "pip install nvidia-ml-py"),
    ("mlflow", "mlflow", "experiment tracking (--mlflow)", "pip install 'finscale[mlflow]'"),
    ("transformers", "transformers", "reference-model benchmarks", "pip install 'finscale[bench]'"),
    ("psycopg2", "psycopg2-binary", "PostgreSQL Optuna storage", "pip install 'finscale[postgres]'"),
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str          # ok | warning | error
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def exit_code(checks: list[Check]) -> int:
    """0 when no check is an error, 1 otherwise."""
    return 1 if any(c.status == ERROR for c in checks) else 0


def run_checks(cfg: StudyConfig | None, data_dir: Path) -> list[Check]:
    """Every check, in the order the table shows them (``cfg`` None: no study-specific needs)."""
    checks = [check_python(), *check_torch(cfg), check_talib(), *check_optional(),
              check_sensors(cfg.monitor if cfg else MonitorConfig()),
              *check_resources(cfg, data_dir), *check_data(data_dir)]
    if cfg is not None:
        checks.append(check_storage(cfg))
    return checks


# --------------------------------------------------------------------------- software

def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", ERROR, f"{version} ({sys.executable})",
                     f"use Python >= {'.'.join(map(str, MIN_PYTHON))} (make install uses python3.11)")
    return Check("python", OK, f"{version} ({sys.executable})")


def check_torch(cfg: StudyConfig | None) -> list[Check]:
    """torch's version and a tiny tensor op on cpu and on every cuda/mps device present."""
    try:
        import torch
    except ImportError as exc:
        return [Check("torch", ERROR, f"not importable: {exc}", "pip install torch (see make install)")]
    checks = [Check("torch", OK, torch.__version__)]
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append("mps")
    for dev in devices:
        checks.append(_device_op(torch, dev))
    if len(devices) == 1:
        built = "CUDA build, no GPU visible" if torch.version.cuda else "CPU-only build"
        checks.append(Check("accelerator", OK, f"none ({built}); training runs on the CPU"))
    checks.append(check_cpu_bf16(cfg))
    if cfg is not None:
        from finscale.model import select_device

        try:
            select_device(cfg.model.device)
        except ValueError as exc:
            checks.append(Check("study device", ERROR, str(exc),
                                "set model.device = \"auto\" or run on a machine with that device"))
    return checks


def check_cpu_bf16(cfg: StudyConfig | None) -> Check:
    """Whether this CPU has native bf16 (so ``model.precision = "auto"`` trains CPU runs in
    bf16); a warning when the study asks for bf16 on a CPU without it (emulated: slow)."""
    from finscale.model import cpu_bf16_support, device_type, resolve_precision

    flag = cpu_bf16_support()
    detail = (f"native bf16 ({flag}): precision \"auto\" trains CPU runs in bf16" if flag else
              "no native bf16 in the CPU flags (avx512_bf16, amx_bf16, ARM bf16): CPU runs stay fp32 under \"auto\"")
    if cfg is None:
        return Check("cpu bf16", OK, detail)
    try:
        kind = device_type(cfg.model.device)
        precision = resolve_precision(cfg.model.precision, kind)
    except ValueError as exc:
        return Check("cpu bf16", ERROR, str(exc), "set model.precision = \"fp32\" or \"auto\"")
    detail += f"; this study trains in {precision} on {kind}"
    if kind == "cpu" and precision == "bf16" and not flag:
        return Check("cpu bf16", WARNING, detail + " (bf16 emulated in software: slower than fp32)",
                     "set model.precision = \"auto\" (fp32 on this CPU) or \"fp32\"")
    return Check("cpu bf16", OK, detail)


def _device_op(torch, dev: str) -> Check:
    name = f"device {dev}"
    try:
        x = torch.arange(6, dtype=torch.float32, device=dev).reshape(2, 3)
        value = float((x @ x.T).sum().cpu())
    except RuntimeError as exc:  # driver/runtime failures surface as RuntimeError in torch
        return Check(name, ERROR, f"a tiny matmul failed: {exc}", "check the driver / torch build")
    if value != 83.0:  # [[0,1,2],[3,4,5]] @ its transpose = [[5,14],[14,50]]
        return Check(name, ERROR, f"a tiny matmul returned {value}, expected 83.0",
                     "check the driver / torch build")
    label = torch.cuda.get_device_name(int(dev[5:])) if dev.startswith("cuda") else dev
    return Check(name, OK, f"tensor op works ({label})")


def check_talib() -> Check:
    try:
        import numpy as np
        import talib
    except ImportError as exc:
        return Check("ta-lib", ERROR, f"not importable: {exc}", "pip install ta-lib")
    sma = talib.SMA(np.arange(1.0, 11.0), timeperiod=3)
    if not np.isclose(sma[-1], 9.0):
        return Check("ta-lib", ERROR, f"SMA(1..10, 3) ended in {sma[-1]}, expected 9.0",
                     "reinstall ta-lib: pip install --force-reinstall ta-lib")
    return Check("ta-lib", OK, f"{getattr(talib, '__version__', '?')} (SMA call works)")


def check_optional() -> list[Check]:
    """Presence (import spec) and version of each optional package; missing is a warning."""
    checks = []
    for module, dist, purpose, command in OPTIONAL_PACKAGES:
        # find_spec, not import: importing mlflow/transformers costs seconds; a name blocked
        # in sys.modules (None) or absent from the path is reported as missing.
        if not _importable(module):
            checks.append(Check(f"package {dist}", WARNING, f"missing: needed for {purpose}", command))
            continue
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "version unknown"
        checks.append(Check(f"package {dist}", OK, f"{version}; for {purpose}"))
    return checks


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------- hardware

def check_sensors(cfg: MonitorConfig) -> Check:
    """Which backend the monitor would use now, and its current readings."""
    from finscale.monitor import open_backend

    backend, reading = open_backend(cfg)
    backend.close()
    if reading.readable:
        temps = ", ".join(f"{k}={v:.0f}°C" for k, v in list(reading.temperatures.items())[:6])
        more = f" (+{len(reading.temperatures) - 6} more)" if len(reading.temperatures) > 6 else ""
        pressure = f" pressure={reading.pressure}" if reading.pressure else ""
        return Check("sensors", OK, f"{reading.backend}: {temps}{more}{pressure}".strip())
    status = ERROR if cfg.require_sensor else WARNING
    # Advise installing nvidia-ml-py only when it is missing (its own row says so otherwise).
    gpu = "" if _importable("pynvml") else "GPU: pip install nvidia-ml-py; "
    return Check("sensors", status, f"no readable temperature sensor ({reading.error})",
                 "runs continue without thermal protection (an error with monitor.require_sensor); "
                 f"{gpu}CPU: needs hwmon/thermal_zone sensors (most VMs have none)")


def _free_bytes(path: Path) -> tuple[Path, int]:
    """(absolute path, free bytes on the filesystem that holds it or its nearest existing parent)."""
    path = probe = Path(path).resolve()
    while not probe.exists():
        probe = probe.parent
    return path, shutil.disk_usage(probe).free


def estimate_disk(cfg: StudyConfig, plan: list) -> int:
    """Bytes the study's run directories will need (see the module docstring)."""
    folds = cfg.splits.folds if cfg.hpo.split == "walk_forward" else 1
    total = 0
    for row in plan:
        runs = cfg.hpo.trials * folds if row.phase == "hpo" else 1
        total += runs * (KEPT_BYTES_PER_PARAM * (row.params or 0) + RUN_OVERHEAD_BYTES)
    return total + STEP_BYTES_PER_PARAM * max((row.params or 0 for row in plan), default=0)


def check_resources(cfg: StudyConfig | None, data_dir: Path) -> list[Check]:
    """Free disk (output and data dirs) and memory, against the study's needs when given."""
    import psutil

    out_dir = cfg.study_dir if cfg else Path("runs")
    checks, plan, need_disk = [], [], 0
    if cfg is not None:
        from finscale.runner.plan import build_plan

        plan = build_plan(cfg, data_dir=data_dir)
        need_disk = estimate_disk(cfg, plan)
        checks.append(_plan_check(cfg, plan))
    probe, free = _free_bytes(out_dir)
    if cfg is not None and free < need_disk:
        checks.append(Check("disk (runs)", ERROR, f"{format_bytes(free)} free for {probe}; study {cfg.name!r} "
                            f"needs ~{format_bytes(need_disk)} for checkpoints",
                            "free space or set output_dir to a larger disk"))
    else:
        need = f"; study needs ~{format_bytes(need_disk)}" if cfg is not None else ""
        status = WARNING if cfg is None and free < LOW_DISK_BYTES else OK
        checks.append(Check("disk (runs)", status, f"{format_bytes(free)} free for {probe}{need}",
                            "" if status == OK else "free some disk space"))
    probe, free = _free_bytes(data_dir)
    status = WARNING if free < LOW_DISK_BYTES else OK
    checks.append(Check("disk (data)", status, f"{format_bytes(free)} free for {probe}",
                        "" if status == OK else "free some disk space"))
    mem = psutil.virtual_memory()
    need_mem = max((r.memory or 0 for r in plan), default=0)
    checks.append(_memory_check(cfg, need_mem, mem.total, mem.available))
    return checks


def _plan_check(cfg: StudyConfig, plan: list) -> Check:
    problems = [f"{r.budget}-h{r.horizon}: {r.problem}" for r in plan if r.problem]
    if problems:
        return Check("study plan", ERROR, f"{len(problems)} invalid unit(s); first: {problems[0]}",
                     f"finscale run {cfg.name} --dry-run shows every unit")
    flagged = [f"{r.budget}-h{r.horizon}: {r.extra['budget_flag']}" for r in plan if r.extra.get("budget_flag")]
    if flagged:  # fixed mode runs a table's shapes as given; say which miss their labels
        return Check("study plan", WARNING, f"{cfg.name!r}: {len(plan)} units of work; {len(flagged)} "
                     f"off their budget label (run as given); first: {flagged[0]}",
                     "the report sizes these runs by their measured parameters")
    return Check("study plan", OK, f"{cfg.name!r}: {len(plan)} units of work")


def _memory_check(cfg, need: int, total: int, available: int) -> Check:
    """Compare the largest run's training memory with RAM (CPU/MPS) or GPU memory (CUDA)."""
    where, avail_label = "RAM", f"{format_bytes(available)} available of {format_bytes(total)} RAM"
    if cfg is not None and need:
        import torch

        from finscale.model import select_device

        try:
            device = select_device(cfg.model.device)
        except ValueError:
            device = torch.device("cpu")  # reported by the "study device" row
        if device.type == "cuda":
            available, total = torch.cuda.mem_get_info(device.index or 0)
            where = f"GPU {device.index or 0} memory"
            avail_label = f"{format_bytes(available)} free of {format_bytes(total)} {where}"
    if cfg is None or not need:
        return Check("memory", OK, avail_label)
    detail = f"{avail_label}; largest run needs ~{format_bytes(need)}"
    if need > total:
        return Check("memory", ERROR, detail, "use a smaller budget or batch size, "
                     "model.activation_checkpointing = true, or a bigger machine")
    if need > available:
        return Check("memory", WARNING, detail, "close other programs before running the study")
    return Check("memory", OK, detail)


# --------------------------------------------------------------------------- data and storage

def check_data(data_dir: Path) -> list[Check]:
    """Every manifest entry re-hashed (the check of ``finscale data verify``)."""
    from finscale.data import verify

    data_dir = Path(data_dir)
    try:
        rows = verify(data_dir)
    except ValueError as exc:  # unreadable manifest
        return [Check("data manifest", ERROR, str(exc), f"restore {data_dir / 'manifest.json'}")]
    if not rows:
        return [Check("data", WARNING, f"no datasets stored in {data_dir}",
                      f"finscale data fetch sample:sp500 --data-dir {data_dir} "
                      "(finscale run also fetches the study's source)")]
    return [_data_row(data_dir, r) for r in rows]


def _data_row(data_dir: Path, row: dict) -> Check:
    from finscale.data import Manifest

    path = data_dir / row["path"]
    name = f"data {row['path']}"
    if row["status"] == "ok":
        return Check(name, OK, f"{row['rows']} rows, sha256 {row['sha256'][:12]} matches the manifest")
    entry = Manifest(data_dir).latest(row["path"]) or {}
    if entry.get("kind") == "processed":
        fix = (f"finscale features build --data {entry.get('name')} --feature-set {entry.get('feature_set')} "
               f"--data-dir {data_dir}")
    else:
        fix = (f"finscale data fetch {entry.get('source', 'SOURCE')} --name {entry.get('name', 'NAME')} "
               f"--data-dir {data_dir}")
    what = "is missing" if row["status"] == "missing" else "changed: sha256 differs from the manifest"
    return Check(name, ERROR, f"{path} {what}", fix)


def check_storage(cfg: StudyConfig) -> Check:
    """The study's Optuna storage can be opened (sqlite/journal: its file can be written)."""
    from finscale.hpo.storage import JOURNAL_PREFIX, resolve_storage

    name = "optuna storage"
    if cfg.hpo.mode != "search":
        return Check(name, OK, "not used (hpo.mode = \"fixed\")")
    try:
        spec = resolve_storage(cfg.hpo.storage, cfg.study_dir)
    except ValueError as exc:
        return Check(name, ERROR, str(exc), "set hpo.storage to sqlite:///PATH, postgresql://... or journal:PATH")
    if spec.kind in ("journal", "sqlite"):
        path = Path(spec.url[len(JOURNAL_PREFIX):] if spec.kind == "journal" else spec.url[len("sqlite:///"):])
        if not path.exists():
            probe = path.parent
            while not probe.exists():
                probe = probe.parent
            writable = os.access(probe, os.W_OK)
            return Check(name, OK if writable else ERROR,
                         f"{spec.display()} (created on first use; {probe} "
                         f"{'is' if writable else 'is NOT'} writable)",
                         "" if writable else "set hpo.storage to a writable location")
        if spec.kind == "journal":
            return Check(name, OK, f"{spec.display()} exists")
    return _open_rdb(spec)


def _open_rdb(spec) -> Check:
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    name = "optuna storage"
    # A short connect timeout: an unreachable server should fail the check, not hang it.
    kwargs = {"connect_args": {"connect_timeout": 5}} if spec.kind in ("postgresql", "mysql") else {}
    try:
        storage = RDBStorage(spec.url, engine_kwargs=kwargs)
        studies = storage.get_all_studies()
        storage.engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check(name, ERROR, f"{spec.display()} unreachable: {first}",
                     "start the database / check the URL and driver (pip install 'finscale[postgres]')")
    return Check(name, OK, f"{spec.display()} reachable ({len(studies)} studies)")
