"""The evaluate phase end to end (evaluate.phase): horizons other than 1, data-chosen
block lengths, base-rate references, content-hashed and stationary baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.evaluate import holm
from finscale.evaluate.phase import horizon_baselines
from finscale.labels import make_labels
from finscale.rundata import final_data, prepare
from finscale.runner.study import RunOptions, run_study

HORIZONS = (2, 5)


def overrides(root: Path, *extra: str) -> list[str]:
    return [f"output_dir={json.dumps(str(root / 'runs'))}", f"data.data_dir={json.dumps(str(root / 'data'))}",
            'model.budgets=["cpu-s"]', f"target.horizons={list(HORIZONS)}", "seeds=[0]",
            "train.max_epochs=1", "evaluate.bootstrap_resamples=50", 'splits.train_start="2012-01-01"',
            *extra]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    cfg = load_study(resolve_study_path("smoke"), overrides(root))
    summary = run_study(cfg, RunOptions(phases=("data", "features", "final", "evaluate"), monitor=False))
    assert len(summary.done) == len(HORIZONS) and not summary.failed
    return cfg, root


def _runs(cfg):
    return {json.loads((d / "config.json").read_text())["horizon"]: d
            for d in sorted((cfg.study_dir / "final").iterdir())}


@pytest.mark.parametrize("h", HORIZONS)
def test_final_runs_train_and_evaluate_on_their_own_horizon(study, h):
    """Guard 2 for the final/evaluate path: labels, test windows and blocks of horizon h."""
    cfg, _ = study
    run = _runs(cfg)[h]
    config = json.loads((run / "config.json").read_text())
    assert config["target"]["horizon"] == h
    prep = prepare(cfg)
    data, test = final_data(prep, cfg, h)
    labels = make_labels(prep.frame, cfg.target, h)
    other = make_labels(prep.frame, cfg.target, 1)
    with np.load(run / "predictions.npz") as z:
        np.testing.assert_array_equal(z["ends"], test.ends)
        np.testing.assert_array_equal(z["y"], labels[test.ends])
        assert not np.array_equal(z["y"], other[test.ends])     # the check can fail
    ev = json.loads((run / "eval.json").read_text())
    assert ev["horizon"] == h and ev["test_windows"] == len(test.ends)
    assert ev["val_base_rate"] == pytest.approx(float(labels[data.val.ends].mean()))
    assert ev["train_base_rate"] == pytest.approx(float(labels[data.train.ends].mean()))
    block = ev["block_length"]
    assert block["horizon"] == h and block["block_len"] >= h and block["method"] == "politis-white"
    assert set(block["estimates"]) >= {"labels", "log_loss_hist_gbm_rel", "brier_logistic"}
    # one block length for the CIs of the model, every baseline and every paired test
    assert ev["test"]["block_len"] == block["block_len"]
    assert {b["block_len"] for b in ev["baselines"].values()} == {block["block_len"]}
    assert {c["block_len"] for c in ev["comparisons"].values()} == {block["block_len"]}


def test_eval_json_records_both_base_rates_decomposition_and_strongest_baseline(study):
    cfg, _ = study
    ev = json.loads((_runs(cfg)[2] / "eval.json").read_text())
    m = ev["test"]["metrics"]
    assert {"skill", "skill_val", "log_loss_discrimination", "log_loss_miscalibration",
            "log_loss_refinement", "brier_resolution", "brier_reliability"} <= set(m)
    assert "skill_val" in ev["test"]["ci"]
    assert {"constant", "constant_val", "logistic", "hist_gbm", "logistic_rel", "hist_gbm_rel"} \
        <= set(ev["baselines"])
    const_val = ev["baselines"]["constant_val"]
    assert const_val["metrics"]["pred_mean"] == pytest.approx(ev["val_base_rate"])
    assert const_val["collapsed"]                       # no constant passes the collapse rule
    # guard 16: the strongest baseline is chosen on VALIDATION, never on test, and never
    # among baselines fitted on the validation labels (constant_val)
    val = {n: b["val_log_loss"] for n, b in ev["baselines"].items() if n != "constant_val"}
    assert ev["strongest_baseline"] == min(val, key=val.get)
    assert ev["strongest_baseline_selected_on"] == "validation"
    for name in ("window_logistic", "dlinear", "volatility", "momentum"):
        assert set(ev["baselines"][name]["chosen_on_validation"]) == {"k", "C"}


def test_baselines_are_keyed_by_everything_they_depend_on(study, tmp_path):
    """A changed target.threshold gives new labels, so new baselines (issue 19: the cache was
    keyed by window end rows only); the same config reuses the cached file."""
    cfg, root = study
    prep = prepare(cfg)
    data, test = final_data(prep, cfg, 2)
    cached = sorted((cfg.study_dir / "baselines").glob("h2-*.npz"))
    assert len(cached) == 1
    again, _ = horizon_baselines(cfg, prep, 2, data, test)
    assert sorted((cfg.study_dir / "baselines").glob("h2-*.npz")) == cached
    other = load_study(resolve_study_path("smoke"), overrides(root, "target.threshold=0.02"))
    data2, test2 = final_data(prep, other, 2)
    np.testing.assert_array_equal(test2.ends, test.ends)  # same rows, other labels
    fresh, _ = horizon_baselines(other, prep, 2, data2, test2)
    assert len(sorted((cfg.study_dir / "baselines").glob("h2-*.npz"))) == 2
    assert fresh["constant"]["test"][0] == pytest.approx(float(data2.train.labels_at_ends.mean()))
    assert fresh["constant"]["test"][0] != pytest.approx(again["constant"]["test"][0])


def test_stationary_baseline_inputs_are_standardised_on_training_rows(study):
    from finscale.evaluate.phase import baseline_inputs

    cfg, _ = study
    prep = prepare(cfg)
    data, test = final_data(prep, cfg, 2)
    rel = baseline_inputs(cfg, prep, data.train.ends)["_rel"]
    train = rel[data.train.ends]
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-9)
    assert np.all(np.isfinite(rel[test.ends]))
    # raw price levels of the test period lie far outside the training range; stationary ones do not
    raw_close = prep.values[:, prep.inputs.index("Close")]
    assert raw_close[test.ends].min() > raw_close[data.train.ends].max()
    assert np.abs(rel[test.ends]).max() < 50


def test_every_comparison_carries_dm_and_its_interval_agrees_with_its_p_value(study):
    """Issue 26: eval.json comparisons carry the HLN-corrected Diebold-Mariano test (bandwidth
    = the horizon's block length), and on every comparison of the study the paired interval
    excludes 0 exactly when the paired p-value is below 0.05."""
    cfg, _ = study
    checked = expected = 0
    for h, run in _runs(cfg).items():
        ev = json.loads((run / "eval.json").read_text())
        expected += len(ev["baselines"])
        for name, c in ev["comparisons"].items():
            assert c["dm_method"] == "newey-west+hln" and 0 <= c["dm_p"] <= 1, name
            assert c["dm_bandwidth"] == ev["block_length"]["block_len"]
            assert c["dm_days"] == ev["test_windows"] and np.sign(c["dm_stat"]) == np.sign(c["mean_diff"])
            excludes = c["ci"][0] > 0 or c["ci"][1] < 0
            assert excludes == (c["p_value"] < 0.05), (h, name, c)
            checked += 1
        # the run's own Holm family: every baseline's DM p, adjusted, never below the raw p
        names = list(ev["comparisons"])
        raw = [ev["comparisons"][n]["dm_p"] for n in names]
        adjusted = [ev["comparisons"][n]["dm_p_holm_run"] for n in names]
        assert {ev["comparisons"][n]["holm_run_m"] for n in names} == {len(names)}
        assert adjusted == pytest.approx(list(holm(raw)))
        assert all(a >= p for a, p in zip(adjusted, raw))
        smallest = int(np.argmin(raw))
        assert adjusted[smallest] == pytest.approx(min(1.0, raw[smallest] * len(names)))
    assert checked == expected == len(HORIZONS) * 10  # 6 day-t and 4 window baselines


def test_inference_stage_writes_spa_mcs_and_holm_per_horizon(study):
    from finscale.runner.inference import inference_path, run_inference
    from finscale.study_runs import collect

    cfg, _ = study
    docs = run_inference(cfg)
    assert sorted(docs) == [inference_path(cfg, h) for h in HORIZONS]
    m = sum(len(d["comparisons"]) for d in docs.values())
    assert m == len(HORIZONS) * 10
    for h, run in _runs(cfg).items():
        doc = json.loads(inference_path(cfg, h).read_text())
        ev = json.loads((run / "eval.json").read_text())
        assert doc["holm"]["m"] == m and doc["block_len"] == ev["block_length"]["block_len"]
        assert doc["spa"]["benchmark"] in ev["baselines"] and 0 <= doc["spa"]["p"] <= 1
        assert set(doc["spa"]["improvement"]) == {"cpu-s"}
        assert set(doc["mcs"]["included"]) | set(doc["mcs"]["excluded"]) == {"cpu-s", *ev["baselines"]}
        for row in doc["comparisons"]:
            assert row["dm_p"] == ev["comparisons"][row["baseline"]]["dm_p"]
            assert row["dm_p"] <= row["dm_p_holm"] <= 1
    cmp = collect(cfg).comparisons
    assert {"dm_stat", "dm_p", "dm_p_holm"} <= set(cmp) and cmp["dm_p_holm"].notna().all()


def test_inference_recomputes_dm_for_runs_evaluated_before_it_was_recorded(study):
    """An eval.json written before issue 26 has no dm_p: the stage recomputes it from the
    run's predictions and the cached baselines, to the same value."""
    from finscale.runner.inference import inference_path, run_inference

    cfg, _ = study
    path = _runs(cfg)[2] / "eval.json"
    original = path.read_text()
    ev = json.loads(original)
    try:
        for c in ev["comparisons"].values():
            for k in ("dm_stat", "dm_p"):
                c.pop(k)
        path.write_text(json.dumps(ev))
        run_inference(cfg)
        rows = json.loads(inference_path(cfg, 2).read_text())["comparisons"]
    finally:
        path.write_text(original)
    recorded = json.loads(original)["comparisons"]
    assert {r["dm_source"] for r in rows} == {"recomputed"}
    for r in rows:
        assert r["dm_p"] == pytest.approx(recorded[r["baseline"]]["dm_p"], rel=1e-12)
        assert r["dm_stat"] == pytest.approx(recorded[r["baseline"]]["dm_stat"], rel=1e-12)
    run_inference(cfg)  # leave the files as the recorded eval.json gives them


def test_scored_baselines_are_computed_once_per_content_and_equal_a_fresh_score(study):
    """The per-horizon memo of the baselines' scores: a repeat call returns what a fresh
    computation gives (a copy: mutating it changes nothing), and changed labels or resamples
    give a new score instead of the memo's."""
    from finscale.evaluate import evaluate_predictions
    from finscale.evaluate.phase import _SCORED, scored_baselines

    cfg, _ = study
    prep = prepare(cfg)
    data, test = final_data(prep, cfg, 2)
    probs, chosen = horizon_baselines(cfg, prep, 2, data, test)
    y, val = test.labels_at_ends, data.val.labels_at_ends
    common = dict(horizon=2, block_len=4, n_resamples=40, seed=7, ece_bins=10, std_floor=1e-3,
                  val_prior=float(val.mean()))
    _SCORED.clear()
    first = scored_baselines(y, probs, chosen, val, data.prior, None, common)
    assert len(_SCORED) == 1
    first["logistic"]["metrics"]["log_loss"] = -1.0           # the caller's copy only
    again = scored_baselines(y, probs, chosen, val, data.prior, None, common)
    assert len(_SCORED) == 1 and again["logistic"]["metrics"]["log_loss"] > 0
    fresh = evaluate_predictions(y, probs["constant"]["test"], prior=data.prior, threshold=None,
                                 **common)
    assert again["constant"]["ci"] == fresh["ci"] and again["constant"]["metrics"] == fresh["metrics"]
    other = scored_baselines(y, probs, chosen, val, data.prior, None, {**common, "seed": 8})
    flipped = scored_baselines(1 - y, probs, chosen, val, data.prior, None, common)
    assert len(_SCORED) == 3
    assert other["logistic"]["ci"]["log_loss"] != again["logistic"]["ci"]["log_loss"]
    assert flipped["logistic"]["metrics"]["log_loss"] != again["logistic"]["metrics"]["log_loss"]
