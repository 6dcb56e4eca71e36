"""`finscale export`: one self-contained reproduction script per final run."""

from __future__ import annotations

from pathlib import Path

from finscale.cli.commands import COMMANDS
from finscale.cli.common import add_study_args, console, load_study_from_args
from finscale.cli.run import parse_only, parse_only_axes


def register(sub) -> None:
    p = sub.add_parser(
        "export", help=COMMANDS["export"],
        description="Write DIR/<run_id>.py for every final run (budget x horizon x seed), each "
                    "embedding the resolved study config and the run's chosen hyperparameters "
                    "(HPO best, or hpo.table in fixed mode), plus DIR/run_all.sh running them in order. Scripts "
                    "need only finscale installed and resume where they stopped.")
    add_study_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--only", nargs="+", default=[], metavar="KEY=VALUE",
                   help="restrict to cells, e.g. --only budget=cpu-s horizon=1")
    p.set_defaults(handler=_export)


def _export(args) -> int:
    from finscale.runner.export import export_scripts
    from finscale.runner.study import RunOptions

    cfg = load_study_from_args(args)
    budgets, horizons = parse_only(args.only, cfg)
    axes = parse_only_axes(args.only, cfg)
    scripts = export_scripts(cfg, Path(args.out), RunOptions(budgets=budgets, horizons=horizons, axes=axes))
    console.print(f"wrote {len(scripts)} scripts and run_all.sh to {args.out}")
    return 0
