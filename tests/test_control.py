"""Small versions of the shipped control studies (guard 15): a martingale shows no skill and
no scaling; a planted signal is found, and the known optimum is recorded and drawn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finscale.config import load_study

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "studies"


@pytest.mark.parametrize("name", ["control_null", "control_planted"])
def test_shipped_controls_are_synthetic_and_fixed(name):
    cfg = load_study(STUDIES / f"{name}.toml")
    assert cfg.data.source.startswith(f"synthetic:{name.split('_')[1]}?")
    assert cfg.hpo.mode == "fixed" and len(cfg.model.budgets) >= 3
    if name == "control_null":  # the GJR null is predictable through volatility
        assert "vol=constant" in cfg.data.source


def test_the_known_optimum_is_a_line_on_log_loss_panels_only():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finscale.report.figures import _optimum_line

    fig, (a, b) = plt.subplots(1, 2)
    _optimum_line(a, "log_loss", 0.58)
    _optimum_line(b, "auc_error", 0.58)
    assert a.get_legend_handles_labels()[1] == ["optimal log-loss (known)"]
    assert a.lines[0].get_ydata()[0] == 0.58
    assert b.get_legend_handles_labels()[1] == []
    plt.close(fig)


def test_an_optimum_outside_the_runs_range_is_named_and_the_expected_panel_shows_it():
    """The y-range follows the runs, so a known optimum below them is said in words; on the
    calibration panel the expected curve and the optimum it sits above are both drawn inside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from finscale.report.figures import _expected_line, _optimum_line
    from finscale.scaling.fit import AxisFit

    fig, (a, b) = plt.subplots(1, 2)
    for ax in (a, b):
        ax.set_ylim(0.27, 0.31)
    _optimum_line(a, "log_loss", 0.22)
    assert [t.get_text() for t in a.texts] == ["optimal log-loss (known) 0.22 (below this range)"]
    points = pd.DataFrame({"budget": ["s", "l"], "x": [2e3, 5e4], "y": [0.30, 0.28]})
    fit = AxisFit(1, "params_total", "log_loss", "N", points, points, {}, {}, "v", "t")
    _expected_line(b, fit, {"x": [2e3, 5e4], "y": [0.30, 0.28], "slope": -0.02, "optimum": 0.22})
    _optimum_line(b, "log_loss", 0.22)
    lo, hi = b.get_ylim()
    assert lo < 0.22 and hi > 0.30 and not b.texts
    plt.close(fig)


def _run(cli, tmp_path: Path, study: str, *sets: str) -> Path:
    args = ["run", str(STUDIES / f"{study}.toml"), "--no-monitor", "--data-dir", str(tmp_path / "data")]
    for s in sets:
        args += ["--set", s]
    r = cli(*args, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp_path / "runs" / study


def _evals(study: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(study.glob("final/*/eval.json"))]


@pytest.mark.slow
def test_small_null_control_finds_no_skill_and_no_scaling(tmp_path, cli):
    from finscale.scaling import FLAT

    sets = ('data.source="synthetic:null?seed=0&days=3000&vol=constant"', "seeds=[0]",
            "train.max_epochs=3", "evaluate.bootstrap_resamples=100", "evaluate.scaling_resamples=50")
    study = _run(cli, tmp_path, "control_null", *sets)
    evals = _evals(study)
    assert len(evals) == 3
    for ev in evals:
        lo, _hi = ev["test"]["ci"]["skill"]
        assert lo <= 0, f"{ev['run_id']}: skill interval {ev['test']['ci']['skill']} above 0 on a martingale"
        optimum = ev["optimal_log_loss"]["pooled"]
        # the optimum of a martingale with i.i.d. shocks is the constant forecast (up to noise)
        assert optimum == pytest.approx(ev["test"]["metrics"]["log_loss_const"], abs=0.02)
    found = json.loads((study / "report" / "findings.json").read_text())
    assert found["horizons"][0]["verdict"] == FLAT
    # the report's scaling figure gets the recorded optimum as its line
    from finscale.report.sections import scaling_overlays
    from finscale.study_runs import collect

    cfg = load_study(STUDIES / "control_null.toml", [f'output_dir="{tmp_path / "runs"}"', *sets])
    overlay = scaling_overlays(collect(cfg), 1)
    assert overlay["optimum"] == pytest.approx(evals[0]["optimal_log_loss"]["pooled"])
    assert (study / "report" / "figures" / "scaling_h1.png").exists()


@pytest.mark.slow
def test_small_planted_control_finds_the_signal_above_the_optimum(tmp_path, cli):
    study = _run(cli, tmp_path, "control_planted",
                 'data.source="synthetic:planted?seed=1&days=4000&vol=gjr&strength=1.0&complexity=2&lags=3&linear=0.5"',
                 'model.budgets=["cpu-s","cpu-m","cpu-l"]', "seeds=[0]", "train.max_epochs=4",
                 "evaluate.bootstrap_resamples=100", "evaluate.scaling_resamples=50")
    evals = _evals(study)
    assert len(evals) == 3
    for ev in evals:
        optimum = ev["optimal_log_loss"]["pooled"]
        assert optimum < ev["test"]["metrics"]["log_loss_const"] - 0.01  # a signal is there
        assert ev["test"]["metrics"]["log_loss"] >= optimum - 0.01        # no model beats the truth
    best = min(evals, key=lambda ev: ev["test"]["metrics"]["log_loss"])
    assert best["test"]["ci"]["skill"][0] > 0, "the planted signal was not found"
    report = (study / "report" / "report.md").read_text()
    assert "scaling_h1.png" in report
