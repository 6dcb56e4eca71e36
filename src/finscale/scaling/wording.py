"""Scaling verdicts in words: the sentence, its equivalence bounds, its power, the fit detail.

Consumes: a point fit (:func:`~finscale.scaling.laws.fit_power_law`), its bootstrap
intervals (:func:`~finscale.scaling.laws.bootstrap_fit`), the constant-model comparison
(:func:`~finscale.scaling.laws.compare_to_constant`) and, optionally, the design's power
(:func:`finscale.scaling.power.design_power`). Produces the verdict (one of
:data:`~finscale.scaling.laws.VERDICTS`, decided by
:func:`~finscale.scaling.laws.decide_verdict`) with a sentence that leads with the log-log
slope and the **equivalence bounds** — the largest fall and the largest rise of the loss
across the measured ladder (smallest to largest size) that the slope interval allows, in %
and in nats — then the power, the decision checks and the counts; and, separately, the
detail sentence with the fitted formula, omitted when the fit is degenerate.

Bounds: the least-squares line of log L on log N passes through the centroid of the points;
at slope s it predicts L(N) = exp(mean log L + s (log N - mean log N)), so across the ladder
the loss changes by the factor (N_max / N_min)^s. The interval's lower end gives the largest
fall, its upper end the largest rise; neither is censored (alpha >= 0 censors the power-law
prediction at 0, which therefore moves to the detail). Signed: a negative ``max_rise_pct``
means the loss must fall by at least that much.
Guarantees: numbers never print as "-0"; texts only — the verdict strings are unchanged.
"""

from __future__ import annotations

import math

from finscale.formatting import interval, num, signed
from finscale.scaling.laws import _ALPHA_ZERO, ALPHA_MAX, FLAT, at_bound, decide_verdict
from finscale.scaling.power import fall_pct, runs_words

DEGENERATE_ALPHA = 0.01  # alpha at or below: a constant written as a power law
DEGENERATE_E = 0.01      # E below this share of the loss: no irreducible loss (nothing to saturate)


def size_words(n: float) -> str:
    """5160 -> "5.16k", 487827 -> "488k", 3.2e12 -> "3.2T"."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def equivalence_bounds(fit: dict, slope_ci, level: float) -> dict | None:
    """Largest fall and rise across the ladder that ``slope_ci`` allows (module docstring)."""
    if slope_ci is None or "log_l_mean" not in fit:
        return None
    lo, hi = slope_ci
    sizes = (fit["n_min"], fit["n_max"])

    def change(s: float) -> float:  # L(n_min) - L(n_max) at slope s, in the metric's units
        at = [math.exp(fit["log_l_mean"] + s * (math.log(n) - fit["log_n_mean"])) for n in sizes]
        return at[0] - at[1]

    return {"max_fall_pct": fall_pct(lo, sizes), "max_fall_nats": change(lo),
            "max_rise_pct": -fall_pct(hi, sizes), "max_rise_nats": -change(hi),
            "change_nats": change(fit["log_slope"]), "n_min": float(sizes[0]), "n_max": float(sizes[1]),
            "level": float(level)}


def bound_words(b: dict, unit: str, nats: bool) -> str:
    """The equivalence bounds in words (three cases: the interval spans 0, lies below, above)."""
    def amount(pct: float, value: float) -> str:
        return f"{abs(pct):.1f}% ({num(abs(value))}{' nats' if nats else ''})"

    ladder = f"{size_words(b['n_min'])}–{size_words(b['n_max'])} {unit}"
    fall, rise = amount(b["max_fall_pct"], b["max_fall_nats"]), amount(b["max_rise_pct"], b["max_rise_nats"])
    level = f"{b['level']:.0%}"
    if b["max_rise_pct"] < 0:
        return f"across {ladder} it falls by {amount(-b['max_rise_pct'], -b['max_rise_nats'])} to {fall} ({level})"
    if b["max_fall_pct"] < 0:
        return f"across {ladder} it rises by {amount(-b['max_fall_pct'], -b['max_fall_nats'])} to {rise} ({level})"
    return f"any fall larger than {fall} and any rise larger than {rise} across {ladder} is ruled out ({level})"


def power_words(p: dict) -> str:
    """The design's minimum detectable slope and what more seeds/replicates would do."""
    text = (f"this design ({p['runs_per_size']} runs per size) detects a fall with {p['power']:.0%} power "
            f"from a log-log slope of {p['min_detectable_slope']:.3g} (a "
            f"{p['min_detectable_fall_pct']:.1f}% fall across the ladder)")
    seeds = p.get("seeds") or p["runs_per_size"]
    if "runs_to_halve" in p and p["runs_to_halve"] is not None:
        text += f"; {runs_words(p['runs_to_halve'], seeds)} would halve that slope"
    elif "runs_to_halve" in p and p.get("mds_by_runs"):
        text += ("; more seeds alone cannot halve it (the test-day noise of each size does not shrink "
                 "with seeds)")
    if p.get("target_slope") is not None:
        text += (f"; closing the gap to {p.get('target_name') or 'the best baseline'} needs a slope of "
                 f"{p['target_slope']:.3g}, " + _target_words(p, seeds))
    return text


def _target_words(p: dict, seeds: int) -> str:
    if p["target_power"] >= p["power"]:
        return f"which this design detects with {p['target_power']:.0%} power"
    need = p.get("runs_for_target")
    then = (f"{p['power']:.0%} needs {runs_words(need, seeds)}" if need is not None else
            f"not {p['power']:.0%} even at {max(map(int, p['mds_by_runs']))} runs per size")
    return f"detected with {p['target_power']:.0%} power now ({then})"


def degenerate_reasons(fit: dict) -> list[str]:
    """Why the fitted formula is not a law to quote: alpha at its bound or ~0, E ~ 0."""
    out = []
    if at_bound(fit["alpha"]):
        out.append(f"alpha at its bound {ALPHA_MAX:g}")
    elif fit["alpha"] <= DEGENERATE_ALPHA:
        out.append("alpha ≈ 0")
    if fit["E"] < DEGENERATE_E * math.exp(fit.get("log_l_mean", math.log(max(fit["E"], 1e-300)))):
        out.append("E ≈ 0")
    return out


def fit_detail(fit: dict, ci: dict) -> str:
    """The fitted formula with its intervals, or why it is omitted (degenerate fit)."""
    reasons = degenerate_reasons(fit)
    if reasons:
        return (f"fitted law omitted: degenerate fit ({', '.join(reasons)}), a constant or a step written "
                "as a power law, not a law to quote or extrapolate.")
    return (f"L(N) = {num(fit['E'])} + {num(fit['A'])}·N^-{fit['alpha']:.3g}, alpha {ci['level']:.0%} CI "
            f"{interval(ci.get('alpha_ci'))}, E CI {interval(ci.get('E_ci'))}; the law's predicted "
            f"improvement from N={fit['n_min']:.3g} to N={fit['n_max']:.3g} is {signed(fit['drop'])} "
            f"(CI {interval(ci.get('drop_ci'))}; censored at 0, since alpha >= 0).")


def _lead(verdict: str, quantity: str, alpha_ci, slope_ci, bound: bool) -> str:
    lead = f"{quantity} {verdict}" if verdict != FLAT else f"no detectable scaling of {quantity}"
    if verdict == FLAT and alpha_ci[0] > _ALPHA_ZERO and slope_ci[1] < 0:
        lead += " (the intervals suggest a decline, but the no-scaling model predicts as well)"
    if bound:
        lead += (f" (alpha sits at its bound {ALPHA_MAX:g}: the fit is a step between the "
                 "smallest sizes, not a power law, so it is not extrapolated)")
    return lead


def scaling_verdict(fit: dict, ci: dict, comparison: dict, *, quantity: str = "test log-loss",
                    power: dict | None = None, size_unit: str = "parameters") -> tuple[str, str]:
    """One of VERDICTS plus its sentence (module docstring; rules in docs/verdicts.md).

    ``power``: :func:`finscale.scaling.power.design_power` output (optionally with ``seeds``,
    ``target_name``), stated beside the verdict; ``size_unit`` names the size axis.
    Signs: "improvement" is the predicted DEcrease of the quantity from the smallest to the
    largest size, so a positive improvement is better everywhere."""
    alpha_ci, slope_ci = ci.get("alpha_ci"), ci.get("slope_ci")
    if alpha_ci is None or slope_ci is None:
        return FLAT, f"{quantity}: no usable bootstrap resamples, so no scaling can be claimed."
    bound = at_bound(fit["alpha"])
    verdict = decide_verdict(alpha_ci, slope_ci, comparison["preferred"], alpha_at_bound=bound)
    b = equivalence_bounds(fit, slope_ci, ci["level"])
    nats = "log-loss" in quantity
    lobo = ("leave-one-budget-out check not run (needs >= 4 sizes)"
            if comparison["lobo_rmse_power"] is None else
            f"leave-one-budget-out RMSE {num(comparison['lobo_rmse_power'])} (power law) vs "
            f"{num(comparison['lobo_rmse_const'])} (no-scaling model)")
    parts = [f"{_lead(verdict, quantity, alpha_ci, slope_ci, bound)}: log-log slope "
             f"{signed(fit['log_slope'])} ({ci['level']:.0%} CI {interval(slope_ci)})"]
    if b is not None:
        parts.append(("flat within the data: " if verdict == FLAT and slope_ci[0] <= 0 <= slope_ci[1] else "")
                     + bound_words(b, size_unit, nats))
        parts.append(f"predicted improvement from N={fit['n_min']:.3g} to N={fit['n_max']:.3g} is "
                     f"{signed(b['change_nats'])} (CI "
                     f"{interval((-b['max_rise_nats'], b['max_fall_nats']), signed)}, from the slope, "
                     "not censored at 0)")
    if power is not None:
        parts.append(power_words(power))
    parts += [f"alpha {ci['level']:.0%} CI {interval(alpha_ci)}", lobo,
              f"BIC difference {comparison['delta_bic']:+.2f} (negative favours the power law)",
              f"{fit['n_points']} runs at {fit['n_sizes']} sizes."]
    return verdict, "; ".join(parts)
