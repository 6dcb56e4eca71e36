"""Classification metrics for binary up-move probabilities.

Consumes: labels ``y`` (0/1) and predicted probabilities ``prob`` (after the single sigmoid,
guard 7) for the same windows. Produces plain dicts of Python floats (JSON-ready).
Guarantees:
- log-loss is in nats, computed by scikit-learn on probabilities clipped to
  ``[PROB_EPS, 1 - PROB_EPS]`` (the same clipping as :func:`per_sample_log_loss`, so bootstrap
  resamples and point estimates agree exactly);
- ``skill = 1 - log_loss / log_loss_const`` where ``log_loss_const`` is the log-loss of
  predicting ``prior`` (the TRAINING base rate) for every window: 0 for the constant
  predictor, < 0 for a model worse than it (guard 12); ``skill_val`` is the same against
  ``val_prior`` (the VALIDATION base rate, the reference a forecaster had at test time), so a
  base-rate shift between training and test is not mistaken for skill (guard 15);
- log-loss and Brier are decomposed (CORP: Dimitriadis, Gneiting & Jordan 2021) as
  ``miscalibration - discrimination + uncertainty``, the recalibrated forecast being an
  isotonic (PAV) regression of the labels on the probabilities; ``refinement`` (=
  uncertainty - discrimination) is the score of the same ranking perfectly calibrated. A
  constant forecast at any base rate has discrimination 0;
- a window is predicted positive iff ``prob > threshold`` (strict), everywhere in this
  package (metrics at 0.5, metrics at the chosen threshold, the backtest).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

log = logging.getLogger(__name__)

PROB_EPS = 1e-7


def check_binary(y, prob, *, name: str = "prob") -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(y as float64 0/1, prob as float64)``; ValueError on bad input."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.size == 0:
        raise ValueError("y is empty; expected at least one labelled window")
    if y.shape != p.shape:
        raise ValueError(f"y has {y.size} values but {name} has {p.size}; expected equal lengths")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y must contain only 0/1 labels (NaN labels must be dropped first)")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError(f"{name} must be finite probabilities in [0, 1]")
    return y, p


def check_probability(value: float, name: str, *, open_interval: bool) -> float:
    value = float(value)
    ok = 0 < value < 1 if open_interval else 0 <= value <= 1
    if not np.isfinite(value) or not ok:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name}={value!r}; expected a probability in {interval}")
    return value


def per_sample_log_loss(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Per-window log-loss (nats) with the package's clipping; the mean equals sklearn's."""
    p = np.clip(prob, PROB_EPS, 1 - PROB_EPS)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def _at_threshold(y: np.ndarray, prob: np.ndarray, threshold: float, suffix: str) -> dict:
    pred = (prob > threshold).astype(np.float64)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, pred, average="binary", pos_label=1.0, zero_division=0
    )
    return {
        f"accuracy{suffix}": float(accuracy_score(y, pred)),
        f"precision{suffix}": float(precision),
        f"recall{suffix}": float(recall),
        f"f1{suffix}": float(f1),
        f"positive_rate{suffix}": float(pred.mean()),
    }


def recalibrated(y, prob) -> np.ndarray:
    """Isotonic (PAV) recalibration of ``prob`` on ``y`` (ties pooled): the CORP reference."""
    y, p = check_binary(y, prob)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    return iso.fit(p, y).predict(p)


def score_decomposition(y, prob) -> dict:
    """CORP decomposition of log-loss and Brier: ``score = MCB - DSC + UNC`` for each.

    Returns ``{"log_loss": {...}, "brier": {...}}``, each with score, miscalibration (MCB),
    discrimination (DSC), uncertainty (UNC) and refinement (= UNC - DSC, the recalibrated
    forecast's score: the "discrimination" view of the scaling fit).
    """
    y, p = check_binary(y, prob)
    rc, base = recalibrated(y, p), np.full_like(y, y.mean())
    scorers = {"log_loss": lambda q: float(per_sample_log_loss(y, q).mean()),
               "brier": lambda q: float(((q - y) ** 2).mean())}
    out = {}
    for name, score in scorers.items():
        s, s_rc, s_base = score(p), score(rc), score(base)
        out[name] = {"score": s, "miscalibration": s - s_rc, "discrimination": s_base - s_rc,
                     "uncertainty": s_base, "refinement": s_rc}
    return out


def _decomposition_keys(y: np.ndarray, p: np.ndarray) -> dict:
    dec = score_decomposition(y, p)
    out = {f"log_loss_{k}": dec["log_loss"][k]
           for k in ("miscalibration", "discrimination", "refinement", "uncertainty")}
    out.update(brier_reliability=dec["brier"]["miscalibration"],
               brier_resolution=dec["brier"]["discrimination"],
               brier_uncertainty=dec["brier"]["uncertainty"])
    return out


def classification_metrics(y, prob, *, prior: float, threshold: float | None = None,
                           val_prior: float | None = None) -> dict:
    """All point metrics for one set of predictions (see module docstring for conventions).

    Keys: n, log_loss, log_loss_const, skill, auc (None if y has one class; then ``auc_note``
    says why), brier, accuracy/precision/recall/f1/positive_rate (at 0.5), the same with
    suffix ``_at_thr`` plus ``threshold`` when ``threshold`` is given, base_rate, prior,
    pred_mean, pred_std; with ``val_prior``: val_prior, log_loss_const_val, skill_val; the
    decomposition: log_loss_miscalibration/_discrimination/_refinement/_uncertainty and
    brier_reliability/_resolution/_uncertainty.
    """
    y, p = check_binary(y, prob)
    prior = check_probability(prior, "prior", open_interval=True)
    clipped = np.clip(p, PROB_EPS, 1 - PROB_EPS)
    loss = float(log_loss(y, clipped, labels=[0, 1]))
    loss_const = float(log_loss(y, np.full_like(y, prior), labels=[0, 1]))
    out: dict[str, Any] = {
        "n": int(y.size),
        "log_loss": loss,
        "log_loss_const": loss_const,
        "skill": 1.0 - loss / loss_const,
        "brier": float(brier_score_loss(y, p, pos_label=1.0)),
        "base_rate": float(y.mean()),
        "prior": prior,
        "pred_mean": float(p.mean()),
        "pred_std": float(p.std()),
    }
    if val_prior is not None:
        val_prior = check_probability(val_prior, "val_prior", open_interval=True)
        loss_val = float(log_loss(y, np.full_like(y, val_prior), labels=[0, 1]))
        out.update(val_prior=val_prior, log_loss_const_val=loss_val, skill_val=1.0 - loss / loss_val)
    out.update(_decomposition_keys(y, p))
    if np.unique(y).size < 2:
        out["auc"] = None
        out["auc_note"] = f"undefined: every label is {int(y[0])}"
    else:
        out["auc"] = float(roc_auc_score(y, p))
    out.update(_at_threshold(y, p, 0.5, ""))
    if threshold is not None:
        threshold = check_probability(threshold, "threshold", open_interval=False)
        out["threshold"] = threshold
        out.update(_at_threshold(y, p, threshold, "_at_thr"))
    return out


def expected_calibration_error(y, prob, bins: int = 10) -> tuple[float, list[dict]]:
    """ECE over ``bins`` equal-width probability bins on [0, 1].

    Returns ``(ece, table)``; ``table`` has one row per bin (empty bins included, with
    ``mean_pred``/``frac_pos`` None): lo, hi, count, mean_pred, frac_pos. Bin i holds
    ``lo <= prob < hi``; the last bin also holds prob == 1. ECE is the count-weighted mean of
    ``|mean_pred - frac_pos|``.
    """
    y, p = check_binary(y, prob)
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins={bins!r}; expected a positive integer")
    bins = int(bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.floor(p * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    sum_pred = np.bincount(which, weights=p, minlength=bins)
    sum_pos = np.bincount(which, weights=y, minlength=bins)
    table, ece = [], 0.0
    for i in range(bins):
        row: dict[str, Any] = {"lo": float(edges[i]), "hi": float(edges[i + 1]), "count": int(count[i]),
                               "mean_pred": None, "frac_pos": None}
        if count[i]:
            row["mean_pred"] = float(sum_pred[i] / count[i])
            row["frac_pos"] = float(sum_pos[i] / count[i])
            ece += count[i] / y.size * abs(row["mean_pred"] - row["frac_pos"])
        table.append(row)
    return float(ece), table


def choose_threshold(y_val, prob_val) -> float:
    """Decision threshold maximising F1 on VALIDATION predictions (never test).

    Candidates are the distinct predicted values (scikit-learn's precision-recall curve).
    Among F1 ties the lowest candidate wins (first maximum; deterministic). The returned
    cut-off is the midpoint between the winning value and the next lower distinct predicted
    value (half the winning value if none), so that ``prob > threshold`` — this package's
    rule — reproduces exactly the validation classification that achieved the maximum.
    Raises ValueError when validation has no positive label (F1 is then 0 everywhere).
    """
    y, p = check_binary(y_val, prob_val, name="prob_val")
    if y.sum() == 0:
        raise ValueError("y_val has no positive labels; cannot choose an F1-maximising threshold")
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = float(thresholds[int(np.argmax(f1))])
    lower = p[p < best]
    cut = (best + float(lower.max())) / 2 if lower.size else best / 2
    log.debug("choose_threshold: best value %.6g (F1 %.4f) -> cut-off %.6g", best, f1.max(), cut)
    return float(cut)


def is_collapsed(metrics: dict, std_floor: float, ci: dict | None = None) -> tuple[bool, str]:
    """Guard 12: flag predictions that barely vary, do not beat a base rate, or do not rank.

    Consumes a dict from :func:`classification_metrics` and optionally the bootstrap CIs of
    :func:`finscale.evaluate.bootstrap.metric_cis`. Collapsed when any holds: pred_std below
    ``std_floor``; skill <= 0 against the training base rate; skill_val <= 0 against the
    validation base rate (when recorded); with ``ci``: no significant discrimination (the
    AUC interval reaches 0.5, or is undefined) — a rule no constant forecast, at any base
    rate and with any small jitter, passes. Returns ``(collapsed, reason)``; reason is ""
    when not collapsed, otherwise names the failing quantities with numbers.
    """
    reasons = []
    if metrics["pred_std"] < std_floor:
        reasons.append(f"predictions barely vary (pred_std={metrics['pred_std']:.3g} < {std_floor:.3g})")
    if metrics["skill"] <= 0:
        reasons.append(
            f"log-loss {metrics['log_loss']:.4f} is no better than the base rate "
            f"({metrics['log_loss_const']:.4f}; skill={metrics['skill']:.4f})"
        )
    if metrics.get("skill_val") is not None and metrics["skill_val"] <= 0:
        reasons.append(
            f"log-loss {metrics['log_loss']:.4f} is no better than the validation base rate "
            f"({metrics['log_loss_const_val']:.4f}; skill_val={metrics['skill_val']:.4f})"
        )
    if ci is not None:
        auc_ci = ci.get("auc")
        if auc_ci is None or auc_ci[0] <= 0.5:
            shown = "undefined" if auc_ci is None else f"[{auc_ci[0]:.3f}, {auc_ci[1]:.3f}]"
            reasons.append(f"no significant discrimination (AUC interval {shown} reaches 0.5)")
    return bool(reasons), "; ".join(reasons)
