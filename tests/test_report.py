"""The study report, built from a real (tiny) study: 3 budgets x 2 seeds, trained and evaluated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from finscale.cli import main
from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.report import SECTIONS, build_report
from finscale.report.render import Section, Table, Text, render_html, render_markdown
from finscale.runner.study import RunOptions, run_study
from finscale.scaling import AXES, VERDICTS, fit_power_law, fit_study, read_scaling, run_scaling
from finscale.study_runs import collect

BUDGETS = ["cpu-s", "cpu-m", "cpu-l"]


def study_overrides(root: Path) -> list[str]:
    # train_start 2014: ~500 training windows keep 6 runs to seconds; val/test stay >= 100.
    return [f"output_dir={root / 'runs'}", f"data.data_dir={root / 'data'}",
            f"model.budgets={json.dumps(BUDGETS)}", "target.horizons=[1]", "train.max_epochs=1",
            "seeds=[0,1]", "evaluate.bootstrap_resamples=50", "evaluate.scaling_resamples=20",
            'splits.train_start="2014-01-01"']


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    overrides = study_overrides(root)
    cfg = load_study(resolve_study_path("smoke"), overrides)
    summary = run_study(cfg, RunOptions(phases=("data", "features", "final", "evaluate", "scaling", "report"),
                                        monitor=False))
    assert len(summary.done) == len(BUDGETS) * 2 and not summary.failed
    return {"cfg": cfg, "overrides": overrides, "html": summary.report, "root": root,
            "dir": summary.report.parent}


def eval_docs(cfg) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted((cfg.study_dir / "final").glob("*/eval.json"))}


# --------------------------------------------------------------------------- the document

def test_report_has_every_section_in_both_formats(study):
    md = (study["dir"] / "report.md").read_text()
    html = study["html"].read_text()
    assert study["html"] == study["cfg"].study_dir / "report" / "report.html"
    for title in SECTIONS:
        assert f"\n## {title}\n" in md
        assert f"<h2>{title}</h2>" in html
    # One embedded image per PNG, and nothing fetched from outside the file.
    pngs = sorted((study["dir"] / "figures").glob("*.png"))
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "src=\"http" not in html and "href=\"http" not in html


def test_findings_come_first_and_say_what_was_found(study):
    md = (study["dir"] / "report.md").read_text()
    first = md.split("\n## ")[2]  # [0] title, [1] contents, [2] the first section
    assert first.startswith("Findings\n") and "Horizon 1" in first
    assert "Best PatchTST size" in first and "the best baseline" in first
    assert "every baseline" in first and "Caveats" in first
    found = json.loads((study["dir"] / "findings.json").read_text())
    assert found["lines"][0].startswith("h=1: ") and found["horizons"][0]["best_baseline"]
    html = study["html"].read_text()
    assert html.index('<section id="findings">') < html.index('<section id="study-configuration')


def test_scaling_panels_draw_the_strongest_baseline_and_hollow_markers(study):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finscale.report.figures import _baseline_bands, _scaling_panel, _y_on_points
    from finscale.report.sections import scaling_overlays

    sr = collect(study["cfg"])
    strongest = sr.evals.loc[sr.evals["horizon"] == 1, "strongest_baseline"].iloc[0]
    extra = scaling_overlays(sr, 1)
    bands = extra["baselines"]  # the strongest baseline only: the others are in the table
    assert set(bands["baseline"]) == {strongest} and set(bands["quantity"]) == {"log_loss", "auc_error"}
    assert (bands["lo"] <= bands["value"]).all() and (bands["value"] <= bands["hi"]).all()
    hs = read_scaling(study["cfg"])[0]
    af = hs.fits[0]
    fig, ax = plt.subplots()
    _scaling_panel(ax, af, {}, frozenset(af.points["run_id"][:1]))
    _y_on_points(ax, af)
    lo, hi = ax.get_ylim()
    _baseline_bands(ax, af.quantity, bands)
    assert ax.get_ylim() == (lo, hi)  # the y-range is the points', not the baseline's
    assert lo <= af.points["y"].min() and af.points["y"].max() <= hi
    labels = ax.get_legend_handles_labels()[1]
    assert f"strongest baseline: {strongest}" in labels and "no-scaling fit (mean)" in labels
    assert any("(not converged)" in lab for lab in labels)
    assert not ax.patches  # no shaded band tints the panel
    fit_x = ax.get_lines()[0].get_xdata()  # the fit is drawn over the measured sizes only
    assert fit_x.min() == pytest.approx(af.points["x"].min()) and fit_x.max() == pytest.approx(af.points["x"].max())
    plt.close(fig)


def test_every_figure_is_a_real_image(study):
    names = {p.name for p in (study["dir"] / "figures").glob("*.png")}
    assert names == {f"{kind}_h1.png" for kind in ("scaling", "learning", "calibration", "backtest",
                                                   "compute", "economics")} | {"headline.png"}
    for name in names:
        with Image.open(study["dir"] / "figures" / name) as img:
            img.verify()
        with Image.open(study["dir"] / "figures" / name) as img:
            assert img.width >= 300 and img.height >= 200
            pixels = np.asarray(img.convert("L"), dtype=np.float64)
            assert pixels.std() > 5, f"{name} looks blank"


def test_csv_tables_equal_the_recorded_eval_json(study):
    tables = study["dir"] / "tables"
    docs = eval_docs(study["cfg"])
    per_run = pd.read_csv(tables / "final_runs.csv").set_index("run_id")
    assert set(per_run.index) == set(docs)
    for run_id, doc in docs.items():
        m, ci = doc["test"]["metrics"], doc["test"]["ci"]
        for key in ("log_loss", "auc", "skill", "brier", "ece"):
            assert per_run.loc[run_id, key] == pytest.approx(m[key], rel=1e-12)
        assert per_run.loc[run_id, "log_loss_lo"] == pytest.approx(ci["log_loss"][0], rel=1e-12)
    results = pd.read_csv(tables / "final_results.csv")
    assert list(results["budget"]) == BUDGETS  # ordered by size, not alphabetically
    for _, row in results.iterrows():
        values = [d["test"]["metrics"]["log_loss"] for d in docs.values() if d["budget"] == row["budget"]]
        assert row["seeds"] == len(values) == 2
        assert row["log_loss"] == pytest.approx(np.mean(values), rel=1e-12)
        assert row["log_loss_lo"] < row["log_loss"] < row["log_loss_hi"]
    baselines = pd.read_csv(tables / "baselines.csv").set_index("baseline")
    first = next(iter(docs.values()))
    assert set(baselines.index) == set(first["baselines"])
    for name, block in first["baselines"].items():
        assert baselines.loc[name, "log_loss"] == pytest.approx(block["metrics"]["log_loss"], rel=1e-12)
    splits = pd.read_csv(tables / "splits.csv")
    assert set(splits["region"]) == {"train", "val", "test"}
    assert splits.loc[splits["region"] == "test", "windows"].item() == first["test_windows"]


def test_backtest_table_carries_recorded_stats_and_a_deflated_sharpe(study):
    docs = eval_docs(study["cfg"])
    bt = pd.read_csv(study["dir"] / "tables" / "backtests.csv").set_index("run_id")
    for run_id, doc in docs.items():
        assert bt.loc[run_id, "sharpe"] == pytest.approx(doc["backtest"]["strategy"]["sharpe"])
        assert bt.loc[run_id, "bh_cagr"] == pytest.approx(doc["backtest"]["buy_and_hold"]["cagr"])
        assert 0.0 <= bt.loc[run_id, "dsr"] <= 1.0
    summary = pd.read_csv(study["dir"] / "tables" / "backtest_summary.csv")
    assert summary["trials"].item() == len(docs)
    assert summary["best_sharpe"].item() == pytest.approx(bt["sharpe"].max())


# --------------------------------------------------------------------------- scaling wiring

def test_scaling_fit_per_horizon_has_verdict_and_intervals(study):
    table = pd.read_csv(study["dir"] / "tables" / "scaling.csv")
    h1 = table[table["horizon"] == 1]
    assert set(h1.loc[h1["quantity"] == "log_loss", "axis"]) == set(AXES)
    assert set(h1.loc[h1["quantity"] == "auc_error", "axis"]) == {"params_total"}
    assert set(h1.loc[h1["quantity"] == "log_loss_refinement", "axis"]) == {"params_total"}
    for _, row in h1.iterrows():
        assert row["verdict"] in VERDICTS and row["text"]
        assert row["alpha_lo"] <= row["alpha_hi"] and row["E_lo"] <= row["E_hi"]
        assert row["n_runs"] == 6 and row["n_budgets"] == 3 and row["n_resamples"] == 20
        assert np.isfinite([row["aic_power"], row["bic_const"], row["delta_bic"]]).all()
    # The point fit is the power law through the per-run recorded test losses.
    docs = eval_docs(study["cfg"])
    runs = collect(study["cfg"]).runs.set_index("run_id")
    frame = pd.DataFrame([{"n": runs.loc[r, "params_total"], "loss": d["test"]["metrics"]["log_loss"]}
                          for r, d in docs.items()])
    expected = fit_power_law(frame["n"].to_numpy(float), frame["loss"].to_numpy())
    row = h1[(h1["quantity"] == "log_loss") & (h1["axis"] == "params_total")].iloc[0]
    assert row["alpha"] == pytest.approx(expected["alpha"], rel=1e-6, abs=1e-9)
    assert row["E"] == pytest.approx(expected["E"], rel=1e-6, abs=1e-9)
    saved = json.loads((study["dir"] / "scaling.json").read_text())
    assert [h["horizon"] for h in saved] == [1] and saved[0]["reason"] == ""
    # the scaling bootstrap uses the data-chosen block length the runs recorded in eval.json
    assert {d["block_length"]["block_len"] for d in docs.values()} == {saved[0]["block_len"]}


def _forbid_fitting(monkeypatch):
    """Any scaling fit from here on fails the test: the report must only read results."""
    import finscale.scaling.fit as fit_mod
    import finscale.scaling.laws as laws

    def forbidden(*args, **kwargs):
        raise AssertionError("the report fitted a scaling law")
    for module, names in ((fit_mod, ("fit_study", "bootstrap_fit", "compare_to_constant")),
                          (laws, ("fit_power_law", "bootstrap_fit", "compare_to_constant"))):
        for name in names:
            monkeypatch.setattr(module, name, forbidden)


def test_rebuild_fits_nothing_and_never_touches_runs(study, monkeypatch):
    final = study["cfg"].study_dir / "final"
    stored = study["cfg"].study_dir / "scaling"
    watched = [*final.rglob("*"), *stored.rglob("*")]
    before = {p: p.stat().st_mtime_ns for p in watched if p.is_file()}
    _forbid_fitting(monkeypatch)
    path = build_report(study["cfg"])
    after = {p: p.stat().st_mtime_ns for p in watched if p.is_file()}
    assert after == before  # no run or scaling file was written: nothing retrained or refitted
    assert path.exists()
    assert not list(study["cfg"].study_dir.glob(".report-*"))  # temp folders cleaned up
    # The report's fits are the stored ones, exactly.
    saved = json.loads((path.parent / "scaling.json").read_text())
    stored_h1 = json.loads((stored / "h1.json").read_text())
    assert saved[0]["fits"][0]["alpha"] == stored_h1["fits"][0]["boot"]["fit"]["alpha"]


def test_scaling_results_round_trip_through_json(study):
    results = read_scaling(study["cfg"])
    assert [hs.horizon for hs in results] == [1] and results[0].fits
    again = [type(hs).from_dict(json.loads(json.dumps(hs.to_dict()))) for hs in results]
    assert [f.row() for f in again[0].fits] == [f.row() for f in results[0].fits]
    fit = results[0].fits[0]
    assert fit.boot["samples"]["alpha"].shape == (20,)  # bootstrap samples kept for the bands
    with pytest.raises(AttributeError):
        fit.verdict = "changed"  # frozen


def test_report_without_scaling_results_says_so(altered, monkeypatch):
    shutil.rmtree(altered.study_dir / "scaling")
    _forbid_fitting(monkeypatch)
    html = build_report(altered)
    md = (html.parent / "report.md").read_text()
    assert "No scaling results: the scaling stage has not run for this study" in md
    warn = pd.read_csv(html.parent / "tables" / "warnings.csv")
    assert "no scaling results" in set(warn["kind"])


# --------------------------------------------------------------------------- degraded trees

@pytest.fixture
def altered(study, tmp_path):
    """A copy of the study's run tree (without checkpoints) to damage freely."""
    root = tmp_path / "copy"
    shutil.copytree(study["cfg"].study_dir, root / "runs" / "smoke",
                    ignore=shutil.ignore_patterns("ckpt", "report"))
    # Fewer scaling resamples: these trees change the fitted points (no cached fits), and the
    # fits are not what these tests are about.
    overrides = [o for o in study["overrides"] if not o.startswith(("output_dir=", "evaluate.scaling"))]
    return load_study(resolve_study_path("smoke"), [*overrides, f"output_dir={root / 'runs'}",
                                                    "evaluate.scaling_resamples=10"])


def _write_hardware(run_dir: Path) -> None:
    from finscale.monitor.sensors import make_reading

    lines = []
    for t, temp, state in [(0.0, 60.0, "normal"), (2.0, 88.0, "warning"), (5.0, 82.0, "warning"),
                           (9.0, 70.0, "normal"), (11.0, None, "unavailable")]:
        reading = make_reading("linux", {} if temp is None else {"cpu": temp}).to_dict()
        lines.append(json.dumps({"state": state, **reading, "time": 1000.0 + t}))
    (run_dir / "hardware.jsonl").write_text("\n".join(lines) + "\n")


def test_report_warns_about_failed_unevaluated_and_collapsed_runs(altered):
    final = altered.study_dir / "final"
    runs = sorted(p for p in final.iterdir())
    failed, unevaluated, hot = runs[0], runs[1], runs[2]
    status = json.loads((failed / "status.json").read_text())
    (failed / "status.json").write_text(json.dumps({**status, "state": "failed", "reason": "non-finite loss"}))
    (unevaluated / "eval.json").unlink()
    (unevaluated / "predictions.npz").unlink()
    _write_hardware(hot)
    hpo = altered.study_dir / "hpo" / "cpu-s-h1"
    hpo.mkdir(parents=True)
    (hpo / "best_params.json").write_text(json.dumps({"params": {}, "value": 0.41, "trial": 0, "n_trials": 2,
                                                      "importances": {"lr": 0.7, "dropout": 0.3}}))
    pd.DataFrame({"number": [0, 1], "state": ["COMPLETE", "PRUNED"], "value": [0.41, None]}).to_csv(
        hpo / "trials.csv", index=False)

    html = build_report(altered)
    warn = pd.read_csv(html.parent / "tables" / "warnings.csv")

    def subjects(kind):
        return ", ".join(warn.loc[warn["kind"] == kind, "subject"])
    assert failed.name in subjects("failed") and unevaluated.name in subjects("not evaluated")
    assert hot.name in subjects("sensor unavailable")
    assert warn["kind"].iloc[0] == "failed"  # most serious first
    assert not warn.duplicated(["kind", "message"]).any()  # identical findings grouped, counted
    assert (warn["count"] >= 1).all()
    collapsed = [p.name for p in runs if json.loads((p / "status.json").read_text()).get("collapsed")]
    for run_id in collapsed:
        assert run_id in subjects("collapsed") or "more)" in subjects("collapsed")
    hw = pd.read_csv(html.parent / "tables" / "hardware.csv")
    assert hw["max_c"].item() == 88.0 and hw["time_hot_s"].item() == pytest.approx(7.0)
    assert hw["runs_sensor_unavailable"].item() == 1
    hpo_table = pd.read_csv(html.parent / "tables" / "hpo.csv")
    assert hpo_table["trials"].item() == 2 and hpo_table["best_value"].item() == 0.41
    assert hpo_table["importances"].item() == "lr 0.70, dropout 0.30"
    md = (html.parent / "report.md").read_text()
    assert "non-finite loss" in md


def test_too_few_budgets_means_no_fit_with_the_reason(altered):
    two = load_study(resolve_study_path("smoke"),
                     [*(o for o in study_overrides(Path("/unused")) if "budgets" not in o and "output_dir" not in o
                        and "data_dir" not in o),
                      f"output_dir={altered.output_dir}", f"data.data_dir={altered.data.data_dir}",
                      'model.budgets=["cpu-s","cpu-m"]'])
    results = fit_study(two, collect(two))
    assert results[0].fits == () and "needs >= 3" in results[0].reason
    run_scaling(two)
    html = build_report(two)
    md = (html.parent / "report.md").read_text()
    assert "Horizon 1: no scaling fit: 2 evaluated budget(s)" in md
    warn = pd.read_csv(html.parent / "tables" / "warnings.csv")
    assert "no scaling fit" in set(warn["kind"]) and "stale" in set(warn["kind"])  # cpu-l excluded
    scaling = pd.read_csv(html.parent / "tables" / "scaling.csv")
    assert scaling["text"].item().startswith("no fit: 2 evaluated budget(s)")


def test_report_without_runs_is_an_error(tmp_path):
    cfg = load_study(resolve_study_path("smoke"), [f"output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="no final run directories"):
        build_report(cfg)


# --------------------------------------------------------------------------- rendering, CLI

def test_render_escapes_and_links_hidden_tables(tmp_path):
    frame = pd.DataFrame({"a|b": [1.5, float("nan")], "c": ["<x>", "y"]})
    sections = [Section("One & two", [Text("a < b"), Table(frame, "shown", "t.csv"),
                                      Table(frame, "hidden", "h.csv", show=False)])]
    md, html = render_markdown("T", sections), render_html("T", sections, tmp_path)
    assert "| a\\|b | c |" in md and "| 1.5 | <x> |" in md
    assert "hidden: not shown here, see `tables/h.csv`." in md and md.count("| 1.5 |") == 1
    assert "&lt;x&gt;" in html and "<x>" not in html and "a &lt; b" in html
    assert html.count("<table") == 1
    # text cells left-aligned and wrapped, numbers right-aligned; no caption without a table
    assert '<td class="num">1.5</td>' in html and "<td>&lt;x&gt;</td>" in html
    empty = [Section("E", [Table(frame.iloc[:0], "nothing here", "e.csv")])]
    assert "<caption>" not in render_html("T", empty, tmp_path)
    assert "nothing here*: no rows." in render_markdown("T", empty)


def test_cli_report_and_evaluate(study, capsys):
    # In-process: the same parser and handlers as the `finscale` command, without paying
    # the torch import in two more subprocesses.
    args = [a for o in study["overrides"] for a in ("--set", o)]
    assert main(["report", "smoke", *args]) == 0
    out = capsys.readouterr().out
    assert f"report: {study['html'].resolve()}" in out
    assert out.index("findings:") < out.index("final results") and "h=1: " in out
    assert "final results" in out and "cpu-l" in out
    assert "scaling verdicts:" in out and "h1 log_loss vs params_total:" in out
    assert "improvement over the strongest baseline" in out and "│ strongest baseline │" in out
    # `finscale run` ends the same way: the answer, findings and the table, then the report path
    assert main(["run", "smoke", "--phase", "report", "--no-monitor", *args]) == 0
    out = capsys.readouterr().out
    assert "\nfindings:\n" in out and "\nAnswer: " in out
    assert out.index("findings:") < out.index("improvement over the strongest baseline") < out.index("report: ")
    assert out.rstrip().endswith(f"report: {study['html'].resolve()}")
    assert main(["evaluate", "smoke", *args]) == 0
    out = capsys.readouterr().out
    for run_id in eval_docs(study["cfg"]):
        assert run_id in out
    assert main(["report", "smoke", "--set", "output_dir=/nonexistent/runs"]) == 1
    assert "/nonexistent/runs/smoke: no such study directory" in capsys.readouterr().err


@pytest.mark.slow
def test_html_opens_in_headless_chromium(study, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (Debian package `chromium`)")
        pytest.skip("chromium not installed (Debian: apt-get install chromium); CI is not set")
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}"]
    url = study["html"].resolve().as_uri()
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in dom.stdout
    # the answer comes first, then the contents; findings is the first section after them
    first = dom.stdout.index("<section")
    assert dom.stdout[first:].startswith('<section id="answer">')
    after_nav = dom.stdout.index("<section", dom.stdout.index("</nav>"))
    assert dom.stdout[after_nav:].startswith('<section id="findings">')
    assert dom.stdout.count("<td") > 20 and "<caption>" in dom.stdout
    assert dom.stdout.count("<img") == len(list((study["dir"] / "figures").glob("*.png")))
    shot = tmp_path / "shot.png"
    res = subprocess.run([*base, "--window-size=1200,2400", f"--screenshot={shot}", url],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    with Image.open(shot) as img:
        assert np.asarray(img.convert("L"), dtype=np.float64).std() > 5  # not a blank page


def test_tidy_files_load_in_one_line_with_numeric_intervals(study):
    root = study["html"].parent
    results = pd.read_parquet(root / "results.parquet")
    assert list(results.columns) == ["run_id", "budget", "horizon", "seed", "params", "metric",
                                     "value", "lo", "hi"]
    assert results["lo"].dtype.kind == "f" and results["hi"].dtype.kind == "f"
    ll = results[results["metric"] == "log_loss"]
    assert len(ll) == len(eval_docs(study["cfg"])) and (ll["lo"] <= ll["value"]).all() and (ll["value"] <= ll["hi"]).all()
    preds = pd.read_parquet(root / "predictions.parquet")
    assert list(preds.columns) == ["date", "run_id", "budget", "horizon", "seed", "y", "prob"]
    assert preds["prob"].between(0, 1).all() and set(preds["y"].unique()) <= {0, 1}
    for csv in (root / "tables").glob("*.csv"):  # intervals are numeric columns, never "[a, b]" text
        if csv.name == "config.csv":  # config values such as seeds = [0, 1] are lists, not intervals
            continue
        frame = pd.read_csv(csv)
        for col in frame.select_dtypes(include="object").columns:
            assert not frame[col].astype(str).str.match(r"^\[-?[0-9.e+-]+, -?[0-9.e+-]+\]$").any(), (csv.name, col)


def test_report_states_block_lengths_both_skill_references_and_decomposition(study):
    md = (study["dir"] / "report.md").read_text()
    block = {d["block_length"]["block_len"] for d in eval_docs(study["cfg"]).values()}
    assert "in test days, chosen from the data per horizon" in md and f"h1: {block.pop()}" in md
    assert "skill_val" in md and "validation base rate" in md
    assert "log_loss_discrimination" in md and "miscalibration" in md
    assert "Models vs the strongest baseline per horizon" in md
    assert (study["dir"] / "tables" / "strongest_baseline.csv").exists()


def test_report_shows_dm_and_holm_corrected_p_and_the_study_level_tests(study):
    """Issue 26: the paired-tests tables show the DM p-value and its Holm-corrected value (as
    recorded by eval.json and inference/h1.json), and SPA/MCS per horizon."""
    md = (study["dir"] / "report.md").read_text()
    assert "median DM p (Holm)" in md and "Study-level tests per horizon" in md
    summary = pd.read_csv(study["dir"] / "tables" / "paired_tests_summary.csv")
    assert summary["median_dm_p"].between(0, 1).all()
    assert (summary["median_dm_p_holm"] >= summary["median_dm_p"] - 1e-12).all()
    per_run = pd.read_csv(study["dir"] / "tables" / "paired_tests.csv")
    doc = json.loads((study["cfg"].study_dir / "inference" / "h1.json").read_text())
    holm = {(r["run_id"], r["baseline"]): r["dm_p_holm"] for r in doc["comparisons"]}
    assert len(holm) == len(per_run)
    for _, row in per_run.iterrows():
        assert row["dm_p_holm"] == pytest.approx(holm[(row["run_id"], row["baseline"])])
    inference = pd.read_csv(study["dir"] / "tables" / "inference.csv")
    assert inference["SPA p"].iloc[0] == pytest.approx(doc["spa"]["p"])
    assert inference["SPA benchmark"].iloc[0] == doc["spa"]["benchmark"]


FIRST_SCREEN = (1280, 900)
_MEASURE = """<script>
const r = (el) => el.getBoundingClientRect();
const answer = document.querySelector("section#answer p"), img = document.querySelector("section#answer img");
const nav = document.querySelector("nav");
document.body.dataset.layout = JSON.stringify({answer: r(answer), img: r(img), nav: r(nav),
  imgLoaded: img.complete && img.naturalWidth > 0, text: answer.textContent});
</script></body>"""


@pytest.mark.slow
def test_first_screen_holds_the_answer_and_the_headline_figure(study, tmp_path):
    """A 1280x900 window shows the one-sentence answer and the whole headline figure before
    the contents list; measured in Chromium (layout from the DOM, pixels from a screenshot)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (Debian package `chromium`)")
        pytest.skip("chromium not installed (Debian: apt-get install chromium); CI is not set")
    page = tmp_path / "report.html"  # a copy with a script that records where things landed
    page.write_text(study["html"].read_text().replace("</body>", _MEASURE, 1))
    w, h = FIRST_SCREEN
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={w},{h}"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    import html as html_lib
    import re

    layout = json.loads(html_lib.unescape(re.search(r'data-layout="([^"]*)"', dom.stdout).group(1)))
    found = json.loads((study["dir"] / "findings.json").read_text())
    assert layout["text"] == found["answer"] and found["answer"].startswith("Answer:")
    assert layout["imgLoaded"]
    assert 0 <= layout["answer"]["top"] and layout["answer"]["bottom"] <= layout["img"]["top"]
    assert layout["img"]["bottom"] <= h and layout["img"]["height"] > 150  # the whole figure, not a sliver
    assert layout["img"]["bottom"] <= layout["nav"]["top"]  # before the contents list
    shot = tmp_path / "first_screen.png"
    res = subprocess.run([*base, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.size == (w, h)
        box = layout["img"]
        figure = np.asarray(img.convert("L").crop((int(box["left"]), int(box["top"]), int(box["right"]),
                                                    int(box["bottom"]))), dtype=np.float64)
    assert figure.std() > 20  # the headline figure is painted there (axes, points, text)


def test_compute_and_economics_come_from_the_runs(study):
    cfg = study["cfg"]
    for ev in eval_docs(cfg).values():  # eval.json carries the cost sweep (>= 4 levels)
        sweep = {r["cost_bps"]: r for r in ev["backtest"]["cost_sweep"]}
        assert {0.0, 1.0, 5.0, 10.0, 20.0} <= set(sweep)
        assert sweep[ev["backtest"]["cost_bps"]]["total_return"] == pytest.approx(
            ev["backtest"]["strategy"]["total_return"], rel=1e-12)
    compute = json.loads((cfg.study_dir / "scaling" / "compute.json").read_text())
    (h,) = compute["horizons"]
    assert h["n_runs"] == 6 and h["n_points"] == 6  # one epoch each: the envelope of 6 points
    finals = {m.parent.name: [json.loads(x) for x in m.read_text().splitlines()]
              for m in (cfg.study_dir / "final").glob("*/metrics.jsonl")}
    recorded = sorted(line["train_flops"] for lines in finals.values() for line in lines if line["event"] == "epoch")
    assert sorted(h["points"]["C"]) == pytest.approx(recorded)
    econ = json.loads((cfg.study_dir / "scaling" / "economics.json").read_text())
    assert {b["budget"] for b in econ["horizons"][0]["budgets"]} == set(BUDGETS)
    md = (study["dir"] / "report.md").read_text()
    assert "## Compute" in md and "## Economics" in md and "validation log-loss envelope" in md


def test_equivalence_bounds_and_power_reach_the_json_and_the_findings(study):
    stored = json.loads((study["cfg"].study_dir / "scaling" / "h1.json").read_text())
    keys = ("max_fall_pct", "max_rise_pct", "max_fall_nats", "max_rise_nats", "min_detectable_slope")
    assert all(isinstance(stored[k], float) for k in keys), {k: stored.get(k) for k in keys}
    assert stored["min_detectable_slope"] < 0 and stored["max_fall_pct"] > -stored["max_rise_pct"]
    head = next(f for f in stored["fits"] if f["quantity"] == "log_loss" and f["axis"] == "params_total")
    assert head["bounds"]["max_fall_pct"] == stored["max_fall_pct"] and "mds_by_runs" in head["bounds"]
    assert "log-log slope" in head["text"].split(";")[0] and "L(N) =" not in head["text"]
    assert head["detail"]
    found = json.loads((study["dir"] / "findings.json").read_text())["horizons"][0]
    assert {k: found[k] for k in keys} == {k: stored[k] for k in keys}
    assert "detects a fall with 80% power" in found["sentences"][0]


@pytest.mark.slow
def test_scaling_json_is_byte_identical_under_one_and_two_threads(study, tmp_path):
    # The scaling stage of the same runs, in fresh processes with 1 and 2 BLAS/OpenMP threads
    # and no fit cache: h1.json must not change by a bit.
    from conftest import run_cli

    out = {}
    for threads in (1, 2):
        root = tmp_path / f"t{threads}"
        shutil.copytree(study["cfg"].study_dir, root / "runs" / study["cfg"].name)
        (root / "runs" / study["cfg"].name / "scaling" / "cache.json").unlink()
        sets = [a for o in study["overrides"] if not o.startswith("output_dir=") for a in ("--set", o)]
        env = {"OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
               "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        proc = run_cli("run", "smoke", "--phase", "scaling", "--set", f"output_dir={root / 'runs'}", *sets,
                       env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        out[threads] = (root / "runs" / study["cfg"].name / "scaling" / "h1.json").read_bytes()
    assert out[1] == out[2]
