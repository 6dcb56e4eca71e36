"""Scaling fits of external points: read a CSV of (N[, D], L) and fit L(N) or L(N, D).

Consumes a CSV file with one row per trained model and named columns for model size N, data
size D (or training FLOPs C, with D = C / (6N)) and loss L. Produces a :class:`PointsFit`: the
points actually fitted (after dropping the ``exclude_top`` highest losses, as Besiroglu et al.
dropped 5 of Chinchilla's) and the analysis, joint (:func:`finscale.scaling.joint.analyze_joint`)
when D is given, else N-only (:mod:`finscale.scaling`'s fit, bootstrapped over points).
Guarantees: every bad input (missing file or column, a non-numeric, non-finite or
non-positive value, too few points) is a ValueError/FileNotFoundError naming it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finscale.scaling.joint import analyze_joint, tokens_from_flops
from finscale.scaling.laws import bootstrap_fit, compare_to_constant
from finscale.scaling.wording import scaling_verdict


@dataclass(frozen=True)
class PointsSpec:
    """Which columns hold what; exactly one of ``d_col``/``flops_col`` may be set (or none)."""

    n_col: str
    loss_col: str
    d_col: str | None = None
    flops_col: str | None = None
    exclude_top: int = 0


@dataclass(frozen=True)
class PointsFit:
    """The analysed points and the result (``result`` is a plain dict, ready for JSON)."""

    source: str
    spec: PointsSpec
    n_read: int
    n_fitted: int
    form: str  # "joint" or "n_only"
    result: dict

    def to_dict(self) -> dict:
        return {"source": self.source, "columns": {"n": self.spec.n_col, "d": self.spec.d_col,
                                                   "flops": self.spec.flops_col, "loss": self.spec.loss_col},
                "exclude_top": self.spec.exclude_top, "n_read": self.n_read, "n_fitted": self.n_fitted,
                "form": self.form, "result": self.result}


def _column(rows: list[dict], name: str, path: Path) -> np.ndarray:
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        text = (row.get(name) or "").strip()
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{path}: column {name!r}, data row {i + 1}: {text!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{path}: column {name!r}, data row {i + 1}: {text!r}; expected a finite "
                             f"positive number")
        out[i] = value
    return out


def read_points(path, spec: PointsSpec) -> dict:
    """Columns N, D (None without one) and L from the CSV at ``path``, highest ``exclude_top``
    losses dropped (ties broken by row order)."""
    path = Path(path)
    if spec.d_col and spec.flops_col:
        raise ValueError("give either a D column or a FLOPs column, not both")
    if not path.is_file():
        raise FileNotFoundError(f"points file {path}: not found")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = reader.fieldnames or []
    wanted = [c for c in (spec.n_col, spec.d_col, spec.flops_col, spec.loss_col) if c]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(map(repr, missing))}; columns are "
                         f"{', '.join(map(repr, header)) or '(none)'}")
    N, L = _column(rows, spec.n_col, path), _column(rows, spec.loss_col, path)
    D = (_column(rows, spec.d_col, path) if spec.d_col else
         tokens_from_flops(_column(rows, spec.flops_col, path), N) if spec.flops_col else None)
    if not 0 <= spec.exclude_top < len(rows):
        raise ValueError(f"exclude_top={spec.exclude_top}; expected 0 <= K < {len(rows)} "
                         f"(the number of points in {path})")
    keep = np.sort(np.argsort(-L, kind="stable")[spec.exclude_top:])
    return {"N": N[keep], "D": None if D is None else D[keep], "L": L[keep], "n_read": len(rows)}


def analyze_n_only(N, L, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """L(N) = E + A·N^-alpha with intervals from resampling the points (with replacement),
    the constant-model comparison and :func:`finscale.scaling.scaling_verdict`."""
    N, L = np.asarray(N, dtype=np.float64), np.asarray(L, dtype=np.float64)

    def draw(rng, r):
        idx = rng.integers(0, N.size, N.size)
        return N[idx], L[idx]

    boot = bootstrap_fit((N, L), draw, n_resamples, seed, level=level)
    comparison = compare_to_constant(N, L)
    verdict, text = scaling_verdict(boot["fit"], boot, comparison, quantity="loss")
    keys = ("alpha", "E", "A", "drop", "slope")
    return {"fit": boot["fit"], "intervals": {k: boot[f"{k}_ci"] for k in keys}, "level": boot["level"],
            "n_resamples": boot["n_resamples"], "n_failed": boot["n_failed"], "comparison": comparison,
            "verdict": verdict, "text": text}


def fit_points(path, spec: PointsSpec, *, n_resamples: int = 1000, seed: int = 0,
               level: float = 0.95) -> PointsFit:
    """Read ``path`` and fit: joint when the spec names D or FLOPs, else N-only."""
    if n_resamples < 1:
        raise ValueError(f"resamples={n_resamples}; expected >= 1")
    pts = read_points(path, spec)
    try:
        if pts["D"] is None:
            form, result = "n_only", analyze_n_only(pts["N"], pts["L"], n_resamples=n_resamples, seed=seed,
                                                    level=level)
        else:
            form = "joint"
            result = analyze_joint(pts["N"], pts["D"], pts["L"], n_resamples=n_resamples, seed=seed,
                                   level=level).to_dict()
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return PointsFit(source=str(path), spec=spec, n_read=pts["n_read"], n_fitted=int(pts["L"].size),
                     form=form, result=result)
