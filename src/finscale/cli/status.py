"""`finscale status`: a table of every HPO cell and final run of the study and its state."""

from __future__ import annotations

from finscale.cli.common import add_study_args, console, load_study_from_args, print_table


def register(sub) -> None:
    p = sub.add_parser("status", help="state of every HPO cell and final run of the study",
                       description="Read the study directory and print, per HPO cell, the "
                                   "trials recorded and the best value, and per final run its "
                                   "state, epoch, validation and test log-loss.")
    add_study_args(p)
    p.set_defaults(handler=_status)


def hpo_rows(cfg) -> list[list]:
    from finscale.hpo.results import results_frame
    from finscale.spec import cell_name, cells

    frame = results_frame(cfg)
    recorded = {r["cell"]: r for r in frame.to_dict("records")} if not frame.empty else {}
    rows = []
    for budget, h in cells(cfg):
        r = recorded.get(cell_name(budget, h), {})
        value = r.get("best_value")
        rows.append([cell_name(budget, h), f"{r.get('trial_states') or 'not started'} "
                     f"(of {cfg.hpo.trials})", None if value is None or value != value else value])
    return rows


def final_rows(cfg) -> list[list]:
    from finscale.hpo.results import final_specs
    from finscale.rundir import RunDir
    from finscale.spec import final_dir
    from finscale.train import read_final

    rows = []
    for spec in final_specs(cfg):
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
