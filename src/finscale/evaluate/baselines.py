"""Honest baselines on the identical windows and split as the transformer.

Consumes: the feature vector at day t for each window end (``X``, rows = windows, columns =
the run's input features) and training labels. Produces, per baseline and per evaluation
split, predicted probabilities of the positive class. Guarantees: every statistic (base
rate, scaler mean/std, model weights) is fitted on the TRAINING rows only; the same seed
gives the same probabilities.

Baselines (``BASELINES``):
- ``constant``: the training base rate for every window (skill 0 by construction);
- ``constant_val``: the "recalibrated constant": the VALIDATION base rate for every window
  (the best information-free forecast known at test time; only when ``val_prior`` is given);
- ``logistic``: StandardScaler + LogisticRegression (L2, C=1);
- ``hist_gbm``: HistGradientBoostingClassifier, small and fixed (no internal early
  stopping: its random hold-out would ignore time order), < 1 s on ~4k rows x 25.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

BASELINES = ("constant", "logistic", "hist_gbm")
CONSTANT_BASELINES = ("constant", "constant_val")
# Baselines fitted on the VALIDATION labels: their validation score is in-sample, so they are
# never candidates for "strongest", which is chosen on validation (guard 16).
FITTED_ON_VALIDATION = ("constant_val",)


def _check_matrix(X, name: str, n_cols: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{name} has shape {X.shape}; expected a non-empty 2-D (windows, features) array")
    if n_cols is not None and X.shape[1] != n_cols:
        raise ValueError(f"{name} has {X.shape[1]} features; training had {n_cols}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN/inf; drop warm-up rows before fitting baselines")
    return X


def _models(seed: int) -> dict:
    return {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)),
        "hist_gbm": HistGradientBoostingClassifier(
            learning_rate=0.05, max_iter=150, max_leaf_nodes=15, min_samples_leaf=40,
            l2_regularization=1.0, early_stopping=False, random_state=seed,
        ),
    }


def fit_baselines(X_train, y_train, X_eval_dict: dict, seed: int, *, val_prior: float | None = None,
                  suffix: str = "", constants: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Fit every baseline on ``(X_train, y_train)``; predict each ``X_eval_dict[split]``.

    Returns ``{baseline + suffix: {split: prob}}`` with float64 probabilities of label 1;
    ``constants=False`` leaves out the input-free constant baselines (for a second input
    variant of the same windows), ``val_prior`` adds ``constant_val``.
    """
    X_train = _check_matrix(X_train, "X_train")
    y = np.asarray(y_train, dtype=np.float64).ravel()
    if y.shape[0] != X_train.shape[0]:
        raise ValueError(f"y_train has {y.shape[0]} labels for {X_train.shape[0]} rows of X_train")
    if not np.all((y == 0) | (y == 1)) or np.unique(y).size < 2:
        raise ValueError("y_train must be 0/1 labels containing both classes")
    evals = {name: _check_matrix(X, f"X_eval_dict[{name!r}]", X_train.shape[1])
             for name, X in X_eval_dict.items()}
    out = {}
    if constants:
        priors = {"constant": float(y.mean())}
        if val_prior is not None:
            priors["constant_val"] = float(val_prior)
        out = {name: {split: np.full(X.shape[0], rate) for split, X in evals.items()}
               for name, rate in priors.items()}
    # One thread: on a few thousand rows, OpenMP/BLAS start-up costs more than it saves
    # (3-6x slower on a shared 2-core machine); results are identical.
    with threadpool_limits(1):
        for name, model in _models(seed).items():
            model.fit(X_train, y.astype(np.int64))
            out[name + suffix] = {split: model.predict_proba(X)[:, 1] for split, X in evals.items()}
            log.info("baseline %s fitted on %d rows x %d features", name, *X_train.shape)
    return out
