"""Per-asset evaluation of panels and the known optimum of synthetic markets.

Consumes: the prepared data, a run's test windows, labels and probabilities, the baselines'
test probabilities and the evaluation settings of :mod:`finscale.evaluate.phase`.
Produces: ``eval.json``'s ``per_asset`` block (per asset: test metrics with CIs against the
asset's own training base rate, the pooled strongest baseline and the constant base rate on the
asset's windows, its backtest) and ``optimal_log_loss`` (the Bayes-optimal log-loss of the test
windows where every asset is a ``synthetic:`` market; None otherwise).
Guarantees: per-asset numbers use exactly the pooled run's predictions (nothing refitted).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from finscale.config import StudyConfig
from finscale.data.panel import source_list
from finscale.evaluate import evaluate_predictions, per_sample_log_loss
from finscale.evaluate.signal import ic_summary, topk_long_short

log = logging.getLogger(__name__)


def per_asset(prep, test, y: np.ndarray, prob: np.ndarray, baselines: dict, strongest: str,
              train_ends: np.ndarray, labels: np.ndarray, common: dict, backtest_of) -> dict:
    """{asset: block}; ``backtest_of(ends_mask)`` runs the backtest on one asset's windows."""
    out = {}
    asset_of_end = prep.asset_index[test.ends]
    for a, name in enumerate(prep.assets):
        mask = asset_of_end == a
        if not mask.any():
            continue
        own_train = train_ends[prep.asset_index[train_ends] == a]
        prior = float(np.mean(labels[own_train])) if len(own_train) else float(np.mean(labels[train_ends]))
        kw = {**common, "val_prior": None}
        block = {"test_windows": int(mask.sum()), "train_windows": int(len(own_train)),
                 "train_base_rate": prior,
                 "test": evaluate_predictions(y[mask], prob[mask], prior=prior, threshold=None, **kw)}
        block["baselines"] = {
            name_b: evaluate_predictions(y[mask], baselines[name_b]["test"][mask], prior=prior,
                                         threshold=None, **kw)
            for name_b in dict.fromkeys([strongest, "constant"]) if name_b in baselines}
        block["backtest"] = backtest_of(mask)
        out[name] = block
    return out


def panel_signal(prep, test, prob: np.ndarray, horizon: int, common: dict) -> dict:
    """``ic`` (daily IC / Rank IC / ICIR with t-statistics against the realised h-day return)
    and ``topk`` (the top-k long-short with qlib costs, k = a fifth of the assets, at least 1)
    of :mod:`finscale.evaluate.signal`. Test windows have labels, so t + h stays in the asset."""
    close = prep.frame["price_close"].to_numpy(dtype=np.float64)
    ends = test.ends
    days = prep.dates.to_numpy()[ends].astype("datetime64[D]")
    assets = prep.asset_index[ends]
    ic = ic_summary(days, prob, close[ends + horizon] / close[ends] - 1.0, horizon=horizon,
                    block_len=common["block_len"], n_resamples=common["n_resamples"], seed=common["seed"])
    k = max(1, round(len(prep.assets) / 5))
    topk = topk_long_short(days, assets, prob, close[ends + 1] / close[ends] - 1.0, k=k)
    return {"ic": ic, "topk": topk}


@functools.lru_cache(maxsize=32)
def _optimal(source: str, kind: str, threshold: float, price: str, horizon: int):
    from finscale.data.synthetic_truth import optimal_series

    return optimal_series(source, kind=kind, threshold=threshold, price=price, horizon=horizon)


def optimal_log_loss(cfg: StudyConfig, prep, test, y: np.ndarray, horizon: int) -> dict | None:
    """Bayes-optimal log-loss on the test windows (pooled and per asset) when every source is
    synthetic; None otherwise. Probabilities are matched to the windows by asset and date."""
    sources = source_list(cfg.data)
    if not all(s.startswith("synthetic:") for s in sources):
        return None
    t = cfg.target
    dates = prep.dates.to_numpy()[test.ends]
    asset_of_end = prep.asset_index[test.ends] if prep.is_panel else np.zeros(len(test), dtype=int)
    p = np.full(len(test), np.nan)
    for a, source in enumerate(sources):
        series = _optimal(source, t.kind, float(t.threshold), t.price, horizon)
        mask = asset_of_end == a
        p[mask] = series.reindex(dates[mask]).to_numpy()
    if not np.isfinite(p).all():
        log.warning("optimal probabilities missing for %d test windows", int((~np.isfinite(p)).sum()))
        return None
    losses = per_sample_log_loss(y, np.clip(p, 1e-12, 1 - 1e-12))
    out: dict[str, Any] = {"pooled": float(losses.mean())}
    if prep.is_panel:
        out["per_asset"] = {name: float(losses[asset_of_end == a].mean())
                            for a, name in enumerate(prep.assets) if (asset_of_end == a).any()}
    return out
