"""Cross-sectional signal metrics of a panel: daily IC, Rank IC, ICIR with t-statistics, and a
top-k long-short portfolio with costs (the qlib conventions).

Consumes, per test window (one per asset and day): the day, the asset, the model's score (its
probability) and the realised forward return of the horizon, Close[t+h] / Close[t] - 1 (for
the IC) and the next day's return Close[t+1] / Close[t] - 1 (for the portfolio).
Produces JSON-ready dicts.

Definitions.
- IC_t = Pearson correlation across the assets of day t between score and forward return;
  Rank IC_t the same of their ranks (Spearman). Days with fewer than ``MIN_ASSETS`` assets
  or no spread in either are skipped.
- mean, std (ddof=1), ICIR = mean / std (per day, not annualised, as qlib), t = ICIR·sqrt(n).
  Forward returns of neighbouring days overlap by h - 1 days, so daily ICs are correlated
  and the plain t overstates the evidence; ``t_hac`` divides by a Newey–West standard error
  with h - 1 lags, and ``ci`` is a moving-block bootstrap interval of the mean IC over days
  (:func:`finscale.evaluate.block_bootstrap_indices`, blocks >= h).
- Top-k long-short: at each day's close, long the k highest-scored assets and short the k
  lowest, equal weights (1/k each side, gross exposure 2), held one day and rebalanced daily.
  Costs on weight changes as qlib: 5 bp of notional opened, 15 bp of notional closed (the
  close cost includes stamp duty in qlib's China setting; we keep its numbers). Sharpe is
  annualised with sqrt(252); turnover is the mean daily traded notional (open + close).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from finscale.evaluate.bootstrap import block_bootstrap_indices, percentile_ci

MIN_ASSETS = 3
OPEN_BPS, CLOSE_BPS = 5.0, 15.0
TRADING_DAYS = 252


def daily_ic(days, scores, forward_returns) -> pd.DataFrame:
    """Per day with >= MIN_ASSETS assets: day, n, ic (Pearson), rank_ic (Spearman = Pearson
    of within-day average ranks); vectorised over days."""
    frame = pd.DataFrame({"day": np.asarray(days), "s": np.asarray(scores, dtype=np.float64),
                          "r": np.asarray(forward_returns, dtype=np.float64)}).dropna()
    by = frame.groupby("day", sort=True)
    frame["rs"], frame["rr"] = by["s"].rank(), by["r"].rank()
    out = pd.DataFrame({"n": by.size(), "ic": _grouped_corr(frame, "s", "r"),
                        "rank_ic": _grouped_corr(frame, "rs", "rr")})
    out = out[(out["n"] >= MIN_ASSETS) & np.isfinite(out["ic"]) & np.isfinite(out["rank_ic"])]
    return out.rename_axis("day").reset_index()[["day", "n", "ic", "rank_ic"]]


def _grouped_corr(frame: pd.DataFrame, a: str, b: str) -> pd.Series:
    """Per-day Pearson correlation of columns a and b (NaN where either has no spread)."""
    by = frame.groupby("day", sort=True)
    x, y = frame[a] - by[a].transform("mean"), frame[b] - by[b].transform("mean")
    sums = pd.DataFrame({"xy": x * y, "xx": x * x, "yy": y * y, "day": frame["day"]}).groupby("day", sort=True).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = sums["xy"] / np.sqrt(sums["xx"] * sums["yy"])
    return corr.where((sums["xx"] > 1e-300) & (sums["yy"] > 1e-300))


def newey_west_se(x: np.ndarray, lags: int) -> float:
    """Newey–West (Bartlett kernel) standard error of the mean of ``x``."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    n = x.size
    var = float(x @ x) / n
    for k in range(1, min(lags, n - 1) + 1):
        var += 2 * (1 - k / (lags + 1)) * float(x[k:] @ x[:-k]) / n
    return math.sqrt(max(var, 0.0) / n)


def _series_summary(x: np.ndarray, horizon: int, block_len: int, n_resamples: int, seed: int) -> dict:
    n = x.size
    mean, sd = float(x.mean()), float(x.std(ddof=1)) if n > 1 else math.nan
    ir = mean / sd if sd > 0 else None
    se = newey_west_se(x, horizon - 1)
    ci = None
    if n >= 2 * max(block_len, 1):
        idx = block_bootstrap_indices(n, max(block_len, horizon), n_resamples, np.random.default_rng(seed))
        ci = percentile_ci(x[idx].mean(axis=1))
    return {"mean": mean, "std": sd, "ir": ir, "t": None if ir is None else ir * math.sqrt(n),
            "t_hac": mean / se if se > 0 else None, "ci": ci}


def ic_summary(days, scores, forward_returns, *, horizon: int, block_len: int, n_resamples: int,
               seed: int) -> dict:
    """``ic`` block of eval.json: mean, std, icir, t, t_hac, ci and the same for rank IC
    (``rank_ic``, ``rank_icir``, ``rank_t``, ``rank_t_hac``, ``rank_ci``), n_days."""
    d = daily_ic(days, scores, forward_returns)
    if len(d) < 3:
        return {"n_days": len(d), "reason": f"{len(d)} day(s) with >= {MIN_ASSETS} assets; need >= 3"}
    ic = _series_summary(d["ic"].to_numpy(), horizon, block_len, n_resamples, seed)
    rk = _series_summary(d["rank_ic"].to_numpy(), horizon, block_len, n_resamples, seed)
    return {"n_days": len(d), "mean_assets": float(d["n"].mean()), "mean": ic["mean"], "std": ic["std"],
            "icir": ic["ir"], "t": ic["t"], "t_hac": ic["t_hac"], "ci": ic["ci"],
            "rank_ic": rk["mean"], "rank_std": rk["std"], "rank_icir": rk["ir"], "rank_t": rk["t"],
            "rank_t_hac": rk["t_hac"], "rank_ci": rk["ci"], "hac_lags": horizon - 1,
            "daily": {"day": [str(x)[:10] for x in d["day"]], "ic": d["ic"].tolist(),
                      "rank_ic": d["rank_ic"].tolist()}}


def topk_weights(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """(day x asset) weights: +1/k on the k highest scores, -1/k on the k lowest, 0 else."""
    frame = frame.sort_values(["day", "s", "asset"], kind="stable")
    by = frame.groupby("day", sort=True)
    rank, n = by.cumcount().to_numpy(), by["s"].transform("size").to_numpy()
    w = np.where(n >= 2 * k, np.where(rank >= n - k, 1.0 / k, np.where(rank < k, -1.0 / k, 0.0)), 0.0)
    return frame.assign(w=w).pivot_table(index="day", columns="asset", values="w", fill_value=0.0)

def topk_long_short(days, assets, scores, next_returns, *, k: int, open_bps: float = OPEN_BPS,
                    close_bps: float = CLOSE_BPS) -> dict:
    """The top-k long-short portfolio (rules in the module docstring): sharpe, sharpe_gross,
    mean daily return net and gross, turnover, n_days, k, costs, and the ``daily`` net returns."""
    frame = pd.DataFrame({"day": np.asarray(days), "asset": np.asarray(assets),
                          "s": np.asarray(scores, dtype=np.float64),
                          "r": np.asarray(next_returns, dtype=np.float64)}).dropna()
    w = topk_weights(frame, k)
    r = frame.pivot_table(index="day", columns="asset", values="r").reindex_like(w).fillna(0.0)
    gross = (w * r).sum(axis=1).to_numpy()
    prev = np.vstack([np.zeros((1, w.shape[1])), w.to_numpy()[:-1]])
    cur = w.to_numpy()
    opened = np.clip(np.abs(cur) - np.abs(prev), 0, None) + np.where(np.sign(cur) * np.sign(prev) < 0,
                                                                      np.minimum(np.abs(cur), np.abs(prev)), 0)
    closed = np.abs(cur - prev) - opened
    cost = (opened.sum(axis=1) * open_bps + closed.sum(axis=1) * close_bps) / 1e4
    net = gross - cost
    return {"k": int(k), "open_bps": open_bps, "close_bps": close_bps, "n_days": int(net.size),
            "sharpe": _sharpe(net), "sharpe_gross": _sharpe(gross), "mean_net": float(net.mean()),
            "mean_gross": float(gross.mean()), "turnover": float(np.abs(cur - prev).sum(axis=1).mean()),
            "daily": [float(x) for x in net]}


def _sharpe(x: np.ndarray) -> float | None:
    sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return float(np.mean(x) / sd * math.sqrt(TRADING_DAYS)) if sd > 0 else None
