"""One call per model (or baseline) on one split: point metrics, CIs, calibration, collapse.

Consumes time-ordered labels and probabilities of one evaluation split plus the training
prior, the validation base rate (``val_prior``, the reference known at forecast time), the
validation-chosen threshold and the split's block length (see :mod:`.blocklen`). Produces the JSON-ready block that goes into
``eval.json`` for that model. Guarantees the same resamples (same seed) for every model
scored on the same days, so their intervals are comparable and paired.
"""

from __future__ import annotations

from finscale.evaluate.bootstrap import metric_cis
from finscale.metrics import classification_metrics, expected_calibration_error, is_collapsed

DEFAULT_STD_FLOOR = 1e-3


def evaluate_predictions(y, prob, *, prior: float, threshold: float | None, horizon: int,
                         block_len: int, n_resamples: int, seed: int, ece_bins: int = 10,
                         std_floor: float = DEFAULT_STD_FLOOR, alpha: float = 0.05,
                         val_prior: float | None = None, days=None) -> dict:
    """``{"metrics", "ci", "calibration": {"ece", "bins"}, "collapsed", "collapse_reason"}``.

    The collapse flag uses the CIs too (no significant discrimination is collapse), see
    :func:`finscale.metrics.is_collapsed`. ``days``: a panel's day per row, so intervals
    resample calendar days with all their assets (see :func:`~.bootstrap.metric_cis`).
    """
    metrics = classification_metrics(y, prob, prior=prior, threshold=threshold, val_prior=val_prior)
    ece, table = expected_calibration_error(y, prob, ece_bins)
    metrics["ece"] = ece
    ci = metric_cis(y, prob, prior, threshold, block_len, n_resamples, seed, horizon=horizon,
                    alpha=alpha, val_prior=val_prior, days=days)
    collapsed, reason = is_collapsed(metrics, std_floor, ci)
    return {
        "metrics": metrics,
        "ci": ci,
        "ci_level": 1 - alpha,
        "block_len": int(block_len),
        "n_resamples": int(n_resamples),
        "calibration": {"ece": ece, "bins": table},
        "collapsed": collapsed,
        "collapse_reason": reason,
    }
