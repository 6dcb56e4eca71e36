"""Causal indicator features: registry, feature sets, processed-dataset artifacts.

Consumes: the raw OHLCV frame of ``finscale.data``. Produces: processed frames (``Date``,
the set's model inputs, ``price_close``/``price_high`` for labels) and
``DATA_DIR/processed/<NAME>.<set>.parquet`` with a manifest entry. Guarantees (guard 1):
every registered feature's value at row t depends on rows 0..t only; weekly features use
completed weeks only. This package never reads labels (``finscale.labels`` is downstream).
"""

from finscale.features import indicators, relative, weekly  # noqa: F401  (register features)
from finscale.features.build import PRICE_COLUMNS, Violation, build_features, find_lookahead, leading_nans
from finscale.features.registry import (
    FEATURE_SETS,
    FEATURES,
    Bars,
    Feature,
    bounded_columns,
    feature_names,
    get_feature,
    input_columns,
    register,
    set_lookback,
)
from finscale.features.store import build_processed, ensure_processed, load_processed, processed_path

__all__ = [
    "FEATURES", "FEATURE_SETS", "PRICE_COLUMNS", "Bars", "Feature", "Violation", "bounded_columns",
    "build_features", "build_processed", "ensure_processed", "feature_names", "find_lookahead",
    "get_feature", "input_columns", "leading_nans", "load_processed", "processed_path", "register",
    "set_lookback",
]

for _set in FEATURE_SETS:  # a set naming an unregistered feature is a bug: fail at import
    feature_names(_set)
