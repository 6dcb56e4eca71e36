"""Forecast-comparison tests: Diebold–Mariano (HAC, HLN), Holm, Hansen's SPA, the MCS.

Consumes per-window losses (or probabilities and labels) of forecasters scored on the SAME
test windows, in time order, and the horizon's bootstrap block length
(:mod:`.blocklen`). Produces JSON-ready dicts. See docs/statistics.md for the references.

- :func:`diebold_mariano`: H0 "equal expected loss" on the per-day loss differential
  ``d_t``; the long-run variance is Newey–West (Bartlett kernel, ``arch.covariance.kernel``)
  with ``bandwidth`` lags (the evaluate phase passes the block length); the statistic is
  scaled by the Harvey–Leybourne–Newbold factor ``sqrt((T + 1 - 2h + h(h-1)/T) / T)`` and
  compared with Student's t with ``T - 1`` degrees of freedom (two-sided).
- :func:`daily_differential`: panels first average the assets of each calendar day, so
  same-day rows of correlated assets count as one observation (as the bootstrap does).
- :func:`compare_forecasts`: the paired block bootstrap (:func:`.bootstrap.paired_bootstrap_test`,
  interval and p-value from one distribution) plus DM on the same log-loss differences —
  one record per model-vs-baseline comparison of ``eval.json``.
- :func:`holm`: Holm (1979) step-down adjusted p-values (family-wise error control);
  :func:`holm_within_run` applies it to one run's baseline comparisons (eval.json).
- :func:`spa_test`, :func:`model_confidence_set`: ``arch.bootstrap.SPA`` / ``MCS`` with the
  stationary bootstrap (mean block = the block length) and a fixed seed.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from finscale.evaluate.bootstrap import paired_bootstrap_test
from finscale.metrics import check_binary, per_sample_log_loss

log = logging.getLogger(__name__)

DM_METHOD = "newey-west+hln"


def daily_differential(diff, days=None) -> np.ndarray:
    """Per-day loss differential in day order: rows as they are (one per day, time-ordered)
    or, for a panel (``days`` = each row's day), the mean over the rows of each day."""
    diff = np.asarray(diff, dtype=np.float64)
    if days is None:
        return diff
    days = np.asarray(days)
    if days.shape != diff.shape:
        raise ValueError(f"days has {days.size} entries for {diff.size} rows; expected one per row")
    _, inverse = np.unique(days, return_inverse=True)
    return np.bincount(inverse, weights=diff) / np.bincount(inverse)


def daily_losses(losses: dict[str, np.ndarray], days=None) -> dict[str, np.ndarray]:
    """Each candidate's per-day mean loss (:func:`daily_differential` applied per series)."""
    return {name: daily_differential(v, days) for name, v in losses.items()}


def hln_factor(n: int, horizon: int) -> float:
    """Harvey, Leybourne & Newbold (1997) small-sample factor for an h-step DM statistic."""
    n, h = int(n), int(horizon)
    inner = (n + 1 - 2 * h + h * (h - 1) / n) / n
    if inner <= 0:
        raise ValueError(f"HLN correction undefined for n={n} days at horizon {h}")
    return math.sqrt(inner)


def newey_west_variance(d: np.ndarray, bandwidth: int) -> float:
    """Long-run variance of ``d`` (Bartlett weights ``1 - j/(bandwidth+1)``, lags 0..bandwidth)."""
    from arch.covariance.kernel import Bartlett

    return float(np.asarray(Bartlett(d, bandwidth=float(bandwidth)).cov.long_run).squeeze())


def diebold_mariano(d, bandwidth: int, horizon: int) -> dict:
    """DM test of H0 "E[d_t] = 0" on a time-ordered loss differential (module docstring).

    Returns ``{"dm_stat", "dm_p", "dm_mean", "dm_days", "dm_bandwidth", "dm_method"}``.
    ``dm_stat`` is HLN-corrected (negative = the first forecaster has the lower loss).
    A differential that does not vary has no variance: ``dm_stat`` None, ``dm_p`` 1 when
    it is identically 0, else 0 (every day favours the same side by the same amount).
    """
    from scipy.stats import t as student_t

    d = np.asarray(d, dtype=np.float64).ravel()
    n = d.size
    if n < 3 or not np.all(np.isfinite(d)):
        raise ValueError(f"Diebold-Mariano needs >= 3 finite daily differentials, got {n}")
    if int(bandwidth) < 0 or int(horizon) < 1:
        raise ValueError(f"bandwidth={bandwidth!r}, horizon={horizon!r}; expected >= 0 lags, >= 1 day")
    bandwidth = min(int(bandwidth), n - 1)
    mean = float(d.mean())
    out = {"dm_mean": mean, "dm_days": int(n), "dm_bandwidth": int(bandwidth), "dm_method": DM_METHOD}
    lrv = newey_west_variance(d, bandwidth) if np.ptp(d) > 0 else 0.0
    if lrv <= 0:
        return {**out, "dm_stat": None, "dm_p": 1.0 if mean == 0 else 0.0}
    stat = mean / math.sqrt(lrv / n) * hln_factor(n, horizon)
    return {**out, "dm_stat": float(stat), "dm_p": float(2 * student_t.sf(abs(stat), df=n - 1))}


def compare_forecasts(y, prob_a, prob_b, block_len: int, n_resamples: int, seed: int, *,
                      horizon: int, alpha: float = 0.05, days=None) -> dict:
    """Model ``a`` vs ``b`` on the same windows: the paired block bootstrap of the mean
    log-loss difference ``a - b`` (interval and p from one distribution) and DM on the
    per-day log-loss differentials, bandwidth ``block_len``. ``days``: a panel's day per row."""
    out = paired_bootstrap_test(y, prob_a, prob_b, block_len, n_resamples, seed, horizon=horizon,
                                alpha=alpha, days=days)
    y, pa = check_binary(y, prob_a, name="prob_a")
    _, pb = check_binary(y, prob_b, name="prob_b")
    d = daily_differential(per_sample_log_loss(y, pa) - per_sample_log_loss(y, pb), days)
    return {**out, **diebold_mariano(d, block_len, horizon)}


def holm(pvalues) -> np.ndarray:
    """Holm (1979) adjusted p-values: sorted ascending, ``p_(i) * (m - i + 1)``, made
    monotone by a running maximum and capped at 1; rejecting where adjusted < alpha keeps
    the family-wise error rate at alpha. NaN entries stay NaN and are not counted in m."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


def holm_within_run(comparisons: dict[str, dict]) -> dict[str, dict]:
    """Each comparison with ``dm_p_holm_run``: Holm over this run's own comparisons (one
    per baseline; ``holm_run_m`` of them), so eval.json carries a corrected p-value by
    itself. The study-wide correction (every run, horizon and baseline) needs all runs and
    is the inference stage's ``dm_p_holm``; the findings use that one."""
    names = list(comparisons)
    adjusted = holm([np.nan if comparisons[n].get("dm_p") is None else comparisons[n]["dm_p"] for n in names])
    m = int(np.isfinite(adjusted).sum())
    return {n: {**comparisons[n], "dm_p_holm_run": None if np.isnan(a) else float(a), "holm_run_m": m}
            for n, a in zip(names, adjusted)}


def _loss_frame(losses: dict[str, np.ndarray]):
    import pandas as pd

    lengths = {np.asarray(v).size for v in losses.values()}
    if len(lengths) != 1:
        raise ValueError(f"candidate loss series have different lengths {sorted(lengths)}")
    return pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in losses.items()})


def spa_test(benchmark: np.ndarray, models: dict[str, np.ndarray], block_len: int, reps: int,
             seed: int, alpha: float = 0.05) -> dict:
    """Hansen's SPA: H0 "no model has a lower expected loss than the benchmark".

    ``benchmark``/``models``: time-ordered (per-day) losses. Returns the lower/consistent/
    upper p-values (``p`` = consistent, Hansen's recommended one), ``rejected`` (p < alpha),
    ``better_models`` (those that beat the benchmark at alpha, by the consistent critical
    value) and each model's ``improvement`` (benchmark mean loss - model's; > 0 = better)."""
    from arch.bootstrap import SPA

    frame = _loss_frame({"__benchmark__": benchmark, **models})
    spa = SPA(frame.pop("__benchmark__").to_numpy(), frame, block_size=int(block_len), reps=int(reps),
              bootstrap="stationary", seed=int(seed))
    spa.compute()
    pv = {k: float(v) for k, v in spa.pvalues.items()}
    names = list(frame.columns)  # better_models returns column positions
    better = [str(names[int(i)]) for i in spa.better_models(alpha, "consistent")]
    return {"p": pv["consistent"], "p_lower": pv["lower"], "p_upper": pv["upper"],
            "rejected": pv["consistent"] < alpha, "better_models": better, "alpha": alpha,
            "block_len": int(block_len), "reps": int(reps), "bootstrap": "stationary",
            "improvement": {m: float(np.mean(benchmark) - np.mean(v)) for m, v in models.items()}}


def model_confidence_set(losses: dict[str, np.ndarray], block_len: int, reps: int, seed: int,
                         alpha: float = 0.05) -> dict:
    """Hansen–Lunde–Nason MCS at level ``1 - alpha`` (range statistic, method "R").

    ``losses``: candidate -> time-ordered (per-day) losses, at least two. Returns the
    ``included`` candidates (the set that contains the best with probability >= 1 - alpha),
    the ``excluded`` ones and every candidate's MCS p-value."""
    from arch.bootstrap import MCS

    if len(losses) < 2:
        raise ValueError(f"the model confidence set needs >= 2 candidates, got {len(losses)}")
    # Candidates with identical losses (e.g. a tuned window baseline that chose k = 1, which is
    # the day-t logistic regression) have a zero-variance difference, on which arch's MCS fails:
    # the set is computed over distinct series, and a twin shares its original's fate.
    twins: dict[str, str] = {}
    distinct: dict[str, np.ndarray] = {}
    for name, series in losses.items():
        same = next((d for d, v in distinct.items() if np.array_equal(v, series)), None)
        if same is None:
            distinct[name] = series
        else:
            twins[name] = same
    if len(distinct) < 2:
        names = sorted(losses)
        return {"included": names, "excluded": [], "pvalues": dict.fromkeys(names, 1.0), "twins": twins,
                "alpha": alpha, "block_len": int(block_len), "reps": int(reps),
                "bootstrap": "stationary", "method": "R"}
    mcs = MCS(_loss_frame(distinct), size=alpha, reps=int(reps), block_size=int(block_len),
              method="R", bootstrap="stationary", seed=int(seed))
    mcs.compute()
    pvalues = {str(k): float(v) for k, v in mcs.pvalues["Pvalue"].items()}
    pvalues.update({t: pvalues[o] for t, o in twins.items()})
    included = {str(m) for m in mcs.included}
    included |= {t for t, o in twins.items() if o in included}
    return {"included": sorted(included), "excluded": sorted(set(losses) - included), "pvalues": pvalues,
            "twins": twins, "alpha": alpha, "block_len": int(block_len), "reps": int(reps),
            "bootstrap": "stationary", "method": "R"}
