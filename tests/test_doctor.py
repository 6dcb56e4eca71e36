"""`finscale doctor`: rows and exit codes on this machine, tampered data, missing packages."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from finscale.cli.common import resolve_study_path
from finscale.config import MonitorConfig, load_study
from finscale.doctor import (
    ERROR,
    OK,
    STEP_BYTES_PER_PARAM,
    WARNING,
    check_data,
    check_resources,
    check_sensors,
    check_storage,
    estimate_disk,
)
from finscale.monitor import open_backend


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    r = run_cli("data", "fetch", "sample:sp500", "--data-dir", str(d))
    assert r.returncode == 0, r.stderr
    return d


def doctor_json(*args: str, env: dict | None = None) -> tuple[int, dict[str, dict]]:
    r = run_cli("doctor", "--json", *args, env=env)
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == r.returncode, r.stderr
    return r.returncode, {c["name"]: c for c in doc["checks"]}


def sensors_readable_here() -> bool:
    backend, reading = open_backend(MonitorConfig())
    backend.close()
    return reading.readable


def test_doctor_on_this_machine_reports_rows_and_exit_0(fetched):
    code, rows = doctor_json("--data-dir", str(fetched))
    assert code == 0, rows
    for name in ("python", "torch", "device cpu", "ta-lib", "disk (runs)", "disk (data)", "memory"):
        assert rows[name]["status"] == OK, rows[name]
    assert rows["python"]["detail"].startswith(".".join(map(str, sys.version_info[:3])))
    assert rows["data raw/sp500.parquet"]["status"] == OK
    assert "5031 rows" in rows["data raw/sp500.parquet"]["detail"]
    # cpu only here: no sensor is a warning (not an error) naming why, unless a sensor reads
    assert rows["sensors"]["status"] == (OK if sensors_readable_here() else WARNING)
    for dist in ("yfinance", "nvidia-ml-py", "mlflow", "transformers", "psycopg2-binary"):
        assert rows[f"package {dist}"]["status"] in (OK, WARNING)
        if rows[f"package {dist}"]["status"] == OK:  # never advise installing what is there
            assert not [r for r in rows.values() if f"pip install {dist}" in r["fix"]], dist
    assert "optuna storage" not in rows  # only with a study


def test_tampered_or_missing_dataset_is_an_error_naming_the_file(fetched, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(fetched, data)
    with open(data / "raw" / "sp500.parquet", "ab") as fh:
        fh.write(b"tampered")
    r = run_cli("doctor", "--data-dir", str(data))  # the table a person reads
    assert r.returncode == 1, r.stdout
    assert "device cpu" in r.stdout and "ta-lib" in r.stdout
    assert "raw/sp500.parquet" in r.stdout and "changed" in r.stdout
    assert "finscale data fetch sample:sp500 --name sp500" in r.stdout  # the fix
    assert " 1 errors" in r.stdout
    (data / "raw" / "sp500.parquet").unlink()
    rows = {c.name: c for c in check_data(data)}
    assert rows["data raw/sp500.parquet"].status == ERROR
    assert "is missing" in rows["data raw/sp500.parquet"].detail


def test_missing_optional_packages_are_warnings_not_errors(fetched):
    # A real import failure: the names are blocked in sys.modules before doctor runs.
    script = ("import sys; sys.modules['mlflow'] = None; sys.modules['yfinance'] = None; "
              "from finscale.cli import main; "
              f"sys.exit(main(['doctor', '--json', '--data-dir', {str(fetched)!r}]))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env={**os.environ})
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert rows["package mlflow"]["status"] == WARNING
    assert rows["package mlflow"]["fix"] == "pip install 'finscale[mlflow]'"
    assert rows["package yfinance"]["status"] == WARNING
    assert "missing" in rows["package yfinance"]["detail"]


def test_study_checks_sensor_plan_needs_and_storage(fetched, tmp_path):
    """With a study: a readable (fake sysfs) sensor is ok and shows its reading; the plan's
    disk and memory needs and the Optuna storage are checked."""
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("47000\n")
    (zone / "type").write_text("x86_pkg_temp\n")
    base = ["smoke", "--data-dir", str(fetched), "--set", f"output_dir={json.dumps(str(tmp_path))}"]
    code, rows = doctor_json(*base, "--set", 'monitor.backend="linux"',
                             "--set", f"monitor.sysfs_root={json.dumps(str(tmp_path / 'thermal'))}")
    assert code == 0, rows
    assert rows["sensors"]["status"] == OK and "x86_pkg_temp=47°C" in rows["sensors"]["detail"]
    assert rows["study plan"]["status"] == OK and "'smoke'" in rows["study plan"]["detail"]
    assert "study needs" in rows["disk (runs)"]["detail"]
    assert "largest run needs" in rows["memory"]["detail"]
    assert rows["optuna storage"]["status"] == OK


def test_unreadable_sensor_is_an_error_only_when_required():
    assert check_sensors(MonitorConfig(backend="none")).status == WARNING
    row = check_sensors(MonitorConfig(backend="none", require_sensor=True))
    assert row.status == ERROR and "no readable temperature sensor" in row.detail


def test_paper_study_needs_more_memory_than_this_machine(fetched, tmp_path):
    """The phase6a plan's 2B-parameter runs cannot fit 24 GB of RAM on a CPU: an error."""
    import psutil

    if psutil.virtual_memory().total > 64e9:
        pytest.skip("this machine has enough memory for a 2B model")
    cfg = load_study(resolve_study_path("phase6a"), [f"output_dir={json.dumps(str(tmp_path))}",
                                                     'model.budgets=["2B"]', "target.horizons=[1]",
                                                     'model.device="cpu"', 'hpo.mode="search"'])
    rows = {c.name: c for c in check_resources(cfg, fetched)}
    assert rows["memory"].status == ERROR, rows["memory"]
    assert "largest run needs ~3" in rows["memory"].detail  # ~31 GB for 2B params at fp32


def test_storage_check_opens_real_storages(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(storage=url, study_name="s")
    cfg = load_study(None, [f"output_dir={json.dumps(str(tmp_path))}", f"hpo.storage={json.dumps(url)}"])
    row = check_storage(cfg)
    assert row.status == OK and "reachable (1 studies)" in row.detail
    # nothing listens on port 9 (discard): a server storage that cannot be reached is an error
    down = load_study(None, ['hpo.storage="postgresql://finscale@127.0.0.1:9/optuna"'])
    row = check_storage(down)
    assert row.status == ERROR and "unreachable" in row.detail
    fresh = load_study(None, [f"hpo.storage={json.dumps('journal:' + str(tmp_path / 'new' / 'j.log'))}"])
    row = check_storage(fresh)
    assert row.status == OK and "created on first use" in row.detail
    assert not (tmp_path / "new").exists()  # a check creates nothing
    fixed = load_study(None, ['hpo.mode="fixed"'])
    assert "not used" in check_storage(fixed).detail


def test_disk_estimate_matches_a_real_step_checkpoint(tmp_path):
    """The per-parameter size behind the disk estimate, measured on a real AdamW checkpoint."""
    import torch

    from finscale.checkpoint import save_checkpoint

    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256))
    n = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 256)).sum().backward()
    opt.step()
    save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "step-1.pt")
    size = (tmp_path / "step-1.pt").stat().st_size
    assert STEP_BYTES_PER_PARAM * n <= size <= STEP_BYTES_PER_PARAM * n * 1.05

    cfg = load_study(None, ["seeds=[0,1,2]"])
    from finscale.runner.plan import PlanRow

    one = [PlanRow("final", "x", 1, "0", "", 1_000_000, 0, 0, 0, 0)]
    per_run = estimate_disk(cfg, one * 2) - estimate_disk(cfg, one)
    assert per_run >= (4 + 2 * STEP_BYTES_PER_PARAM) * 1_000_000  # best.pt + two step checkpoints
    hpo = [PlanRow("hpo", "x", 1, "8 trials", "", 1_000_000, 0, 0, 0, 0)]
    assert estimate_disk(cfg, hpo) == estimate_disk(cfg, one) + (cfg.hpo.trials - 1) * per_run


def test_doctor_reports_cpu_bf16_support_and_warns_on_emulated_bf16():
    from finscale.doctor import check_cpu_bf16
    from finscale.model import cpu_bf16_support

    flag = cpu_bf16_support()
    row = check_cpu_bf16(None)
    assert row.status == OK and (flag in row.detail if flag else "no native bf16" in row.detail)
    cfg = load_study(resolve_study_path("smoke"), ['model.device="cpu"', 'model.precision="bf16"'])
    row = check_cpu_bf16(cfg)
    assert "trains in bf16 on cpu" in row.detail
    assert row.status == (OK if flag else WARNING)
    auto = check_cpu_bf16(load_study(resolve_study_path("smoke"), ['model.device="cpu"', 'model.precision="auto"']))
    assert auto.status == OK and f"trains in {'bf16' if flag else 'fp32'} on cpu" in auto.detail
