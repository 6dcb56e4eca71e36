"""Long/flat backtest of a probability signal, and the deflated Sharpe ratio.

Consumes, for consecutive trading days t = 0..T-1 in time order: the close, the date and
the model's probability that the price rises within ``horizon`` days (NaN = no signal,
e.g. the last days whose label is unknown). Produces per-day equity curves and summary
statistics for the strategy and for buy-and-hold over the same days.

Rules (simple, conservative, documented):
- At day t with ``prob[t] > threshold`` and t + h <= T-1, buy at Close[t] and sell at
  Close[t+h]; the next decision is at day t+h (non-overlapping holding periods; a new
  position may open at the same close the previous one is sold). Otherwise stay flat
  (no interest on cash) and decide again at t+1.
- Every holding period is a round trip: ``cost_bps`` of notional is charged at entry and
  again at exit, even when one period ends where the next begins.
- Turnover: traded notional as a multiple of capital; each entry and each exit trades the
  whole position once, so the strategy's net return is its gross return less about
  cost x turnover. ``cost_sweep`` reruns the same positions at several cost levels
  (0, 1, 5, 10, 20 bp and the study's own): positions never depend on the cost.
- Buy-and-hold buys at Close[0] and sells at Close[T-1], paying the same costs once each.
- The equity curve starts from capital 1 before day 0 and is marked at each close after
  that day's trades; daily returns are equity[s]/equity[s-1] - 1 for s = 1..T-1 (the day-0
  entry cost is charged in the first return). Sharpe = mean/std (ddof=1) of daily returns
  x sqrt(252), risk-free rate 0; CAGR over calendar days / 365.25; max drawdown is a
  positive fraction of the running peak (peak includes the initial capital).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

TRADING_DAYS = 252
COST_SWEEP_BPS = (0.0, 1.0, 5.0, 10.0, 20.0)
SWEEP_STATS = ("total_return", "cagr", "sharpe", "max_drawdown", "n_trades")
EULER_GAMMA = 0.5772156649015329


def _check_inputs(close, dates, signal_prob, threshold, horizon, cost_bps):
    close = np.asarray(close, dtype=np.float64).ravel()
    prob = np.asarray(signal_prob, dtype=np.float64).ravel()
    days = np.asarray(dates).astype("datetime64[D]").ravel()
    if not (close.size == prob.size == days.size):
        raise ValueError(f"close/dates/signal_prob lengths {close.size}/{days.size}/{prob.size} differ")
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon={horizon!r}; expected a positive integer number of days")
    if close.size < horizon + 1:
        raise ValueError(f"{close.size} days is too short for one {horizon}-day holding period")
    if not np.all(np.isfinite(close)) or close.min() <= 0:
        raise ValueError("close must be finite positive prices")
    if np.any(np.diff(days) <= np.timedelta64(0, "D")):
        raise ValueError("dates must be strictly increasing trading days")
    if np.any((prob < 0) | (prob > 1)):
        raise ValueError("signal_prob must be probabilities in [0, 1] (NaN = no signal)")
    if not 0 <= threshold <= 1 or cost_bps < 0:
        raise ValueError(f"threshold={threshold!r} (expected [0, 1]) / cost_bps={cost_bps!r} (expected >= 0)")
    return close, days, prob, int(horizon)


def _positions(prob, threshold, horizon):
    """Held-over-(s-1, s] flags, per-day cost multipliers' counts, and the trades."""
    n = prob.size
    held = np.zeros(n, dtype=bool)
    n_costs = np.zeros(n, dtype=np.int64)
    trades, t = [], 0
    while t + horizon <= n - 1:
        if prob[t] > threshold:  # NaN compares False: no signal, stay flat
            held[t + 1 : t + horizon + 1] = True
            n_costs[t] += 1
            n_costs[t + horizon] += 1
            trades.append((t, t + horizon))
            t += horizon
        else:
            t += 1
    return held, n_costs, trades


def _equity(close, held, n_costs, cost):
    price_ret = np.r_[0.0, close[1:] / close[:-1] - 1.0]
    growth = (1.0 + held * price_ret) * (1.0 - cost) ** n_costs
    return np.cumprod(growth)


def _summary(equity, days, held, trade_returns):
    # Returns for days 1..T-1, each relative to the previous close; the first is relative to
    # the initial capital so that the day-0 entry cost is not lost.
    daily = equity[1:] / np.r_[1.0, equity[1:-1]] - 1.0
    years = (days[-1] - days[0]).astype(np.int64) / 365.25
    sd = daily.std(ddof=1) if daily.size > 1 else 0.0
    peak = np.maximum.accumulate(np.r_[1.0, equity])[1:]
    trade_returns = np.asarray(trade_returns, dtype=np.float64)
    return {
        "total_return": float(equity[-1] - 1.0),
        "cagr": float(equity[-1] ** (1.0 / years) - 1.0) if years > 0 else None,
        "sharpe": float(daily.mean() / sd * math.sqrt(TRADING_DAYS)) if sd > 0 else None,
        "max_drawdown": float(np.max(1.0 - equity / peak)),
        "hit_rate": float((trade_returns > 0).mean()) if trade_returns.size else None,
        "exposure": float(held[1:].mean()),
        "n_trades": int(trade_returns.size),
        "n_obs": int(daily.size),
        "skew": float(sps.skew(daily)) if sd > 0 else None,
        "kurtosis": float(sps.kurtosis(daily, fisher=False)) if sd > 0 else None,
        "equity": [float(v) for v in equity],
    }


def backtest(close, dates, signal_prob, threshold: float, horizon: int, cost_bps: float) -> dict:
    """Run the long/flat strategy and buy-and-hold (rules in the module docstring).

    Returns ``{"strategy": stats, "buy_and_hold": stats, "dates": [ISO], "trades": [...],
    "threshold", "horizon", "cost_bps", "n_days", "n_no_signal"}``; stats hold
    total_return, cagr, sharpe, max_drawdown, hit_rate, exposure, n_trades, n_obs, skew,
    kurtosis (Pearson, normal = 3) of daily returns, and the per-day ``equity`` list.
    Undefined statistics (no trades, zero variance) are None.
    """
    close, days, prob, horizon = _check_inputs(close, dates, signal_prob, threshold, horizon, cost_bps)
    cost = cost_bps / 1e4
    held, n_costs, trades = _positions(prob, threshold, horizon)
    trade_rows = [
        {"entry": str(days[a]), "exit": str(days[b]), "gross_return": float(close[b] / close[a] - 1),
         "net_return": float(close[b] / close[a] * (1 - cost) ** 2 - 1)}
        for a, b in trades
    ]
    bh_held = np.r_[False, np.ones(close.size - 1, dtype=bool)]
    bh_costs = np.zeros(close.size, dtype=np.int64)
    bh_costs[0] += 1
    bh_costs[-1] += 1
    bh_return = close[-1] / close[0] * (1 - cost) ** 2 - 1
    return {
        "strategy": _summary(_equity(close, held, n_costs, cost), days, held,
                             [row["net_return"] for row in trade_rows]),
        "buy_and_hold": _summary(_equity(close, bh_held, bh_costs, cost), days, bh_held, [bh_return]),
        "dates": [str(d) for d in days],
        "trades": trade_rows,
        "threshold": float(threshold),
        "horizon": horizon,
        "cost_bps": float(cost_bps),
        "n_days": int(close.size),
        "n_no_signal": int(np.isnan(prob).sum()),
    }


def cost_sweep(close, dates, signal_prob, threshold: float, horizon: int,
               costs_bps=COST_SWEEP_BPS) -> list[dict]:
    """The strategy of :func:`backtest` at each cost level (same positions): per level
    cost_bps, total_return, cagr, sharpe, max_drawdown, n_trades, ``turnover`` (one-way
    traded notional per year, in multiples of capital) and ``daily_turnover`` (per day)."""
    close, days, prob, horizon = _check_inputs(close, dates, signal_prob, threshold, horizon, 0.0)
    held, n_costs, trades = _positions(prob, threshold, horizon)
    gross = close[[b for _, b in trades]] / close[[a for a, _ in trades]] if trades else np.zeros(0)
    out = []
    for bps in sorted({float(c) for c in costs_bps}):
        if bps < 0:
            raise ValueError(f"cost_sweep: cost {bps!r} bp; expected >= 0")
        cost = bps / 1e4
        stats = _summary(_equity(close, held, n_costs, cost), days, held, gross * (1 - cost) ** 2 - 1)
        out.append({"cost_bps": bps, **{k: stats[k] for k in SWEEP_STATS}, **_turnover(n_costs)})
    return out


def _turnover(n_costs: np.ndarray) -> dict:
    daily = float(n_costs.sum()) / max(1, n_costs.size - 1)
    return {"daily_turnover": daily, "turnover": daily * TRADING_DAYS}


def cost_counts(bt: dict) -> np.ndarray:
    """Per day of ``bt["dates"]`` the number of entries/exits charged (from its trades)."""
    index = {d: i for i, d in enumerate(bt["dates"])}
    n_costs = np.zeros(len(bt["dates"]), dtype=np.int64)
    for t in bt["trades"]:
        n_costs[index[t["entry"]]] += 1
        n_costs[index[t["exit"]]] += 1
    return n_costs


def daily_returns_at(bt: dict, cost_bps: float) -> np.ndarray:
    """The strategy's daily returns (days 1..T-1) of a single-asset :func:`backtest` result
    recomputed at another cost: each day's growth rescaled by ((1 - c) / (1 - c0))^charges."""
    equity = np.asarray(bt["strategy"]["equity"], dtype=np.float64)
    growth = equity / np.r_[1.0, equity[:-1]]
    c0, c = bt["cost_bps"] / 1e4, cost_bps / 1e4
    growth = growth * ((1 - c) / (1 - c0)) ** cost_counts(bt)
    return np.r_[growth[0] * growth[1], growth[2:]] - 1.0


def deflated_sharpe_ratio(sharpe: float, sharpe_trials, n_obs: int, skew: float, kurtosis: float,
                          *, periods_per_year: float = TRADING_DAYS) -> float:
    """Deflated Sharpe ratio (Bailey & Lopez de Prado 2014), as a probability.

    P(true Sharpe > SR0), where SR0 is the expected maximum Sharpe of ``len(sharpe_trials)``
    unskilled trials with the trials' variance:
    SR0 = sqrt(V) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e))), g = Euler's constant,
    DSR = Z((SR - SR0) sqrt(T - 1) / sqrt(1 - skew * SR + (kurtosis - 1) / 4 * SR^2)).
    ``sharpe`` and ``sharpe_trials`` are annualised with sqrt(``periods_per_year``) as
    :func:`backtest` reports them (pass 1 for per-period values); ``kurtosis`` is Pearson
    (normal = 3); ``n_obs`` is the number of return observations T. With fewer than two
    trials SR0 = 0 and this is the probabilistic Sharpe ratio.
    """
    trials = np.asarray(sharpe_trials, dtype=np.float64).ravel()
    if n_obs < 2 or not np.all(np.isfinite(trials)) or not math.isfinite(sharpe):
        raise ValueError("deflated_sharpe_ratio needs finite Sharpe ratios and n_obs >= 2")
    scale = math.sqrt(periods_per_year)
    sr = sharpe / scale
    sr0 = 0.0
    if trials.size >= 2:
        n = trials.size
        sd = float(np.std(trials / scale, ddof=1))
        sr0 = sd * ((1 - EULER_GAMMA) * sps.norm.ppf(1 - 1 / n)
                    + EULER_GAMMA * sps.norm.ppf(1 - 1 / (n * math.e)))
    var_term = 1 - skew * sr + (kurtosis - 1) / 4 * sr**2
    if var_term <= 0:
        raise ValueError(f"skew={skew}, kurtosis={kurtosis} give a non-positive Sharpe variance")
    return float(sps.norm.cdf((sr - sr0) * math.sqrt(n_obs - 1) / math.sqrt(var_term)))


def pool_backtests(parts: dict[str, dict]) -> dict:
    """Panels: the equal-weight, daily-rebalanced portfolio of per-asset backtests.

    Each day's return is the mean of the returns of the assets trading that day (the
    strategy's net of costs, and buy-and-hold's); the result has the shape of
    :func:`backtest` plus ``"assets"``. Trades keep their asset's name. When every part
    carries a ``cost_sweep``, the pooled one is the same portfolio at each cost level
    (turnover: the mean of the assets').
    """
    names = list(parts)
    per_asset_days = {n: pd.DatetimeIndex(parts[n]["dates"]) for n in names}
    days = pd.DatetimeIndex(sorted(set().union(*per_asset_days.values())))
    out = {}
    for side in ("strategy", "buy_and_hold"):
        rets = np.full((len(days), len(names)), np.nan)
        for j, n in enumerate(names):
            eq = np.asarray(parts[n][side]["equity"], dtype=np.float64)
            daily = eq / np.r_[1.0, eq[:-1]] - 1.0
            rets[days.get_indexer(per_asset_days[n]), j] = daily
        count = np.isfinite(rets).sum(axis=1)  # assets trading that day
        mean = np.divide(np.nansum(rets, axis=1), count, out=np.zeros(len(days)), where=count > 0)
        equity = np.cumprod(1.0 + mean)
        held = np.full(len(days), True)
        trades = [t["net_return"] for n in names for t in parts[n]["trades"]] if side == "strategy" \
            else [parts[n]["buy_and_hold"]["total_return"] for n in names]
        summary = _summary(equity, days.values, held, trades)
        summary["exposure"] = float(np.mean([parts[n][side]["exposure"] for n in names]))
        out[side] = summary
    first = parts[names[0]]
    if all("cost_sweep" in parts[n] for n in names):
        out["cost_sweep"] = _pooled_sweep(parts, days, per_asset_days)
    return {**out, "dates": [str(d) for d in days.values],
            "trades": [{"asset": n, **t} for n in names for t in parts[n]["trades"]],
            "threshold": first["threshold"], "horizon": first["horizon"], "cost_bps": first["cost_bps"],
            "n_days": int(len(days)), "n_no_signal": int(sum(parts[n]["n_no_signal"] for n in names)),
            "assets": names}



def _pooled_sweep(parts: dict[str, dict], days: pd.DatetimeIndex, per_asset_days: dict) -> list[dict]:
    """The equal-weight portfolio of :func:`pool_backtests` at each swept cost level."""
    names = list(parts)
    out = []
    for level in parts[names[0]]["cost_sweep"]:
        bps = level["cost_bps"]
        rets = np.full((len(days), len(names)), np.nan)
        for j, n in enumerate(names):
            bt = parts[n]
            eq = np.asarray(bt["strategy"]["equity"], dtype=np.float64)
            growth = eq / np.r_[1.0, eq[:-1]] * ((1 - bps / 1e4) / (1 - bt["cost_bps"] / 1e4)) ** cost_counts(bt)
            rets[days.get_indexer(per_asset_days[n]), j] = growth - 1.0
        count = np.isfinite(rets).sum(axis=1)
        mean = np.divide(np.nansum(rets, axis=1), count, out=np.zeros(len(days)), where=count > 0)
        trades = [t["gross_return"] for n in names for t in parts[n]["trades"]]
        net = (1 + np.asarray(trades, dtype=np.float64)) * (1 - bps / 1e4) ** 2 - 1
        stats = _summary(np.cumprod(1.0 + mean), days.values, np.full(len(days), True), net)
        turnover = {k: float(np.mean([next(x[k] for x in parts[n]["cost_sweep"] if x["cost_bps"] == bps)
                                      for n in names])) for k in ("daily_turnover", "turnover")}
        out.append({"cost_bps": bps, **{k: stats[k] for k in SWEEP_STATS}, **turnover})
    return out
