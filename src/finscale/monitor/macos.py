"""macOS thermal backend: ``powermetrics`` when it runs without a password, else ``pmset``.

Consumes: nothing but the two system commands. Produces: Readings with a normalised
``pressure`` level (nominal|moderate|heavy|critical) and, where powermetrics' SMC sampler
exists (Intel Macs), CPU/GPU die temperatures in °C.
Guarantees: never prompts for a password (``sudo -n``, stdin closed, short timeout); a
powermetrics that cannot run is probed once and then left alone; ``read()`` never raises.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess

from finscale.monitor.reading import Backend, Reading, make_reading

__all__ = ["MacBackend", "parse_pmset_therm", "parse_powermetrics"]

log = logging.getLogger(__name__)

# powermetrics' "Current pressure level" values -> the policy's pressure vocabulary.
PRESSURE_LEVELS = {"nominal": "nominal", "moderate": "moderate", "fair": "moderate",
                   "heavy": "heavy", "serious": "heavy", "trapping": "critical",
                   "sleeping": "critical", "critical": "critical"}
# IOPM thermal warning levels (kIOPMThermalWarningLevelNormal/Danger/Crisis = 0/5/10).
PMSET_WARNING_HEAVY, PMSET_WARNING_CRITICAL = 1, 10
# Samplers tried in order: 'smc' (die temperatures) exists only on Intel Macs.
POWERMETRICS_SAMPLERS = ("smc,thermal", "thermal")
TIMEOUT_S = 5.0


def parse_powermetrics(text: str) -> tuple[dict[str, float], str | None]:
    """Die temperatures ('CPU die temperature: 50.18 C') and the pressure level."""
    temps = {f"{m.group(1).lower()}_die": float(m.group(2))
             for m in re.finditer(r"^\s*(\w+) die temperature:\s*([-\d.]+)\s*C", text, re.M)}
    m = re.search(r"pressure level:\s*(\w+)", text, re.I)
    return temps, PRESSURE_LEVELS.get(m.group(1).lower()) if m else None


def parse_pmset_therm(text: str) -> tuple[str | None, dict]:
    """Pressure level and details from ``pmset -g therm``.

    A recorded thermal warning level maps to heavy (>= 1) or critical (>= 10, 'crisis');
    a CPU speed limit below 100 % alone is only 'moderate': macOS also lowers it for
    reasons other than heat (a missing battery, a weak charger).
    """
    extra: dict = {}
    for key, value in re.findall(r"^\s*(CPU_\w+)\s*=\s*(\d+)", text, re.M):
        extra[key.lower()] = int(value)
    warning = re.search(r"thermal warning level\s*[=:]\s*(\d+)", text, re.I)
    if warning:
        level = int(warning.group(1))
        extra["thermal_warning_level"] = level
        if level >= PMSET_WARNING_CRITICAL:
            return "critical", extra
        if level >= PMSET_WARNING_HEAVY:
            return "heavy", extra
    elif "thermal warning level" not in text.lower() and not extra:
        return None, extra  # not pmset's therm output at all
    if extra.get("cpu_speed_limit", 100) < 100:
        return "moderate", extra
    return "nominal", extra


def _run(cmd: list[str]) -> tuple[int, str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=TIMEOUT_S, check=False)
    return proc.returncode, proc.stdout


class MacBackend(Backend):
    """Thermal pressure without sudo (``pmset -g therm``); powermetrics only when it runs
    without a password (root, or a NOPASSWD sudoers entry)."""

    name = "macos"

    def __init__(self) -> None:
        self._powermetrics: list[str] | None = None
        self._probed = False
        self.powermetrics_note = ""

    def _powermetrics_cmd(self) -> list[str] | None:
        """Find a powermetrics invocation that works non-interactively, once."""
        if self._probed:
            return self._powermetrics
        self._probed = True
        prefix = ["powermetrics"] if os.geteuid() == 0 else ["sudo", "-n", "powermetrics"]
        for samplers in POWERMETRICS_SAMPLERS:
            cmd = [*prefix, "--samplers", samplers, "-n", "1", "-i", "100"]
            try:
                rc, _ = _run(cmd)
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.powermetrics_note = f"powermetrics unusable: {exc}"
                break
            if rc == 0:
                self._powermetrics = cmd
                return cmd
            self.powermetrics_note = f"powermetrics unusable without a password (exit {rc})"
        log.debug("monitor: %s; using pmset", self.powermetrics_note)
        return None

    def read(self) -> Reading:
        errors: list[str] = []
        temps: dict[str, float] = {}
        pressure = None
        extra: dict = {}
        cmd = self._powermetrics_cmd()
        if cmd:
            try:
                temps, pressure = parse_powermetrics(_run(cmd)[1])
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"powermetrics: {exc}")
        elif self.powermetrics_note:
            extra["powermetrics"] = self.powermetrics_note
        if pressure is None:
            try:
                rc, out = _run(["pmset", "-g", "therm"])
                pressure, details = parse_pmset_therm(out) if rc == 0 else (None, {})
                extra.update(details)
                if pressure is None:
                    errors.append(f"pmset -g therm: exit {rc}, no thermal state in its output")
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"pmset: {exc}")
        return make_reading(self.name, temps, pressure=pressure, extra=extra, errors=errors)
