"""`finscale monitor`: live sensor readings, one row per sample, with the policy's state."""

from __future__ import annotations

import time

from finscale.cli.commands import COMMANDS
from finscale.cli.common import add_study_args, load_study_from_args
from finscale.config import replace_section
from finscale.monitor import iter_readings
from finscale.monitor.sensors import BACKENDS, Reading

HEADER = f"{'time':<8}  {'state':<11}  {'max °C':>6}  {'backend':<7}  sensors"


def register(sub) -> None:
    p = sub.add_parser(
        "monitor", help=COMMANDS["monitor"],
        description="Sample the study's thermal sensors and print one row per sample with the "
                    "policy state (normal/acceptable/warning/critical, or unavailable when no "
                    "sensor can be read). Runs until Ctrl-C unless --count is given.")
    add_study_args(p)
    p.add_argument("--interval", type=float, default=None, metavar="S",
                   help="seconds between samples (default: monitor.interval_s)")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="stop after N samples (default: until Ctrl-C)")
    p.add_argument("--backend", choices=["auto", *BACKENDS], default=None,
                   help="sensor backend (default: monitor.backend)")
    p.add_argument("--sysfs-root", default=None, metavar="DIR",
                   help="directory holding thermal_zone*/temp (default: monitor.sysfs_root)")
    p.add_argument("--require-sensor", action="store_true",
                   help="exit with an error when no sensor can be read")
    p.set_defaults(handler=_monitor)


def _monitor(args) -> int:
    if args.count is not None and args.count < 1:
        raise ValueError(f"--count: expected a positive number of samples, got {args.count}")
    cfg = load_study_from_args(args).monitor
    changes = {k: v for k, v in (("interval_s", args.interval), ("backend", args.backend),
                                 ("sysfs_root", args.sysfs_root)) if v is not None}
    if args.require_sensor:
        changes["require_sensor"] = True
    cfg = replace_section(cfg, **changes)
    try:
        for i, (reading, state) in enumerate(iter_readings(cfg, args.count)):
            if i == 0:  # after the first reading, so a require_sensor error stands alone
                print(HEADER, flush=True)
            print(format_row(reading, state), flush=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to end an unbounded monitor
    return 0


def format_row(reading: Reading, state: str) -> str:
    max_c = "-" if reading.max_c is None else f"{reading.max_c:.1f}"
    clock = time.strftime("%H:%M:%S", time.localtime(reading.time))
    return f"{clock:<8}  {state:<11}  {max_c:>6}  {reading.backend:<7}  {_details(reading)}"


def _details(reading: Reading) -> str:
    parts = [f"{name}={value:.1f}" for name, value in reading.temperatures.items()]
    if reading.pressure:
        parts.append(f"pressure={reading.pressure}")
    for key, value in reading.extra.items():
        if isinstance(value, dict):
            inner = " ".join(f"{k}={v}" for k, v in value.items() if v not in (None, []))
            parts.append(f"{key}[{inner}]")
        else:
            parts.append(f"{key}={value}")
    if not reading.readable and reading.error:
        parts.append(f"({reading.error})")
    return " ".join(parts)
