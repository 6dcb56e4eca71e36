"""Bayes-optimal probabilities of the repo's targets on a synthetic market.

Consumes: a :class:`~finscale.data.synthetic.Market` and one target (kind, threshold,
price, horizon), with the meaning of ``finscale.labels``.
Produces: ``p[t] = P(y_t = 1 | everything known at the close of day t)`` for each frame
row (NaN for the last ``horizon`` rows, whose label is unknown), and summaries: the base
rate, the base-rate log-loss ``H(mean p)`` (the best constant predictor) and the optimal
log-loss ``mean H(p_t)`` (the expected log-loss of the Bayes-optimal predictor; on the
null market it comes from knowing the volatility alone).
Guarantees: horizon 1 uses closed forms (the Brownian running maximum, integrated over
the overnight gap by Gauss-Legendre quadrature); longer horizons use a seeded Monte Carlo
of the known process, Rao-Blackwellised over the intraday maxima. Deterministic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import log_ndtr, ndtr

from finscale.data import synthetic as syn
from finscale.data.synthetic import OVERNIGHT, VOL_PARAMS, Market

__all__ = ["DEFAULT_TARGETS", "optimal_probabilities", "optimal_series", "summarize", "truth_summary"]

TRUTH_STREAM = 7919      # tags the Monte Carlo streams apart from the market's own
PATHS = 256              # Monte Carlo paths per day and horizon
CHUNK_ROWS = 1024        # rows simulated at once (memory: CHUNK_ROWS * PATHS * lags floats)
NODES, WEIGHTS = np.polynomial.legendre.leggauss(64)
GAP_FLOOR = -9.0         # the gap's quadrature starts 9 sd below its mean
# Recorded in the manifest: the default study's target, and the direction of the close.
DEFAULT_TARGETS = tuple(
    [{"kind": "threshold", "threshold": 0.01, "price": "high", "horizon": h} for h in (1, 2, 3, 5)]
    + [{"kind": "direction", "threshold": 0.0, "price": "close", "horizon": 1}])


def optimal_probabilities(market: Market, *, kind: str, threshold: float, price: str,
                          horizon: int, monte_carlo: bool = False) -> np.ndarray:
    """P(label = 1 | past) per frame row; ``monte_carlo`` forces simulation at horizon 1."""
    return _probabilities(market, kind, threshold, price, (horizon,), monte_carlo)[horizon][0]


def optimal_series(source: str, *, kind: str, threshold: float, price: str,
                   horizon: int) -> pd.Series:
    """The true P(label = 1 | past) of a ``synthetic:...`` source, indexed by date (e.g. to
    score the optimum on a study's test dates)."""
    target = source.removeprefix("synthetic:")
    m = syn.generate(syn.parse_synthetic(target))
    p = optimal_probabilities(m, kind=kind, threshold=threshold, price=price, horizon=horizon)
    return pd.Series(p, index=pd.DatetimeIndex(m.frame["Date"], name="Date"), name="p_optimal")


def _probabilities(market: Market, kind: str, threshold: float, price: str,
                   horizons: tuple[int, ...], monte_carlo: bool = False) -> dict:
    """{horizon: (p, var)} per frame row; ``var`` is the Monte Carlo variance of p (0 if exact)."""
    if kind not in ("threshold", "direction") or price not in ("high", "close"):
        raise ValueError(f"target kind={kind!r} price={price!r}: expected threshold|direction "
                         "and high|close")
    rows, c = len(market.frame), (np.log1p(threshold) if kind == "threshold" else 0.0)
    nxt = np.arange(max(rows - 1, 0)) + market.offset + 1   # latent index of day t+1
    out = {}
    if 1 in horizons and not monte_carlo:
        exact = _one_day(kind, price, c, market.mu[nxt], market.sigma[nxt])
        out[1] = (exact, np.zeros_like(exact))
    longest = max(h for h in horizons if h not in out) if set(horizons) - set(out) else 0
    if longest:
        sims = _simulate(market, nxt, kind, price, c, longest)
        out.update({h: sims[h] for h in horizons if h not in out})
    return {h: tuple(_pad(a, rows, h) for a in out[h]) for h in horizons}


def _pad(values: np.ndarray, rows: int, horizon: int) -> np.ndarray:
    """Per-row array: ``values`` for the first rows - horizon rows, NaN after (label unknown)."""
    full = np.full(rows, np.nan)
    keep = max(rows - horizon, 0)
    full[:keep] = values[:keep]
    return full


def _one_day(kind: str, price: str, c: float, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    if kind == "direction":
        return ndtr(mu / sigma)
    if price == "close":
        return ndtr((mu - c) / sigma)
    return _high_exceeds(c, mu, sigma)


def _running_max_exceeds(x: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """P(max_{u<=1} B_u >= x) for Brownian motion with drift m and sd s per day, x > 0."""
    tail = np.exp(2.0 * m * x / s**2 + log_ndtr((-x - m) / s))
    return np.clip(ndtr((m - x) / s) + tail, 0.0, 1.0)


def _high_exceeds(c: float, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """P(log(High_{t+1} / Close_t) >= c): the gap reaches c, or the intraday maximum does."""
    w = OVERNIGHT
    gap_mean, gap_sd = np.zeros_like(mu), np.sqrt(w) * sigma   # the drift is intraday
    m, s = mu, np.sqrt(1 - w) * sigma
    top = (c - gap_mean) / gap_sd                           # gap >= c  <=>  u >= top
    lo = np.minimum(GAP_FLOOR, top - 1.0)
    half = (top - lo) / 2.0
    u = lo[:, None] + half[:, None] * (NODES[None, :] + 1.0)  # Legendre nodes on [lo, top]
    gap = gap_mean[:, None] + gap_sd[:, None] * u
    inner = _running_max_exceeds(np.maximum(c - gap, 1e-300), m[:, None], s[:, None])
    density = np.exp(-0.5 * u * u) / np.sqrt(2.0 * np.pi)
    return np.clip(ndtr(-top) + half * (WEIGHTS * density * inner).sum(axis=1), 0.0, 1.0)


def _simulate(market: Market, nxt: np.ndarray, kind: str, price: str, c: float,
              longest: int) -> dict:
    """{h: (p, var)} for h = 1..longest, simulated in chunks of rows. Each chunk and day has
    its own seeded stream, so a row's p does not depend on which horizons were asked for."""
    parts = [_simulate_rows(market, nxt[lo: lo + CHUNK_ROWS], kind, price, c, longest, lo)
             for lo in range(0, len(nxt), CHUNK_ROWS)]
    if not parts:
        return {h: (np.empty(0), np.empty(0)) for h in range(1, longest + 1)}
    stacked = np.concatenate(parts, axis=1)                 # (longest, rows, PATHS)
    return {h: (stacked[h - 1].mean(axis=1), stacked[h - 1].var(axis=1, ddof=1) / PATHS)
            for h in range(1, longest + 1)}


def _simulate_rows(market: Market, idx: np.ndarray, kind: str, price: str, c: float,
                   longest: int, chunk: int) -> np.ndarray:
    """Per-path conditional hit probabilities, shape (longest, rows, PATHS), from the known state."""
    spec, w = market.spec, OVERNIGHT
    vol = VOL_PARAMS[spec.vol]
    shape = (len(idx), PATHS)
    sigma = np.broadcast_to(market.sigma[idx][:, None], shape)
    mu = np.broadcast_to(market.mu[idx][:, None], shape)
    network, window = market.network, None
    if network is not None:
        past = market.gap[idx[:, None] + np.arange(-spec.lags, 0)[None, :]]
        window = np.broadcast_to(past[:, None, :], (*shape, spec.lags))
    cum, no_hit, hit = np.zeros(shape), np.ones(shape), np.zeros(shape, bool)
    result = np.empty((longest, *shape))
    for day in range(longest):
        if day > 0 and network is not None and window is not None:
            mu = spec.strength * sigma * (network(window) + market.drift_offset)
        rng = np.random.default_rng([market.spec.seed, TRUTH_STREAM, chunk, day])
        z1, z2 = rng.standard_normal(shape), rng.standard_normal(shape)
        gap = sigma * np.sqrt(w) * z1                      # the drift is intraday
        d = mu + sigma * np.sqrt(1 - w) * z2
        opened, cum = cum + gap, cum + gap + d
        if kind == "direction":
            result[day] = cum > 0
        elif price == "high":
            no_hit = no_hit * _no_hit_today(c - opened, d, (1 - w) * sigma**2)
            result[day] = 1.0 - no_hit
        else:
            hit |= cum >= c
            result[day] = hit
        z = np.sqrt(w) * z1 + np.sqrt(1 - w) * z2
        eps2 = (1e4 * sigma**2) * z**2                     # arch's units: percent^2
        var = vol["omega"] + (vol["alpha"] + vol["gamma"] * (z < 0)) * eps2 \
            + vol["beta"] * 1e4 * sigma**2
        sigma = np.sqrt(var) / 100.0
        if window is not None:
            window = np.concatenate([window[..., 1:], z1[..., None]], axis=-1)
    return result


def _no_hit_today(x: np.ndarray, d: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """P(today's High stays below the level), the level x above today's Open, close at d."""
    reached = (x <= 0) | (d >= x)
    safe_x = np.where(reached, 1.0, x)
    q = np.exp(-2.0 * safe_x * (safe_x - np.where(reached, 0.0, d)) / s2)  # bridge maximum
    return np.where(reached, 0.0, 1.0 - q)


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def summarize(p: np.ndarray, mc_var: np.ndarray | None = None) -> dict:
    """Base rate, base-rate log-loss and optimal log-loss of the known probabilities ``p``.

    ``mc_var`` (the Monte Carlo variance of each p) corrects the optimal log-loss for the
    downward bias of the entropy of a noisy estimate, to second order.
    """
    ok = np.isfinite(p)
    p = p[ok]
    base = float(p.mean())
    entropy = _entropy(p)
    if mc_var is not None:
        clipped = np.clip(p, 1e-6, 1 - 1e-6)
        entropy = entropy + mc_var[ok] / (2.0 * clipped * (1.0 - clipped))
    return {"rows": int(p.size), "base_rate": base,
            "base_rate_logloss": float(_entropy(np.array([base]))[0]),
            "optimal_logloss": float(entropy.mean())}


def truth_summary(market: Market, targets=DEFAULT_TARGETS) -> list[dict]:
    """One summary per target over the whole market (for the manifest)."""
    groups: dict[tuple[str, float, str], list[int]] = {}
    for t in targets:
        groups.setdefault((t["kind"], t["threshold"], t["price"]), []).append(t["horizon"])
    probs = {key: _probabilities(market, *key, tuple(hs)) for key, hs in groups.items()}
    return [{**t, **summarize(*probs[(t["kind"], t["threshold"], t["price"])][t["horizon"]])}
            for t in targets]
