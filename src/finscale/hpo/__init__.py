"""Hyperparameter search with Optuna, one study per (budget, horizon) cell.

Modules: ``space`` (search space per cell), ``objective`` (one trial = training runs on the
tuning splits), ``storage`` (sqlite / journal / any RDB URL, heartbeat + retry),
``ledger`` (the exactly-N-trials rule), ``study`` (studies, workers, resume, ``run_cell``),
``report`` (best_params.json, trial tables, importances, ``hpo_summary``).
Never touches the test split (guard 11).
"""

from finscale.hpo.objective import Objective, SurplusTrial, cell_dir, trial_seed
from finscale.hpo.outputs import hpo_summary
from finscale.hpo.space import CellSpace, cell_space, decode_arch, encode_arch
from finscale.hpo.storage import StorageSpec, open_storage, resolve_storage
from finscale.hpo.study import open_study, run_cell, study_name, work

__all__ = [
    "Objective", "SurplusTrial", "cell_dir", "trial_seed", "hpo_summary", "CellSpace",
    "cell_space", "decode_arch", "encode_arch", "StorageSpec", "open_storage",
    "resolve_storage", "open_study", "run_cell", "study_name", "work",
]
