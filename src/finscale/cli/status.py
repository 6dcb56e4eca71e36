"""`finscale status`: a table of every HPO cell and final run of the study and its state."""

from __future__ import annotations

import json

from finscale.cli.common import add_study_args, console, load_study_from_args, print_table


def register(sub) -> None:
    p = sub.add_parser("status", help="state of every HPO cell and final run of the study",
                       description="Read the study directory and print, per HPO cell, the "
                                   "trials recorded and the best value, and per final run its "
                                   "state, epoch, validation and test log-loss.")
    add_study_args(p)
    p.set_defaults(handler=_status)


def hpo_rows(cfg) -> list[list]:
    import pandas as pd

    from finscale.runner.runs import best_params_path, cell_name

    rows = []
    for budget in cfg.model.budgets:
        for h in cfg.target.horizons:
            cell = cell_name(budget, h)
            trials_csv = best_params_path(cfg, budget, h).with_name("trials.csv")
            counts = ""
            if trials_csv.exists():
                states = pd.read_csv(trials_csv)["state"].value_counts().to_dict()
                counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(states.items()))
            best = best_params_path(cfg, budget, h)
            value = json.loads(best.read_text()).get("value") if best.exists() else None
            rows.append([cell, f"{counts or 'not started'} (of {cfg.hpo.trials})", value])
    return rows


def final_rows(cfg) -> list[list]:
    from finscale.rundir import RunDir
    from finscale.runner.runs import final_dir
    from finscale.runner.study import RunOptions, final_specs
    from finscale.train import read_final

    rows = []
    for spec in final_specs(cfg, RunOptions()):
        run = RunDir(final_dir(cfg, spec))
        st = run.status()
        final = read_final(run) if st["state"] == "done" else None
        ev = run.read_json("eval.json")
        rows.append([spec.run_id, st["state"], st.get("epoch"),
                     final and final["val_log_loss"],
                     ev and ev["test"]["metrics"]["log_loss"],
                     "collapsed" if final and final["collapsed"] else st.get("reason", "")])
    return rows


def _status(args) -> int:
    cfg = load_study_from_args(args)
    console.print(f"study {cfg.name!r} in {cfg.study_dir}")
    if cfg.hpo.mode == "search":
        print_table("hpo cells", ["cell", "trials", "best val log-loss"], hpo_rows(cfg))
    rows = final_rows(cfg)
    print_table("final runs", ["run", "state", "epoch", "val log-loss", "test log-loss", "note"], rows)
    done = sum(r[1] == "done" for r in rows)
    console.print(f"{done}/{len(rows)} final runs done")
    return 0
