"""The study report: tables, figures and Markdown/HTML from run directories and scaling results.

Consumes: ``runs/<study>/`` only (final run directories, HPO outputs, the scaling stage's
``scaling/h<h>.json``) plus the study config.
Produces ``runs/<study>/report/``: ``report.md``, a self-contained ``report.html`` (figures
embedded), ``figures/*.png``, ``tables/*.csv`` and ``scaling.json`` (the stored fits without
their bootstrap samples). Guarantees: nothing is retrained, re-evaluated or refitted
(rebuilding is cheap; without scaling results the report says so); the new report replaces
the old one only when complete (built in a temporary folder, then swapped in); every section
of ``SECTIONS`` is present.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from finscale.atomic import owned_tempdir, owner_tag
from finscale.config import StudyConfig
from finscale.report.axes_section import axes_caveat, axes_section
from finscale.report.figures import budget_colors
from finscale.report.money import compute_section, economics_section
from finscale.report.render import render_html, render_markdown, write_tables
from finscale.report.sections import SECTIONS
from finscale.report.tables import budget_order
from finscale.report.tidy import write_tidy
from finscale.scaling import HorizonScaling, read_axes, read_scaling, read_study_stability, stability_frame
from finscale.scaling.store import read_money
from finscale.study_axes import axis_values, variants
from finscale.study_runs import StudyRuns, collect

__all__ = ["SECTIONS", "build_report", "collect", "report_dir"]

log = logging.getLogger(__name__)

def report_dir(cfg: StudyConfig) -> Path:
    return cfg.study_dir / "report"


def build_report(cfg: StudyConfig) -> Path:
    """Build ``runs/<study>/report/`` and return the path of its ``report.html``."""
    sr = collect(cfg)
    if sr.runs.empty:
        raise ValueError(f"{cfg.study_dir / 'final'}: no final run directories; run "
                         "`finscale run` (or its final phase) before `finscale report`")
    cfg.study_dir.mkdir(parents=True, exist_ok=True)
    tmp = owned_tempdir(cfg.study_dir, ".report")   # named by its writer: files.remove_litter
    tmp.chmod(0o755)  # mkdtemp makes it private; the report is meant to be shared
    try:
        _write_report(cfg, sr, tmp)
        _swap_in(tmp, report_dir(cfg))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("report written to %s", report_dir(cfg))
    return report_dir(cfg) / "report.html"


def _write_report(cfg: StudyConfig, sr: StudyRuns, out: Path) -> None:
    from finscale.report import sections as S

    fig_dir = out / "figures"
    fig_dir.mkdir()
    colors = budget_colors(budget_order(sr.runs))
    horizons = sorted(cfg.target.horizons)
    first = variants(cfg)[0]  # with [axes], the main scaling section shows the first variant
    scaling = read_scaling(first)
    stability = read_study_stability(first) if scaling is not None else None
    axes_on = bool(axis_values(first))
    notes: list = []
    # The findings, the answer and the results and baselines tables describe the variant the
    # headline fits are of: pooling every variant's runs there mixed data sizes (or designs)
    # into one "best size" beside a verdict fitted on the first variant alone; the axes section
    # compares the variants (every run stays in results.parquet).
    main = collect(first) if axes_on else sr
    results, _ = S.results_section(main)
    found = S.findings(main, scaling, stability)
    if axes_on:
        found.caveats.append(axes_caveat(first))
    parts = [S.findings_section(found), S.study_section(cfg, sr), S.splits_section(sr), S.hpo_section(cfg, sr), results,
             S.baselines_section(main), S.scaling_section(scaling, colors, fig_dir, notes, main,
                                                        stability),
             S.learning_section(sr, horizons, colors, fig_dir, notes),
             S.calibration_section(sr, horizons, colors, fig_dir, notes),
             S.backtest_section(sr, horizons, colors, fig_dir, notes), S.hardware_section(sr),
             axes_section(read_axes(cfg) if axes_on else None, axes_on, fig_dir, notes)]
    compute_doc, economics_doc = read_money(cfg)
    parts += [compute_section(compute_doc, fig_dir, notes), economics_section(economics_doc, fig_dir, notes)]
    parts.append(S.warnings_section(sr, notes)[0])
    assert [s.title for s in parts] == list(SECTIONS), "section order drifted from SECTIONS"
    title = f"finscale study report: {cfg.name}"
    lead, answer = _lead(main, found, colors, fig_dir)
    write_tables(parts, out / "tables")
    write_tidy(sr, out)
    if stability is not None:  # how often each finding holds across replicate seed sets
        stability_frame(stability).to_csv(out / "stability.csv", index=False)
    (out / "findings.json").write_text(json.dumps({"answer": answer, **found.to_dict()}, indent=1,
                                                  default=float))
    (out / "scaling.json").write_text(json.dumps(scaling_json(scaling or []), indent=1, default=float))
    (out / "report.md").write_text(render_markdown(title, parts, lead), encoding="utf-8")
    (out / "report.html").write_text(render_html(title, parts, out, lead), encoding="utf-8")


def _lead(sr: StudyRuns, found, colors: dict, fig_dir: Path) -> tuple[list, str]:
    """The first screen: the one-sentence answer and the headline figure (before the contents)."""
    from finscale.report import headline
    from finscale.report.figures import EmptyFigure
    from finscale.report.render import Block, Figure, Text

    frame = headline.headline_frame(sr)
    answer = headline.answer_sentence(found, frame)
    blocks: list[Block]
    blocks = [Text(answer)]
    try:
        headline.headline_figure(frame, colors, fig_dir / headline.HEADLINE_FIGURE)
        blocks.append(Figure(Path(fig_dir.name) / headline.HEADLINE_FIGURE,
                             "Headline: each size's test log-loss improvement over the strongest baseline "
                             "(baseline minus model; > 0 = PatchTST better), per horizon and seed with "
                             "paired block-bootstrap 95% intervals"))
    except EmptyFigure as exc:
        blocks.append(Text(f"No headline figure: {exc}."))
    return blocks, answer


def scaling_json(results: list[HorizonScaling]) -> list[dict]:
    """The fits as JSON (no bootstrap samples): per horizon the reason or the fit rows."""
    return [{"horizon": hs.horizon, "reason": hs.reason, "block_len": hs.block_len,
             "fits": [{**f.row(), "comparison": {k: v for k, v in f.comparison.items()}}
                      for f in hs.fits]} for hs in results]


def _swap_in(new: Path, final: Path) -> None:
    """Replace ``final`` by the complete folder ``new`` (two renames; no half report)."""
    old = None
    if final.exists():
        old = final.with_name(f".report-old{owner_tag()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
