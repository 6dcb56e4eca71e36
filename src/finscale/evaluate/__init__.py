"""Evaluation stage: metrics, block-bootstrap CIs, baselines, backtest (numpy arrays in,
JSON-ready dicts out). The lead wires these to run directories; see each module's docstring.
"""

from finscale.evaluate.backtest import (
    COST_SWEEP_BPS,
    backtest,
    cost_sweep,
    daily_returns_at,
    deflated_sharpe_ratio,
    pool_backtests,
)
from finscale.evaluate.baselines import BASELINES, CONSTANT_BASELINES, FITTED_ON_VALIDATION, fit_baselines
from finscale.evaluate.blocklen import choose_block_len, politis_white
from finscale.evaluate.bootstrap import (
    block_bootstrap_indices,
    bootstrap_ci,
    default_block_len,
    metric_cis,
    paired_bootstrap_test,
    panel_block_indices,
    replicate_metrics,
    resampled_auc,
)
from finscale.evaluate.forecast_tests import (
    compare_forecasts,
    diebold_mariano,
    holm,
    model_confidence_set,
    spa_test,
)
from finscale.evaluate.predictions import evaluate_predictions
from finscale.evaluate.window_baselines import WINDOW_BASELINES, fit_window_baselines
from finscale.metrics import (
    choose_threshold,
    classification_metrics,
    expected_calibration_error,
    is_collapsed,
    per_sample_log_loss,
    recalibrated,
    score_decomposition,
)

__all__ = [
    "WINDOW_BASELINES",
    "fit_window_baselines",
    "BASELINES",
    "CONSTANT_BASELINES",
    "FITTED_ON_VALIDATION",
    "choose_block_len",
    "politis_white",
    "recalibrated",
    "score_decomposition",
    "backtest",
    "COST_SWEEP_BPS",
    "cost_sweep",
    "daily_returns_at",
    "pool_backtests",
    "block_bootstrap_indices",
    "panel_block_indices",
    "bootstrap_ci",
    "choose_threshold",
    "classification_metrics",
    "compare_forecasts",
    "diebold_mariano",
    "holm",
    "model_confidence_set",
    "spa_test",
    "default_block_len",
    "deflated_sharpe_ratio",
    "evaluate_predictions",
    "expected_calibration_error",
    "fit_baselines",
    "is_collapsed",
    "metric_cis",
    "paired_bootstrap_test",
    "per_sample_log_loss",
    "replicate_metrics",
    "resampled_auc",
]
