"""The HPO objective: one trial = one training run per tuning split of a cell.

Consumes: the study config, a cell (budget, horizon), the prepared data and an Optuna trial.
Produces: the trial's best validation log-loss (walk-forward: the mean over folds of each
fold's best), a run directory per trial under ``runs/<study>/hpo/<cell>/trials/`` and user
attributes: ``slot`` (which of the N trials it is, see :func:`~finscale.hpo.ledger.trial_slot`),
``seed`` (derived from ``hpo.sampler_seed``, the cell and the slot),
``cell_params`` (all parameters in make_spec form, fixed ones included), ``params_total`` /
``params_non_embedding`` (measured from the built model), ``run_dir``, ``worker``,
``best_epoch``, ``fold_losses``, ``collapsed``; ``fail_reason`` or ``interrupted`` when
the trial did not complete.
Guarantees: trains on the cell's own horizon labels (guard 2) and on tuning splits only —
the test period is never built here (guard 11); every sampled value goes through
``make_spec`` into the model and optimiser (guard 8); each epoch's validation log-loss is
reported to the pruner; a diverged run raises :class:`~finscale.train.TrainingFailed`
with its reason (the worker records the trial as FAIL and goes on).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna

from finscale.config import StudyConfig
from finscale.hpo.ledger import make_ledger, retry_history, trial_slot, worker_identity
from finscale.hpo.space import cell_space
from finscale.model import count_parameters, select_device
from finscale.repro import derive_seed, seed_everything
from finscale.rundata import PreparedData, prepared_for, tuning_data
from finscale.rundir import RunDir
from finscale.runspec import RunSpec, cfg_cell, design_cfg, make_spec, start_run_dir
from finscale.train import Controls, RunData, RunInterrupted, Trainer, TrainingFailed, read_final

log = logging.getLogger(__name__)


OUTCOME_ATTRS = ("interrupted", "fail_reason", "fault", "collapsed", "fold_losses")


class SurplusTrial(Exception):
    """The trial was asked after the cell's N trials were already claimed (see ledger)."""


def cell_dir(cfg: StudyConfig, budget: str, horizon: int) -> Path:
    return cfg.study_dir / "hpo" / cfg_cell(cfg, budget, horizon)


def trial_seed(cfg: StudyConfig, cell: str, slot: int) -> int:
    return derive_seed(cfg.hpo.sampler_seed, cell, slot)


class Objective:
    """``objective(trial) -> float`` for one cell; builds the tuning data once per worker.

    ``n_trials``: enforce the cell's trial count (a trial asked beyond it raises
    :class:`SurplusTrial`); None for ad-hoc use such as ``optuna.trial.FixedTrial``.
    ``on_trainer``: called with each :class:`~finscale.train.Trainer` before it trains
    (tests read the optimiser and data from it).
    """

    def __init__(self, cfg: StudyConfig, budget: str, horizon: int, prep: PreparedData, *,
                 n_trials: int | None = None, controls: Controls | None = None,
                 on_trainer: Callable[[Trainer], None] | None = None):
        self.cfg, self.budget, self.horizon, self.prep = cfg, budget, horizon, prep
        self.cell = cfg_cell(cfg, budget, horizon)
        self.space = cell_space(cfg, budget, horizon)
        self.folds: list[RunData] = tuning_data(prep, cfg, horizon)  # the study's own design
        self._design_folds: dict[tuple, tuple[PreparedData, list[RunData]]] = {}
        self.n_trials, self.controls, self.on_trainer = n_trials, controls, on_trainer
        self.device = select_device(cfg.model.device)
        self.identity = worker_identity()
        self.current: int | None = None   # number of the trial in progress (for interrupts)

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        self.current = trial.number
        slot, resume = self._claim(trial)
        seed = trial_seed(self.cfg, self.cell, slot)
        params = self.space.sample(trial)
        spec = make_spec(self.cfg, self.budget, self.horizon, seed, params,
                         max_epochs=self.cfg.hpo.max_epochs or None)
        prep, folds = self.data_for(params)
        root = cell_dir(self.cfg, self.budget, self.horizon) / "trials" / f"t{slot:04d}-{spec.digest[:8]}"
        if root.exists() and not resume:
            # Left by an earlier storage that reused this number: never resume someone else's run.
            shutil.rmtree(root)
        # A retry starts from a copy of its original's attributes; clear the outcome ones.
        outcome = {k: None for k in OUTCOME_ATTRS if k in trial.user_attrs} if resume else {}
        for key, value in {**outcome, "slot": slot, "seed": seed, "cell_params": params, "run_dir": str(root),
                           "worker": self.identity}.items():
            trial.set_user_attr(key, value)
        try:
            losses = [self._train_fold(trial, spec, i, data, root, prep) for i, data in enumerate(folds)]
        except OSError as exc:  # full disk, read-only dir: not the trial's failure (see ledger)
            _mark_fault(trial, exc)
            raise
        trial.set_user_attr("fold_losses", losses)
        return float(np.mean(losses))

    def data_for(self, params: dict) -> tuple[PreparedData, list[RunData]]:
        """(prepared data, tuning folds) of the trial's design (built once per design)."""
        cfg = design_cfg(self.cfg, params)
        if cfg is self.cfg:
            return self.prep, self.folds
        key = (cfg.features.set, cfg.model.normalization, cfg.model.context_len)
        if key not in self._design_folds:
            prep = prepared_for(self.prep, cfg)
            self._design_folds[key] = prep, tuning_data(prep, cfg, self.horizon)
        return self._design_folds[key]

    def _claim(self, trial) -> tuple[int, bool]:
        """(slot whose seed and run directory this trial uses, whether it re-runs a trial).

        A retry keeps the original trial's slot, so it resumes the original's checkpoint.
        """
        if not isinstance(trial, optuna.trial.Trial):
            return trial.number, False
        trials = trial.study.get_trials(deepcopy=False)
        led = make_ledger(trials)
        if self.n_trials is not None and led.rank(trial.number) >= self.n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} not run: all {self.n_trials} trials of cell "
                               f"{self.cell} were claimed by other workers while it was being "
                               "asked (surplus: not counted, not a failure)")
        frozen = next(t for t in trials if t.number == trial.number)
        return trial_slot(trials, trial.number), bool(retry_history(frozen))

    def _train_fold(self, trial, spec: RunSpec, fold: int, data: RunData, root: Path,
                    prep: PreparedData) -> float:
        run = RunDir(root / f"fold-{fold}" if len(self.folds) > 1 else root)
        final = read_final(run) if run.state == "done" else None
        if final is None:
            final = self._fit(trial, spec, fold, data, run, prep)
        elif fold == 0:
            _record_params(trial, final["params"])
        trial.set_user_attr(f"fold{fold}_best_epoch", final["best_epoch"])
        if final.get("collapsed"):
            trial.set_user_attr("collapsed", final.get("collapse_reason") or True)
        loss = final.get("val_log_loss")
        if loss is None or not math.isfinite(loss):
            reason = f"fold {fold}: non-finite best validation log-loss {loss!r}"
            trial.set_user_attr("fail_reason", reason)
            raise TrainingFailed(reason)
        return float(loss)

    def _fit(self, trial, spec: RunSpec, fold: int, data: RunData, run: RunDir,
             prep: PreparedData) -> dict:
        start_run_dir(run, spec, prep, data.split_report)
        seed_everything(spec.seed)
        offset = fold * spec.train.max_epochs  # one step axis across folds for the pruner

        def report(epoch: int, line: dict) -> None:
            value = line.get("val_log_loss")
            if value is None or not math.isfinite(value):
                return  # TrainingFailed follows from the trainer or the final check
            trial.report(value, offset + epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch} of fold {fold}: validation log-loss "
                                         f"{value:.5f} is worse than the pruner's threshold")

        trainer = Trainer(run, model_args=spec.model_args, cfg=spec.train, data=data, seed=spec.seed,
                          config_hash=spec.digest, device=self.device, callbacks=[report],
                          controls=self.controls,
                          checkpointing=self.cfg.model.activation_checkpointing,
                          compile=self.cfg.model.compile, precision=spec.precision)
        if fold == 0:
            _record_params(trial, count_parameters(trainer.model))
        if self.on_trainer is not None:
            self.on_trainer(trainer)
        try:
            return trainer.fit()
        except optuna.TrialPruned:
            run.write_status("pruned", epoch=trainer.state["epoch"])
            raise
        except TrainingFailed as exc:
            trial.set_user_attr("fail_reason", f"fold {fold}: {exc}")
            raise
        except RunInterrupted as exc:
            trial.set_user_attr("interrupted", f"fold {fold}: {exc}")
            raise


def _mark_fault(trial, exc: OSError) -> None:
    """Record ``fault`` on the running trial, best effort (the storage may be the fault)."""
    try:
        trial.set_user_attr("fault", str(exc)[:300])
    except Exception as err:  # noqa: BLE001 - never mask the original fault
        log.debug("cannot record the fault on trial %s (%s)", trial.number, err)


def _record_params(trial, counts: dict) -> None:
    """Measured parameter counts of the trial's model (guard 10), known before training."""
    trial.set_user_attr("params_total", int(counts["total"]))
    trial.set_user_attr("params_non_embedding", int(counts["non_embedding"]))
