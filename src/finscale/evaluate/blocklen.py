"""Bootstrap block length chosen from the data (guard 13): Politis–White automatic selection.

Consumes: time-ordered per-window series of one evaluation split (e.g. the labels and the
per-window losses of predictors scored on it) and the label horizon. Produces a JSON-ready record:
the Politis & White (2004) / Patton, Politis & White (2009) optimal block lengths of each
series (``arch.bootstrap.optimal_block_length``: ``stationary`` and ``circular`` estimates)
and the block length the bootstraps use.

Rule (one block length for every metric and paired test of a split, so all of them resample
the same days): ``block_len = max(horizon, ceil(max over series of max(stationary,
circular)))``, capped at ``n // 2`` so a resample still mixes at least two blocks. The maximum
is the conservative choice: the slowest-decaying dependence decides. A series that does not
vary (a constant predictor's loss on one-class labels) has no estimate and is skipped. A
positive ``override`` (``evaluate.block_len``) replaces the estimate but never goes below the
horizon (:func:`finscale.evaluate.bootstrap.check_block_len`).
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from finscale.evaluate.bootstrap import check_block_len

log = logging.getLogger(__name__)

METHOD = "politis-white"


def politis_white(series) -> dict[str, float] | None:
    """``{"stationary", "circular"}`` optimal block lengths of one series; None if undefined."""
    from arch.bootstrap import optimal_block_length

    x = np.asarray(series, dtype=np.float64).ravel()
    if x.size < 8 or not np.all(np.isfinite(x)) or np.ptp(x) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        est = optimal_block_length(x)
    out = {k: float(est[k].iloc[0]) for k in ("stationary", "circular")}
    return out if all(math.isfinite(v) and v > 0 for v in out.values()) else None


def choose_block_len(series: dict[str, np.ndarray], horizon: int, override: int = 0) -> dict:
    """The split's block length and the per-series estimates behind it (see module docstring).

    Returns ``{"block_len", "method", "horizon", "override", "estimates": {name: {...}|None}}``;
    ``method`` is "override" when ``override > 0``.
    """
    lengths = {len(np.asarray(v)) for v in series.values()}
    if len(lengths) != 1:
        raise ValueError(f"block length series have different lengths {sorted(lengths)}")
    n = lengths.pop()
    estimates = {name: politis_white(values) for name, values in series.items()}
    if override > 0:
        chosen, method = int(override), "override"
    else:
        longest = max((max(e.values()) for e in estimates.values() if e), default=1.0)
        chosen = max(int(horizon), math.ceil(longest))
        chosen, method = min(chosen, max(n // 2, int(horizon))), METHOD
    check_block_len(chosen, horizon)
    log.info("block length %d (%s, horizon %d, n %d)", chosen, method, horizon, n)
    return {"block_len": int(chosen), "method": method, "horizon": int(horizon),
            "override": int(override), "n": int(n), "estimates": estimates}
