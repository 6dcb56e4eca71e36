"""The report's conventions a reader relies on: one sign, own parameter counts, whole warnings,
readable HTML, and the one-sentence answer (report.headline)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from finscale.report import tables
from finscale.report.findings import build_findings
from finscale.report.headline import answer_sentence, headline_frame
from finscale.report.render import Bullets, Section, Table, Text, render_html
from finscale.study_runs import StudyRuns


def study_runs(diff_ci: dict, params=None) -> StudyRuns:
    """2 budgets x 2 seeds at h=1 and h=3; diff_ci[(budget, h)] = (lo, hi) of model - baseline."""
    params = params or {("s", 1): 1000, ("m", 1): 10000, ("s", 3): 900, ("m", 3): 9000}
    runs, evals, cmps = [], [], []
    for (budget, h), n in params.items():
        for seed in (0, 1):
            rid = f"{budget}-h{h}-s{seed}"
            key = {"run_id": rid, "budget": budget, "horizon": h, "seed": seed}
            runs.append({**key, "params_total": n, "current": True, "converged": True, "collapsed": False,
                         "state": "done", "budget_params": n, "evaluated": True, "reason": "",
                         "collapse_reason": "", "budget_tolerance": None,
                         "val_log_loss": 0.30 if budget == "s" else 0.31})
            evals.append({**key, "log_loss": 0.3, "strongest_baseline": "logistic", "collapsed": False,
                          "collapse_reason": ""})
            lo, hi = diff_ci[(budget, h)]
            cmps.append({**key, "baseline": "logistic", "mean_diff": (lo + hi) / 2, "diff_lo": lo,
                         "diff_hi": hi, "p_value": 0.01})
    empty = pd.DataFrame()
    return StudyRuns(study_dir=Path("."), runs=pd.DataFrame(runs), epochs=empty, evals=pd.DataFrame(evals),
                     baselines=pd.DataFrame([{"horizon": h, "baseline": "logistic", "log_loss": 0.28,
                                              "val_log_loss": 0.29} for h in (1, 3)]),
                     comparisons=pd.DataFrame(cmps), backtests=empty, calibration=empty)


def test_paired_summary_states_the_improvement_baseline_minus_model():
    sr = study_runs({("s", 1): (0.02, 0.06), ("m", 1): (-0.05, -0.01), ("s", 3): (-0.01, 0.01),
                     ("m", 3): (-0.01, 0.01)})
    summary = tables.comparison_summary(sr)
    s1 = summary[(summary["budget"] == "s") & (summary["horizon"] == 1)].iloc[0]
    assert s1["improvement"] == pytest.approx(-0.04) and s1["seeds_worse"] == 2  # model worse: negative
    m1 = summary[(summary["budget"] == "m") & (summary["horizon"] == 1)].iloc[0]
    assert m1["improvement"] == pytest.approx(0.03) and m1["seeds_better"] == 2
    assert "mean_diff" not in summary
    frame = headline_frame(sr)  # the headline figure's numbers use the same sign
    assert frame.loc[(frame["budget"] == "m") & (frame["horizon"] == 1), "improvement_lo"].min() == pytest.approx(0.01)


def test_findings_count_the_parameters_of_the_horizons_own_runs():
    sr = study_runs({k: (0.01, 0.03) for k in (("s", 1), ("m", 1), ("s", 3), ("m", 3))})
    ev = sr.evals.assign(log_loss=[0.30, 0.30, 0.31, 0.31] * 2)
    f = build_findings(sr.runs, ev, sr.baselines, sr.comparisons, pd.DataFrame(), headline=[])
    h3 = next(hf for hf in f.horizons if hf.horizon == 3)
    assert "(900 parameters)" in h3.comparison  # not the median over horizons (950)


def test_answer_is_one_sentence_naming_verdicts_and_the_baseline_side():
    sr = study_runs({("s", 1): (0.02, 0.06), ("m", 1): (0.01, 0.03), ("s", 3): (-0.01, 0.01),
                     ("m", 3): (-0.03, -0.01)})
    head = [{"horizon": 1, "verdict": "no detectable scaling", "text": "t"},
            {"horizon": 3, "verdict": "no detectable scaling", "text": "t"}]
    f = build_findings(sr.runs, sr.evals, sr.baselines, sr.comparisons, pd.DataFrame(), headline=head)
    text = answer_sentence(f, headline_frame(sr))
    assert text.startswith("Answer:") and text.count(". ") == 0 and text.endswith(".")
    assert "no detectable scaling (every horizon: h=1, 3)" in text
    assert "the baseline is significantly better than every size at h=1" in text
    sr = study_runs({("s", 1): (-0.06, -0.02), ("m", 1): (0.01, 0.03), ("s", 3): (-0.01, 0.01),
                     ("m", 3): (-0.01, 0.01)})
    text = answer_sentence(f, headline_frame(sr))
    assert "PatchTST beats the strongest baseline in every seed at h=1 (s)" in text


def test_a_warning_with_a_semicolon_stays_one_row():
    sr = study_runs({k: (0.01, 0.03) for k in (("s", 1), ("m", 1), ("s", 3), ("m", 3))})
    note = "best trial came last; more trials may help"
    sr.hpo = pd.DataFrame([{"cell": c, "hpo_flags": ["best_trial_late"], "hpo_flag_notes": note,
                            "hpo_flag_note_list": [note]} for c in ("s-h1", "m-h1")])
    warn = tables.warnings_table(sr)
    flagged = warn[warn["kind"] == "hpo flagged"]
    assert len(flagged) == 1 and flagged["count"].item() == 2 and flagged["message"].item() == note


def test_html_headers_break_between_words_and_code_spans_render(tmp_path):
    frame = pd.DataFrame({"best_val_log_loss": [0.1]})
    html = render_html("t", [Section("S", [Text("run `finscale run STUDY` first"),
                                           Bullets(["see `report.md`"]), Table(frame, "c")])], tmp_path)
    assert "<code>finscale run STUDY</code>" in html and "<code>report.md</code>" in html and "`" not in html
    assert "<th>best_<wbr>val_<wbr>log_<wbr>loss</th>" in html
    assert "th{overflow-wrap:normal" in html
