"""Thermal monitor: sensors, policy, background sampling, trainer gate, CLI.

The only fake is a sysfs tree of thermal_zone*/temp files in a tmp dir (this machine has no
readable sensor); tests drive temperatures by rewriting those files from a thread.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from finscale.config import MonitorConfig
from finscale.monitor import STATES, HardwareMonitor, classify, is_cool, read_hardware_log
from finscale.monitor.macos import parse_pmset_therm, parse_powermetrics
from finscale.monitor.sensors import LinuxBackend, NvmlBackend, Reading, open_backend

FAST = 0.05


def set_temp(root: Path, zone: int, celsius: float, kind: str | None = None) -> None:
    """Write a zone's temp atomically, as the kernel presents it (a whole value)."""
    d = root / f"thermal_zone{zone}"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "temp.tmp"
    tmp.write_text(f"{int(round(celsius * 1000))}\n")
    os.replace(tmp, d / "temp")
    if kind is not None:
        (d / "type").write_text(kind + "\n")


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "thermal"
    set_temp(root, 0, 45.0, "x86_pkg_temp")
    set_temp(root, 1, 40.0, "acpitz")
    return root


def mcfg(root: Path, **kw) -> MonitorConfig:
    return MonitorConfig(backend=kw.pop("backend", "linux"), interval_s=kw.pop("interval_s", FAST),
                         sysfs_root=str(root), **kw)


def in_background(fn, *args, **kw) -> tuple[threading.Thread, list]:
    """Call ``fn`` in a daemon thread; its return value lands in the list."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args, **kw)), daemon=True)
    t.start()
    return t, out


def wait_for(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


# --------------------------------------------------------------------------- sensors

def test_linux_backend_reads_fake_sysfs(sysfs):
    r = LinuxBackend(sysfs).read()
    assert r.temperatures == {"x86_pkg_temp": 45.0, "acpitz": 40.0}
    assert r.max_c == 45.0 and r.backend == "linux" and r.error is None


def test_linux_backend_skips_unreadable_and_implausible_zones(sysfs):
    (sysfs / "thermal_zone1" / "temp").write_text("n/a\n")
    set_temp(sysfs, 2, 255.0, "placeholder")
    set_temp(sysfs, 3, 50.0, "acpitz")  # duplicate type names stay apart
    r = LinuxBackend(sysfs).read()
    assert r.temperatures == {"x86_pkg_temp": 45.0, "acpitz": 50.0}
    assert r.max_c == 50.0
    assert "thermal_zone1/temp: unreadable" in r.error and "implausible" in r.error


@pytest.mark.parametrize("setup", ["missing", "empty", "garbage"])
def test_unreadable_tree_is_unavailable_not_normal(tmp_path, setup):
    root = tmp_path / "thermal"
    if setup == "empty":
        root.mkdir()
    if setup == "garbage":
        (root / "thermal_zone0").mkdir(parents=True)
        (root / "thermal_zone0" / "temp").write_text("garbage")
    r = LinuxBackend(root).read()
    assert not r.readable and r.max_c is None and str(root) in r.error
    assert classify(r, mcfg(root)) == "unavailable"


def test_real_sysfs_root_never_raises():
    r = LinuxBackend("/sys/class/thermal").read()
    assert r.readable or r.error


def test_nvml_backend_unavailable_without_gpu_and_never_raises():
    backend = NvmlBackend()
    r = backend.read()
    backend.close()
    if r.readable:  # a machine with an NVIDIA GPU
        assert "gpu0" in r.temperatures and "sm_clock_mhz" in r.extra["gpu0"]
    else:
        assert r.error and classify(r, MonitorConfig()) == "unavailable"
        with HardwareMonitor(MonitorConfig(backend="nvml", interval_s=FAST)) as mon:
            assert mon.check() == "continue" and mon.state() == "unavailable"


def test_auto_picks_first_readable_backend(sysfs, tmp_path):
    if NvmlBackend().read().readable:
        pytest.skip("an NVIDIA GPU is present: auto rightly prefers nvml")
    backend, r = open_backend(mcfg(sysfs, backend="auto"))
    assert backend.name == "linux" and r.max_c == 45.0
    backend, r = open_backend(mcfg(tmp_path / "nowhere", backend="auto"))
    assert backend.name == "none" and not r.readable
    assert "nvml:" in r.error and "linux:" in r.error


def test_macos_parsers():
    pm = ("*** Sampled system activity ***\nCPU Thermal level: 68\n"
          "CPU die temperature: 50.18 C\nGPU die temperature: 50.38 C\n"
          "Current pressure level: Heavy\n")
    assert parse_powermetrics(pm) == ({"cpu_die": 50.18, "gpu_die": 50.38}, "heavy")
    assert parse_powermetrics("Current pressure level: Nominal") == ({}, "nominal")
    quiet = ("Note: No thermal warning level has been recorded\n"
             "Note: No performance warning level has been recorded\n")
    assert parse_pmset_therm(quiet)[0] == "nominal"
    limited = quiet + "CPU Power notify\n\tCPU_Scheduler_Limit \t= 100\n\tCPU_Speed_Limit \t= 35\n"
    level, extra = parse_pmset_therm(limited)
    assert level == "moderate" and extra["cpu_speed_limit"] == 35
    assert parse_pmset_therm("Thermal Warning Level = 5\n")[0] == "heavy"
    assert parse_pmset_therm("Thermal Warning Level = 10\n")[0] == "critical"
    assert parse_pmset_therm("usage: pmset ...")[0] is None


# --------------------------------------------------------------------------- policy

@pytest.mark.parametrize("celsius,state", [(20.0, "normal"), (69.9, "normal"), (70.0, "acceptable"),
                                           (84.9, "acceptable"), (85.0, "warning"),
                                           (94.9, "warning"), (95.0, "critical"), (120.0, "critical")])
def test_policy_thresholds(celsius, state):
    r = Reading(time=0.0, backend="t", temperatures={"x": celsius}, max_c=celsius)
    assert classify(r, MonitorConfig()) == state


def test_policy_pressure_levels_and_resume():
    cfg = MonitorConfig()
    heavy = Reading(time=0.0, backend="macos", pressure="heavy")
    assert classify(heavy, cfg) == "warning" and not is_cool(heavy, cfg)
    mixed = Reading(time=0.0, backend="macos", temperatures={"cpu": 50.0}, max_c=50.0,
                    pressure="critical")
    assert classify(mixed, cfg) == "critical"  # the worse of the two wins
    assert is_cool(Reading(time=0.0, backend="macos", pressure="moderate"), cfg)
    assert not is_cool(Reading(time=0.0, backend="t", max_c=82.0), cfg)  # acceptable, not cool
    assert is_cool(Reading(time=0.0, backend="t", max_c=79.9), cfg)
    assert not is_cool(Reading(time=0.0, backend="none"), cfg)


def test_invalid_thresholds_rejected(sysfs):
    with pytest.raises(ValueError, match="resume_c"):
        HardwareMonitor(mcfg(sysfs, resume_c=90.0))
    with pytest.raises(ValueError, match="normal_c <= warning_c"):
        HardwareMonitor(mcfg(sysfs, normal_c=90.0))


# --------------------------------------------------------------------------- monitor

def test_warning_pauses_until_below_resume(sysfs):
    set_temp(sysfs, 1, 90.0)
    with HardwareMonitor(mcfg(sysfs)) as mon:
        assert mon.check() == "pause"
        waiter, result = in_background(mon.wait_until_cool, poll_s=0.01)
        wait_for(lambda: mon.summary()["pauses"] == 1)   # the pause began
        set_temp(sysfs, 1, 82.0)  # acceptable but above resume_c: still paused
        seen = mon.summary()["samples"]
        wait_for(lambda: mon.summary()["samples"] >= seen + 3)   # readings at 82 °C arrived
        assert mon.latest().max_c == 82.0 and waiter.is_alive() and not result
        set_temp(sysfs, 1, 65.0)
        waiter.join(30)
        assert result == ["continue"]
        assert mon.check() == "continue"
        summary = mon.summary()
    assert summary["pauses"] == 1 and summary["paused_s"] > 0
    assert {"warning", "acceptable", "normal"} <= set(summary["states"])
    assert summary["max_c"] == 90.0 and summary["backend"] == "linux"
    assert summary["unavailable"] is False


def test_at_boundary_passes_through_when_cool(sysfs):
    with HardwareMonitor(mcfg(sysfs)) as mon:
        assert mon.at_boundary() == "continue"
        assert mon.summary()["pauses"] == 0 and mon.summary()["paused_s"] == 0   # never waited


def test_critical_reading_stops(sysfs):
    set_temp(sysfs, 0, 96.0)
    with HardwareMonitor(mcfg(sysfs)) as mon:
        assert mon.check() == "stop"
        assert mon.at_boundary() == "stop"


def test_critical_during_pause_stops(sysfs):
    set_temp(sysfs, 0, 88.0)
    with HardwareMonitor(mcfg(sysfs)) as mon:
        waiter, result = in_background(mon.at_boundary)
        wait_for(lambda: mon.summary()["pauses"] == 1)
        set_temp(sysfs, 0, 97.0)
        waiter.join(30)
        assert result == ["stop"]
        assert mon.summary()["states"].get("critical", 0) >= 1


def test_stop_event_ends_pause(sysfs):
    set_temp(sysfs, 0, 88.0)
    stop = threading.Event()
    with HardwareMonitor(mcfg(sysfs)) as mon:
        waiter, result = in_background(mon.wait_until_cool, stop_event=stop, poll_s=0.02)
        wait_for(lambda: mon.summary()["pauses"] == 1)
        seen = mon.summary()["samples"]
        wait_for(lambda: mon.summary()["samples"] >= seen + 2)   # hot readings keep arriving
        assert waiter.is_alive() and not result   # still hot: still paused
        stop.set()
        waiter.join(30)
        assert result == ["stop"]
        assert mon.summary()["paused_s"] > 0


def test_unavailable_tree_logged_once_and_reported(tmp_path, caplog):
    root = tmp_path / "no-such-thermal"
    caplog.set_level(logging.WARNING, logger="finscale.monitor")
    with HardwareMonitor(mcfg(root)) as mon:
        wait_for(lambda: mon.summary()["samples"] >= 4)
        assert mon.state() == "unavailable" and mon.check() == "continue"
        assert mon.latest().max_c is None
        summary = mon.summary()
    assert summary["unavailable"] is True and "normal" not in summary["states"]
    assert str(root) in summary["unavailable_reason"]
    warnings = [r for r in caplog.records if "sensor unavailable" in r.getMessage()]
    assert len(warnings) == 1


def test_require_sensor_raises_at_start(tmp_path):
    mon = HardwareMonitor(mcfg(tmp_path / "missing", require_sensor=True))
    with pytest.raises(ValueError, match="require_sensor"):
        mon.start()
    assert not mon.running


def test_hardware_jsonl_lines(sysfs, tmp_path):
    log_path = tmp_path / "run" / "hardware.jsonl"
    with HardwareMonitor(mcfg(sysfs), log_path) as mon:
        wait_for(lambda: mon.summary()["samples"] >= 3)
        set_temp(sysfs, 1, 90.0)
        wait_for(lambda: mon.state() == "warning")
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(rows) >= 4
    assert all(r["state"] in STATES and isinstance(r["time"], float) for r in rows)
    assert rows[0]["state"] == "normal" and rows[0]["temperatures"]["acpitz"] == 40.0
    assert rows[-1]["state"] == "warning" and rows[-1]["max_c"] == 90.0
    with open(log_path, "a") as fh:
        fh.write('{"state": "nor')  # a write torn by kill -9
    assert len(read_hardware_log(log_path)) == len(rows)


def test_sampling_thread_is_daemon_and_stops_promptly(sysfs):
    mon = HardwareMonitor(mcfg(sysfs, interval_s=30.0)).start()
    threads = [t for t in threading.enumerate() if t.name == "finscale-monitor"]
    assert threads and all(t.daemon for t in threads)
    mon.stop()   # joins the thread (5 s at most): it must not wait out the 30 s interval
    assert not mon.running and not any(t.is_alive() for t in threads)
    assert mon.summary()["samples"] == 1  # the synchronous first sample only


def test_samples_follow_interval_not_calls(sysfs):
    with HardwareMonitor(mcfg(sysfs, interval_s=3600.0)) as mon:
        for _ in range(10_000):
            mon.check()  # per-step calls must not trigger sensor reads
        assert mon.summary()["samples"] == 1  # only the synchronous first sample
    with HardwareMonitor(mcfg(sysfs, interval_s=0.05)) as mon:
        wait_for(lambda: mon.summary()["samples"] >= 3)  # the interval alone drives sampling


# --------------------------------------------------------------------------- CLI

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finscale", "monitor", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_monitor_prints_readings(sysfs):
    set_temp(sysfs, 1, 88.5)
    proc = _cli("--count", "2", "--interval", "0.1", "--sysfs-root", str(sysfs),
                "--backend", "linux")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["time", "state", "max"]
    assert len(lines) == 3
    for row in lines[1:]:
        assert "warning" in row and "88.5" in row and "linux" in row
        assert "x86_pkg_temp=45.0" in row and "acpitz=88.5" in row


def test_cli_monitor_require_sensor_fails_clearly(tmp_path):
    proc = _cli("--count", "1", "--interval", "0.1", "--sysfs-root", str(tmp_path / "none"),
                "--backend", "linux", "--require-sensor")
    assert proc.returncode == 1
    assert "require_sensor" in proc.stderr and str(tmp_path / "none") in proc.stderr


def test_import_does_not_load_vendor_libraries():
    code = ("import sys, finscale.monitor, finscale.cli.monitor; "
            "assert 'pynvml' not in sys.modules, 'pynvml imported eagerly'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
