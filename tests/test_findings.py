"""The findings section: best size vs best baseline, caveats, sign conventions (report.findings)."""

import pandas as pd

from finscale.report.findings import build_findings
from finscale.scaling import FALLS_IN_RANGE


def tables(model_loss: dict, base: dict, diff_ci: dict, converged=True, flags=(), val_loss=None,
           base_val=None, dm=None):
    """Runs of 2 budgets x 2 seeds at h=1; diff_ci[(budget, seed)] = (lo, hi) of model - baseline.
    Validation log-losses default to the test ones (``val_loss``/``base_val`` override them)."""
    val_loss, base_val = val_loss or model_loss, base_val or base
    runs, evals, cmps = [], [], []
    for budget, params in (("s", 1000), ("m", 10000)):
        for seed in (0, 1):
            rid = f"{budget}-h1-s{seed}"
            runs.append({"run_id": rid, "budget": budget, "horizon": 1, "seed": seed,
                         "params_total": params, "converged": converged, "collapsed": False,
                         "val_log_loss": val_loss[budget] + 0.001 * seed})
            evals.append({"run_id": rid, "budget": budget, "horizon": 1, "seed": seed,
                          "log_loss": model_loss[budget] + 0.001 * seed})
            for name in base:
                lo, hi = diff_ci.get((budget, seed, name), (-0.01, 0.01))
                cmps.append({"run_id": rid, "budget": budget, "horizon": 1, "seed": seed,
                             "baseline": name, "mean_diff": (lo + hi) / 2, "diff_lo": lo, "diff_hi": hi,
                             "p_value": 0.01, **(dm or {}).get((budget, seed, name), {})})
    baselines = pd.DataFrame([{"horizon": 1, "baseline": n, "log_loss": v, "val_log_loss": base_val[n]}
                              for n, v in base.items()])
    hpo = pd.DataFrame([{"cell": "s-h1", "budget": "s", "horizon": 1, "hpo_flags": list(flags)}])
    return pd.DataFrame(runs), pd.DataFrame(evals), baselines, pd.DataFrame(cmps), hpo


def test_model_that_loses_to_logistic_is_said_first_with_signed_improvement():
    worse = {(b, s, "logistic"): (0.02, 0.05) for b in "sm" for s in (0, 1)}
    t = tables({"s": 0.345, "m": 0.343}, {"logistic": 0.3005, "constant": 0.36}, worse,
               converged=False, flags=["best_trial_late"])
    f = build_findings(*t, headline=[{"horizon": 1, "verdict": FALLS_IN_RANGE, "text": "verdict text"}])
    hf = f.horizons[0]
    assert hf.best_budget == "m" and hf.best_baseline == "logistic"
    assert hf.improvement < 0 and "improvement -0.043 " in hf.comparison and "(PatchTST is worse)" in hf.comparison
    assert "[-0.05, -0.02]" in hf.comparison  # the interval flipped into the improvement sign
    assert "0 of 2 seed(s) significantly better, 2 significantly worse" in hf.comparison
    assert hf.beats_every_baseline.startswith("No size beats every baseline")
    kinds = [c.kind for c in f.caveats]
    assert kinds[0] == "loses_to_baseline"  # ranked first
    assert {"no_extrapolation", "not_converged", "hpo_flags", "few_seeds"} <= set(kinds)
    assert f.lines()[0] == "h=1: verdict text"


def test_model_that_beats_every_baseline_in_every_seed():
    better = {(b, s, n): (-0.03, -0.01) for b in "m" for s in (0, 1) for n in ("logistic", "constant")}
    t = tables({"s": 0.32, "m": 0.29}, {"logistic": 0.30, "constant": 0.36}, better)
    f = build_findings(*t, headline=[])
    hf = f.horizons[0]
    assert hf.improvement > 0 and "(PatchTST is better)" in hf.comparison
    assert hf.beats_every_baseline == ("Sizes that beat every baseline in every seed "
                                       "(paired block-bootstrap interval): m.")
    assert "loses_to_baseline" not in [c.kind for c in f.caveats]
    assert hf.verdict_text.startswith("No scaling fit")


def test_best_size_and_strongest_baseline_are_chosen_on_validation_not_test():
    """Guard 16, planted: size "s" and baseline "hist_gbm" win on TEST only; on validation "m"
    and "logistic" are better, so those are chosen and the test split only scores them."""
    t = tables({"s": 0.280, "m": 0.300}, {"logistic": 0.310, "hist_gbm": 0.290, "constant": 0.36}, {},
               val_loss={"s": 0.330, "m": 0.310},
               base_val={"logistic": 0.300, "hist_gbm": 0.320, "constant": 0.35})
    hf = build_findings(*t, headline=[]).horizons[0]
    assert hf.best_budget == "m" and hf.best_baseline == "logistic"
    assert hf.selected_on == "validation"
    assert abs(hf.improvement - (0.310 - 0.3005)) < 1e-9  # test losses of the chosen pair
    assert build_findings(*t, headline=[]).to_dict()["horizons"][0]["selected_on"] == "validation"


def test_a_baseline_fitted_on_validation_is_never_the_strongest():
    """constant_val is the validation base rate: its validation score is in-sample."""
    t = tables({"s": 0.30, "m": 0.30}, {"logistic": 0.31, "constant_val": 0.305}, {},
               base_val={"logistic": 0.30, "constant_val": 0.10})
    assert build_findings(*t, headline=[]).horizons[0].best_baseline == "logistic"


def test_significance_and_the_loses_caveat_follow_the_corrected_test():
    """Planted: every seed's interval lies wholly on one side (the uncorrected bootstrap would
    call it significant) but the Holm-corrected DM p-values are not below 0.05 — so no seed is
    significantly worse, no caveat fires on the point estimate, and no size beats every
    baseline; with corrected p < 0.05 both do."""
    worse = {(b, s, "logistic"): (0.02, 0.05) for b in "sm" for s in (0, 1)}
    weak = {(b, s, n): {"dm_p": 0.01, "dm_p_holm": 0.3} for b in "sm" for s in (0, 1)
            for n in ("logistic", "constant")}
    t = tables({"s": 0.345, "m": 0.343}, {"logistic": 0.3005, "constant": 0.36}, worse, dm=weak)
    hf = build_findings(*t, headline=[]).horizons[0]
    assert hf.improvement < 0
    assert "0 of 2 seed(s) significantly better, 0 significantly worse" in hf.comparison
    assert "(Holm-corrected Diebold-Mariano p=0.3)" in hf.comparison
    assert "loses_to_baseline" not in [c.kind for c in hf.caveats]
    strong = {k: {"dm_p": 0.001, "dm_p_holm": 0.01} for k in weak}
    t = tables({"s": 0.345, "m": 0.343}, {"logistic": 0.3005, "constant": 0.36}, worse, dm=strong)
    hf = build_findings(*t, headline=[]).horizons[0]
    assert "2 significantly worse" in hf.comparison
    caveat = next(c for c in hf.caveats if c.kind == "loses_to_baseline")
    assert "significantly in 2 of 2 seed(s)" in caveat.text
    better = {(b, s, n): (-0.03, -0.01) for b in "m" for s in (0, 1) for n in ("logistic", "constant")}
    t = tables({"s": 0.32, "m": 0.29}, {"logistic": 0.30, "constant": 0.36}, better, dm=weak)
    assert build_findings(*t, headline=[]).horizons[0].beats_every_baseline.startswith("No size beats")
    t = tables({"s": 0.32, "m": 0.29}, {"logistic": 0.30, "constant": 0.36}, better, dm=strong)
    assert build_findings(*t, headline=[]).horizons[0].beats_every_baseline == (
        "Sizes that beat every baseline in every seed (Holm-corrected Diebold-Mariano): m.")
