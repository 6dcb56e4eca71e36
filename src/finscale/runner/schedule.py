"""The units of a study's parallel phases, released as what they depend on finishes.

Consumes: the study and its run options (phases, ``--only``), then the result of each unit
the worker pool reports (:meth:`StudyUnits.finished`). Produces: the next unit for an idle
worker (:meth:`StudyUnits.next`), as ``(phase, unit)``: an HPO
:class:`~finscale.selection.Cell`, or ``(variant, RunSpec)`` of a final run or an evaluation.
Guarantees:
- a cell's final runs are resolved (their parameters read from its best_params.json, exactly
  as the serial final phase reads them) only once its search has finished, and a run is
  evaluated only once it is trained (state done); so the final runs of cell A train while
  cell B is still being searched, and nothing waits for a whole phase to end;
- order, which never changes a result (each unit is seeded by itself): HPO cells first,
  largest budget first (so the search ends on short cells), then evaluations, then final
  runs, each in the order released; an evaluation is not handed out beside another of the
  same horizon while other units are ready (the first fits the horizon's baselines and
  caches them, so they are never fitted twice at once);
- a unit whose worker died is handed out again before anything else: it resumes from its
  checkpoint.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from finscale.config import StudyConfig
from finscale.hpo.results import final_runs
from finscale.rundir import RunDir
from finscale.runspec import final_dir
from finscale.selection import Selection, selected_cells, selected_runs

PRIORITY = {"hpo": 0, "evaluate": 1, "final": 2}
EVENT_OF = {"hpo": "hpo_cell", "final": "final_run", "evaluate": "evaluate_run"}


def phase_units(cfg: StudyConfig, phase: str, sel: Selection) -> list:
    """The resolved units of ``phase`` that ``sel`` selects: :class:`~finscale.selection.Cell`
    per HPO cell, ``(variant, spec)`` per final run (evaluate: trained runs only). Pool units
    and Ray tasks carry these, never the filters (:func:`~finscale.runner.pool.unit_name`)."""
    if phase == "hpo":
        return selected_cells(cfg, sel) if cfg.hpo.mode == "search" else []
    runs = final_runs(cfg, sel)
    if phase == "evaluate":
        runs = [(v, s) for v, s in runs if RunDir(final_dir(v, s)).state == "done"]
    return runs


class StudyUnits:
    """The pool's feed: ready units by priority, and the dependencies still open."""

    def __init__(self, cfg: StudyConfig, phases: tuple[str, ...], sel: Selection, *,
                 on_tuned: Callable[[], None] = lambda: None):
        self.cfg, self.sel, self.phases, self.on_tuned = cfg, sel, phases, on_tuned
        self.ready: list[tuple[int, int, str, Any]] = []   # (priority, order, phase, unit)
        self._order = itertools.count()
        searching = "hpo" in phases and cfg.hpo.mode == "search"
        cells = phase_units(cfg, "hpo", sel) if searching else []
        self.tuning = {c.name for c in cells}                  # cells whose search is open
        rank = {b: i for i, b in enumerate(cfg.model.budgets)}
        for c in sorted(cells, key=lambda c: -rank.get(c.budget, 0)):
            self._add("hpo", c)
        self.totals = {"hpo_cell": len(cells)}                 # units per progress event kind
        if "final" in phases:
            self.totals["final_run"] = len(selected_runs(cfg, sel))
        if "evaluate" in phases:
            self.totals["evaluate_run"] = self.totals.get("final_run", 0)
        if not self.tuning:
            self._tuned()

    # ---- release -----------------------------------------------------------------------
    def _add(self, phase: str, unit, order: int | None = None) -> None:
        self.ready.append((PRIORITY[phase], next(self._order) if order is None else order, phase, unit))
        self.ready.sort(key=lambda r: (r[1] >= 0, r[0], r[1]))   # re-queued units (order < 0) first

    def _tuned(self) -> None:
        """Every searched cell is done (or none was searched): the final runs (or, without a
        final phase, the evaluations) no search is left to release."""
        searched = "hpo" in self.phases and self.cfg.hpo.mode == "search"
        if "final" in self.phases and not searched:
            for unit in phase_units(self.cfg, "final", self.sel):
                self._add("final", unit)
        elif "evaluate" in self.phases and "final" not in self.phases:
            units = phase_units(self.cfg, "evaluate", self.sel)
            self.totals["evaluate_run"] = len(units)
            for unit in units:
                self._add("evaluate", unit)
        self.on_tuned()

    def finished(self, phase: str, unit) -> None:
        """A worker finished ``unit`` (not stopped): release what waited for it."""
        if phase == "hpo":
            if "final" in self.phases:
                for run in final_runs(self.cfg, self.sel, cells=(unit.name,)):
                    self._add("final", run)
            self.tuning.discard(unit.name)
            if not self.tuning:
                self._tuned()
        elif phase == "final" and "evaluate" in self.phases and RunDir(final_dir(*unit)).state == "done":
            self._add("evaluate", unit)

    def requeue(self, phase: str, unit) -> None:
        """The worker of ``unit`` died: hand it out again first."""
        self._add(phase, unit, order=-next(self._order) - 1)

    def size(self) -> int:
        """Units known now (ready, or counted for progress): the most workers worth starting."""
        return max(len(self.ready), sum(self.totals.values()))

    # ---- hand out ------------------------------------------------------------------------
    def next(self, busy: list[tuple[str, Any]]):
        """The next ``(phase, unit)`` for an idle worker, given the units others are running;
        None when nothing is ready (more may be released when a busy unit finishes)."""
        if not self.ready:
            return None
        horizons = {u[1].horizon for p, u in busy if p == "evaluate"}
        pick = next((r for r in self.ready if r[2] != "evaluate" or r[3][1].horizon not in horizons),
                    self.ready[0])
        self.ready.remove(pick)
        return pick[2], pick[3]
