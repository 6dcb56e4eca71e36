"""Baselines that see the model's own context window, each tuned on validation only.

Consumes: a (T, C) matrix of STATIONARY inputs (the ``a20_rel`` set standardised on training
rows), its column names, labels (T,), the window end rows of train/val/test and the window
context ``max_context`` (the days PatchTST may see; no baseline looks further back).
Produces: ``{name: {"val": prob, "test": prob, "chosen": {...}}}`` for

- ``window_logistic``: L2 logistic regression on the flattened last k days of every input,
  k and the penalty chosen on validation log-loss;
- ``dlinear``: a DLinear-style linear model over the window (Zeng et al. 2023): each input's
  window is split into a moving-average trend and a remainder, one linear map over time for
  each (shared by all inputs), then a logistic layer over the inputs; k and the penalty
  chosen on validation;
- ``volatility``: logistic regression on range/ATR features only (a threshold-on-High
  target is partly a volatility forecast, so an apparent complexity gain can be volatility
  timing in disguise): ATR relative to Close, the mean high-low range and the log standard
  deviation of daily returns over the last 5 and 20 days, the size of the last return;
- ``momentum``: logistic regression on past returns summed over the last 1, 5 and 20 days.

Guarantees: fitted on training windows only; every choice (k, penalty) is made on the
validation windows, never on test; a window's features use rows ``t-k+1..t`` only, with
``k <= max_context``; the same inputs and seed give the same probabilities.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

WINDOW_BASELINES = ("window_logistic", "dlinear", "volatility", "momentum")
LAGS = (1, 5, 10, 20)           # k tried by window_logistic / dlinear (<= max_context)
PENALTIES = (0.01, 0.1, 1.0)    # logistic C tried (smaller = stronger L2)
TREND_KERNEL = 5                # DLinear's moving-average kernel (capped by k)


def _lags(max_context: int, choices=LAGS) -> list[int]:
    lags = [k for k in choices if k <= max_context]
    return lags or [max_context]


def _window(values: np.ndarray, ends: np.ndarray, k: int) -> np.ndarray:
    """(n, k, C): rows ``t-k+1..t`` of each end ``t`` (oldest first)."""
    idx = ends[:, None] + np.arange(-k + 1, 1)[None, :]
    return values[idx]


def _logistic(C: float) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))


def _val_loss(y_val: np.ndarray, prob: np.ndarray) -> float:
    return float(log_loss(y_val, np.clip(prob, 1e-7, 1 - 1e-7), labels=[0, 1]))


def _select(candidates, feats, y: np.ndarray, ends: dict) -> dict:
    """Fit each (choice, C) on train, keep the lowest validation log-loss; predict val/test."""
    best: dict[str, Any] | None = None
    for choice in candidates:
        X = {s: feats(choice, e) for s, e in ends.items()}
        for C in PENALTIES:
            model = _logistic(C).fit(X["train"], y[ends["train"]].astype(np.int64))
            prob = {s: model.predict_proba(X[s])[:, 1] for s in ("val", "test")}
            loss = _val_loss(y[ends["val"]], prob["val"])
            if best is None or loss < best["val_loss"]:
                best = {"val_loss": loss, "prob": prob, "chosen": {"k": choice, "C": C}}
    assert best is not None  # at least one lag and one penalty were tried
    return {**best["prob"], "chosen": best["chosen"]}


def _column(columns: list[str], name: str) -> int:
    if name not in columns:
        raise ValueError(f"window baselines: input {name!r} missing (have {', '.join(columns)})")
    return columns.index(name)


def volatility_features(raw: np.ndarray, columns: list[str], ends: np.ndarray, max_context: int) -> np.ndarray:
    """ATR/Close, mean range and log return std over 5 and 20 days, |last return| (per window)."""
    atr, hi, lo, ret = (_column(columns, c) for c in ("atr_rel", "ret_high", "ret_low", "ret_close"))
    feats = [raw[ends, atr], np.abs(raw[ends, ret])]
    for k in _lags(max_context, (5, 20)):
        w = _window(raw, ends, k)
        # log std: the log-odds of a move of fixed size are close to linear in LOG volatility
        feats += [(w[:, :, hi] - w[:, :, lo]).mean(axis=1), np.log(w[:, :, ret].std(axis=1) + 1e-12)]
    return np.column_stack(feats)


def momentum_features(raw: np.ndarray, columns: list[str], ends: np.ndarray, max_context: int) -> np.ndarray:
    """Past log returns summed over the last 1, 5 and 20 days (per window)."""
    ret = _column(columns, "ret_close")
    return np.column_stack([_window(raw, ends, k)[:, :, ret].sum(axis=1)
                            for k in _lags(max_context, (1, 5, 20))])


def _trend_remainder(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DLinear's decomposition of (n, k, C) windows: causal moving average and the rest."""
    kernel = min(TREND_KERNEL, w.shape[1])
    padded = np.concatenate([np.repeat(w[:, :1], kernel - 1, axis=1), w], axis=1)
    csum = np.cumsum(padded, axis=1)
    csum = np.concatenate([np.zeros_like(csum[:, :1]), csum], axis=1)
    trend = (csum[:, kernel:] - csum[:, :-kernel]) / kernel
    return trend, w - trend


def _fit_dlinear(w: dict, y: dict, C: float, seed: int) -> dict:
    """Train the bilinear DLinear classifier full-batch (L-BFGS, L2 = 1/(2C·n)); probabilities."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    parts = {s: [torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32))
                 for p in _trend_remainder(x)] for s, x in w.items()}
    k, c = w["train"].shape[1], w["train"].shape[2]
    time_w = (torch.randn(2, k, generator=gen) * 0.1).requires_grad_()
    chan_w = (torch.randn(c, generator=gen) * 0.1).requires_grad_()
    bias = torch.zeros(1, requires_grad=True)
    target = torch.from_numpy(y["train"].astype(np.float32))
    l2 = 1.0 / (2.0 * C * len(target))

    def logits(split: str) -> torch.Tensor:
        trend, rest = parts[split]
        per_input = torch.einsum("nkc,k->nc", trend, time_w[0]) + torch.einsum("nkc,k->nc", rest, time_w[1])
        return per_input @ chan_w + bias

    opt = torch.optim.LBFGS([time_w, chan_w, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits("train"), target)
        loss = loss + l2 * (time_w.square().sum() + chan_w.square().sum())
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return {s: torch.sigmoid(logits(s)).double().numpy() for s in ("val", "test")}


def _dlinear(values: np.ndarray, y: np.ndarray, ends: dict, max_context: int, seed: int) -> dict:
    best: dict[str, Any] | None = None
    for k in _lags(max_context, (5, 10, 20)):
        w = {s: _window(values, e, k) for s, e in ends.items()}
        labels = {s: y[e] for s, e in ends.items()}
        for C in PENALTIES:
            prob = _fit_dlinear(w, labels, C, seed)
            loss = _val_loss(labels["val"], prob["val"])
            if best is None or loss < best["val_loss"]:
                best = {"val_loss": loss, "prob": prob, "chosen": {"k": k, "C": C}}
    assert best is not None  # at least one lag and one penalty were tried
    return {**best["prob"], "chosen": best["chosen"]}


def fit_window_baselines(values: np.ndarray, raw: np.ndarray, columns: list[str], y: np.ndarray,
                         ends: dict[str, np.ndarray], max_context: int, seed: int) -> dict[str, dict]:
    """The four window baselines (module docstring). ``values``: the standardised stationary
    inputs; ``raw``: the same inputs unstandardised (volatility and momentum read returns in
    their own units); ``ends``: window end rows of "train", "val" and "test"."""
    if min(int(e.min()) for e in ends.values()) < max_context - 1:
        raise ValueError(f"window baselines: a window end lies before row {max_context - 1} "
                         f"(context {max_context})")
    with threadpool_limits(1):  # small fits: thread start-up costs more than it saves
        out = {"window_logistic": _select(_lags(max_context),
                                          lambda k, e: _window(values, e, k).reshape(len(e), -1), y, ends),
               "dlinear": _dlinear(values, y, ends, max_context, seed),
               "volatility": _select([max_context],
                                     lambda k, e: volatility_features(raw, columns, e, k), y, ends),
               "momentum": _select([max_context],
                                   lambda k, e: momentum_features(raw, columns, e, k), y, ends)}
    for name, res in out.items():
        log.info("baseline %s: chosen on validation %s", name, res["chosen"])
    return out
