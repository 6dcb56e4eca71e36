"""`finscale run`: the whole study, resumably; `--dry-run` prints the plan."""

from __future__ import annotations

import shlex
import sys

from finscale.cli.commands import COMMANDS
from finscale.cli.common import add_study_args, console, data_dir_arg, load_study_from_args
from finscale.cli.dryrun import print_plan
from finscale.cli.progress import ProgressPrinter, StudyTotals
from finscale.runner import PHASES


def register(sub) -> None:
    p = sub.add_parser(
        "run", help=COMMANDS["run"],
        description="Execute every phase of the study (default: the bundled default study). "
                    "Idempotent: finished work is skipped, interrupted runs resume from their "
                    "checkpoints, HPO studies resume from their storage. Stop cleanly with Ctrl-C, "
                    "SIGTERM or a STOP file in runs/<study>/. Progress: live bars with ETAs on a "
                    "terminal, one line per cell, trial, run and epoch otherwise.")
    add_study_args(p)
    p.add_argument("--phase", action="append", choices=PHASES, default=[], metavar="PHASE",
                   help=f"run only this phase (repeatable): {', '.join(PHASES)}; default: all")
    p.add_argument("--only", nargs="+", default=[], metavar="KEY=VALUE",
                   help="restrict to cells, e.g. --only budget=cpu-s horizon=1, or to axis values, e.g. "
                        "--only model.normalization=zscore (repeat keys for several)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan of the work left (parameters, FLOPs, memory, estimated "
                        "time; finished units are skipped) and exit; offline")
    p.add_argument("--gpu", choices=("H100", "H200", "A100"), default=None,
                   help="--dry-run: cost the plan on this GPU class (default for a study with "
                        "model.device = \"cuda\": H100)")
    p.add_argument("--mfu", type=float, default=None, metavar="F",
                   help="--dry-run: model FLOP utilisation assumed for GPU hours (default 0.35)")
    p.add_argument("--replicates", type=int, default=None, metavar="K",
                   help="train the final phase for K disjoint seed sets (study key `replicates`; "
                        "replicate 0 = the study's seeds, HPO shared) and report how often each "
                        "finding holds across them")
    p.add_argument("--no-monitor", action="store_true", help="do not sample hardware sensors")
    p.add_argument("--require-sensor", action="store_true",
                   help="fail if no temperature sensor can be read (monitor.require_sensor)")
    p.add_argument("--mlflow", action="store_true",
                   help="log final runs and HPO trials to MLflow (tracking.mlflow; needs "
                        "pip install 'finscale[mlflow]'; store: tracking.uri, "
                        "$MLFLOW_TRACKING_URI, or runs/<study>/mlruns/mlflow.db)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run HPO cells, final runs and evaluations in N local worker processes "
                        "(run.workers; results do not depend on N, see run.threads)")
    p.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="local processes (default) or Ray tasks on a cluster (run.executor; needs "
                        "pip install 'finscale[ray]'; see docs/usage.md 'Running on a cluster')")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster address, e.g. auto or HEAD_IP:6379 (run.address)")
    p.set_defaults(handler=_run)


def parse_only(items: list[str], cfg) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Budget and horizon filters of ``--only`` (axis filters: :func:`parse_only_axes`)."""
    budgets, horizons = [], []
    for item in items:
        key, sep, value = item.partition("=")
        if "." in key and sep:
            continue  # an axis filter
        if key == "budget" and sep:
            budgets += value.split(",")
        elif key == "horizon" and sep:
            try:
                horizons += [int(v) for v in value.split(",")]
            except ValueError:
                raise ValueError(f"--only {item!r}: horizon must be an integer") from None
        else:
            raise ValueError(f"--only {item!r}: expected budget=NAME, horizon=N or AXIS.KEY=VALUE")
    for b in budgets:
        if b not in cfg.model.budgets:
            raise ValueError(f"--only budget={b}: not in model.budgets ({', '.join(cfg.model.budgets)})")
    for h in horizons:
        if h not in cfg.target.horizons:
            raise ValueError(f"--only horizon={h}: not in target.horizons {list(cfg.target.horizons)}")
    return tuple(budgets), tuple(horizons)


def parse_only_axes(items: list[str], cfg) -> dict:
    """``--only model.normalization=zscore``: {axis key: [value text, ...]}, checked."""
    from finscale.selection import Selection, selected_cells

    axes: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if "." in key and sep:
            axes.setdefault(key, []).extend(value.split(","))
    if axes:
        selected_cells(cfg, Selection(axes=axes))  # raises naming an unknown axis key or value
    return axes


def study_totals(cfg, phases, budgets, horizons, axes) -> StudyTotals:
    """Units of work of the selected phases (HPO trials, final runs, evaluations), for the
    whole-study ETA of the progress lines (finished units are discounted as they are met)."""
    from finscale.runspec import cells, seed_sets
    from finscale.study_axes import variants

    units, n_cells, n_runs = {}, 0, 0
    by_budget: dict[str, int] = {}
    for var in variants(cfg, axes or None):
        var_cells = cells(var, budgets, horizons)
        n_cells += len(var_cells)
        per_cell = sum(len(seeds) for seeds in seed_sets(var))
        n_runs += len(var_cells) * per_cell
        for budget, _ in var_cells:
            by_budget[budget] = by_budget.get(budget, 0) + per_cell
    if "hpo" in phases and cfg.hpo.mode == "search":
        units["hpo"] = n_cells * cfg.hpo.trials
    for phase in ("final", "evaluate"):
        if phase in phases:
            units[phase] = n_runs
    return StudyTotals(units, runs_by_budget=by_budget if "final" in phases else {},
                       workers=cfg.run.workers if cfg.run.executor == "local" else 1)


def resume_command(args) -> str:
    """The command line that was run: rerunning it resumes (runs are idempotent)."""
    return " ".join(shlex.quote(a) for a in ["finscale", *sys.argv[1:]])


def _run(args) -> int:
    if args.require_sensor:
        args.overrides.append("monitor.require_sensor=true")
    if args.mlflow:
        args.overrides.append("tracking.mlflow=true")
    for flag, key in (("workers", "run.workers"), ("executor", "run.executor"), ("address", "run.address")):
        if getattr(args, flag) is not None:
            args.overrides.append(f"{key}={getattr(args, flag)}")
    if args.replicates is not None:
        if args.replicates < 1:
            raise ValueError(f"--replicates {args.replicates}: expected an integer >= 1 "
                             "(1 = the study's seeds only)")
        args.overrides.append(f"replicates={args.replicates}")
    cfg = load_study_from_args(args)  # bad keys and values fail here, before torch loads
    from finscale import tracking
    from finscale.runner.study import RunOptions, StudyStopped, run_study
    from finscale.runspec import seed_sets

    seed_sets(cfg)  # colliding replicate seed sets: a one-line error before any work
    budgets, horizons = parse_only(args.only, cfg)
    axes = parse_only_axes(args.only, cfg)
    if args.dry_run:
        if args.mfu is not None and not 0 < args.mfu <= 1:
            raise ValueError(f"--mfu {args.mfu}: expected a fraction in (0, 1], e.g. 0.35")
        return print_plan(cfg, budgets, horizons, data_dir_arg(args), axes, args.gpu, args.mfu)
    tracking.check_available(cfg)  # before any work: never run untracked by mistake
    totals = study_totals(cfg, tuple(args.phase) or PHASES, budgets, horizons, axes)
    try:
        with ProgressPrinter(totals=totals, epochs=False) as on_event:
            opts = RunOptions(phases=tuple(args.phase) or PHASES, budgets=budgets, horizons=horizons, axes=axes,
                              data_dir=data_dir_arg(args), on_event=on_event, monitor=not args.no_monitor)
            summary = run_study(cfg, opts)
    except StudyStopped as exc:
        from finscale.stopping import resume_command as with_stop_file

        command = with_stop_file(cfg.study_dir / "STOP", resume_command(args))
        console.print(f"{exc.status}: {exc}. Checkpointed; resume with:\n  {command}")
        return 3
    console.print(f"final runs trained: {len(summary.done)}, already done: {len(summary.skipped)}, "
                  f"failed: {len(summary.failed)}")
    for run_id in summary.failed:
        console.print(f"FAILED: {run_id} (see its status.json)")
    if summary.report:
        from finscale.cli.report import print_findings, print_versus_baseline

        print_findings(summary.report.parent)
        print_versus_baseline(summary.report.parent)
        console.print(f"report: {summary.report.resolve()}")
    if tracking.enabled(cfg):
        console.print(f"MLflow: {tracking.ui_command(cfg)}")
    return 1 if summary.failed else 0
