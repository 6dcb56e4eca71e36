"""The expected scaling curve of a calibration market, beside the fitted one (DESIGN guard 15).

Consumes: a horizon's fitted :class:`~finscale.scaling.fit.HorizonScaling`, the study's
``[evaluate.expected_excess]`` table (per budget: the test log-loss above the known optimum
that the oracle sweep ``python -m benchmarks law`` measured with ample data and training on
the same generator) and the Bayes-optimal test log-loss the runs recorded.
Produces: ``{"budgets", "x", "y", "excess", "slope", "slope_ci", "covered", "tolerance",
"max_gap", "within_tolerance"}``: the expected L(N) = optimum + excess at each budget's
measured size (the geometric mean the fit uses), its log-log least-squares slope (the same
statistic as the fit's ``log_slope``), whether the fitted slope's interval covers it, and
the largest distance between a budget's mean test log-loss and its expected value.
:func:`expected_sentence` says the comparison in words (the report's findings carry it).
Guarantees: empty when the study has no expected curve, the runs recorded no optimum or the
headline fit is missing; budgets without an expected value are left out (the slope needs >= 2).
"""

from __future__ import annotations

import numpy as np

from finscale.formatting import interval, num

__all__ = ["expected_curve", "expected_sentence"]


def expected_curve(hs, excess: dict, optimum: float | None, tolerance: float) -> dict:
    """The expected curve at the fit's budgets and how the fit compares (module docstring)."""
    head = hs.headline()
    if not excess or optimum is None or head is None:
        return {}
    points = head.budget_points
    rows = [(str(b), float(x), float(y)) for b, x, y in zip(points["budget"], points["x"], points["y"])
            if str(b) in excess]
    if len(rows) < 2:
        return {}
    budgets = [r[0] for r in rows]
    x = np.array([r[1] for r in rows])
    measured = np.array([r[2] for r in rows])
    gap = np.array([float(excess[b]) for b in budgets])
    y = optimum + gap
    slope = float(np.polyfit(np.log(x), np.log(y), 1)[0])
    ci = head.boot.get("slope_ci")
    covered = bool(ci is not None and ci[0] <= slope <= ci[1])
    max_gap = float(np.abs(measured - y).max())
    return {"budgets": budgets, "x": x.tolist(), "y": y.tolist(), "excess": gap.tolist(),
            "optimum": float(optimum), "slope": slope, "slope_ci": None if ci is None else list(ci),
            "covered": covered, "tolerance": float(tolerance), "max_gap": max_gap,
            "within_tolerance": bool(max_gap <= tolerance)}


def expected_sentence(expected: dict) -> str:
    """The comparison with the known curve in one sentence ("" without an expected curve)."""
    if not expected:
        return ""
    ci = expected.get("slope_ci")
    where = "inside" if expected["covered"] else "outside"
    within = "within" if expected["within_tolerance"] else "outside"
    slope = f"{where} the fitted 95% interval {interval(ci)}" if ci else "with no fitted interval"
    return (f"Against the market's known curve (optimum {num(expected['optimum'])} + the oracle's "
            f"excess per size): expected log-log slope {num(expected['slope'])}, {slope}; the "
            f"largest gap between a size's mean test log-loss and its expected value is "
            f"{num(expected['max_gap'])} nats ({within} the tolerance {num(expected['tolerance'])}).")
