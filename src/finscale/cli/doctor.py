"""`finscale doctor`: check the environment, the data store and a study's needs."""

from __future__ import annotations

import json

from finscale.cli.common import console, print_table, resolve_study_path
from finscale.config import load_study


def register(sub) -> None:
    p = sub.add_parser(
        "doctor", help="check Python, torch devices, TA-Lib, optional packages, sensors, "
                       "disk/memory, stored data and the Optuna storage",
        description="One row per check: ok, warning (works, with less) or error (fix before "
                    "running). Exit code 0 when no row is an error, 1 otherwise. With --study, "
                    "disk and memory are checked against the study's plan and its Optuna "
                    "storage is opened.")
    p.add_argument("--study", default=None, metavar="STUDY.toml",
                   help="study file or shipped study name (default, smoke, phase6a)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a study value (implies the default study without --study)")
    p.add_argument("--data-dir", default=None, help="data directory (default: the study's, "
                                                     "$FINSCALE_DATA, or ./data)")
    p.add_argument("--json", action="store_true", help="print {exit_code, checks: [...]} as JSON")
    p.set_defaults(handler=_doctor)


def _doctor(args) -> int:
    from finscale.data import resolve_data_dir
    from finscale.doctor import ERROR, OK, WARNING, exit_code, run_checks

    cfg = None
    if args.study or args.overrides:
        cfg = load_study(resolve_study_path(args.study), args.overrides)
    data_dir = resolve_data_dir(args.data_dir, cfg.data.data_dir if cfg else "")
    checks = run_checks(cfg, data_dir)
    code = exit_code(checks)
    if args.json:
        print(json.dumps({"exit_code": code, "checks": [c.to_dict() for c in checks]}, indent=2))
        return code
    title = f"finscale doctor{f' (study {cfg.name!r})' if cfg else ''}"
    print_table(title, ["check", "status", "detail", "fix"],
                [[c.name, c.status.upper() if c.status != OK else c.status, c.detail, c.fix]
                 for c in checks])
    counts = {s: sum(c.status == s for c in checks) for s in (OK, WARNING, ERROR)}
    console.print(f"{counts[OK]} ok, {counts[WARNING]} warnings, {counts[ERROR]} errors")
    return code
