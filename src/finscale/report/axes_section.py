"""The report's "Axes and data scaling" section, from the scaling stage's ``axes.json``.

Consumes: the stored axes results (joint L(N, D) fits with their contour grid and frontier,
paired comparisons, per-value curves). Produces the section: per joint fit the verdict and
parameters with intervals, an iso-loss contour figure over (N, D) with the runs drawn on it
and the compute-optimal frontier, and per-D loss-vs-N curves; per axis a table of paired
tests between its values and a figure of the scaling curves per value overlaid.
Also :func:`axes_caveat`: the caveat naming the variant the rest of the report describes.
Guarantees: draws only what was stored (nothing is fitted or tested here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finscale.formatting import interval, short
from finscale.report.figures import EmptyFigure, plt, save
from finscale.report.findings import Caveat
from finscale.report.render import Block, Bullets, Figure, Section, Table, Text

TITLE = "Axes and data scaling"


def axes_section(doc: dict | None, has_axes: bool, fig_dir: Path, notes: list) -> Section:
    if not has_axes:
        return Section(TITLE, [Text("This study has no [axes]: one model-size series, no data-size "
                                    "axis and no ablation to compare.")])
    if doc is None:
        why = "no axes results: the scaling stage has not run (run the study's scaling phase)"
        notes.append(("no axes results", "study", why))
        return Section(TITLE, [Text(why[0].upper() + why[1:] + ".")])
    blocks: list[Block]
    blocks = [Text("Axes: " + "; ".join(f"{k} = {v}" for k, v in doc.get("axes", {}).items()) + ".")]
    blocks += _joint_blocks(doc.get("joint", []), fig_dir, notes)
    blocks += _comparison_blocks(doc.get("comparisons", []))
    blocks += _curve_blocks(doc.get("curves", []), fig_dir, notes)
    return Section(TITLE, blocks)


def _where(j: dict) -> str:
    w = ", ".join(f"{k}={v}" for k, v in (j.get("where") or {}).items())
    return f"horizon {j['horizon']}" + (f" ({w})" if w else "")


def _joint_blocks(joint: list[dict], fig_dir: Path, notes: list) -> list:
    if not joint:
        return []
    blocks: list[Block]
    blocks = [Text("Joint fits L(N, D) = E + A·N^-alpha + B·D^-beta (log-sum-exp form, Huber loss on "
                   "log residuals, grid of starts) to every evaluated run's test log-loss, with N the "
                   "measured total parameters and D the measured training tokens (training windows × "
                   "patches). Intervals: bootstrap over runs. a = beta/(alpha+beta) and "
                   "b = alpha/(alpha+beta) are the compute-optimal allocation exponents "
                   "(N_opt ∝ C^a, D_opt ∝ C^b).")]
    rows = []
    for i, j in enumerate(joint):
        if j.get("reason"):
            blocks.append(Text(f"Joint fit, {_where(j)}: none: {j['reason']}."))
            notes.append(("no joint fit", _where(j), j["reason"]))
            continue
        blocks.append(Bullets([f"Joint fit, {_where(j)}: {j['text']}"]))
        rows.append(_joint_row(j))
        name = f"joint_{i}_h{j['horizon']}.png"
        try:
            save(_joint_figure(j), fig_dir / name)
            blocks.append(Figure(Path(fig_dir.name) / name,
                                 f"Iso-loss contours over (N, D) with the runs and the compute-optimal "
                                 f"frontier (left); loss vs N per data size (right); {_where(j)}"))
        except EmptyFigure as exc:
            notes.append(("no figure", name, str(exc)))
    if rows:
        frame = pd.DataFrame(rows)
        blocks.append(Table(frame, "Joint L(N, D) fits", "joint_fits.csv"))
    return blocks


def _joint_row(j: dict) -> dict:
    f, iv = j["fit"], j["intervals"]
    row = {"horizon": j["horizon"], **{f"where {k}": v for k, v in (j.get("where") or {}).items()}}
    for k in ("E", "A", "B", "alpha", "beta", "a_exp", "b_exp"):
        lo_hi = iv.get(k) or [None, None]
        row[k] = f.get(k)
        row[f"{k} CI"] = interval(lo_hi, short, missing="")
    row["verdict"] = j["verdict"]
    return row


def _joint_figure(j: dict):
    pts, grid, front = pd.DataFrame(j["points"]), j["grid"], j["frontier"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    surface = np.asarray(grid["L"], dtype=float)
    # contour levels spanning the runs' losses: the fitted surface explodes at tiny N or D
    lo, hi = float(pts["L"].min()), float(pts["L"].max())
    levels = np.linspace(lo - 0.1 * (hi - lo), hi + 0.5 * (hi - lo), 10)
    cs = ax.contour(grid["N"], grid["D"], surface, levels=levels, cmap="viridis")
    ax.clabel(cs, fontsize=7, fmt="%.4f")
    sc = ax.scatter(pts["N"], pts["D"], c=pts["L"], cmap="viridis", edgecolors="k", zorder=3)
    fig.colorbar(sc, ax=ax, label="test log-loss (runs)")
    ax.plot(front["N"], front["D"], "r--", label="compute-optimal frontier")
    ax.set(xscale="log", yscale="log", xlabel="N (measured parameters)", ylabel="D (training tokens)",
           title="iso-loss contours of the fit")
    ax.legend(fontsize=7)
    cmap = plt.get_cmap("plasma")
    key = j.get("d_axis", "splits.train_years").rpartition(".")[2]  # the data-size axis
    sizes = sorted(pts["D"].groupby(pts[key]).median().items(), key=lambda kv: kv[1])
    ng = np.asarray(grid["N"])
    f = j["fit"]
    for i, (years, d) in enumerate(sizes):
        color = cmap(0.85 * i / max(len(sizes) - 1, 1))
        sub = pts[pts[key] == years]
        label = f"{key}={years}" + (" (all)" if years == 0 else "")
        bx.scatter(sub["N"], sub["L"], color=color, s=18, label=label)
        bx.plot(ng, f["E"] + f["A"] * ng ** -f["alpha"] + f["B"] * d ** -f["beta"], color=color, lw=1)
    bx.set(xscale="log", xlabel="N (measured parameters)", ylabel="test log-loss",
           title="loss vs N per data size (fit at the median D)")
    bx.legend(fontsize=7)
    return fig


def _comparison_blocks(rows: list[dict]) -> list:
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    # One sign convention in the whole report: improvement = reference - value (the stored
    # difference is value - reference), positive = the value has the lower test log-loss.
    if "mean_diff" in frame:
        frame["improvement"] = -frame.pop("mean_diff")
    if "ci" in frame:
        frame["improvement_ci"] = frame["ci"].map(lambda c: None if not isinstance(c, list) or c[0] is None
                                                  else [-c[1], -c[0]])
    shown = frame[["axis", "value", "reference", "horizon", "budget", "n_pairs"]].copy()
    for col in ("improvement", "p_value", "n"):
        shown[col] = frame[col] if col in frame else None
    if "improvement_ci" in frame:
        shown["improvement CI"] = frame["improvement_ci"].map(
            lambda c: interval(c, missing=""))
    shown["note"] = frame.get("reason", "")
    return [Text("Paired tests per axis: each value against the axis's first value, per horizon and "
                 "budget, on the test windows every paired run scored (moving-block bootstrap of the "
                 "improvement, i.e. the mean per-window test log-loss of the reference minus that of "
                 "the value; each side averages the predictions of its runs over seeds and the other "
                 "axes' values). Positive: the value has the lower (better) test log-loss."),
            Table(frame.drop(columns=[c for c in ("ci", "improvement_ci") if c in frame]),
                  "Paired tests between axis values",
                  "axis_tests.csv", shown=shown)]


def _curve_blocks(curves: list[dict], fig_dir: Path, notes: list) -> list:
    blocks: list[Block]
    blocks = []
    frame = pd.DataFrame(curves)
    if frame.empty:
        return blocks
    for (axis, h), group in frame.groupby(["axis", "horizon"], sort=False):
        name = f"axis_{axis.replace('.', '_')}_h{h}.png"
        try:
            save(_curves_figure(group, axis, int(h)), fig_dir / name)
        except EmptyFigure as exc:
            notes.append(("no figure", name, str(exc)))
            continue
        blocks.append(Figure(Path(fig_dir.name) / name,
                             f"Scaling curves per value of {axis}, horizon {h} (budget means; lines: "
                             "L(N) = E + A·N^-alpha fitted per value)"))
    return blocks


def _curves_figure(group: pd.DataFrame, axis: str, h: int):
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("tab10")
    for i, (_, c) in enumerate(group.iterrows()):
        color = cmap(i % 10)
        ax.plot(c["N"], c["L"], "o", color=color, label=f"{axis.rpartition('.')[2]}={c['value']}")
        if c["fit"]:
            n = np.geomspace(min(c["N"]), max(c["N"]), 50)
            ax.plot(n, c["fit"]["E"] + c["fit"]["A"] * n ** -c["fit"]["alpha"], color=color, lw=1)
    ax.set(xscale="log", xlabel="N (measured parameters)", ylabel="test log-loss",
           title=f"{axis}, horizon {h}")
    ax.legend(fontsize=7)
    return fig


def axes_caveat(first) -> Caveat:
    """The study-wide note of an ``[axes]`` study: which variant (``first``, a StudyConfig) the
    findings, the answer and the results and baselines tables describe."""
    from finscale.study_axes import axis_values

    where = ", ".join(f"{k}={v!r}" for k, v in axis_values(first).items())
    return Caveat("axes", f"with [axes], these findings and the results and baselines tables "
                  f"describe the first variant ({where}); the 'Axes and data scaling' section "
                  "compares the variants, results.parquet holds every run")
