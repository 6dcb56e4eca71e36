"""`finscale hpo`: Optuna search per budget x horizon cell (resumable, multi-worker)."""

from __future__ import annotations

from finscale.cli.common import add_study_args, console, load_study_from_args, print_table
from finscale.runner.control import StopRequest, resume_command


def register(sub) -> None:
    p = sub.add_parser(
        "hpo", help="hyperparameter search per budget x horizon cell (Optuna)",
        description="Run the study's Optuna search for each budget x horizon cell (default: "
                    "every cell) on the tuning split, never the test period. A cell ends with "
                    "exactly --trials counted trials (COMPLETE + PRUNED + FAIL); rerunning the "
                    "command resumes it, and K workers (here or on other machines sharing "
                    "--storage) split the trials. Writes runs/<study>/hpo/<cell>/best_params.json, "
                    "trials.csv and trials.parquet.")
    add_study_args(p)
    p.add_argument("--budget", action="append", default=None,
                   help="only this budget (repeatable); default: all of model.budgets")
    p.add_argument("--horizon", type=int, action="append", default=None,
                   help="only this horizon (repeatable); default: all of target.horizons")
    p.add_argument("--trials", type=int, default=None, help="trials per cell (default: hpo.trials)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes per cell (default: hpo.workers)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage: sqlite:///path.db, postgresql://user@host/db, or "
                        "journal:<path> (default: hpo.storage, else sqlite:///runs/<study>/optuna.db)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--summary", action="store_true",
                   help="only print the cells' state from the storage; run nothing")
    p.set_defaults(handler=_hpo)


def _cells(cfg, budgets, horizons) -> list[tuple[str, int]]:
    for b in budgets or ():
        if b not in cfg.model.budgets:
            raise ValueError(f"--budget {b!r}: not in the study's model.budgets ({', '.join(cfg.model.budgets)})")
    for h in horizons or ():
        if h not in cfg.target.horizons:
            raise ValueError(f"--horizon {h}: not in the study's target.horizons "
                             f"({', '.join(map(str, cfg.target.horizons))})")
    return [(b, h) for b in (budgets or cfg.model.budgets) for h in (horizons or cfg.target.horizons)]


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
    from finscale.hpo import hpo_summary, run_cell

    cfg = load_study_from_args(args)
    cells = _cells(cfg, args.budget, args.horizon)
    if args.summary:
        for s in hpo_summary(cfg, storage=args.storage):
            if (s["budget"], s["horizon"]) in cells:
                _print_cell(s)
        return 0
    if cfg.hpo.mode != "search":
        console.print("hpo.mode is 'fixed': cells use their [hpo.fixed] parameters; nothing to search")
        return 0
    missing = []
    with StopRequest(cfg.study_dir / "STOP") as stop:
        for budget, horizon in cells:
            console.print(f"cell {budget}-h{horizon}: searching ...")
            s = run_cell(cfg, budget, horizon, trials=args.trials, workers=args.workers,
                         storage=args.storage, data_dir=args.data_dir, should_stop=stop.reason)
            _print_cell(s)
            if s["stopped"]:
                hint = resume_command(cfg.study_dir / "STOP", "the same command")
                console.print(f"stopped: {s['stopped']}. Resume with: {hint}")
                return 3
            if s["best_trial"] is None:
                missing.append(s["cell"])
    if missing:
        console.print(f"no complete trial in cell(s) {', '.join(missing)}: see their trials.csv")
        return 1
    return 0
