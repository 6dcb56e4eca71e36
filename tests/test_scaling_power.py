"""Equivalence bounds, power of the scaling verdict, degenerate-fit wording, thread determinism."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finscale.scaling import (
    FLAT,
    RISES,
    Design,
    bootstrap_fit,
    compare_to_constant,
    design_power,
    equivalence_bounds,
    fit_detail,
    fit_power_law,
    measure_design,
    predict_power_law,
    resample_replicates,
    scaling_verdict,
)
from finscale.scaling.power import huber_slopes, min_detectable_slope, null_slope_intervals, power_at

SIZES = np.array([5.16e3, 2.6e4, 1.2e5, 4.88e5])  # the default study's ladder (total parameters)


def _study(slope, rng, seeds=2, sigma_seed=0.01, sigma_size=0.004, sigma_run=0.006, R=200, level=0.33):
    """Runs of a planted log-log ``slope`` with the power module's noise model, and their
    test-day resample columns (a shared part, a size part and a run part)."""
    N = np.repeat(SIZES, seeds)
    g = np.repeat(np.arange(SIZES.size), seeds)
    noise = sigma_seed * rng.standard_normal(N.size) + sigma_size * rng.standard_normal(SIZES.size)[g] \
        + sigma_run * rng.standard_normal(N.size)
    L = level * (N / SIZES[0]) ** slope * np.exp(noise)
    dev = (0.01 * rng.standard_normal(R))[None, :] + sigma_size * rng.standard_normal((SIZES.size, R))[g] \
        + sigma_run * rng.standard_normal((N.size, R))
    return N, L, L[:, None] * np.exp(dev)


# --------------------------------------------------------------------------- equivalence bounds

def test_bounds_of_a_flat_ladder_span_zero_and_say_so():
    N, L, reps = _study(0.0, np.random.default_rng(3))
    ci = bootstrap_fit((N, L), resample_replicates(N, reps), 100, 0)
    b = equivalence_bounds(ci["fit"], ci["slope_ci"], ci["level"])
    lo, hi = ci["slope_ci"]
    assert lo < 0 < hi and b["max_fall_pct"] > 0 and b["max_rise_pct"] > 0
    ratio = SIZES[-1] / SIZES[0]
    assert b["max_fall_pct"] == pytest.approx(100 * (1 - ratio**lo))
    assert b["max_rise_pct"] == pytest.approx(100 * (ratio**hi - 1))
    assert b["max_fall_nats"] == pytest.approx(b["max_fall_pct"] / 100 * np.exp(
        ci["fit"]["log_l_mean"] + lo * (np.log(SIZES[0]) - ci["fit"]["log_n_mean"])))
    verdict, text = scaling_verdict(ci["fit"], ci, compare_to_constant(N, L))
    assert verdict == FLAT
    assert text.startswith("no detectable scaling of test log-loss: log-log slope ")
    assert f"flat within the data: any fall larger than {b['max_fall_pct']:.1f}% (" in text
    assert "across 5.16k–488k parameters is ruled out (95%)" in text


def test_bounds_of_a_falling_ladder_give_the_range_of_the_fall():
    N, L, reps = _study(-0.05, np.random.default_rng(1))
    ci = bootstrap_fit((N, L), resample_replicates(N, reps), 100, 0)
    b = equivalence_bounds(ci["fit"], ci["slope_ci"], ci["level"])
    assert b["max_rise_pct"] < 0 < b["max_fall_pct"]  # it must fall, by at least -max_rise
    true_fall = 100 * (1 - (SIZES[-1] / SIZES[0]) ** -0.05)
    assert -b["max_rise_pct"] < true_fall < b["max_fall_pct"]
    _, text = scaling_verdict(ci["fit"], ci, compare_to_constant(N, L))
    assert f"it falls by {-b['max_rise_pct']:.1f}% (" in text


def test_a_rising_loss_shows_an_uncensored_rise():
    # The power law cannot rise (alpha >= 0): its predicted improvement is censored at 0.
    # The slope's bounds and the predicted improvement in the sentence are not.
    N, L, reps = _study(+0.04, np.random.default_rng(2))
    ci = bootstrap_fit((N, L), resample_replicates(N, reps), 100, 0)
    assert ci["drop_ci"][0] == pytest.approx(0, abs=1e-9)
    b = equivalence_bounds(ci["fit"], ci["slope_ci"], ci["level"])
    assert b["max_fall_pct"] < 0 < b["max_rise_pct"] and b["max_rise_nats"] > 0
    verdict, text = scaling_verdict(ci["fit"], ci, compare_to_constant(N, L))
    assert verdict == RISES and "it rises by " in text
    improvement = text.split("predicted improvement from")[1].split(" is ")[1].split(" ")[0]
    assert improvement.startswith("-"), text  # a rise is a negative improvement, not 0
    upper = text.split("not censored at 0")[0].rsplit("CI [", 1)[1].split(",")[1].strip(" ]")
    assert float(upper) < 0  # the whole improvement interval is below 0


# --------------------------------------------------------------------------- power

def test_measure_design_recovers_planted_spreads():
    rng = np.random.default_rng(3)
    est = [measure_design(*_study(0.0, rng, seeds=6, R=400)) for _ in range(40)]
    assert np.median([d.sigma_test_run for d in est]) == pytest.approx(0.006, rel=0.1)
    assert np.median([d.sigma_test_size for d in est]) == pytest.approx(0.004, rel=0.25)
    assert np.median([d.sigma_seed for d in est]) == pytest.approx(0.01, rel=0.25)
    assert est[0].runs_per_size == (6, 6, 6, 6) and est[0].sizes == pytest.approx(tuple(SIZES))


def _falls_by_the_rule(N, L, reps, resamples, seed) -> bool:
    """The simulated rule on the stage's own resampler: the 97.5% quantiles of the
    least-squares and of the Huber log-log slope over the resamples are both below 0."""
    draw, rng = resample_replicates(N, reps), np.random.default_rng(seed)
    ols, hub = [], []
    for r in range(resamples):
        Nr, Lr = draw(rng, r)
        ols.append(np.polyfit(np.log(Nr), np.log(Lr), 1)[0])
        hub.append(huber_slopes(np.log(Lr), np.log(Nr)))
    return max(np.quantile(ols, 0.975), np.quantile(hub, 0.975)) < 0


def test_stated_power_matches_the_detection_rate_on_a_planted_slope():
    truth = Design(tuple(SIZES), (2,) * 4, 0.01, 0.004, 0.006)
    lo0, hi0 = null_slope_intervals(truth, sims=600, resamples=300, seed=0)
    slope = min_detectable_slope(hi0)  # 80% power by the statement
    assert -0.05 < slope < -0.005
    rng = np.random.default_rng(4)
    hits = [_falls_by_the_rule(*_study(slope, rng), 100, s) for s in range(120)]
    assert np.mean(hits) == pytest.approx(0.8, abs=0.1)  # binomial SE at 120 studies: 0.037
    assert power_at(slope, hi0) == pytest.approx(0.8, abs=0.01)
    assert power_at(0.0, hi0) < 0.06  # the rule's false-fall rate on flat data


def test_power_summary_recommends_more_runs_and_is_deterministic():
    truth = Design(tuple(SIZES), (2,) * 4, 0.01, 0.0, 0.006)
    a = design_power(truth, sims=200, resamples=150, seed=1, target_slope=-0.004)
    assert a == design_power(truth, sims=200, resamples=150, seed=1, target_slope=-0.004)
    by_runs = {int(k): v for k, v in a["mds_by_runs"].items()}
    assert by_runs[16] > by_runs[8] > by_runs[2] and a["min_detectable_slope"] < 0
    assert a["runs_to_halve"] is not None and by_runs[a["runs_to_halve"]] >= by_runs[2] / 2
    assert a["target_power"] < 0.8 and a["runs_for_target"] is not None
    # Test-day noise shared by a size does not shrink with seeds: halving can be out of reach.
    stuck = design_power(Design(tuple(SIZES), (2,) * 4, 0.001, 0.01, 0.001), sims=200, resamples=150, seed=1)
    assert stuck["runs_to_halve"] is None


# --------------------------------------------------------------------------- fit detail

def test_degenerate_fit_omits_the_formula_and_a_real_law_keeps_it():
    N = np.repeat(SIZES, 2)
    flat = 0.33 * np.exp(np.tile([0.004, -0.004], SIZES.size))
    fit = fit_power_law(N, flat)
    ci = bootstrap_fit((N, flat), None, 50, 0)
    assert fit_detail(fit, ci).startswith("fitted law omitted: degenerate fit (alpha ≈ 0")
    law = {"E": 0.3, "A": 2.0, "alpha": 0.3}
    L = predict_power_law(law, N) * np.exp(np.tile([0.002, -0.002], SIZES.size))
    ci = bootstrap_fit((N, L), None, 50, 0)
    detail = fit_detail(ci["fit"], ci)
    assert detail.startswith(f"L(N) = {ci['fit']['E']:.4g} + ") and "censored at 0" in detail
    _, text = scaling_verdict(ci["fit"], ci, compare_to_constant(N, L))
    assert "L(N) =" not in text  # the formula lives in the detail, not the verdict


# --------------------------------------------------------------------------- determinism

_SCRIPT = """
import json, sys
import numpy as np
from finscale.scaling import (bootstrap_fit, compare_to_constant, design_power, measure_design,
                              resample_replicates, scaling_verdict)
rng = np.random.default_rng(5)
N = np.repeat([5.16e3, 2.6e4, 1.2e5, 4.88e5], 2)
L = 0.33 * np.exp(rng.normal(0, 0.01, N.size))
reps = L[:, None] * np.exp(rng.normal(0, 0.01, (N.size, 100)))
ci = bootstrap_fit((N, L), resample_replicates(N, reps), 40, 0)
cmp = compare_to_constant(N, L)
power = design_power(measure_design(N, L, reps), sims=200, resamples=100, grid=False)
verdict, text = scaling_verdict(ci["fit"], ci, cmp, power=power)
samples = {k: [float(x) for x in v] for k, v in ci["samples"].items()}
json.dump({"fit": ci["fit"], "samples": samples, "cmp": cmp, "power": power, "text": text},
          sys.stdout, sort_keys=True)
"""


def _run_with_threads(n: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(n), "OPENBLAS_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return out.stdout


def test_fits_are_byte_identical_under_one_and_two_threads():
    one, two = _run_with_threads(1), _run_with_threads(2)
    assert json.loads(one)["text"] and one == two


def test_the_documented_example_bounds():
    # docs/statistics.md and docs/verdicts.md quote the README's h=1 slope interval.
    fit = {"n_min": 5.16e3, "n_max": 4.88e5, "log_slope": -0.005343, "log_n_mean": np.log(5e4),
           "log_l_mean": np.log(0.33)}
    b = equivalence_bounds(fit, (-0.03202, 0.02181), 0.95)
    assert (round(b["max_fall_pct"], 1), round(b["max_rise_pct"], 1)) == (13.6, 10.4)
