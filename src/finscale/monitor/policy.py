"""Thermal policy: a Reading -> a state -> an action for the trainer.

Consumes: a :class:`~finscale.monitor.sensors.Reading` and a MonitorConfig's thresholds.
Produces: a state (``unavailable|normal|acceptable|warning|critical``) and an action
(``continue|pause|stop``).
Guarantees: a reading with neither a temperature nor a pressure level is ``unavailable`` —
never ``normal``; temperatures and pressure levels, when both are present, give the worse
of their two states; resuming needs the reading to fall below ``resume_c`` (hysteresis),
not merely out of the warning band.
"""

from __future__ import annotations

from finscale.config import MonitorConfig
from finscale.monitor.sensors import Reading

__all__ = ["STATES", "ACTIONS", "classify", "action_for", "is_cool", "validate_thresholds",
           "temperature_state"]

# Ordered by severity; "unavailable" is apart: it is not a temperature.
STATES = ("unavailable", "normal", "acceptable", "warning", "critical")
SEVERITY = {"normal": 0, "acceptable": 1, "warning": 2, "critical": 3}
ACTIONS = {"unavailable": "continue", "normal": "continue", "acceptable": "continue",
           "warning": "pause", "critical": "stop"}
PRESSURE_STATES = {"nominal": "normal", "moderate": "acceptable", "heavy": "warning",
                   "critical": "critical"}
COOL_PRESSURES = ("nominal", "moderate")


def validate_thresholds(cfg: MonitorConfig) -> None:
    """normal_c <= warning_c <= critical_c and resume_c < warning_c, else ValueError."""
    if not (cfg.normal_c <= cfg.warning_c <= cfg.critical_c):
        raise ValueError(f"monitor: expected normal_c <= warning_c <= critical_c, got "
                         f"{cfg.normal_c} / {cfg.warning_c} / {cfg.critical_c}")
    if not cfg.resume_c < cfg.warning_c:
        raise ValueError(f"monitor.resume_c: {cfg.resume_c} must be below monitor.warning_c "
                         f"{cfg.warning_c}, or a pause could never end")


def temperature_state(max_c: float, cfg: MonitorConfig) -> str:
    if max_c >= cfg.critical_c:
        return "critical"
    if max_c >= cfg.warning_c:
        return "warning"
    if max_c >= cfg.normal_c:
        return "acceptable"
    return "normal"


def classify(reading: Reading, cfg: MonitorConfig) -> str:
    """The state of one reading (the hottest sensor and the pressure level, worst wins)."""
    states = []
    if reading.max_c is not None:
        states.append(temperature_state(reading.max_c, cfg))
    if reading.pressure in PRESSURE_STATES:
        states.append(PRESSURE_STATES[reading.pressure])
    if not states:
        return "unavailable"
    return max(states, key=SEVERITY.__getitem__)


def action_for(state: str) -> str:
    """'continue' | 'pause' | 'stop' for a state."""
    return ACTIONS[state]


def is_cool(reading: Reading, cfg: MonitorConfig) -> bool:
    """True when a paused run may resume: every reported value is below the resume level."""
    if not reading.readable:
        return False
    temp_ok = reading.max_c is None or reading.max_c < cfg.resume_c
    pressure_ok = reading.pressure is None or reading.pressure in COOL_PRESSURES
    return temp_ok and pressure_ok
