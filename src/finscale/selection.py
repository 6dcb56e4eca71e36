"""Run selection: the cells and runs a study expands into, narrowed by a filter.

Consumes: a loaded :class:`~finscale.config.StudyConfig` and a :class:`Selection` (``--only
budget=... horizon=... <axis key>=...`` and, for one pool job or Ray task, the unit names it
owns). Produces: the selected HPO cells (:func:`selected_cells`: axis variant x budget x
horizon) and final runs (:func:`selected_runs`: variant x replicate x cell x seed), in
execution order. Guarantees: pure (reads no file, so every caller — the runner, its workers,
the plan, the CLI — sees the same list); a filter that names an unknown axis key or value, or
matches no cell, is a ValueError naming it. Run ids need a cell's chosen hyperparameters, so
:func:`finscale.hpo.results.final_specs` resolves these runs into specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from finscale.config import StudyConfig
from finscale.runspec import cells, cfg_cell, seed_sets
from finscale.study_axes import variants


@dataclass(frozen=True)
class Selection:
    """Which part of a study to work on; the default selects all of it."""

    budgets: tuple[str, ...] = ()       # --only budget=...
    horizons: tuple[int, ...] = ()      # --only horizon=...
    axes: dict = field(default_factory=dict)   # --only <axis key>=value: {key: [value text]}
    units: tuple[str, ...] = ()         # only these HPO cell names / final run ids (one job)

    def has_unit(self, name: str) -> bool:
        return not self.units or name in self.units


@dataclass(frozen=True)
class Cell:
    """One budget x horizon cell of one axis variant (the unit of an HPO search)."""

    cfg: StudyConfig      # the axis variant (the study itself without [axes])
    budget: str
    horizon: int

    @property
    def name(self) -> str:
        return cfg_cell(self.cfg, self.budget, self.horizon)


@dataclass(frozen=True)
class Run:
    """One final run before its hyperparameters are resolved (then: a RunSpec)."""

    cell: Cell
    replicate: int
    seed: int


def variant_cells(cfg: StudyConfig, sel: Selection = Selection()) -> list[tuple[StudyConfig, list[Cell]]]:
    """``(variant, its selected cells)`` per selected axis variant (``units`` ignored)."""
    return [(var, [Cell(var, b, h) for b, h in cells(var, sel.budgets, sel.horizons)])
            for var in variants(cfg, sel.axes)]


def selected_cells(cfg: StudyConfig, sel: Selection = Selection()) -> list[Cell]:
    """The selected HPO cells: variant x budget x horizon, narrowed by ``sel.units`` (cell names)."""
    return [c for _, cs in variant_cells(cfg, sel) for c in cs if sel.has_unit(c.name)]


def selected_runs(cfg: StudyConfig, sel: Selection = Selection()) -> list[Run]:
    """The selected final runs: variant x replicate x cell x seed. Replicate 0 (the study's
    ``seeds``) comes first, so an interrupted study has whole replicates early. ``sel.units``
    (run ids) is applied once the runs are specs (:func:`finscale.hpo.results.final_specs`)."""
    out = []
    for var, var_cells in variant_cells(cfg, sel):
        for replicate, seeds in enumerate(seed_sets(var)):
            out += [Run(c, replicate, seed) for c in var_cells for seed in seeds]
    return out
