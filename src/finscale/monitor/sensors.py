"""Temperature sensor backends: NVML (NVIDIA GPUs), Linux (psutil / sysfs), macOS, none.

Consumes: a :class:`~finscale.config.MonitorConfig` (backend name, sysfs root).
Produces: :class:`Reading` objects, one per ``Backend.read()`` call.
Guarantees: importing this module never touches a sensor or a vendor library; ``read()``
never raises — a sensor that cannot be read yields a Reading with ``max_c=None`` and an
``error`` saying why, which the policy turns into the state ``unavailable`` (never
``normal``). NVML is imported lazily, so a machine without ``nvidia-ml-py`` or without a GPU
simply finds that backend unavailable.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

from finscale.config import MonitorConfig
from finscale.monitor.reading import Backend, Reading, make_reading

__all__ = ["Reading", "Backend", "NoneBackend", "LinuxBackend", "NvmlBackend",
           "BACKENDS", "AUTO_ORDER", "make_reading", "open_backend"]

log = logging.getLogger(__name__)

REAL_SYSFS_THERMAL = Path("/sys/class/thermal")


class NoneBackend(Backend):
    """No sensor: every reading is unavailable, with the reason given at construction."""

    name = "none"

    def __init__(self, reason: str = "monitor.backend is 'none' (no sensor read)"):
        self.reason = reason

    def read(self) -> Reading:
        return make_reading(self.name, {}, errors=[self.reason])


# --------------------------------------------------------------------------- Linux

class LinuxBackend(Backend):
    """psutil's hwmon sensors on the real /sys, else ``<root>/thermal_zone*/{temp,type}``.

    ``temp`` files hold millidegrees Celsius. A configurable root lets tests (and odd
    machines) point at another tree; psutil is used only when the root is the real one,
    since psutil always reads the real /sys.
    """

    name = "linux"

    def __init__(self, root: str | Path = REAL_SYSFS_THERMAL):
        self.root = Path(root)
        self.use_psutil = self.root.resolve() == REAL_SYSFS_THERMAL.resolve()

    def read(self) -> Reading:
        psutil_errors: list[str] = []
        temps = self._psutil(psutil_errors) if self.use_psutil else {}
        if temps:
            return make_reading(self.name, temps)
        # Zones that failed are reported even when others read; psutil's failure only
        # matters when the sysfs fallback found nothing either.
        errors: list[str] = []
        temps = self._sysfs(errors)
        return make_reading(self.name, temps, errors=errors if temps else psutil_errors + errors)

    def _psutil(self, errors: list[str]) -> dict[str, float]:
        try:
            import psutil
            chips = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
        except Exception as exc:  # psutil raises plain OSErrors/RuntimeErrors on odd kernels
            errors.append(f"psutil: {exc}")
            return {}
        temps = {}
        for chip, entries in chips.items():
            for i, entry in enumerate(entries):
                if entry.current is not None:
                    temps[f"{chip}/{entry.label or i}"] = float(entry.current)
        if not temps:
            errors.append("psutil: no temperature sensors")
        return temps

    def _sysfs(self, errors: list[str]) -> dict[str, float]:
        if not self.root.is_dir():
            errors.append(f"{self.root}: no such directory")
            return {}
        zones = sorted(self.root.glob("thermal_zone*"),
                       key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
        if not zones:
            errors.append(f"{self.root}: no thermal_zone* entries")
        temps = {}
        for zone in zones:
            try:
                value = int((zone / "temp").read_text().strip()) / 1000.0
            except (OSError, ValueError) as exc:
                errors.append(f"{zone / 'temp'}: unreadable ({exc})")
                continue
            try:
                kind = (zone / "type").read_text().strip() or zone.name
            except OSError:
                kind = zone.name
            # Several zones may share a type (e.g. two 'acpitz'); keep them apart.
            temps[kind if kind not in temps else f"{kind}#{zone.name[12:]}"] = value
        return temps


# --------------------------------------------------------------------------- NVML

# Clock-event (formerly "throttle") reason bits worth naming; looked up by name so that
# old and new nvidia-ml-py releases both work.
THROTTLE_REASONS = ("GpuIdle", "ApplicationsClocksSetting", "SwPowerCap", "HwSlowdown",
                    "SyncBoost", "SwThermalSlowdown", "HwThermalSlowdown",
                    "HwPowerBrakeSlowdown", "DisplayClockSetting")


class NvmlBackend(Backend):
    """Every NVIDIA GPU: core and (where reported) memory temperature, SM clock, throttle
    reasons, power draw and memory used. NVML is initialised on first read; a failure to
    initialise is remembered so an absent driver costs one attempt, not one per sample."""

    name = "nvml"

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list = []
        self._init_error: str | None = None

    def _init(self) -> None:
        if self._nvml is not None or self._init_error:
            return
        try:
            import pynvml
        except ImportError:
            self._init_error = "nvidia-ml-py (pynvml) is not installed"
            return
        try:
            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                             for i in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError as exc:
            self._init_error = f"NVML: {exc}"
            return
        self._nvml = pynvml
        if not self._handles:
            self._init_error = "no NVIDIA GPU found"

    def read(self) -> Reading:
        self._init()
        if self._init_error:
            return make_reading(self.name, {}, errors=[self._init_error])
        temps: dict[str, float] = {}
        extra: dict[str, Any] = {}
        for i, handle in enumerate(self._handles):
            gpu_temps, extra[f"gpu{i}"] = self._read_device(handle)
            temps.update({f"gpu{i}{suffix}": v for suffix, v in gpu_temps.items()})
        errors = [] if temps else ["no GPU temperature could be read"]
        return make_reading(self.name, temps, extra=extra, errors=errors)

    def _call(self, fn: str, *args: Any) -> Any:
        """An NVML query, or None where this GPU/driver does not support it."""
        try:
            return getattr(self._nvml, fn)(*args)
        except (self._nvml.NVMLError, AttributeError):
            return None

    def _read_device(self, handle: Any) -> tuple[dict[str, float], dict[str, Any]]:
        nv = self._nvml
        temps = {}
        core = self._call("nvmlDeviceGetTemperature", handle, nv.NVML_TEMPERATURE_GPU)
        if core is not None:
            temps[""] = float(core)
        mem = self._memory_temperature(handle)
        if mem:
            temps["_mem"] = mem
        power = self._call("nvmlDeviceGetPowerUsage", handle)
        meminfo = self._call("nvmlDeviceGetMemoryInfo", handle)
        info = {
            "sm_clock_mhz": self._call("nvmlDeviceGetClockInfo", handle, nv.NVML_CLOCK_SM),
            "power_w": None if power is None else round(power / 1000.0, 1),
            "memory_used_mib": None if meminfo is None else round(meminfo.used / 2**20),
            "throttle": self._throttle_reasons(handle),
        }
        return temps, info

    def _memory_temperature(self, handle: Any) -> float | None:
        field_id = getattr(self._nvml, "NVML_FI_DEV_MEMORY_TEMP", None)
        values = None if field_id is None else self._call("nvmlDeviceGetFieldValues", handle, [field_id])
        if not values or values[0].nvmlReturn != self._nvml.NVML_SUCCESS:
            return None
        value = float(values[0].value.uiVal)
        return value or None  # 0 means "not reported" on boards without an HBM sensor

    def _throttle_reasons(self, handle: Any) -> list[str] | None:
        mask = self._call("nvmlDeviceGetCurrentClocksEventReasons", handle)
        if mask is None:
            mask = self._call("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        if mask is None:
            return None
        names = []
        for reason in THROTTLE_REASONS:
            bit = getattr(self._nvml, f"nvmlClocksEventReason{reason}", None)
            bit = bit if bit is not None else getattr(self._nvml, f"nvmlClocksThrottleReason{reason}", 0)
            if bit and mask & bit:
                names.append(reason)
        return names

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None
            self._handles = []


# --------------------------------------------------------------------------- selection

def _macos(cfg: MonitorConfig) -> Backend:
    from finscale.monitor.macos import MacBackend  # subprocess-based; only loaded when asked
    return MacBackend()


BACKENDS = {
    "nvml": lambda cfg: NvmlBackend(),
    "linux": lambda cfg: LinuxBackend(cfg.sysfs_root),
    "macos": _macos,
    "none": lambda cfg: NoneBackend(),
}
# "auto" tries these in order and keeps the first that reads: a GPU run is limited by the
# GPU, a CPU run by the CPU package.
AUTO_ORDER = ("nvml", "linux", "macos")


def open_backend(cfg: MonitorConfig) -> tuple[Backend, Reading]:
    """The configured backend (``auto``: the first in AUTO_ORDER that reads) and its first
    reading. With nothing readable, ``auto`` returns a NoneBackend whose readings carry every
    backend's reason, so the unavailable state explains itself."""
    if cfg.backend != "auto":
        if cfg.backend not in BACKENDS:
            raise ValueError(f"monitor.backend: {cfg.backend!r} is not one of "
                             f"{['auto', *BACKENDS]}")
        backend = BACKENDS[cfg.backend](cfg)
        return backend, backend.read()
    reasons = []
    for name in AUTO_ORDER:
        if name == "macos" and sys.platform != "darwin":
            reasons.append("macos: not running on macOS")
            continue
        backend = BACKENDS[name](cfg)
        reading = backend.read()
        if reading.readable:
            log.debug("monitor: auto selected backend %s", name)
            return backend, reading
        reasons.append(f"{name}: {reading.error or 'nothing read'}")
        backend.close()
    fallback = NoneBackend("auto: no readable sensor (" + "; ".join(reasons) + ")")
    return fallback, fallback.read()
