"""Metrics, threshold choice, calibration, collapse flags and baselines (finscale.evaluate)."""

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, f1_score, log_loss, roc_auc_score

from finscale.evaluate import (
    BASELINES,
    choose_threshold,
    classification_metrics,
    evaluate_predictions,
    expected_calibration_error,
    fit_baselines,
    is_collapsed,
    per_sample_log_loss,
    score_decomposition,
)

Y = np.array([1, 0, 1, 0, 1])
P = np.array([0.9, 0.2, 0.6, 0.4, 0.3])


def test_metrics_match_hand_computation_and_sklearn():
    m = classification_metrics(Y, P, prior=0.5, threshold=0.25)
    hand_ll = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.6) + math.log(0.3)) / 5
    assert m["log_loss"] == pytest.approx(hand_ll, abs=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(Y, P), abs=1e-12)
    assert m["auc"] == pytest.approx(5 / 6) and m["auc"] == pytest.approx(roc_auc_score(Y, P))
    assert m["brier"] == pytest.approx(0.172) and m["brier"] == pytest.approx(brier_score_loss(Y, P))
    # at 0.5: predictions 1,0,1,0,0
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == pytest.approx((0.8, 1.0, 2 / 3, 0.8))
    # at 0.25: predictions 1,0,1,1,1
    assert (m["accuracy_at_thr"], m["precision_at_thr"], m["recall_at_thr"]) == pytest.approx((0.8, 0.75, 1.0))
    assert m["f1_at_thr"] == pytest.approx(6 / 7)
    assert m["base_rate"] == pytest.approx(0.6) and m["pred_mean"] == pytest.approx(P.mean())
    assert m["pred_std"] == pytest.approx(P.std())
    assert m["skill"] == pytest.approx(1 - hand_ll / math.log(2))
    assert m["n"] == 5 and m["threshold"] == 0.25


def test_strict_threshold_rule_and_no_threshold_keys():
    m = classification_metrics([1, 0], [0.5, 0.5], prior=0.5)
    assert m["positive_rate"] == 0.0  # prob == 0.5 is NOT a positive prediction
    assert "f1_at_thr" not in m and "threshold" not in m


def test_skill_of_constant_prior_predictor_is_zero_even_off_base_rate():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    for prior in (0.3, 0.2, 0.45):
        m = classification_metrics(y, np.full(y.size, prior), prior=prior)
        assert m["skill"] == pytest.approx(0.0, abs=1e-12)
    informative = np.where(y == 1, 0.6, 0.2)
    assert classification_metrics(y, informative, prior=0.3)["skill"] > 0
    assert classification_metrics(y, 1 - informative, prior=0.3)["skill"] < 0


def test_clipping_keeps_log_loss_finite_and_matches_per_sample():
    y, p = np.array([1, 0, 1]), np.array([0.0, 1.0, 1.0])
    m = classification_metrics(y, p, prior=0.5)
    assert math.isfinite(m["log_loss"])
    assert per_sample_log_loss(y, p).mean() == pytest.approx(m["log_loss"], rel=1e-12)


def test_single_class_auc_is_none_with_reason():
    m = classification_metrics([0, 0, 0], [0.1, 0.2, 0.3], prior=0.2)
    assert m["auc"] is None and "every label is 0" in m["auc_note"]


@pytest.mark.parametrize("y,p,prior,match", [
    ([1, 0], [0.5], 0.5, "equal lengths"),
    ([1, 2], [0.5, 0.5], 0.5, "0/1"),
    ([1, 0], [0.5, 1.5], 0.5, r"\[0, 1\]"),
    ([1, 0], [0.5, np.nan], 0.5, "finite"),
    ([1, 0], [0.5, 0.5], 0.0, "prior"),
    ([], [], 0.5, "empty"),
])
def test_bad_inputs_raise_value_error(y, p, prior, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, p, prior=prior)


def test_ece_table_by_hand():
    y = np.array([0, 1, 1, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.55, 0.65, 0.95, 1.0])
    ece, table = expected_calibration_error(y, p, bins=2)
    assert [r["count"] for r in table] == [2, 4]  # 1.0 falls in the last bin
    assert table[0]["mean_pred"] == pytest.approx(0.1) and table[0]["frac_pos"] == pytest.approx(0.5)
    assert table[1]["mean_pred"] == pytest.approx(0.7875) and table[1]["frac_pos"] == pytest.approx(0.75)
    assert ece == pytest.approx(2 / 6 * 0.4 + 4 / 6 * 0.0375)
    _, table10 = expected_calibration_error(y, p, bins=10)
    assert sum(r["count"] for r in table10) == 6
    assert table10[2]["count"] == 0 and table10[2]["mean_pred"] is None


def test_ece_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    y = (rng.random(p.size) < p).astype(int)
    assert expected_calibration_error(y, p, 10)[0] < 0.02
    assert expected_calibration_error(y, p**3, 10)[0] > 0.1


def _best_f1_by_brute_force(y, p):
    cuts = np.r_[np.unique(p) - 1e-12, 1.0]
    return max(f1_score(y, (p > c).astype(int), zero_division=0) for c in cuts)


def test_choose_threshold_maximises_validation_f1_and_is_deterministic():
    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.3).astype(int)
    p = np.clip(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.15, y.size), 0, 1).round(3)  # ties too
    thr = choose_threshold(y, p)
    achieved = f1_score(y, (p > thr).astype(int))
    assert achieved == pytest.approx(_best_f1_by_brute_force(y, p))
    assert choose_threshold(y, p) == thr
    assert not np.any(p == thr)  # a midpoint, so > and >= agree on validation


def test_choose_threshold_hand_case_and_no_positive_error():
    # predicting only the two highest gives F1 = 1
    assert choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no positive labels"):
        choose_threshold([0, 0], [0.2, 0.4])


def test_is_collapsed_flags_flat_and_skill_less_predictions():
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.4).astype(int)
    flat = classification_metrics(y, np.full(y.size, 0.4), prior=0.4)
    collapsed, reason = is_collapsed(flat, std_floor=1e-3)
    assert collapsed and "barely vary" in reason and "no better than the base rate" in reason
    good = classification_metrics(y, np.where(y == 1, 0.7, 0.2), prior=0.4)
    assert is_collapsed(good, std_floor=1e-3) == (False, "")


def _toy_features(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 25))
    logit = 1.5 * X[:, 0] - X[:, 1] + 0.5 * X[:, 2] * X[:, 3]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def test_baselines_shapes_prior_and_signal():
    X, y = _toy_features(4000, 0)
    Xv, yv = _toy_features(600, 1)
    out = fit_baselines(X[:3000], y[:3000], {"val": X[3000:], "test": Xv}, seed=0)
    assert set(out) == set(BASELINES) and all(set(v) == {"val", "test"} for v in out.values())
    assert np.all(out["constant"]["test"] == pytest.approx(y[:3000].mean()))
    assert out["logistic"]["test"].shape == (600,)
    assert roc_auc_score(yv, out["logistic"]["test"]) > 0.75
    assert roc_auc_score(yv, out["hist_gbm"]["test"]) > 0.75


def test_baselines_are_seeded_and_standardised_on_train():
    X, y = _toy_features(1500, 2)
    a = fit_baselines(X[:1000], y[:1000], {"test": X[1000:]}, seed=5)
    b = fit_baselines(X[:1000], y[:1000], {"test": X[1000:]}, seed=5)
    np.testing.assert_array_equal(a["hist_gbm"]["test"], b["hist_gbm"]["test"])
    scaled = X * np.r_[1000.0, np.ones(24)]  # rescaling a column is undone by the train-fitted scaler
    c = fit_baselines(scaled[:1000], y[:1000], {"test": scaled[1000:]}, seed=5)
    np.testing.assert_allclose(c["logistic"]["test"], a["logistic"]["test"], rtol=1e-5)


def test_baselines_reject_bad_inputs():
    X, y = _toy_features(200, 3)
    with pytest.raises(ValueError, match="NaN"):
        fit_baselines(np.where(X > 2.5, np.nan, X), y, {"test": X}, seed=0)
    with pytest.raises(ValueError, match=r"X_eval_dict\['test'\] has 24 features"):
        fit_baselines(X, y, {"test": X[:, :24]}, seed=0)
    with pytest.raises(ValueError, match="both classes"):
        fit_baselines(X, np.zeros(200), {"test": X}, seed=0)


def test_evaluate_predictions_bundles_metrics_cis_and_calibration():
    rng = np.random.default_rng(4)
    y = (rng.random(400) < 0.3).astype(int)
    p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.1, y.size), 0.01, 0.99)
    out = evaluate_predictions(y, p, prior=0.3, threshold=0.35, horizon=3, block_len=5,
                               n_resamples=200, seed=0, ece_bins=10)
    lo, hi = out["ci"]["log_loss"]
    assert lo <= out["metrics"]["log_loss"] <= hi
    assert out["metrics"]["ece"] == out["calibration"]["ece"] and len(out["calibration"]["bins"]) == 10
    assert out["collapsed"] is False and "accuracy_at_thr" in out["ci"]


# --------------------------------------------------------------------------- issue 19

def _bundled_h1():
    """h=1 labels of the default study's final split on the bundled data (train/val/test)."""
    from finscale.cli.common import resolve_study_path
    from finscale.config import load_study
    from finscale.data import load_sample
    from finscale.features import build_features
    from finscale.labels import make_labels
    from finscale.splits import final_split

    cfg = load_study(resolve_study_path("default"))
    frame, _ = build_features(load_sample("sp500"), cfg.features.set)
    y = make_labels(frame, cfg.target, 1)
    s = final_split(frame["Date"], np.isfinite(y), cfg.splits, cfg.model.context_len, 1)
    return y[s.train], y[s.val], y[s.test]


def test_block_length_is_chosen_from_the_data_never_below_the_horizon():
    from finscale.evaluate import choose_block_len

    rng = np.random.default_rng(0)
    noise = rng.normal(size=600)
    persistent = np.convolve(rng.normal(size=640), np.ones(40) / 40, mode="valid")[:600]
    white = choose_block_len({"x": noise}, horizon=3)
    slow = choose_block_len({"x": noise, "y": persistent}, horizon=3)
    assert white["block_len"] == 3 and white["method"] == "politis-white"  # floor: the horizon
    assert slow["block_len"] > 20 and set(slow["estimates"]["y"]) == {"stationary", "circular"}
    assert slow["block_len"] == max(3, int(np.ceil(max(slow["estimates"]["y"].values()))))
    flat = choose_block_len({"x": np.zeros(600), "y": noise}, horizon=2)
    assert flat["estimates"]["x"] is None and flat["block_len"] == 2
    assert choose_block_len({"y": persistent}, horizon=3, override=7)["block_len"] == 7
    with pytest.raises(ValueError, match="shorter than the horizon"):
        choose_block_len({"y": persistent}, horizon=5, override=3)


def test_data_chosen_blocks_on_bundled_labels_exceed_the_old_fixed_rule():
    """The bundled test labels are autocorrelated well past lag 5 (the issue's audit)."""
    from finscale.evaluate import choose_block_len

    _, _, y = _bundled_h1()
    assert choose_block_len({"labels": y}, horizon=1)["block_len"] > 5


def test_decomposition_adds_up_and_a_constant_has_no_discrimination():
    rng = np.random.default_rng(5)
    y = (rng.random(800) < 0.3).astype(int)
    p = np.clip(0.3 + 0.25 * (y - 0.3) + rng.normal(0, 0.1, y.size), 0.01, 0.99)
    for prob in (p, np.full(y.size, 0.6)):
        d = score_decomposition(y, prob)
        for part in d.values():
            assert part["score"] == pytest.approx(
                part["miscalibration"] - part["discrimination"] + part["uncertainty"])
            assert part["refinement"] == pytest.approx(part["uncertainty"] - part["discrimination"])
    const = score_decomposition(y, np.full(y.size, 0.6))
    assert const["log_loss"]["discrimination"] == pytest.approx(0, abs=1e-12)
    assert const["log_loss"]["miscalibration"] > 0
    m = classification_metrics(y, p, prior=0.3, val_prior=0.25)
    assert m["log_loss_discrimination"] > 0.01 and m["brier_resolution"] > 0
    assert m["skill_val"] == pytest.approx(1 - m["log_loss"] / m["log_loss_const_val"])


def test_constant_at_the_validation_base_rate_is_collapsed_and_has_no_significant_skill():
    """Guard 12/15: the issue's planted predictor, a constant at the validation base rate
    with a little jitter, on the bundled test labels. Against the training base rate it
    'has skill' (+0.04; with blocks of 5 days its interval excluded 0); it must still be
    flagged collapsed, and its skill against the validation base rate must not be significant."""
    from finscale.evaluate import choose_block_len

    y_train, y_val, y = _bundled_h1()
    val_rate = float(y_val.mean())
    p = np.clip(val_rate + np.random.default_rng(0).normal(0, 0.002, y.size), 0.01, 0.99)
    block = choose_block_len({"labels": y}, horizon=1)["block_len"]
    out = evaluate_predictions(y, p, prior=float(y_train.mean()), val_prior=val_rate, threshold=None,
                               horizon=1, block_len=block, n_resamples=500, seed=0)
    assert out["metrics"]["skill"] > 0.02          # the base-rate shift looks like skill ...
    lo, hi = out["ci"]["skill_val"]
    assert lo <= 0 <= hi                           # ... but not against the validation rate
    assert out["collapsed"] and "no significant discrimination" in out["collapse_reason"]
