"""The worker pool's feed (runner.schedule.StudyUnits): units are released as what they depend
on finishes (a cell's final runs once it is tuned, a run's evaluation once it is trained), in
the documented order, and a dead worker's unit is handed out again first. Real study configs
and real run-directory files; no processes."""

import json
from pathlib import Path

from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.hpo.results import best_params_path
from finscale.rundir import RunDir
from finscale.runner.schedule import StudyUnits
from finscale.runspec import final_dir
from finscale.selection import Selection

PHASES = ("hpo", "final", "evaluate")


def smoke(tmp_path: Path, *extra: str):
    return load_study(resolve_study_path("smoke"), [f"output_dir={json.dumps(str(tmp_path))}", *extra])


def tuned(cell) -> None:
    """The cell's search outcome as the HPO stage writes it (best_params.json)."""
    path = best_params_path(cell.cfg, cell.budget, cell.horizon)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"params": {"lr": 3e-3}}))


def drain(feed: StudyUnits) -> list:
    out = []
    while (item := feed.next([])) is not None:
        out.append(item)
    return out


def test_final_runs_are_released_per_tuned_cell_and_evaluations_per_trained_run(tmp_path):
    cfg = smoke(tmp_path)
    recorded = []
    feed = StudyUnits(cfg, PHASES, Selection(), on_tuned=lambda: recorded.append(True))
    cells = drain(feed)
    # HPO cells only, largest budget first; nothing else is ready before a cell is tuned
    assert [(p, c.budget) for p, c in cells] == [("hpo", "cpu-l"), ("hpo", "cpu-m"), ("hpo", "cpu-s")]
    assert feed.totals == {"hpo_cell": 3, "final_run": 6, "evaluate_run": 6}

    first = cells[0][1]
    tuned(first)
    feed.finished("hpo", first)
    runs = drain(feed)
    assert [p for p, _ in runs] == ["final", "final"] and not recorded
    assert {s.budget for _, (_, s) in runs} == {"cpu-l"}
    assert all(s.params["lr"] == 3e-3 for _, (_, s) in runs)   # the cell's chosen parameters

    feed.finished("final", runs[0][1])        # a final run that did not finish: no evaluation
    assert feed.next([]) is None
    RunDir(final_dir(*runs[1][1])).write_status("done")
    feed.finished("final", runs[1][1])
    assert feed.next([]) == ("evaluate", runs[1][1])

    for _, cell in cells[1:]:
        tuned(cell)
        feed.finished("hpo", cell)
    assert recorded == [True]                 # every cell tuned: the study records its run ids


def test_order_requeue_and_one_evaluation_per_horizon_at_a_time(tmp_path):
    cfg = smoke(tmp_path, 'hpo.mode="fixed"', "target.horizons=[1, 2]",
                'hpo.table={"cpu-s-h1"={}, "cpu-s-h2"={}, "cpu-m-h1"={}, "cpu-m-h2"={}, '
                '"cpu-l-h1"={}, "cpu-l-h2"={}}')
    feed = StudyUnits(cfg, ("hpo", "final", "evaluate"), Selection())
    runs = [u for _, u in drain(feed)]
    assert len(runs) == 12                    # fixed mode: every final run is ready at once
    for unit in runs:
        RunDir(final_dir(*unit)).write_status("done")
        feed.finished("final", unit)
    busy = [feed.next([])]
    assert busy[0][0] == "evaluate"
    # the next evaluation is of the other horizon while this one fits its baselines
    second = feed.next(busy)
    assert second[1][1].horizon != busy[0][1][1].horizon
    feed.requeue(*second)                     # its worker died: handed out again first
    assert feed.next(busy) == second
    ids = lambda units: sorted(s.run_id for _, s in units)  # noqa: E731
    assert ids([u for _, u in drain(feed)] + [busy[0][1], second[1]]) == ids(runs)  # each once
