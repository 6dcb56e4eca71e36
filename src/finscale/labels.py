"""Forward-looking targets: the only code that reads rows after t.

Consumes: a processed frame (``price_close``, ``price_high``; see ``finscale.features``) and
the study's :class:`~finscale.config.TargetConfig` plus ONE horizon h (a run's horizon; guard 2).
Produces: float32 labels aligned with the frame's rows.
- ``threshold``: y_t = 1 if max(P[t+1..t+h]) >= Close[t] * (1 + threshold), where P is High
  (``price="high"``) or Close (``price="close"``).
- ``direction``: y_t = 1 if Close[t+h] > Close[t].
Guarantees: the last h rows (whose future is not in the data) are NaN, never 0; a NaN
price makes every label that reads it NaN. Vectorised: no per-row Python loop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from finscale.config import TargetConfig

__all__ = ["make_labels", "future_max"]


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        raise ValueError(f"labels need column {name!r} (a processed frame from "
                         f"finscale.features has price_close and price_high); found: "
                         f"{', '.join(map(str, frame.columns))}")
    return frame[name].to_numpy(dtype=np.float64)


def future_max(prices: np.ndarray, horizon: int) -> np.ndarray:
    """max(prices[t+1..t+horizon]) for each t; NaN for the last ``horizon`` rows."""
    out = np.full(len(prices), np.nan)
    if len(prices) > horizon:
        # A NaN anywhere in the window yields NaN (np.max propagates it), as intended.
        out[:-horizon] = sliding_window_view(prices[1:], horizon).max(axis=1)
    return out


def _future_close(close: np.ndarray, horizon: int) -> np.ndarray:
    out = np.full(len(close), np.nan)
    if len(close) > horizon:
        out[:-horizon] = close[horizon:]
    return out


def make_labels(frame: pd.DataFrame, target: TargetConfig, horizon: int) -> np.ndarray:
    """Binary labels (float32 0/1, NaN where unknown) for ``target`` at ``horizon`` rows ahead."""
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon: expected an integer >= 1, got {horizon!r}")
    close = _column(frame, "price_close")
    if target.kind == "direction":
        future, level = _future_close(close, horizon), close
        hit = future > level
    elif target.kind == "threshold":
        if target.price not in ("high", "close"):
            raise ValueError(f"target.price: {target.price!r} is not one of ['high', 'close']")
        prices = _column(frame, "price_high") if target.price == "high" else close
        future, level = future_max(prices, horizon), close * (1.0 + target.threshold)
        hit = future >= level
    else:
        raise ValueError(f"target.kind: {target.kind!r} is not one of ['threshold', 'direction']")
    labels = hit.astype(np.float32)
    labels[np.isnan(future) | np.isnan(level)] = np.nan
    return labels
