"""`finscale evaluate`: score every finished final run on the test split (once) and list them."""

from __future__ import annotations

from finscale.cli.commands import COMMANDS
from finscale.cli.common import add_study_args, console, data_dir_arg, load_study_from_args, print_table
from finscale.cli.progress import ProgressPrinter
from finscale.formatting import interval
from finscale.runner.study import RunOptions, run_study
from finscale.study_runs import collect


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help=COMMANDS["evaluate"],
        description="Run the evaluate phase only: each done final run without eval.json is scored "
                    "once on the test split (metrics with block-bootstrap CIs, baselines, paired "
                    "tests, backtest); runs already evaluated are left as they are. Prints the "
                    "test metrics of every evaluated run.")
    add_study_args(p)
    p.set_defaults(handler=_evaluate)


def _evaluate(args) -> int:
    from finscale import tracking

    cfg = load_study_from_args(args)
    tracking.check_available(cfg)
    with ProgressPrinter() as on_event:
        run_study(cfg, RunOptions(phases=("evaluate",), data_dir=data_dir_arg(args), on_event=on_event,
                                  monitor=False))
    sr = collect(cfg)
    evals = sr.current(sr.evals)
    if evals.empty:
        console.print(f"no evaluated final runs in {cfg.study_dir / 'final'}: train them first "
                      "(`finscale run`)")
        return 1
    evals = evals.merge(sr.runs[["run_id", "params_total"]], on="run_id")
    evals = evals.sort_values(["horizon", "params_total", "seed"])
    print_table(f"test metrics of study {cfg.name!r} (log-loss with its block-bootstrap 95% CI)",
                ["run", "params", "log-loss", "CI", "AUC", "skill", "Brier", "ECE", "collapsed"],
                [[r.run_id, r.params_total, r.log_loss, interval((r.log_loss_lo, r.log_loss_hi), missing=""),
                  r.auc, r.skill, r.brier, r.ece, "yes" if r.collapsed else ""]
                 for r in evals.itertuples()])
    pending = sr.current(sr.runs)
    pending = pending[pending["state"] != "done"]
    if len(pending) or sr.missing:
        console.print(f"{len(pending) + len(sr.missing)} final run(s) not done yet (see `finscale status`)")
    return 0
