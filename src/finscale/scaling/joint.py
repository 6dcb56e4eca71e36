"""Joint scaling law L(N, D) = E + A·N^-alpha + B·D^-beta with intervals and a verdict.

Consumes points (N, D, L): model size N (measured parameters), data size D (measured training
windows or tokens; :func:`tokens_from_flops` turns FLOPs into D = C / (6N)) and a loss L
(lower is better). Produces a :class:`JointScalingResult`: the five parameters with bootstrap
intervals, the compute-optimal allocation exponents a = beta/(alpha+beta) (N_opt ∝ C^a) and
b = alpha/(alpha+beta) (D_opt ∝ C^b) with intervals, a comparison with the N-only, D-only and
constant forms, and a verdict in words. numpy/scipy only; plotting belongs to ``report``.

Method (Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt"): the log-sum-exp
form log L = LSE(a - alpha·log N, b - beta·log D, e) with A = exp(a), B = exp(b), E = exp(e),
fitted by minimising the Huber loss (delta = 1e-3) of log residuals with L-BFGS-B from their
grid of starts (alpha, beta in {0, .5, 1, 1.5, 2}, e in {-1, -.5, 0, .5, 1}, a, b in
{0, 5, ..., 25}: 4,500 starts) plus a few starts scaled to the data. Every start is scored
at once (vectorised) and L-BFGS-B runs from the best ``n_starts`` of them; on the released
Chinchilla points this finds the same optimum as running all 4,500. The exponents are bounded
to [0, EXPONENT_MAX] (a loss that rises with size is not a power law). Intervals are
percentile intervals over bootstrap resamples of the points, each refitted warm-started
from the full-data optimum (as Besiroglu et al. did), with resampling expressed as integer
weights so no data are copied.

Decision rule (:func:`joint_verdict`). The joint model "beats" a reduced form when it has the
lower BIC AND the lower leave-out RMSE (BIC alone when no leave-out folds were possible).
- N matters when the alpha CI excludes 0 and the joint model beats the D-only form (dropping
  the N term makes both checks worse); D matters likewise with beta and the N-only form;
- both -> "both matter"; only N -> "parameter-limited" (more parameters lower the loss, more
  data does not detectably); only D -> "data-limited"; neither -> "no detectable scaling";
  and "no detectable scaling" whenever the joint model does not beat the constant model.
Requiring the comparison as well as the interval matters: when a term's coefficient goes to
0 (or it fits noise in a corner with a huge coefficient and exponent) its exponent is
unidentified and its interval can sit anywhere; requiring both checks keeps a verdict from
contradicting any of the numbers printed with it. A term whose exponent sits at its bound
EXPONENT_MAX is a step between the smallest sizes, not a power law: it does not count as
mattering, and the sentence says so.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize

from finscale.formatting import interval
from finscale.scaling.laws import ALPHA_MAX, FLAT, at_bound, single_blas_thread

log = logging.getLogger(__name__)

DATA_LIMITED = "data-limited"
PARAMETER_LIMITED = "parameter-limited"
BOTH_MATTER = "both matter"
NO_SCALING = FLAT  # one wording for "no detectable scaling" in every verdict
JOINT_VERDICTS = (DATA_LIMITED, PARAMETER_LIMITED, BOTH_MATTER, NO_SCALING)
EXPONENT_MAX = ALPHA_MAX  # the same bound on both exponents as on L(N)'s
PARAMS = ("E", "A", "B", "alpha", "beta")
_ZERO = 1e-8  # an exponent at or below this counts as 0 (L-BFGS-B lands exactly on the bound)
_LOG_BOUND = 60.0
# On the objective scaled by 1/delta² (see _Problem.objective); checked against 7-start fits at
# 1e-12 tolerances on Chinchilla resamples: exponents within 1e-5, objective within 1e-9.
_POINT_OPTIONS = {"gtol": 1e-8, "ftol": 1e-13, "maxiter": 1000}
_REFIT_OPTIONS = {"gtol": 1e-5, "ftol": 1e-10, "maxiter": 300}
# The search over starts stops early; the best start is then polished with _POINT_OPTIONS
# (on degenerate data, e.g. no data term, some starts crawl along a ridge for 1,000+ steps).
_SEARCH_OPTIONS = {"gtol": 1e-5, "ftol": 1e-10, "maxiter": 100}
# Besiroglu et al.'s grid, uncentred (a, b, e, alpha, beta) as in their notebook.
EPOCH_GRID = tuple(itertools.product(np.arange(0, 30, 5.0), np.arange(0, 30, 5.0),
                                     np.arange(-1, 1.5, 0.5), np.arange(0, 2.5, 0.5),
                                     np.arange(0, 2.5, 0.5)))
MIN_POINTS = 8
# Reduced forms as the joint objective with one term pinned off: {theta index: value}.
_PINNED = {"joint": {}, "n_only": {2: -_LOG_BOUND, 4: 0.0}, "d_only": {1: -_LOG_BOUND, 3: 0.0}}


@dataclass(frozen=True)
class JointFit:
    """Point estimate of L(N, D) = E + A·N^-alpha + B·D^-beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float  # mean Huber loss of log residuals at the optimum
    success: bool
    n_points: int
    n_sizes: int  # distinct N
    n_data: int  # distinct D
    delta: float = 1e-3

    @property
    def a_exp(self) -> float:
        """Compute-optimal N exponent beta/(alpha+beta) (nan when both exponents are 0)."""
        return _allocation(self.alpha, self.beta)[0]

    @property
    def b_exp(self) -> float:
        return _allocation(self.alpha, self.beta)[1]

    def to_dict(self) -> dict:
        """Plain types; a_exp/b_exp are None when both exponents are 0 (JSON has no nan)."""
        a, b = (None if math.isnan(v) else v for v in (self.a_exp, self.b_exp))
        return {**asdict(self), "a_exp": a, "b_exp": b}


@dataclass(frozen=True)
class FormScore:
    """One functional form scored on the same points: leave-out RMSE and Gaussian BIC (L units)."""

    form: str  # "joint", "n_only", "d_only" or "constant"
    n_params: int  # including the noise variance
    cv_rmse: float | None
    bic: float
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class JointComparison:
    """The joint form against its reduced forms; ``n_folds`` leave-out folds over (N, D) cells."""

    scores: tuple[FormScore, ...]
    n_folds: int
    note: str = ""

    def score(self, form: str) -> FormScore:
        return next(s for s in self.scores if s.form == form)

    def joint_beats(self, form: str) -> bool:
        """The joint form has the lower BIC and (when folds exist) the lower leave-out RMSE."""
        joint, reduced = self.score("joint"), self.score(form)
        cv_ok = joint.cv_rmse is None or reduced.cv_rmse is None or joint.cv_rmse < reduced.cv_rmse
        return joint.bic < reduced.bic and cv_ok

    def to_dict(self) -> dict:
        return {"scores": [s.to_dict() for s in self.scores], "n_folds": self.n_folds, "note": self.note,
                "joint_beats": {s.form: self.joint_beats(s.form) for s in self.scores if s.form != "joint"}}


@dataclass(frozen=True)
class JointScalingResult:
    """Everything :func:`analyze_joint` found; ``intervals`` maps E, A, B, alpha, beta, a_exp,
    b_exp to percentile (lo, hi) at ``level`` (None when no resample was usable)."""

    fit: JointFit
    intervals: dict
    level: float
    n_resamples: int
    n_failed: int
    comparison: JointComparison
    verdict: str
    text: str

    def to_dict(self) -> dict:
        return {"fit": self.fit.to_dict(),
                "intervals": {k: None if v is None else list(v) for k, v in self.intervals.items()},
                "level": self.level, "n_resamples": self.n_resamples, "n_failed": self.n_failed,
                "comparison": self.comparison.to_dict(), "verdict": self.verdict, "text": self.text}


def _allocation(alpha, beta):
    s = np.asarray(alpha, dtype=np.float64) + np.asarray(beta, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = np.where(s > 0, beta / s, np.nan), np.where(s > 0, alpha / s, np.nan)
    return (float(a), float(b)) if a.ndim == 0 else (a, b)


def tokens_from_flops(flops, N) -> np.ndarray:
    """Data size from training compute: D = C / (6·N) (the usual 6 FLOPs per parameter-token)."""
    return np.asarray(flops, dtype=np.float64) / (6.0 * np.asarray(N, dtype=np.float64))


def predict_joint(fit: JointFit, N, D) -> np.ndarray:
    """L(N, D) = E + A·N^-alpha + B·D^-beta."""
    N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    return fit.E + fit.A * N**-fit.alpha + fit.B * D**-fit.beta


def optimal_allocation(fit: JointFit, flops) -> tuple[np.ndarray, np.ndarray]:
    """Compute-optimal (N_opt, D_opt) for compute C = 6·N·D (Hoffmann et al. 2022, eq. 4):
    N_opt = G·(C/6)^a, D_opt = (C/6)^b / G with G = (alpha·A / (beta·B))^(1/(alpha+beta))."""
    if fit.alpha <= _ZERO or fit.beta <= _ZERO:
        raise ValueError("a compute-optimal allocation needs both exponents > 0")
    C6 = np.asarray(flops, dtype=np.float64) / 6.0
    G = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1.0 / (fit.alpha + fit.beta))
    return G * C6**fit.a_exp, C6**fit.b_exp / G


def check_joint_points(N, D, L) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float arrays of equal length, finite and positive, with >= 3 distinct N and D and
    >= MIN_POINTS points; ValueError naming what is wrong otherwise."""
    N, D, L = (np.asarray(v, dtype=np.float64).ravel() for v in (N, D, L))
    if not N.size == D.size == L.size:
        raise ValueError(f"N, D and L have {N.size}, {D.size} and {L.size} values; "
                         "expected one each per point")
    for name, v in (("N", N), ("D", D), ("L", L)):
        if not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"{name} must be finite and positive; got {v[~(np.isfinite(v) & (v > 0))][0]!r}")
    if N.size < MIN_POINTS:
        raise ValueError(f"a joint fit of 5 parameters needs >= {MIN_POINTS} points; got {N.size}")
    for name, v in (("N", N), ("D", D)):
        if np.unique(v).size < 3:
            raise ValueError(f"a joint fit needs >= 3 distinct values of {name}; got {np.unique(v).size}")
    return N, D, L


class _Problem:
    """Centred log data (x = log N - mean, y = log D - mean) and the weighted Huber objective
    in theta = (e, a_c, b_c, alpha, beta), a_c = a - alpha·mean(log N) (centring decouples the
    coefficients from the exponents, which conditions L-BFGS-B)."""

    def __init__(self, N, D, L, delta: float):
        self.x_mean, self.y_mean = float(np.log(N).mean()), float(np.log(D).mean())
        self.x, self.y = np.log(N) - self.x_mean, np.log(D) - self.y_mean
        self.logL, self.delta = np.log(L), float(delta)

    def centre(self, a, b, e, alpha, beta) -> np.ndarray:
        return np.array([e, a - alpha * self.x_mean, b - beta * self.y_mean, alpha, beta])

    def objective(self, theta, w):
        """Weighted Huber loss of log residuals over delta² and its gradient. The scaling
        matters: the raw loss is ~1e-6 with gradients ~1e-5, where L-BFGS-B's stopping rules
        fire ~20 iterations early and bootstrap refits then barely leave their warm start."""
        e, ac, bc, alpha, beta = theta
        eu, ev, ee = np.exp(ac - alpha * self.x), np.exp(bc - beta * self.y), math.exp(e)
        s = eu + ev + ee
        r = np.log(s) - self.logL
        d = self.delta
        c = np.clip(r, -d, d)  # Huber(r) = c·(r - c/2): r²/2 inside [-d, d], d·(|r| - d/2) outside
        value = (w @ (c * (r - 0.5 * c))) / (d * d)
        dr = w * c / (s * d * d)
        gu, gv = dr * eu, dr * ev
        grad = np.array([ee * dr.sum(), gu.sum(), gv.sum(), -(gu @ self.x), -(gv @ self.y)])
        return value, grad

    def screen(self, starts: np.ndarray) -> np.ndarray:
        """Mean Huber loss of each start (rows of centred theta), vectorised over starts."""
        e, ac, bc, alpha, beta = (starts[:, [k]] for k in range(5))
        lp = np.logaddexp(np.logaddexp(ac - alpha * self.x, bc - beta * self.y), e)
        ar = np.abs(lp - self.logL)
        d = self.delta
        return np.where(ar <= d, 0.5 * ar * ar, d * (ar - 0.5 * d)).mean(axis=1)

    def minimise(self, starts, w, options, form: str = "joint"):
        """Best L-BFGS-B result over ``starts`` (centred theta); ``form`` pins the dropped
        term of a reduced form (coefficient exp(-_LOG_BOUND) ~ 1e-26, exponent 0)."""
        bounds = [(-_LOG_BOUND, _LOG_BOUND)] * 3 + [(0.0, EXPONENT_MAX)] * 2
        for i, v in _PINNED[form].items():
            bounds[i] = (v, v)
        best = None
        for start in starts:
            start = np.array(start, dtype=np.float64)
            for i, v in _PINNED[form].items():
                start[i] = v
            res = minimize(self.objective, start, args=(w,), jac=True, method="L-BFGS-B",
                           bounds=bounds, options=options)
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
        return best

    def to_fit(self, theta, res, N, D) -> JointFit:
        e, ac, bc, alpha, beta = (float(v) for v in theta)
        return JointFit(E=math.exp(e), A=math.exp(ac + alpha * self.x_mean),
                        B=math.exp(bc + beta * self.y_mean), alpha=alpha, beta=beta,
                        objective=float(res.fun) * self.delta**2, success=bool(res.success),
                        n_points=int(N.size), n_sizes=int(np.unique(N).size), n_data=int(np.unique(D).size),
                        delta=self.delta)


def _data_starts(prob: _Problem, L: np.ndarray) -> list[np.ndarray]:
    """Starts scaled to the data: E a fraction of min L, each power term half of the rest at
    the geometric-mean point."""
    out = []
    for f, alpha, beta in itertools.product((0.5, 0.9), (0.1, 0.3, 0.6), (0.1, 0.3, 0.6)):
        E = f * L.min()
        half = math.log(max(L.mean() - E, 1e-3 * L.mean()) / 2)
        out.append(np.array([math.log(E), half, half, alpha, beta]))
    return out


def fit_joint(N, D, L, *, delta: float = 1e-3, n_starts: int = 24, grid=None) -> JointFit:
    """Fit L(N, D) as in the module docstring. ``grid``: starts (a, b, e, alpha, beta) with
    A = exp(a) etc. (default :data:`EPOCH_GRID`); all are scored and L-BFGS-B runs from the
    best ``n_starts`` plus 18 data-scaled starts (``n_starts=None``: from every grid start)."""
    N, D, L = check_joint_points(N, D, L)
    prob = _Problem(N, D, L, delta)
    grid = np.asarray(EPOCH_GRID if grid is None else grid, dtype=np.float64).reshape(-1, 5)
    starts = np.array([prob.centre(*g) for g in grid])
    if n_starts is not None and len(starts) > n_starts:
        starts = starts[np.argsort(prob.screen(starts), kind="stable")[:n_starts]]
    with single_blas_thread():
        return _fit_form(prob, [*starts, *_data_starts(prob, L)], "joint", N, D)


def _fit_form(prob: _Problem, starts, form: str, N, D) -> JointFit:
    """Search from every start with loose tolerances, then polish the best one."""
    w = np.full(N.size, 1.0 / N.size)
    res = prob.minimise(starts, w, _SEARCH_OPTIONS, form)
    res = prob.minimise([res.x], w, _POINT_OPTIONS, form)
    return prob.to_fit(res.x, res, N, D)


def _theta(fit: JointFit) -> tuple:
    """Uncentred (a, b, e, alpha, beta) of a fit, for :meth:`_Problem.centre`."""
    return math.log(fit.A), math.log(fit.B), math.log(fit.E), fit.alpha, fit.beta


def bootstrap_joint(N, D, L, fit: JointFit, *, n_resamples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> tuple[dict, dict, int]:
    """Percentile intervals over ``n_resamples`` resamples of the points (with replacement).

    Each resample is a weight vector (counts / n) over the original points, refitted by
    L-BFGS-B from ``fit`` (warm start). Resamples with < 3 distinct N or D are skipped and
    counted. Returns (intervals, samples, n_failed); keys E, A, B, alpha, beta, a_exp, b_exp.
    """
    if n_resamples < 1 or not 0 < level < 1:
        raise ValueError(f"n_resamples={n_resamples} (expected >= 1), level={level} (expected (0, 1))")
    N, D, L = check_joint_points(N, D, L)
    prob = _Problem(N, D, L, fit.delta)
    start = prob.centre(math.log(fit.A), math.log(fit.B), math.log(fit.E), fit.alpha, fit.beta)
    rng = np.random.default_rng(seed)
    thetas = np.full((n_resamples, 5), np.nan)
    with single_blas_thread():
        _refit_all(prob, start, N, D, rng, thetas)
    ok = np.all(np.isfinite(thetas), axis=1)
    e, ac, bc, alpha, beta = thetas.T
    samples = {"E": np.exp(e), "A": np.exp(ac + alpha * prob.x_mean), "B": np.exp(bc + beta * prob.y_mean),
               "alpha": alpha, "beta": beta}
    samples["a_exp"], samples["b_exp"] = _allocation(alpha, beta)
    q = [(1 - level) / 2, (1 + level) / 2]
    intervals = {}
    for k, v in samples.items():
        good = v[ok & np.isfinite(v)]
        intervals[k] = tuple(float(x) for x in np.quantile(good, q)) if good.size else None
    log.info("bootstrap_joint: %d resamples, %d failed", n_resamples, int((~ok).sum()))
    return intervals, samples, int((~ok).sum())


def _refit_all(prob: _Problem, start: np.ndarray, N, D, rng, thetas: np.ndarray) -> None:
    """Fill row r of ``thetas`` with the refit of resample r (left nan when degenerate)."""
    for r in range(thetas.shape[0]):
        counts = np.bincount(rng.integers(0, N.size, N.size), minlength=N.size)
        used = counts > 0
        if np.unique(N[used]).size < 3 or np.unique(D[used]).size < 3:
            continue
        thetas[r] = prob.minimise([start], counts / N.size, _REFIT_OPTIONS).x


def _bic(resid: np.ndarray, n_params: int) -> float:
    """Gaussian-residual BIC; ``n_params`` counts the noise variance too."""
    n = resid.size
    rss = max(float(resid @ resid), n * np.finfo(np.float64).tiny)
    return n * math.log(rss / n) + n_params * math.log(n)


def _folds(N, D, k_max: int) -> list[np.ndarray]:
    """Leave-out folds over distinct (N, D) cells (replicates of a cell stay together): cells
    sorted by (N, D) and dealt round-robin into min(cells, k_max) folds."""
    cells = np.unique(np.stack([N, D], axis=1), axis=0)
    k = min(len(cells), k_max)
    fold_of = {tuple(c): i % k for i, c in enumerate(cells)}
    ids = np.array([fold_of[(n, d)] for n, d in zip(N, D)])
    return [ids == i for i in range(k)]


def compare_joint_forms(N, D, L, fit: JointFit, *, folds: int = 10) -> JointComparison:
    """Score the joint, N-only (E + A·N^-alpha), D-only (E + B·D^-beta) and constant forms:
    Gaussian BIC of their residuals in L units (6, 4, 4 and 2 parameters with the variance),
    and leave-out RMSE over up to ``folds`` folds of (N, D) cells, each form refitted on the
    other folds (warm-started from its full-data fit). The reduced forms are the joint
    objective with one term pinned off, so all forms share the loss and the optimiser. A fold
    whose training points have < 3 distinct N or D is skipped for every form."""
    N, D, L = check_joint_points(N, D, L)
    prob = _Problem(N, D, L, fit.delta)
    with single_blas_thread():
        full: dict = {"joint": fit, "constant": float(np.mean(L))}
        for form in ("n_only", "d_only"):
            full[form] = _fit_form(prob, [prob.centre(*_theta(fit)), *_data_starts(prob, L)[:9]], form, N, D)
        errs, skipped = _leave_out_errors(N, D, L, full, folds)
    n_folds = len(errs["joint"])
    preds = {k: predict_joint(full[k], N, D) for k in ("joint", "n_only", "d_only")}
    preds["constant"] = np.full(L.size, full["constant"])
    params = {"joint": {k: getattr(fit, k) for k in PARAMS},
              "n_only": {k: getattr(full["n_only"], k) for k in ("E", "A", "alpha")},
              "d_only": {k: getattr(full["d_only"], k) for k in ("E", "B", "beta")},
              "constant": {"E": full["constant"]}}
    n_params = {"joint": 6, "n_only": 4, "d_only": 4, "constant": 2}
    cv = {k: float(np.sqrt(np.mean(np.concatenate(errs[k]) ** 2))) if n_folds else None for k in n_params}
    scores = tuple(FormScore(form=k, n_params=n_params[k], bic=_bic(L - preds[k], n_params[k]),
                             params=params[k], cv_rmse=cv[k]) for k in n_params)
    note = f"{skipped} fold(s) skipped: their training points had < 3 distinct N or D" if skipped else ""
    return JointComparison(scores=scores, n_folds=n_folds, note=note)


def _leave_out_errors(N, D, L, full: dict, folds: int) -> tuple[dict, int]:
    """Held-out errors of each form per usable fold, and the number of folds skipped."""
    errs: dict[str, list] = {k: [] for k in ("joint", "n_only", "d_only", "constant")}
    skipped = 0
    for held in _folds(N, D, folds):
        tr = ~held
        if tr.sum() < MIN_POINTS or np.unique(N[tr]).size < 3 or np.unique(D[tr]).size < 3:
            skipped += 1
            continue
        prob = _Problem(N[tr], D[tr], L[tr], full["joint"].delta)
        w = np.full(int(tr.sum()), 1.0 / tr.sum())
        for form in ("joint", "n_only", "d_only"):
            starts = [prob.centre(*_theta(full[form])), _data_starts(prob, L[tr])[4]]
            res = prob.minimise(starts, w, _SEARCH_OPTIONS, form)
            refit = prob.to_fit(res.x, res, N[tr], D[tr])
            errs[form].append(L[held] - predict_joint(refit, N[held], D[held]))
        errs["constant"].append(L[held] - L[tr].mean())
    return errs, skipped


def joint_verdict(fit: JointFit, intervals: dict, comparison: JointComparison, *,
                  quantity: str = "loss") -> tuple[str, str]:
    """One of JOINT_VERDICTS and a sentence with the numbers (rule in the module docstring)."""
    alpha_ci, beta_ci = intervals.get("alpha"), intervals.get("beta")
    scales = comparison.joint_beats("constant")
    n_matters = (scales and alpha_ci is not None and alpha_ci[0] > _ZERO
                 and comparison.joint_beats("d_only") and not at_bound(fit.alpha))
    d_matters = (scales and beta_ci is not None and beta_ci[0] > _ZERO
                 and comparison.joint_beats("n_only") and not at_bound(fit.beta))
    verdict = {(True, True): BOTH_MATTER, (True, False): PARAMETER_LIMITED,
               (False, True): DATA_LIMITED, (False, False): NO_SCALING}[(n_matters, d_matters)]
    cv = ", ".join(f"{s.form} {s.cv_rmse:.4g}" for s in comparison.scores if s.cv_rmse is not None) or "n/a"
    bic = ", ".join(f"{s.form} {s.bic:.1f}" for s in comparison.scores)
    lead = {BOTH_MATTER: f"{quantity} falls with both model size and data size",
            PARAMETER_LIMITED: f"{quantity} falls with model size but not detectably with data size",
            DATA_LIMITED: f"{quantity} falls with data size but not detectably with model size",
            NO_SCALING: f"no detectable scaling of {quantity} with model or data size"}[verdict]
    bounded = [name for name, v in (("alpha", fit.alpha), ("beta", fit.beta)) if at_bound(v)]
    if bounded:
        lead += (f" ({' and '.join(bounded)} at the bound {EXPONENT_MAX:g}: a step between the "
                 "smallest sizes, not a power law, so not counted as scaling)")
    text = (f"{verdict}: {lead}. L(N, D) = {fit.E:.4g} + {fit.A:.4g}·N^-{fit.alpha:.3g} + "
            f"{fit.B:.4g}·D^-{fit.beta:.3g}; alpha CI {interval(alpha_ci)}, beta CI {interval(beta_ci)}; "
            f"leave-out RMSE ({comparison.n_folds} folds): {cv}; BIC: {bic}; "
            f"{fit.n_points} points at {fit.n_sizes} model sizes and {fit.n_data} data sizes.")
    return verdict, text


def analyze_joint(N, D, L, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
                  delta: float = 1e-3, folds: int = 10, quantity: str = "loss") -> JointScalingResult:
    """Fit, bootstrap, compare and judge in one call (see the module docstring)."""
    N, D, L = check_joint_points(N, D, L)
    fit = fit_joint(N, D, L, delta=delta)
    intervals, _, n_failed = bootstrap_joint(N, D, L, fit, n_resamples=n_resamples, seed=seed, level=level)
    comparison = compare_joint_forms(N, D, L, fit, folds=folds)
    verdict, text = joint_verdict(fit, intervals, comparison, quantity=quantity)
    return JointScalingResult(fit=fit, intervals=intervals, level=float(level), n_resamples=int(n_resamples),
                              n_failed=n_failed, comparison=comparison, verdict=verdict, text=text)
