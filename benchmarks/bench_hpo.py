"""Optuna overhead per HPO trial vs the trial's training time (smallest CPU budget).

Workload (issue 7): the default study's cell cpu-s-h1 on the bundled S&P 500 data
(context 80, hpo.max_epochs epochs per trial, scattered tuning split). Target: Optuna's
overhead (sampler + storage) < 5% of a trial's training time.
- Overhead: ``study.optimize`` on the real sqlite storage (heartbeat on), the real seeded TPE
  sampler, median pruner and search space, with an objective that makes exactly the Optuna
  calls a real trial makes (ledger read for the slot check, sampling, user attributes, one
  report + should_prune per epoch) but trains nothing; per trial, early (TPE's random
  start-up) and late in a study.
- Peer: the same cell's real training (``Objective`` on a ``FixedTrial``: no Optuna
  storage at all), measured in the same run.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from rich.console import Console
from rich.table import Table

from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.hpo.ledger import make_ledger
from finscale.hpo.objective import Objective
from finscale.hpo.space import cell_space
from finscale.hpo.storage import open_storage, resolve_storage
from finscale.hpo.study import make_pruner, make_sampler, open_study
from finscale.rundata import prepare

BUDGET, HORIZON, TARGET_PCT = "cpu-s", 1, 5.0
N_TRIALS, TRAIN_REPEATS = 40, 2


def optuna_overhead(cfg, epochs: int, n_trials: int = N_TRIALS) -> list[float]:
    """Seconds per trial of everything Optuna does for one of our trials (no training)."""
    space = cell_space(cfg, BUDGET, HORIZON)
    storage = open_storage(resolve_storage("", cfg.study_dir))
    study = open_study(cfg, BUDGET, HORIZON, storage,
                       sampler=make_sampler(cfg, n_trials, seed=0, constant_liar=True),
                       pruner=make_pruner(cfg, epochs))
    rng = np.random.default_rng(0)
    times: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        make_ledger(trial.study.get_trials(deepcopy=False)).rank(trial.number)
        params = space.sample(trial)
        for key, value in {"seed": 1, "cell_params": params, "run_dir": "x", "worker": {"pid": 1},
                           "params_total": 4000, "params_non_embedding": 2000}.items():
            trial.set_user_attr(key, value)
        value = 0.45 + 0.02 * rng.random()
        for epoch in range(1, epochs + 1):
            trial.report(value + 0.01 / epoch, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("fold_losses", [value])
        return value

    def timed(study: optuna.Study, trial) -> None:
        times.append(time.perf_counter() - start[0])
        start[0] = time.perf_counter()

    start = [time.perf_counter()]
    study.optimize(objective, n_trials=n_trials, callbacks=[timed])
    return times


def training_time(cfg) -> tuple[float, int]:
    """Median seconds of one real trial's training (and the epochs it ran)."""
    objective = Objective(cfg, BUDGET, HORIZON, prepare(cfg))
    space = objective.space
    params = {"lr": 1e-3, "weight_decay": 1e-3, "dropout": 0.1, "warmup_fraction": 0.05,
              "batch_size": space.batch_sizes[len(space.batch_sizes) // 2] if space.batch_sizes else None,
              "arch": space.archs[0] if space.archs else None}
    params = {k: v for k, v in params.items() if k in space.searched()}
    times = []
    for i in range(TRAIN_REPEATS + 1):  # the first one warms up torch
        trial = optuna.trial.FixedTrial(params, number=i)
        t0 = time.perf_counter()
        objective(trial)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])), cfg.hpo.max_epochs or cfg.train.max_epochs


def main() -> None:
    logging.getLogger("finscale").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_study(resolve_study_path("default"),
                         [f'output_dir="{Path(tmp) / "runs"}"', f'data.data_dir="{Path(tmp) / "data"}"'])
        train_s, epochs = training_time(cfg)
        overhead = optuna_overhead(cfg, epochs)
    rows = [("trials 1-10 (TPE start-up, random)", overhead[:10]),
            (f"trials {N_TRIALS - 9}-{N_TRIALS} (TPE)", overhead[-10:]),
            (f"all {N_TRIALS} trials", overhead)]
    table = Table(title=f"Optuna overhead per trial vs training, {BUDGET}-h{HORIZON} of the default "
                        f"study ({epochs} epochs/trial, sqlite + heartbeat, TPE, median pruner)")
    for col in ("phase", "Optuna ms/trial", "training s/trial (peer)", "overhead %", f"target <{TARGET_PCT:g}%"):
        table.add_column(col)
    for name, xs in rows:
        ms = 1e3 * float(np.mean(xs))
        pct = 100 * ms / 1e3 / train_s
        table.add_row(name, f"{ms:.1f}", f"{train_s:.2f}", f"{pct:.2f}",
                      "ok" if pct < TARGET_PCT else "MISSED")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
