"""Progress of `finscale run|hpo|train|evaluate`: rich bars on a terminal, plain lines otherwise.

Consumes the ``on_event(kind, **info)`` calls of the runner (``phase``, ``phase_skip``,
``hpo_cell``, ``final_run``, ``evaluate_run``), of HPO (``hpo_trials``, ``trial``) and of
the trainer (``train_start``, ``batch``, ``epoch``, ``train_end``; see
:class:`finscale.train.Controls`). Produces, when stdout is a terminal, live bars for the
units of the current phase (HPO trials of a cell, final runs), the epochs of the current
run and the batches of the current epoch, each with its ETA; otherwise (CI logs, pipes)
one timestamped plain line per phase, cell and unit (trial, final run, evaluation) and, for
single-run commands (``epochs=True``), per epoch; nothing per batch. ETAs are measured in
this process: mean time per finished unit (trial, epoch) times the units left; an
early-stopped run ends sooner than its epoch ETA says. Given the study's unit counts
(:class:`StudyTotals`), lines also carry a whole-study ETA: the units left in every phase
times the time per unit measured so far (a phase not yet measured is estimated from the one
before it: a final run as a trial, an evaluation as a fifth of a final run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from finscale.cli.common import console as default_console


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _Rate:
    """ETA of ``total`` units from the mean duration of those finished since :meth:`start`."""

    def __init__(self) -> None:
        self.t0, self.done0 = time.monotonic(), 0

    def start(self, done: int) -> None:
        self.t0, self.done0 = time.monotonic(), done

    def eta(self, done: int, total: int) -> float | None:
        finished = done - self.done0
        if finished <= 0:
            return None
        return (time.monotonic() - self.t0) / finished * max(0, total - done)


# Relative cost of a unit of a phase not yet measured, from the phase before it.
FALLBACK_COST = {"final": ("hpo", 1.0), "evaluate": ("final", 0.2)}


@dataclass
class StudyTotals:
    """Units of work of a whole ``finscale run`` (selected phases only) and the ETA over them."""

    units: dict[str, int]                                 # phase -> trials, runs, evaluations
    done: dict[str, int] = field(default_factory=dict)    # finished or skipped so far
    worked: dict[str, int] = field(default_factory=dict)  # finished by work in this run
    started: dict[str, float] = field(default_factory=dict)
    # Final runs differ in cost by budget (cpu-xl ~13x cpu-s on the default study) and the
    # pool trains the largest first, so an unweighted rate overstated the study's ETA ~2.5x.
    # Weights: each budget's mean HPO trial duration (measured in this run, same models).
    runs_by_budget: dict[str, int] = field(default_factory=dict)  # final runs per budget
    trial_s: dict[str, list[float]] = field(default_factory=dict)  # HPO trial seconds per budget
    runs_seen: dict[str, int] = field(default_factory=dict)        # final runs met, per budget
    runs_trained: list[str] = field(default_factory=list)          # budgets of runs trained here
    workers: int = 1                                               # runs trained at once

    def start(self, phase: str) -> None:
        self.started.setdefault(phase, time.monotonic())

    def finish(self, phase: str, worked: bool = True) -> None:
        self.done[phase] = self.done.get(phase, 0) + 1
        self.worked[phase] = self.worked.get(phase, 0) + worked

    def _per_unit(self, phase: str | None) -> float | None:
        if phase is None:  # no fallback phase to estimate from
            return None
        n = self.worked.get(phase, 0)
        if n and phase in self.started:
            return (time.monotonic() - self.started[phase]) / n
        before, ratio = FALLBACK_COST.get(phase, (None, 0.0))
        cost = self._per_unit(before) if before in self.units else None
        return None if cost is None else cost * ratio

    def final_run(self, budget: str | None, trained: bool) -> None:
        """A final run was met (``trained``: it is trained now, not found done)."""
        if budget is not None:
            self.runs_seen[budget] = self.runs_seen.get(budget, 0) + 1
            if trained:
                self.runs_trained.append(budget)

    def _weighted_final_left(self) -> float | None:
        """Seconds left for the final runs from the weighted rate (None: no weights yet).

        Rate = the phase's wall time over the weights of the runs trained so far (the last
        ``workers`` count as still running); left = the weights of the runs not met yet, plus
        those."""
        weights = {b: sum(v) / len(v) for b, v in self.trial_s.items() if v}
        if not weights or not self.runs_by_budget or "final" not in self.started or not self.runs_trained:
            return None
        fallback = sum(weights.values()) / len(weights)
        w = lambda b: weights.get(b, fallback)  # noqa: E731 - a lookup with a default
        running = sum(w(b) for b in self.runs_trained[-max(1, self.workers):])
        done = sum(w(b) for b in self.runs_trained) - running
        if done <= 0:
            return None
        left = sum(w(b) * max(0, n - self.runs_seen.get(b, 0)) for b, n in self.runs_by_budget.items())
        return (time.monotonic() - self.started["final"]) / done * (left + running)

    def eta(self) -> float | None:
        """Seconds left for the whole study (None until a unit of work has been timed).

        Phases run one after another, except that a worker pool evaluates runs while others
        still train: evaluations started before the last final run are inside the final
        phase's measured rate, so they are not added again (adding them doubled the ETA)."""
        total = 0.0
        finals_open = self.done.get("final", 0) < self.units.get("final", 0)
        for phase, n in self.units.items():
            left = max(0, n - self.done.get(phase, 0))
            if not left or (phase == "evaluate" and finals_open and "evaluate" in self.started):
                continue
            weighted = self._weighted_final_left() if phase == "final" else None
            if weighted is not None:
                total += weighted
                continue
            cost = self._per_unit(phase)
            if cost is None:
                return None
            total += left * cost
        return total


class ProgressPrinter:
    """``with ProgressPrinter() as on_event:`` pass ``on_event`` to the runner / HPO / trainer.

    ``totals``: the study's unit counts (``finscale run``), for a whole-study ETA in the lines;
    ``epochs``: also one plain line per epoch (single-run commands; ``run`` logs units only)."""

    def __init__(self, console: Console | None = None, live: bool | None = None,
                 totals: StudyTotals | None = None, epochs: bool = True):
        self.console = console or default_console
        self.live = self.console.is_terminal if live is None else live
        self.bars: Progress | None = None
        self.tasks: dict[str, Any] = {}
        self.units, self.epochs = _Rate(), _Rate()
        self.unit_label = ""
        self.totals, self.epoch_lines = totals, epochs
        self.seen_trials: set[str] = set()   # cells whose trials this process has seen
        self.training: str | None = None     # the phase of the unit now being worked on
        self.trial_clock: dict[str, tuple[str, float]] = {}  # cell -> (budget, last trial's end)

    # ---- context -----------------------------------------------------------------------
    def __enter__(self) -> ProgressPrinter:
        if self.live:
            self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                                 console=self.console, transient=True)
            self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None

    def print(self, text: str) -> None:
        # as given: "[hpo 1/4]" is not markup, numbers are not recoloured; a log gets the time
        if self.bars is None:
            text = f"{time.strftime('%H:%M:%S')} {text}"
        (self.bars.console if self.bars is not None else self.console).print(text, markup=False,
                                                                               highlight=False)

    def _study_eta(self) -> str:
        if self.totals is None:
            return ""
        eta = self.totals.eta()  # HPO, final and evaluate units; the scaling fits and report follow
        return "" if eta is None or eta < 1 else f"; study ETA {fmt_seconds(eta)} + scaling, report"

    def _unit_ended(self) -> None:
        """The unit worked on before this event (a final run or an evaluation) has finished."""
        if self.totals is not None and self.training is not None:
            self.totals.finish(self.training)
        self.training = None

    def __call__(self, kind: str, **info: Any) -> None:
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(**info)

    # ---- bars (terminal only) ------------------------------------------------------------
    def _bar(self, name: str, description: str, completed: int, total: int, eta: float | None) -> None:
        if self.bars is None:
            return
        fields: dict[str, Any] = {"description": description, "completed": completed, "total": total,
                                  "eta": fmt_seconds(eta)}
        if name in self.tasks:
            self.bars.update(self.tasks[name], **fields)
        else:
            self.tasks[name] = self.bars.add_task(**fields)

    def _drop(self, *names: str) -> None:
        for name in names:
            if self.bars is not None and name in self.tasks:
                self.bars.remove_task(self.tasks.pop(name))

    # ---- runner events ---------------------------------------------------------------------
    def _on_phase(self, phase: str, **_) -> None:
        self._drop("units", "epochs", "batches")
        self._unit_ended()
        if self.totals is not None:
            self.totals.start(phase)
        self.print(f"== {phase}{self._study_eta()}")

    def _on_phase_skip(self, phase: str, reason: str, **_) -> None:
        self.print(f"== {phase}: skipped ({reason})")

    def _on_hpo_cell(self, index: int, total: int, cell: str, **_) -> None:
        self.print(f"[hpo {index + 1}/{total}] cell {cell}")

    def _on_final_run(self, index: int, total: int, run_id: str, eta_s: float | None, state: str,
                      budget: str | None = None, **_) -> None:
        note = "" if state == "pending" else f" ({state})"
        self._unit_ended()
        if self.totals is not None:
            self.totals.final_run(budget, trained=state != "done")
        if state == "done" and self.totals is not None:
            self.totals.finish("final", worked=False)  # skipped: finished in an earlier run
        elif state != "done":
            self.training = "final"
        eta = f", phase ETA {fmt_seconds(eta_s)}" if eta_s else ""
        self.print(f"[final {index + 1}/{total}] {run_id}{note}{eta}{self._study_eta()}")
        self._bar("units", "final runs", index, total, eta_s)

    def _on_evaluate_run(self, index: int, total: int, run_id: str, **_) -> None:
        self._unit_ended()
        self.training = "evaluate"
        self.print(f"[evaluate {index + 1}/{total}] {run_id}{self._study_eta()}")
        self._bar("units", "evaluate", index, total, None)

    # ---- hpo events ------------------------------------------------------------------------
    def _on_hpo_trials(self, cell: str, done: int, total: int, budget: str | None = None, **_) -> None:
        self.units.start(done)
        if budget is not None:
            self.trial_clock[cell] = (budget, time.monotonic())
        self.unit_label = f"{cell} trials"
        # Another worker of this run may have just finished the cell: that is not news.
        if done and cell not in self.seen_trials:
            self.print(f"  {cell}: {done}/{total} trials already done")
            if self.totals is not None:
                self.totals.done["hpo"] = self.totals.done.get("hpo", 0) + done
        self.seen_trials.add(cell)
        self._bar("units", self.unit_label, done, total, None)

    def _on_trial(self, cell: str, number: int | None, state: str, value: float | None, done: int,
                  total: int, **_) -> None:
        eta = self.units.eta(done, total)
        self.seen_trials.add(cell)
        if self.totals is not None:
            self.totals.finish("hpo")
            if cell in self.trial_clock:  # the trial's duration weighs its budget's final runs
                budget, since = self.trial_clock[cell]
                now = time.monotonic()
                self.totals.trial_s.setdefault(budget, []).append(now - since)
                self.trial_clock[cell] = (budget, now)
        what = f"trial {number} {state}" if number is not None else "trial finished"
        loss = f": val log-loss {value:.4f}" if value is not None else ""
        cell_eta = f", ETA {fmt_seconds(eta)}" if done < total and eta and eta >= 1 else ""  # no "0m00s"
        self.print(f"  {cell} {what}{loss} ({done}/{total} done{cell_eta}{self._study_eta()})")
        self._bar("units", self.unit_label or f"{cell} trials", done, total, eta)

    # ---- trainer events ----------------------------------------------------------------------
    def _on_train_start(self, run: str, epoch: int, max_epochs: int, **_) -> None:
        self.epochs.start(epoch)
        self._bar("epochs", f"{run} epochs", epoch, max_epochs, None)

    def _on_batch(self, run: str, batch: int, batches: int, **_) -> None:
        self._bar("batches", "batches", batch, batches, None)

    def _on_epoch(self, run: str, epoch: int, max_epochs: int, train_loss: float,
                  val_log_loss: float | None, epoch_s: float, **_) -> None:
        eta = self.epochs.eta(epoch, max_epochs)
        val = "?" if val_log_loss is None else f"{val_log_loss:.4f}"
        if self.bars is None and self.epoch_lines:  # a terminal has the bar; a run log, units only
            left = f", ETA {fmt_seconds(eta)}" if epoch < max_epochs and eta and eta >= 1 else ""
            self.print(f"    {run} epoch {epoch}/{max_epochs}: train loss {train_loss:.4f}, "
                       f"val log-loss {val} ({epoch_s:.1f}s{left})")
        self._bar("epochs", f"{run} epochs", epoch, max_epochs, eta)

    def _on_train_end(self, **_) -> None:
        self._drop("epochs", "batches")
