"""`finscale doctor`: check the environment, the data store and a study's needs."""

from __future__ import annotations

from finscale.cli.commands import COMMANDS
from finscale.cli.common import Output, add_json_arg, add_study_args, data_dir_arg, study_arg


def register(sub) -> None:
    p = sub.add_parser(
        "doctor", help=COMMANDS["doctor"],
        description="One row per check: ok, warning (works, with less) or error (fix before "
                    "running). Exit code 0 when no row is an error, 1 otherwise. With a STUDY "
                    "(or --set), disk and memory are checked against the study's plan and its "
                    "Optuna storage is opened.")
    add_study_args(p, deprecated_flag=True)
    add_json_arg(p)
    p.set_defaults(handler=_doctor)


def _doctor(args) -> int:
    from finscale.cli.common import resolve_study_path
    from finscale.config import load_study
    from finscale.data import resolve_data_dir
    from finscale.doctor import ERROR, OK, WARNING, exit_code, run_checks

    study = study_arg(args)
    cfg = None
    if study or args.overrides:
        cfg = load_study(resolve_study_path(study), args.overrides)
    data_dir = resolve_data_dir(data_dir_arg(args), cfg.data.data_dir if cfg else "")
    checks = run_checks(cfg, data_dir)
    code = exit_code(checks)
    out = Output(args.json)
    out.value(exit_code=code, study=cfg.name if cfg else None)
    title = f"finscale doctor{f' (study {cfg.name!r})' if cfg else ''}"
    out.table("checks", title, ["check", "status", "detail", "fix"],
              [[c.name, c.status if args.json or c.status == OK else c.status.upper(), c.detail, c.fix]
               for c in checks], keys=["name", "status", "detail", "fix"])
    counts = {s: sum(c.status == s for c in checks) for s in (OK, WARNING, ERROR)}
    out.line(f"{counts[OK]} ok, {counts[WARNING]} warnings, {counts[ERROR]} errors")
    return out.done(code)
