"""The capacity-limited control (issue 27): its study loads and names budgets it runs, bad
expected-curve tables are one-line errors, and a reduced run records the expected curve beside
the fit in scaling/h1.json and draws it on the scaling figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finscale.config import ConfigError, load_study
from finscale.scaling.expected import expected_curve
from finscale.scaling.fit import AxisFit, HorizonScaling

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def test_shipped_law_control_is_a_teacher_market_with_an_expected_curve():
    cfg = load_study(STUDIES / "control_law.toml")
    assert cfg.data.source.startswith("synthetic:teacher?")
    assert len(cfg.model.budgets) >= 4 and cfg.hpo.mode == "fixed"
    default = load_study(STUDIES / "default.toml")
    assert cfg.seeds == default.seeds                    # the default study's seed count (8)
    assert set(cfg.evaluate.expected_excess) == set(cfg.model.budgets)
    # The expected curve is the generator's, measured on another market (bench_law --oracle-market):
    assert "seed=1&" in cfg.data.source
    twin = load_study(STUDIES / "control_law_limited.toml")
    assert (twin.model.budgets, twin.seeds, twin.train) == (cfg.model.budgets, cfg.seeds, cfg.train)


@pytest.mark.parametrize("table, match", [
    ('{ "9k" = 0.1 }', r"evaluate.expected_excess.9k: not a budget of the study"),
    ('{ "cpu-s" = -0.1 }', r"evaluate.expected_excess.cpu-s: expected a number >= 0"),
    ('{ "cpu-s" = "x" }', r"evaluate.expected_excess.cpu-s: expected a number >= 0"),
])
def test_a_bad_expected_curve_names_the_key(table, match):
    with pytest.raises(ConfigError, match=match):
        load_study(STUDIES / "control_law.toml", [f"evaluate.expected_excess={table}"])


def _scaling(x, y, slope_ci) -> HorizonScaling:
    budgets = [f"b{i}" for i in range(len(x))]
    points = pd.DataFrame({"budget": budgets, "x": x, "y": y})
    fit = AxisFit(1, "params_total", "log_loss", "N", points, points, {"slope_ci": slope_ci, "fit": {}, "samples": {}},
                  {}, "v", "t")
    return HorizonScaling(1, fits=(fit,))


def test_the_expected_curve_is_optimum_plus_excess_and_its_slope_is_compared_with_the_fit():
    x = np.array([2e3, 5e3, 1.2e4, 5e4])
    excess = {"b0": 0.2, "b1": 0.12, "b2": 0.07, "b3": 0.03}
    y = 0.3 + np.array(list(excess.values()))
    want = float(np.polyfit(np.log(x), np.log(y), 1)[0])
    hs = _scaling(x, y + 0.01, (want - 0.01, want + 0.01))
    out = expected_curve(hs, excess, 0.3, tolerance=0.02)
    assert out["y"] == pytest.approx(list(y)) and out["slope"] == pytest.approx(want)
    assert out["covered"] and out["within_tolerance"] and out["max_gap"] == pytest.approx(0.01)
    assert not expected_curve(_scaling(x, y, (want + 0.001, 0.0)), excess, 0.3, 0.02)["covered"]
    assert expected_curve(hs, {}, 0.3, 0.02) == {} and expected_curve(hs, excess, None, 0.02) == {}
    d = HorizonScaling.from_dict(json.loads(json.dumps(hs.__class__(1, fits=hs.fits, expected=out).to_dict())))
    assert d.expected["slope"] == pytest.approx(want)


@pytest.mark.slow
def test_small_law_control_records_and_draws_the_expected_curve(tmp_path, cli):
    sets = ['data.source="synthetic:teacher?seed=1&days=1500&width=32"', "seeds=[0]", "train.max_epochs=2",
            'model.budgets=["2k","cpu-s","12k"]', 'evaluate.expected_excess={"2k"=0.1,"cpu-s"=0.05,"12k"=0.02}',
            "evaluate.bootstrap_resamples=50", "evaluate.scaling_resamples=30"]
    args = ["run", str(STUDIES / "control_law.toml"), "--no-monitor", "--data-dir", str(tmp_path / "data"),
            "--set", "run.threads=1"]
    for s in sets:
        args += ["--set", s]
    r = cli(*args, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    study = tmp_path / "runs" / "control_law"
    h1 = json.loads((study / "scaling" / "h1.json").read_text())
    assert isinstance(h1["expected_covered"], bool) and h1["expected_slope"] < 0
    exp = h1["expected"]
    optimum = json.loads(next(study.glob("final/*/eval.json")).read_text())["optimal_log_loss"]["pooled"]
    assert exp["optimum"] == pytest.approx(optimum) and exp["excess"] == [0.1, 0.05, 0.02]
    assert (study / "report" / "figures" / "scaling_h1.png").exists()


def test_the_findings_say_how_the_fit_compares_with_the_known_curve():
    """The headline sentence of a calibration market names the expected slope, whether the
    fitted interval covers it, and the largest gap against the tolerance; other studies' do not."""
    from dataclasses import replace

    from finscale.report.sections import headline_fits
    from finscale.scaling.expected import expected_sentence

    x = np.array([2e3, 5e3, 1.2e4, 5e4])
    excess = {"b0": 0.2, "b1": 0.12, "b2": 0.07, "b3": 0.03}
    y = 0.3 + np.array(list(excess.values()))
    want = float(np.polyfit(np.log(x), np.log(y), 1)[0])
    inside = expected_curve(_scaling(x, y + 0.01, (want - 0.01, want + 0.01)), excess, 0.3, 0.02)
    outside = expected_curve(_scaling(x, y + 0.05, (want + 0.001, 0.0)), excess, 0.3, 0.02)
    assert "inside the fitted 95% interval" in expected_sentence(inside)
    assert "(within the tolerance 0.02)" in expected_sentence(inside)
    assert "outside the fitted 95% interval" in expected_sentence(outside)
    assert "0.05 nats (outside the tolerance 0.02)" in expected_sentence(outside)
    assert expected_sentence({}) == ""
    hs = _scaling(x, y + 0.01, (want - 0.01, want + 0.01))
    assert headline_fits([hs])[0]["text"] == "t"
    assert headline_fits([replace(hs, expected=inside)])[0]["text"] == "t " + expected_sentence(inside)
