"""Synthetic markets: seeded daily OHLCV whose data-generating process is known.

Consumes: a source target ``VARIANT?key=value&...``, e.g. ``null?seed=3&days=5000`` or
``planted?seed=1&strength=0.3&complexity=8`` or ``teacher?seed=2&width=64&alpha=1`` (the part after ``synthetic:``; see README).
Produces: the canonical parameter string, a safe dataset name and a raw OHLCV frame (one
row per trading day of an exchange-like calendar: weekends and US market holidays are
skipped). ``finscale.data.synthetic_truth`` turns the same parameters into the
Bayes-optimal probabilities of the repo's targets.
Guarantees: parameters are parsed strictly (unknown key, duplicate or bad value ->
:class:`DataError` naming it); the same parameters give the identical frame (NumPy
generators spawned from the seed); the null variant is a martingale in log price;
nothing is written.

The model (day t; ``sigma_t`` and ``mu_t`` are known at the close of day t-1):

- ``eps_t = sigma_t z_t`` with ``z_t ~ N(0, 1)`` and ``sigma_t^2`` simulated by ``arch``
  (``vol=garch``: GARCH(1,1); ``vol=gjr``: GJR-GARCH(1,1,1) with a leverage effect;
  ``vol=constant``: i.i.d. shocks, so on the null no target beats its base rate);
- ``r_t = log(Close_t / Close_{t-1}) = mu_t + eps_t``;
- the day is an overnight gap ``sigma_t sqrt(OVERNIGHT) u_t`` (a share ``OVERNIGHT`` of the
  variance, no drift; ``u_t`` is the standardised gap shock, part of ``z_t``) and an intraday
  Brownian motion from Open to Close carrying the whole drift ``mu_t``; High and Low are drawn
  from the exact law of the bridge's maximum and minimum given Open and Close (each from its
  own marginal);
- null: ``mu_t = 0``; planted: ``mu_t = strength * sigma_t * g(u_{t-lags}, ..., u_{t-1})`` of
  the past standardised overnight gaps, which the prices show exactly (``log(Open_t /
  Close_{t-1}) / (sigma_t sqrt(OVERNIGHT))``), so the signal is learnable from prices without
  feedback (a drift read from past returns would feed back into them and can run away);
  ``g`` is a seeded random tanh network with ``complexity`` hidden units, scaled to unit
  variance, of which a share ``linear`` is linear in the gaps and the rest is nonlinear (see
  :class:`TanhNetwork`); ``strength`` is one day's signal-to-noise ratio;
- teacher: the same drift with ``g`` a wide teacher of the last ``lags`` gaps, ``width``
  nonlinear components whose amplitudes fall like ``k^-alpha`` (a power-law spectrum, see
  :mod:`finscale.data.teacher`), so a larger student learns more of it: model capacity, not
  data, limits the loss (constant volatility by default);
- Volume is lognormal, rising with volatility and with the size of the day's move.

A planted market with ``strength=0`` is the null market of the same seed, and markets
differing only in ``strength`` share every random shock.

Panels: ``panel?assets=24&seed=7&...`` (an element of a ``data.source`` list, expanded by
:func:`panel_members`) names planted members ``asset=0..23`` of one seed: each has its own
shocks but the seed's network ``g`` (one shared signal), and ``mu_t = strength * sigma_t *
(g(...) + o_a)`` with a per-member drift offset ``o_a = offset * N(0, 1)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from pandas.tseries import holiday as hol

from finscale.data.teacher import TeacherNetwork
from finscale.data.validate import DataError

__all__ = ["Market", "SyntheticSpec", "VARIANTS", "generate", "parse_synthetic"]

OVERNIGHT = 0.2          # share of a day's variance in the overnight gap (the drift is intraday)
START_PRICE = 100.0
MAX_LAGS = 64            # every market simulates this many extra leading days (lag history)
MAX_ASSETS = 1000        # members of one synthetic panel
BURN = 500               # arch's burn-in of the variance recursion
# Daily variance in percent^2; all give an unconditional daily volatility of 1.1 % (about
# 17 % a year, like a broad equity index); persistence 0.98 (garch), 0.97 (gjr), 0 (constant).
VOL_PARAMS = {
    "garch": {"omega": 1.21 * 0.02, "alpha": 0.09, "gamma": 0.0, "beta": 0.89},
    "gjr": {"omega": 1.21 * 0.03, "alpha": 0.02, "gamma": 0.12, "beta": 0.89},
    "constant": {"omega": 1.21, "alpha": 0.0, "gamma": 0.0, "beta": 0.0},
}
NET_INPUT_SCALE = 1.5    # tanh pre-activation scale: large enough to be clearly nonlinear
NET_REFERENCE = 1 << 15  # draws used to split the network into linear and nonlinear parts


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class _Param:
    kind: str                 # int | float | date | choice
    default: object
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        if self.kind == "date":
            return "an ISO date YYYY-MM-DD between 1900-01-01 and 2100-12-31"
        return f"{'an integer' if self.kind == 'int' else 'a number'} in [{self.low}, {self.high}]"

    def parse(self, text: str):
        """The value of ``text``, or None when it is not a valid value of this parameter."""
        value: float
        try:
            if self.kind == "int":
                value = int(text, 10)
            elif self.kind == "float":
                value = float(text)
                if not np.isfinite(value):
                    return None
            elif self.kind == "date":
                day = pd.Timestamp.fromisoformat(text)
                ok = len(text) == 10 and day == day.normalize()
                return str(day.date()) if ok and 1900 <= day.year <= 2100 else None
            else:
                return text if text in self.choices else None
        except ValueError:
            return None
        assert self.low is not None and self.high is not None  # every number parameter is bounded
        return value if self.low <= value <= self.high else None


_COMMON = {
    "seed": _Param("int", 0, 0, 2**32 - 1),
    "days": _Param("int", 5000, 100, 50_000),
    "start": _Param("date", "2000-01-03"),
    "vol": _Param("choice", "gjr", choices=tuple(VOL_PARAMS)),
}
_PLANTED = {
    "strength": _Param("float", 0.2, 0.0, 2.0),
    "complexity": _Param("int", 8, 1, 256),
    "lags": _Param("int", 5, 1, MAX_LAGS),
    "linear": _Param("float", 0.25, 0.0, 1.0),
    # A panel's member: its own shocks, the network of its seed (one signal shared by every
    # member of a panel), plus a drift offset of ``offset`` x N(0, 1) in signal units.
    "asset": _Param("int", 0, 0, MAX_ASSETS - 1),
    "offset": _Param("float", 0.0, 0.0, 2.0),
}
# Capacity-limited: a wide teacher with a power-law spectrum (finscale.data.teacher).
_TEACHER = {
    "vol": _Param("choice", "constant", choices=tuple(VOL_PARAMS)),
    "strength": _Param("float", 3.0, 0.0, 5.0),
    "width": _Param("int", 256, 1, 1024),
    "alpha": _Param("float", 0.75, 0.0, 4.0),
    "lags": _Param("int", 8, 1, MAX_LAGS),
    "linear": _Param("float", 0.3, 0.0, 1.0),
}
# Left out of the canonical string at their defaults, so markets named before they existed
# keep their names (and stored datasets their entries).
_QUIET = {"asset": 0, "offset": 0.0}
VARIANTS = {"null": _COMMON, "planted": {**_COMMON, **_PLANTED}, "teacher": {**_COMMON, **_TEACHER}}


@dataclass(frozen=True)
class SyntheticSpec:
    """Every parameter of one synthetic market (defaults filled in)."""

    variant: str
    seed: int = 0
    days: int = 5000
    start: str = "2000-01-03"
    vol: str = "gjr"
    strength: float = 0.0
    complexity: int = 0
    lags: int = 0
    linear: float = 0.0
    asset: int = 0
    offset: float = 0.0
    width: int = 0
    alpha: float = 0.0

    def params(self) -> dict:
        """The parameters this variant accepts, in canonical order."""
        return {k: getattr(self, k) for k in VARIANTS[self.variant]}

    @property
    def canonical(self) -> str:
        """``VARIANT?k=v&...`` with every parameter, in a fixed order (stored in the manifest)."""
        shown = {k: v for k, v in self.params().items() if _QUIET.get(k, ...) != v}
        return f"{self.variant}?" + "&".join(f"{k}={v}" for k, v in shown.items())

    @property
    def default_name(self) -> str:
        """A dataset name safe as a file name: ``synthetic-<variant>-s<seed>-<hash8>``."""
        digest = hashlib.sha256(self.canonical.encode()).hexdigest()[:8]
        return f"synthetic-{self.variant}-s{self.seed}-{digest}"


def parse_synthetic(target: str) -> SyntheticSpec:
    """Parse ``VARIANT[?k=v&...]`` strictly; DataError names the bad part and what was expected."""
    origin = f"source 'synthetic:{target}'"
    variant, _, query = target.partition("?")
    if variant == "panel":
        raise DataError(f"{origin}: a panel of several assets, not one market; list it in "
                        f"data.source, e.g. data.source = [\"synthetic:{target}\"]")
    if variant not in VARIANTS:
        raise DataError(f"{origin}: unknown variant {variant!r} (expected: {', '.join(VARIANTS)})")
    return SyntheticSpec(variant=variant, **_parse_query(origin, variant, VARIANTS[variant], query))


def _parse_query(origin: str, variant: str, accepted: dict, query: str) -> dict:
    """``k=v&...`` -> every accepted parameter (defaults filled in), strictly checked."""
    values: dict = {}
    for item in query.split("&") if query else []:
        key, eq, text = item.partition("=")
        if key not in accepted:
            raise DataError(f"{origin}: unknown parameter {key!r} for synthetic:{variant} "
                            f"(expected: {', '.join(accepted)})")
        if key in values:
            raise DataError(f"{origin}: parameter {key!r} given twice")
        if not eq:
            raise DataError(f"{origin}: parameter {key!r} has no value (expected {key}=VALUE)")
        value = accepted[key].parse(text)
        if value is None:
            raise DataError(f"{origin}: parameter {key}={text!r}: expected {accepted[key].expected()}")
        values[key] = value
    full = {k: values.get(k, p.default) for k, p in accepted.items()}
    for key in ("strength", "linear", "offset", "alpha"):
        if key in full:
            full[key] = float(full[key])
    return full


# A synthetic panel: ``panel?assets=24&seed=7&...`` names ``assets`` planted members sharing
# the seed's planted network (one signal) with their own shocks and drift offsets, so pooling
# more members gives more data about the same signal.
PANEL = {"assets": _Param("int", 24, 1, MAX_ASSETS),
         **{k: p for k, p in VARIANTS["planted"].items() if k != "asset"},
         "offset": _Param("float", 0.25, 0.0, 2.0)}


def is_panel_source(text: str) -> bool:
    """Whether a source string names a synthetic panel (``synthetic:panel?...``)."""
    return text == "synthetic:panel" or text.startswith("synthetic:panel?")


def panel_members(text: str) -> list[str]:
    """The member sources of ``synthetic:panel?...`` (DataError naming a bad parameter)."""
    query = text.partition("?")[2]
    full = _parse_query(f"source {text!r}", "panel", PANEL, query)
    n = full.pop("assets")
    return [f"synthetic:{SyntheticSpec(variant='planted', asset=a, **full).canonical}" for a in range(n)]


# --------------------------------------------------------------------------- calendar

class ExchangeCalendar(hol.AbstractHolidayCalendar):
    """US equity-market holidays (NYSE rules, without one-off closures)."""

    start_date = pd.Timestamp("1899-01-01")
    end_date = pd.Timestamp("2300-12-31")
    rules = [
        hol.Holiday("New Year's Day", month=1, day=1, observance=hol.sunday_to_monday),
        hol.USMartinLutherKingJr, hol.USPresidentsDay, hol.GoodFriday, hol.USMemorialDay,
        hol.Holiday("Juneteenth", month=6, day=19, start_date="2022-01-01",
                    observance=hol.nearest_workday),
        hol.Holiday("Independence Day", month=7, day=4, observance=hol.nearest_workday),
        hol.USLaborDay, hol.USThanksgivingDay,
        hol.Holiday("Christmas", month=12, day=25, observance=hol.nearest_workday),
    ]


def trading_days(start: str, days: int) -> pd.DatetimeIndex:
    """``days`` consecutive trading days from ``start`` (rolled forward to a trading day)."""
    weekdays = pd.bdate_range(start, periods=int(days * 1.06) + 30)  # holidays are < 4 %
    holidays = ExchangeCalendar().holidays(weekdays[0], weekdays[-1])
    return weekdays[~weekdays.isin(holidays)][:days]


# --------------------------------------------------------------------------- simulation

@dataclass(frozen=True)
class TanhNetwork:
    """The planted function g of rows x of ``lags`` gap shocks (oldest first), unit variance.

    ``g(x) = sqrt(linear) * x.b / |b| + sqrt(1 - linear) * n(x)``: ``h(x) = tanh(x W + c) v``
    is a random one-hidden-layer network; ``x.b + a`` is its least-squares linear part and
    ``n`` its centred, unit-variance nonlinear remainder (uncorrelated with every linear
    function of x). ``linear`` is thus the share of the signal a linear model can learn.
    """

    weights: np.ndarray
    bias: np.ndarray
    out: np.ndarray
    slope: np.ndarray
    intercept: float
    residual_sd: float
    linear: float

    @classmethod
    def draw(cls, rng: np.random.Generator, lags: int, units: int, linear: float) -> TanhNetwork:
        weights = rng.standard_normal((lags, units)) * NET_INPUT_SCALE / np.sqrt(lags)
        bias = rng.standard_normal(units) * 0.5
        out = rng.standard_normal(units)
        x = rng.standard_normal((NET_REFERENCE, lags))
        h = np.tanh(x @ weights + bias) @ out
        design = np.column_stack([x, np.ones(len(x))])
        coef = np.linalg.lstsq(design, h, rcond=None)[0]
        residual_sd = float((h - design @ coef).std())
        return cls(weights, bias, out, coef[:-1], float(coef[-1]), residual_sd, linear)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        lin = x @ self.slope
        rest = np.tanh(x @ self.weights + self.bias) @ self.out - lin - self.intercept
        return (np.sqrt(self.linear) * lin / np.linalg.norm(self.slope)
                + np.sqrt(1.0 - self.linear) * rest / self.residual_sd)


@dataclass(frozen=True)
class Market:
    """A generated market: the frame plus its latent state, one row per simulated day.

    The latent arrays have ``MAX_LAGS`` leading rows before the frame's first row
    (``offset``); ``sigma[i]``/``mu[i]`` are the conditional sd/mean of ``r[i]``; ``gap[i]``
    is the standardised overnight gap shock ``u`` (the planted network's input).
    """

    spec: SyntheticSpec
    frame: pd.DataFrame
    z: np.ndarray
    sigma: np.ndarray
    mu: np.ndarray
    gap: np.ndarray
    offset: int
    network: TanhNetwork | TeacherNetwork | None
    drift_offset: float = 0.0   # the member's constant added to g (signal units; 0 off panels)


def random_streams(seed: int, asset: int = 0) -> dict[str, np.random.Generator]:
    """Named generators of one market. A panel member ``asset`` > 0 draws its own shocks
    (from (seed, asset)) but the network of ``seed``: every member plants the same signal.
    Asset 0 is the market of ``seed`` itself; ``offset`` is the member's drift-offset draw."""
    names = ("shocks", "split", "high", "low", "volume", "network")
    children = np.random.SeedSequence(seed).spawn(len(names))
    out = {n: np.random.default_rng(c) for n, c in zip(names, children, strict=True)}
    own = np.random.SeedSequence([seed, asset]).spawn(len(names))
    if asset:
        out.update({n: np.random.default_rng(c) for n, c in zip(names, own) if n != "network"})
    out["offset"] = np.random.default_rng(own[-1])
    return out


def _volatility_process(vol: str):
    """arch's volatility process and its parameter vector (percent^2 units)."""
    from arch.univariate import GARCH, ConstantVariance

    p = VOL_PARAMS[vol]
    if vol == "constant":
        return ConstantVariance(), np.array([p["omega"]])
    if vol == "gjr":
        return GARCH(p=1, o=1, q=1), np.array([p["omega"], p["alpha"], p["gamma"], p["beta"]])
    return GARCH(p=1, q=1), np.array([p["omega"], p["alpha"], p["beta"]])


def _simulate_shocks(spec: SyntheticSpec, rng: np.random.Generator, n: int):
    """(z, sigma) from arch's simulation, sigma as a daily fraction (not percent)."""
    process, params = _volatility_process(spec.vol)
    eps, sigma2 = process.simulate(params, n, rng.standard_normal, burn=BURN)
    sigma = np.sqrt(sigma2)
    return eps / sigma, sigma / 100.0


def lag_windows(z: np.ndarray, lags: int) -> np.ndarray:
    """Row i holds z[i-lags..i-1] (oldest first) for i >= lags; earlier rows are NaN."""
    out = np.full((len(z), lags), np.nan)
    out[lags:] = np.lib.stride_tricks.sliding_window_view(z, lags)[:-1]
    return out


@lru_cache(maxsize=4)
def generate(spec: SyntheticSpec) -> Market:
    """Simulate the market ``spec`` names (cached: a spec always gives the same market)."""
    rng = random_streams(spec.seed, spec.asset)
    n = spec.days + MAX_LAGS
    z, sigma = _simulate_shocks(spec, rng["shocks"], n)
    w = OVERNIGHT
    gap = np.sqrt(w) * z + np.sqrt(1 - w) * rng["split"].standard_normal(n)   # u_t, N(0, 1)
    mu = np.zeros(n)
    network: TanhNetwork | TeacherNetwork | None = None
    drift = float(spec.offset * rng["offset"].standard_normal()) if spec.offset else 0.0
    if spec.variant == "planted" and spec.strength > 0:
        network = TanhNetwork.draw(rng["network"], spec.lags, spec.complexity, spec.linear)
    elif spec.variant == "teacher" and spec.strength > 0:
        network = TeacherNetwork.draw(rng["network"], spec.lags, spec.width, spec.alpha, spec.linear)
    if network is not None:
        g = network(lag_windows(gap, spec.lags)[MAX_LAGS:]) + drift
        mu[MAX_LAGS:] = spec.strength * sigma[MAX_LAGS:] * g
    frame = _bars(spec, z, sigma, mu, gap, rng)
    for arr in (z, sigma, mu, gap):
        arr.setflags(write=False)
    return Market(spec, frame, z, sigma, mu, gap, MAX_LAGS, network, drift)


def _bridge_extreme(d: np.ndarray, s2: np.ndarray, u: np.ndarray, sign: float) -> np.ndarray:
    """Max (sign=+1) or min (sign=-1) of a Brownian bridge 0 -> d with variance s2 (inverse CDF)."""
    return (d + sign * np.sqrt(d * d - 2.0 * s2 * np.log(u))) / 2.0


def _bars(spec: SyntheticSpec, z, sigma, mu, z1, rng) -> pd.DataFrame:
    """OHLCV rows for the simulated days after the ``MAX_LAGS`` history (``z1``: gap shocks)."""
    w = OVERNIGHT
    z2 = (z - np.sqrt(w) * z1) / np.sqrt(1 - w)           # sqrt(w) z1 + sqrt(1-w) z2 = z
    gap = sigma * np.sqrt(w) * z1
    d = mu + sigma * np.sqrt(1 - w) * z2                  # gap + d = mu + sigma z = r
    s2 = (1 - w) * sigma**2
    up = _bridge_extreme(d, s2, 1.0 - rng["high"].random(len(z)), 1.0)
    down = _bridge_extreme(d, s2, 1.0 - rng["low"].random(len(z)), -1.0)
    keep = slice(MAX_LAGS, None)
    log_close = np.log(START_PRICE) + np.cumsum((gap + d)[keep])
    log_open = log_close - d[keep]
    return pd.DataFrame({
        "Date": trading_days(spec.start, spec.days).astype("datetime64[ns]"),
        "Open": np.exp(log_open), "High": np.exp(log_open + up[keep]),
        "Low": np.exp(log_open + down[keep]), "Close": np.exp(log_close),
        "Volume": _volume(sigma, z, rng["volume"])[keep],
    })


def _volume(sigma: np.ndarray, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lognormal share volume: more on volatile days and big moves, persistent noise."""
    persistent = rng.standard_normal(len(z)) * 0.15
    for i in range(1, len(persistent)):  # AR(1), phi = 0.8 (a loop: scipy.signal imports slowly)
        persistent[i] += 0.8 * persistent[i - 1]
    log_v = np.log(2e6) + np.log(sigma / sigma.mean()) + 0.25 * (np.abs(z) - 0.8) + persistent
    return np.round(np.exp(log_v))
