"""HPO sampling that depends only on (sampler seed, cell, trial slot) and earlier results.

Consumes: the study config and a cell. Produces: an Optuna sampler for the cell's study.
Guarantees: each trial is sampled by a TPE sampler seeded from ``hpo.sampler_seed``, the cell
and the trial's slot (:func:`~finscale.hpo.ledger.trial_slot`), so a search killed at any
moment and rerun draws the same parameters as an uninterrupted one (a killed trial's retry
keeps its parameters; the next fresh trial gets the same slot, seed and history).
"""

from __future__ import annotations

import warnings

import optuna

from finscale.config import StudyConfig
from finscale.hpo.ledger import trial_slot
from finscale.repro import derive_seed


def make_sampler(cfg: StudyConfig, n_trials: int, *, seed: int, constant_liar: bool):
    # A third of the trials (2..10) explore at random before TPE models the rest.
    startup = min(10, max(2, n_trials // 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup,
                                          constant_liar=constant_liar)


class SlotSeededSampler(optuna.samplers.BaseSampler):
    """TPE with a fresh RNG per trial, seeded from (sampler seed, cell, trial slot).

    One long-lived sampler's RNG advances with every draw, so after a kill its state (and the
    next parameters) depend on how many trials the restarted process has asked. Here each
    trial's draws depend only on its slot and the study's finished trials.
    """

    def __init__(self, cfg: StudyConfig, cell: str, n_trials: int, *, constant_liar: bool,
                 study: optuna.Study | None = None):
        self._make = lambda seed: make_sampler(cfg, n_trials, seed=seed, constant_liar=constant_liar)
        self._base_seed, self._cell = cfg.hpo.sampler_seed, cell
        # The whole study, for slots: Optuna hands samplers a pruner-filtered view (Hyperband
        # shows one bracket), whose trial list would give other slots.
        self._study = study
        self._per_trial: dict[int, optuna.samplers.BaseSampler] = {}

    def _for(self, trial: optuna.trial.FrozenTrial) -> optuna.samplers.BaseSampler:
        return self._per_trial[trial.number]

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        slot = trial_slot((self._study or study).get_trials(deepcopy=False), trial.number)
        inner = self._make(derive_seed(self._base_seed, self._cell, "sampler", slot))
        self._per_trial[trial.number] = inner
        inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        inner = self._per_trial.pop(trial.number, None)
        if inner is not None:
            inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        pass  # nothing to reseed: every trial gets its own seeded sampler
