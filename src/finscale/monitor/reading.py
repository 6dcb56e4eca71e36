"""A sensor reading and the backend interface every sensor source implements.

Consumes: raw temperatures (°C) or a pressure level from a backend. Produces: frozen
:class:`Reading` objects. Guarantees: implausible values (driver placeholders) are dropped
with a reason, so a reading never reports heat that was not measured.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PLAUSIBLE_C", "Reading", "Backend", "make_reading"]

# Readings outside this range are driver placeholders (e.g. -274 °C, 255 °C), not heat.
PLAUSIBLE_C = (-50.0, 200.0)


@dataclass(frozen=True)
class Reading:
    """One sample of every sensor a backend sees.

    ``temperatures`` maps sensor name -> °C; ``max_c`` is their maximum (None when nothing
    was read); ``pressure`` is a normalised thermal-pressure level for sensors that report
    a level instead of degrees (macOS: nominal|moderate|heavy|critical); ``extra`` holds
    backend details (clocks, power, throttle reasons); ``error`` says what could not be read.
    """

    time: float
    backend: str
    temperatures: dict[str, float] = field(default_factory=dict)
    max_c: float | None = None
    pressure: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def readable(self) -> bool:
        return self.max_c is not None or self.pressure is not None

    def to_dict(self) -> dict:
        return asdict(self)


def make_reading(backend: str, temperatures: dict[str, float], *, pressure: str | None = None,
                 extra: dict | None = None, errors: list[str] | tuple = ()) -> Reading:
    """Build a Reading, dropping implausible values and computing ``max_c``."""
    errors = list(errors)
    kept = {}
    for name, value in temperatures.items():
        if PLAUSIBLE_C[0] < value < PLAUSIBLE_C[1]:
            kept[name] = round(float(value), 2)
        else:
            errors.append(f"{name}: implausible value {value} °C ignored")
    return Reading(time=time.time(), backend=backend, temperatures=kept,
                   max_c=max(kept.values()) if kept else None, pressure=pressure,
                   extra=extra or {}, error="; ".join(errors) or None)


class Backend:
    """A sensor source. Subclasses implement ``read()``; it must not raise."""

    name = "base"

    def read(self) -> Reading:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release library handles (NVML); a no-op for file-based backends."""
