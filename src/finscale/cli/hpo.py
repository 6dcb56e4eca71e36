"""`finscale hpo`: Optuna search per budget x horizon cell (resumable, multi-worker)."""

from __future__ import annotations

from finscale.cli.commands import COMMANDS
from finscale.cli.common import (
    Output,
    add_json_arg,
    add_study_args,
    console,
    data_dir_arg,
    load_study_from_args,
    print_table,
)
from finscale.cli.progress import ProgressPrinter
from finscale.stopping import resume_command


def register(sub) -> None:
    p = sub.add_parser(
        "hpo", help=COMMANDS["hpo"],
        description="Run the study's Optuna search for each budget x horizon cell (default: "
                    "every cell) on the tuning split, never the test period. A cell ends with "
                    "exactly --trials counted trials (COMPLETE + PRUNED + FAIL); rerunning the "
                    "command resumes it. --workers N searches N cells at once on this machine; "
                    "processes on other machines sharing --storage split a cell's trials. With "
                    "[axes], every variant's cells (those its final runs use). Writes "
                    "runs/<study>/hpo/<cell>/best_params.json, trials.csv and trials.parquet.")
    add_study_args(p)
    p.add_argument("--budget", action="append", default=None, metavar="NAME",
                   help="only this budget (repeatable); default: all of model.budgets")
    p.add_argument("--horizon", type=int, action="append", default=None, metavar="N",
                   help="only this horizon (repeatable); default: all of target.horizons")
    p.add_argument("--trials", type=int, default=None, metavar="N", help="trials per cell (default: hpo.trials)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local worker processes, each searching one cell at a time (run.workers, "
                        "as for finscale run; results do not depend on N, see run.threads)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage: sqlite:///path.db, postgresql://user@host/db, or "
                        "journal:<path> (default: hpo.storage, else sqlite:///runs/<study>/optuna.db)")
    p.add_argument("--summary", action="store_true",
                   help="only print the cells' state from the storage; run nothing")
    p.add_argument("--mlflow", action="store_true",
                   help="log each trial to MLflow (tracking.mlflow; needs pip install 'finscale[mlflow]')")
    add_json_arg(p)
    p.set_defaults(handler=_hpo)


def _selection(cfg, budgets, horizons):
    """The --budget/--horizon filter, checked against the study."""
    from finscale.selection import Selection

    for b in budgets or ():
        if b not in cfg.model.budgets:
            raise ValueError(f"--budget {b!r}: not in the study's model.budgets ({', '.join(cfg.model.budgets)})")
    for h in horizons or ():
        if h not in cfg.target.horizons:
            raise ValueError(f"--horizon {h}: not in the study's target.horizons "
                             f"({', '.join(map(str, cfg.target.horizons))})")
    return Selection(tuple(budgets or ()), tuple(horizons or ()))


def _print_cell(s: dict) -> None:
    counts = s.get("counts") or {}
    rows = [
        ["study name", s["study_name"]], ["storage", s["storage"]],
        ["trials (counted / target)", f"{counts.get('counted', 0)} / {s['n_trials']}"],
        ["complete / pruned / failed", f"{counts.get('complete', 0)} / {counts.get('pruned', 0)} / "
                                       f"{counts.get('fail', 0)}"],
        ["running / waiting", f"{counts.get('running', 0)} / {counts.get('waiting', 0)}"],
        ["best value (val log-loss)", s.get("best_value")], ["best trial", s.get("best_trial")],
        ["best params", s.get("best_params")], ["params (measured)", s.get("params_total")],
        ["importances", s.get("importances") or s.get("importance_note")],
    ]
    if s.get("stopped"):
        rows.append(["stopped", s["stopped"]])
    if s.get("elapsed_s") is not None:
        rows.append(["elapsed s", s["elapsed_s"]])
    print_table(f"hpo {s['cell']}" + ("" if s.get("done") else " (incomplete)"), ["", "value"], rows)


def _hpo(args) -> int:
    import json

    from finscale import tracking
    from finscale.hpo import hpo_summary
    from finscale.runner.study import RunOptions, StudyStopped, run_study

    if args.mlflow:
        args.overrides.append("tracking.mlflow=true")
    # One meaning of --workers, --trials and --storage: the study keys (as `finscale run` reads them).
    for value, key in ((args.workers, "run.workers"), (args.trials, "hpo.trials")):
        if value is not None:
            args.overrides.append(f"{key}={value}")
    if args.storage is not None:
        args.overrides.append(f"hpo.storage={json.dumps(args.storage)}")
    cfg = load_study_from_args(args)
    sel = _selection(cfg, args.budget, args.horizon)
    if args.summary:
        summaries = hpo_summary(cfg, sel=sel)
        if args.json:
            out = Output(True)
            out.value(study=cfg.name, metric="val_log_loss", tuning_split=cfg.hpo.split,
                      cells=summaries)
            return out.done()
        for s in summaries:
            _print_cell(s)
        return 0
    if args.json:
        raise ValueError("--json: only with --summary (a search prints progress, then its summary)")
    if cfg.hpo.mode != "search":
        console.print("hpo.mode is 'fixed': cells use their [hpo.table] parameters; nothing to search")
        return 0
    tracking.check_available(cfg)
    try:
        with ProgressPrinter() as on_event:
            run_study(cfg, RunOptions(phases=("hpo",), budgets=sel.budgets, horizons=sel.horizons,
                                      data_dir=data_dir_arg(args), on_event=on_event))
    except StudyStopped as exc:
        hint = resume_command(cfg.study_dir / "STOP", "the same command")
        console.print(f"stopped: {exc}. Resume with: {hint}")
        return 3
    summaries = hpo_summary(cfg, sel=sel)
    for s in summaries:
        _print_cell(s)
    missing = [s["cell"] for s in summaries if s["best_trial"] is None]
    if missing:
        console.print(f"no complete trial in cell(s) {', '.join(missing)}: see their trials.csv")
        return 1
    return 0
