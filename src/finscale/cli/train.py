"""`finscale train`: one final run (budget x horizon x seed) on the contiguous split."""

from __future__ import annotations

from finscale.cli.commands import COMMANDS
from finscale.cli.common import add_study_args, console, data_dir_arg, load_study_from_args, print_table
from finscale.cli.progress import ProgressPrinter

SUMMARY_KEYS = ("best_epoch", "epochs_run", "val_log_loss", "val_auc", "val_brier", "val_skill",
                "val_base_rate", "val_pred_std", "collapsed")


def register(sub) -> None:
    p = sub.add_parser(
        "train", help=COMMANDS["train"],
        description="Train one run of the study on its contiguous split into "
                    "runs/<study>/final/<run_id>/. Uses the cell's HPO best parameters when they "
                    "exist (or hpo.table in fixed mode). Rerunning a finished run does nothing; an "
                    "interrupted run resumes from its latest checkpoint.")
    add_study_args(p)
    p.add_argument("--budget", required=True, metavar="NAME", help="one of the study's model.budgets")
    p.add_argument("--horizon", type=int, required=True, metavar="N", help="one of the study's target.horizons")
    p.add_argument("--seed", type=int, default=None, metavar="N", help="default: the study's first seed")
    p.set_defaults(handler=_train)


def check_cell(cfg, budget: str, horizon: int) -> None:
    if budget not in cfg.model.budgets:
        raise ValueError(f"--budget {budget!r}: not in the study's model.budgets "
                         f"({', '.join(cfg.model.budgets)})")
    if horizon not in cfg.target.horizons:
        raise ValueError(f"--horizon {horizon}: not in the study's target.horizons "
                         f"({', '.join(map(str, cfg.target.horizons))})")


def _train(args) -> int:
    from finscale.hpo.results import cell_params
    from finscale.rundata import prepare
    from finscale.runner.final import execute_final
    from finscale.runspec import final_dir, make_spec
    from finscale.stopping import StopRequest
    from finscale.train import Controls, RunInterrupted, TrainingFailed

    cfg = load_study_from_args(args)
    check_cell(cfg, args.budget, args.horizon)
    seed = cfg.seeds[0] if args.seed is None else args.seed
    params, source = cell_params(cfg, args.budget, args.horizon)
    spec = make_spec(cfg, args.budget, args.horizon, seed, params)
    path = final_dir(cfg, spec)
    console.print(f"run {path} (parameters: {source})")
    prep = prepare(cfg, data_dir_arg(args))
    with StopRequest(cfg.study_dir / "STOP") as stop, ProgressPrinter() as on_event:
        try:
            final, skipped = execute_final(cfg, prep, spec,
                                           controls=Controls(should_stop=stop.reason, on_event=on_event))
        except RunInterrupted as exc:
            from finscale.stopping import resume_command

            hint = resume_command(cfg.study_dir / "STOP", "the same command")
            console.print(f"{exc.status}: {exc}; checkpointed. Resume with: {hint}")
            return 3
        except TrainingFailed as exc:
            console.print(f"failed: {exc} (see {path / 'status.json'})")
            return 1
    if skipped:
        console.print("already done: nothing to do")
    print_table(f"{spec.run_id}", ["metric", "value"],
                [["params (measured)", final["params"]["total"]],
                 *[[k, final.get(k)] for k in SUMMARY_KEYS]])
    return 0
