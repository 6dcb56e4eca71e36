"""`finscale status`: a table of every HPO cell and final run of the study and its state."""

from __future__ import annotations

from finscale.cli.commands import COMMANDS
from finscale.cli.common import Output, add_json_arg, add_study_args, open_study_from_args


def register(sub) -> None:
    p = sub.add_parser("status", help=COMMANDS["status"],
                       description="Read the study directory and print, per HPO cell, the "
                                   "trials recorded and the best validation log-loss on the HPO "
                                   "tuning split (hpo.split), and per final run its state, epoch, "
                                   "validation log-loss on the final split (splits.scheme) and "
                                   "test log-loss. The two validation losses come from different "
                                   "splits and are not comparable.")
    add_study_args(p, reads_runs=True)
    add_json_arg(p)
    p.set_defaults(handler=_status)


def hpo_rows(cfg) -> list[list]:
    from finscale.hpo.results import results_frame
    from finscale.selection import selected_cells

    frame = results_frame(cfg)
    recorded = {r["cell"]: r for r in frame.to_dict("records")} if not frame.empty else {}
    rows = []
    for c in selected_cells(cfg):
        r = recorded.get(c.name, {})
        value = r.get("best_value")
        rows.append([c.name, f"{r.get('trial_states') or 'not started'} (of {c.cfg.hpo.trials})",
                     None if value is None or value != value else value])
    return rows


def final_rows(cfg) -> list[list]:
    from finscale.hpo.results import final_specs
    from finscale.rundir import RunDir
    from finscale.runspec import final_dir
    from finscale.train import read_final

    rows = []
    for spec in final_specs(cfg):
        run = RunDir(final_dir(cfg, spec))
        st = run.status()
        final = read_final(run) if st["state"] == "done" else None
        ev = run.read_eval()
        rows.append([spec.run_id, st["state"], st.get("epoch"),
                     final and final["val_log_loss"],
                     ev and ev["test"]["metrics"]["log_loss"],
                     "collapsed" if final and final["collapsed"] else st.get("reason", "")])
    return rows


def tuning_split_name(cfg) -> str:
    if cfg.hpo.split == "walk_forward":
        return f"walk_forward, mean of {cfg.splits.folds} folds"
    return cfg.hpo.split


def _status(args) -> int:
    cfg = open_study_from_args(args)
    out = Output(args.json)
    tuning, final = tuning_split_name(cfg), cfg.splits.scheme
    out.line(f"study {cfg.name!r} in {cfg.study_dir}", study=cfg.name, study_dir=str(cfg.study_dir),
             hpo_split=cfg.hpo.split if cfg.hpo.mode == "search" else None, final_split=final)
    if cfg.hpo.mode == "search":
        out.table("hpo_cells", f"hpo cells (validation on the tuning split: {tuning})",
                  ["cell", "trials", f"best val log-loss ({tuning} split)"], hpo_rows(cfg),
                  keys=["cell", "trials", "best_val_log_loss"])
    rows = final_rows(cfg)
    out.table("final_runs", f"final runs (validation on the final split: {final}; test once)",
              ["run", "state", "epoch", f"val log-loss ({final} split)", "test log-loss", "note"], rows,
              keys=["run_id", "state", "epoch", "val_log_loss", "test_log_loss", "note"])
    done = sum(r[1] == "done" for r in rows)
    out.line(f"{done}/{len(rows)} final runs done", done=done, total=len(rows))
    return out.done()
