"""PNG figures of the report (matplotlib, Agg backend: no display needed).

Consumes: collected run tables and scaling fits. Produces one PNG per horizon and kind:
scaling (points per seed, per-budget means, fit with its bootstrap band, constant model),
learning curves (train and validation loss per epoch per run), calibration (reliability
diagram from eval.json bins) and backtest equity curves vs buy-and-hold.
Guarantees: a figure is written only if every panel has data (``EmptyFigure`` otherwise, so
the report says "no data" instead of showing a blank plot); written PNGs are re-read and
checked to be non-trivial images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless, deterministic rendering

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from finscale.scaling import HorizonScaling, predict_power_law  # noqa: E402

log = logging.getLogger(__name__)

DPI = 110
MIN_PNG_PIXELS = 100 * 100


class EmptyFigure(ValueError):
    """Nothing to plot; the message says what was missing."""


def budget_colors(budgets: list[str]) -> dict[str, tuple]:
    """Distinct colours per budget (tab10, in size order; a colormap's neighbours look alike)."""
    cmap = plt.get_cmap("tab10")
    return {b: cmap(i % 10) for i, b in enumerate(budgets)}


def _ordered(frame: pd.DataFrame, colors: dict) -> pd.DataFrame:
    """Rows in budget order (smallest first), then seed: legends read small -> large."""
    rank = {b: i for i, b in enumerate(colors)}
    key = frame["budget"].map(rank).fillna(len(rank))
    return frame.assign(_rank=key).sort_values(["_rank", "seed"], kind="stable").drop(columns="_rank")


def save(fig, path: Path) -> Path:
    """Check every panel has data, write the PNG, re-read it, close the figure."""
    try:
        for ax in fig.axes:
            if not (ax.lines or ax.collections or ax.patches):
                raise EmptyFigure(f"{path.name}: panel {ax.get_title()!r} has no data")
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    img = mpimg.imread(path)
    if img.ndim != 3 or img.shape[0] * img.shape[1] < MIN_PNG_PIXELS:
        raise ValueError(f"{path}: rendered image has shape {img.shape}; expected a real figure")
    return path


BASELINE_STYLES = {"logistic": "tab:green", "gbm": "tab:orange", "constant": "tab:gray"}


def scaling_figure(hs: HorizonScaling, colors: dict, path: Path, *, baselines: pd.DataFrame | None = None,
                   not_converged: frozenset = frozenset(), optimum: float | None = None) -> Path:
    """One panel per fit. ``baselines``: rows (baseline, metric, lo, hi) drawn as horizontal
    bands on the matching panels; ``not_converged``: run ids drawn as hollow markers;
    ``optimum``: the known optimal test log-loss (synthetic markets), a line on log-loss panels."""
    if not hs.fits:
        raise EmptyFigure(f"horizon {hs.horizon}: no scaling fit ({hs.reason})")
    cols = 2 if len(hs.fits) == 4 else min(len(hs.fits), 3)
    rows = -(-len(hs.fits) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False,
                             layout="constrained")
    for ax, af in zip(axes.ravel(), hs.fits):
        _scaling_panel(ax, af, colors, not_converged)
        _y_on_points(ax, af)  # before the reference lines: they must not stretch the axis
        _baseline_bands(ax, af.quantity, baselines)
        _expected_line(ax, af, hs.expected)
        _optimum_line(ax, af.quantity, optimum)
    for ax in axes.ravel()[len(hs.fits):]:
        fig.delaxes(ax)
    _shared_legend(fig, axes.ravel()[:len(hs.fits)])
    fig.suptitle(f"Scaling, horizon {hs.horizon}: runs (one point per seed), budget means and the "
                 f"fit over the measured sizes (alpha with its {hs.fits[0].boot['level']:.0%} interval "
                 "in the table)", fontsize=10)
    return save(fig, path)


def _shared_legend(fig, axes) -> None:
    """One legend for every panel, outside them (on the right): it never covers data."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right upper", fontsize=7)


def _optimum_line(ax, quantity: str, optimum: float | None) -> None:
    """The known optimal test log-loss (synthetic markets) as a dotted line on log-loss panels."""
    if optimum is not None and quantity == "log_loss":
        ax.axhline(optimum, color="black", ls=":", lw=1.2, label="optimal log-loss (known)")
        lo, hi = ax.get_ylim()
        if not lo <= optimum <= hi:  # the range follows the runs: say where the line is
            where = "below" if optimum < lo else "above"
            ax.annotate(f"optimal log-loss (known) {optimum:.4g} ({where} this range)",
                        xy=(0.02, 0.08 if where == "below" else 0.90), xycoords="axes fraction",
                        fontsize=6, color="black")


def _expected_line(ax, af, expected: dict) -> None:
    """A calibration market's expected L(N) (oracle sweep + known optimum) on the headline panel."""
    if expected and af.quantity == "log_loss" and af.axis == "params_total":
        ax.plot(expected["x"], expected["y"], color="black", ls="--", lw=1.0, marker="x", ms=5,
                label=f"expected curve (slope {expected['slope']:.3g})")
        # the expected curve and the optimum it sits above are references the reader must see
        lo, hi = ax.get_ylim()
        ys = [*expected["y"], expected.get("optimum", expected["y"][0])]
        pad = 0.05 * (max(ys) - min(ys) or 0.01)
        ax.set_ylim(min(lo, min(ys) - pad), max(hi, max(ys) + pad))


def _y_on_points(ax, af) -> None:
    """The y-range of the runs' points (padded), not of bands or reference lines."""
    ys = np.concatenate([np.asarray(af.points["y"], float), np.asarray(af.budget_points["y"], float)])
    ys = ys[np.isfinite(ys)]
    if ys.size:
        lo, hi = float(ys.min()), float(ys.max())
        pad = max(hi - lo, 1e-3 * max(abs(hi), 1e-9)) * 0.35
        ax.set_ylim(lo - pad, hi + pad)


def _baseline_bands(ax, quantity: str, baselines: pd.DataFrame | None) -> None:
    """The strongest baseline's test value as a horizontal line, its interval as dotted lines;
    a baseline outside the points' range is named at the panel's edge instead."""
    if baselines is None or baselines.empty:
        return
    lo_y, hi_y = ax.get_ylim()
    for _, b in baselines[baselines["quantity"] == quantity].iterrows():
        color = BASELINE_STYLES.get(str(b["baseline"]).split("_")[0], "tab:purple")
        label = f"strongest baseline: {b['baseline']}"
        if not lo_y <= b["value"] <= hi_y:
            where = "below" if b["value"] < lo_y else "above"
            ax.annotate(f"{label} {b['value']:.4g} ({where} this range)",
                        xy=(0.02, 0.03 if where == "below" else 0.95), xycoords="axes fraction",
                        fontsize=6, color=color)
            ax.plot([], [], color=color, lw=1.2, label=label)
            continue
        ax.axhline(b["value"], color=color, lw=1.2, label=label)
        if np.isfinite(b["lo"]) and np.isfinite(b["hi"]):
            for edge in (b["lo"], b["hi"]):
                ax.axhline(edge, color=color, lw=0.7, ls=":")


def _scaling_panel(ax, af, colors: dict, not_converged: frozenset = frozenset()) -> None:
    pts, fit = _ordered(af.points, colors), af.boot["fit"]
    hollow = pts["run_id"].isin(not_converged) if "run_id" in pts else np.zeros(len(pts), bool)
    for budget, g in pts[~hollow].groupby("budget", sort=False):
        ax.scatter(g["x"], g["y"], s=18, alpha=0.6, color=colors.get(budget), label=f"{budget} (seeds)")
    for budget, g in pts[hollow].groupby("budget", sort=False):  # guard 14: not converged
        ax.scatter(g["x"], g["y"], s=22, facecolors="none", edgecolors=colors.get(budget),
                   label=f"{budget} (not converged)")
    ax.scatter(af.budget_points["x"], af.budget_points["y"], s=60, marker="D", facecolors="none",
               edgecolors="black", label="budget mean")
    # The fit only where there is data. No bootstrap band of the level: every size shares one
    # test set, so its level uncertainty would fill the panel and hide the differences between
    # sizes (those are in the headline figure, paired); alpha's interval is in the table.
    grid = np.geomspace(pts["x"].min(), pts["x"].max(), 100)
    ax.plot(grid, predict_power_law(fit, grid), color="tab:blue", label="fit E + A·N^-α")
    ax.set_xlim(pts["x"].min() / 1.3, pts["x"].max() * 1.3)
    ax.axhline(pts["y"].mean(), color="gray", ls="--", label="no-scaling fit (mean)")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # 2x10^8, 3x10^8... overlap
    ax.set_xlabel(af.x_label, fontsize=8)
    ax.set_ylabel({"log_loss": "test log-loss (nats)", "auc_error": "1 - test AUC",
                   "log_loss_refinement": "test refinement log-loss (nats)"}[af.quantity], fontsize=8)
    ax.set_title(f"{af.verdict} (α={fit['alpha']:.2g})", fontsize=8)


def stability_figure(doc: dict, path: Path) -> Path:
    """Alpha per replicate seed set (dots, with the replicate's CI) beside the pooled alpha (a
    line), one row per scaling fit; markers filled where the replicate's verdict equals the
    pooled one, hollow where it differs."""
    rows = [r for r in doc.get("rows", []) if r["finding"].startswith("scaling:")]
    if not doc.get("measured") or not rows:
        raise EmptyFigure("stability across seeds was not measured (one replicate seed set)")
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6), layout="constrained")
    for i, r in enumerate(rows):
        for a, v in zip(r["alphas"], r["replicate_verdicts"]):
            if a is None:
                continue
            same = v == r["verdict"]
            ax.scatter(a, i, s=28, color="tab:blue" if same else "none", edgecolors="tab:blue", zorder=3)
        if r.get("alpha") is not None:
            ax.plot([r["alpha"]] * 2, [i - 0.35, i + 0.35], color="black", lw=1.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"h{r['horizon']} {r['finding'][len('scaling: '):]} "
                        f"({r['share']:.0%} agree)" for r in rows], fontsize=7)
    ax.set_xlabel("alpha (dots: one per replicate seed set, hollow = other verdict; bar: pooled)",
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_title(f"Scaling exponent per replicate ({doc['n_replicates']} seed sets)", fontsize=9)
    return save(fig, path)


def learning_figure(epochs: pd.DataFrame, horizon: int, colors: dict, path: Path) -> Path:
    ep = _ordered(epochs[epochs["horizon"] == horizon], colors)
    if ep.empty:
        raise EmptyFigure(f"horizon {horizon}: no epoch lines in metrics.jsonl")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    seen = set()
    for _, g in ep.groupby("run_id", sort=False):
        budget = g["budget"].iloc[0]
        label = None if budget in seen else budget
        seen.add(budget)
        for ax, col in zip(axes, ("train_loss", "val_log_loss")):
            ax.plot(g["epoch"], g[col], marker="o", ms=3, lw=1, color=colors.get(budget), label=label)
    for ax, title in zip(axes, ("training loss (BCE)", "validation log-loss")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7, title="budget", title_fontsize=7)
    fig.suptitle(f"Learning curves, horizon {horizon} (one line per run)", fontsize=10)
    return save(fig, path)


def calibration_figure(bins: pd.DataFrame, horizon: int, colors: dict, path: Path) -> Path:
    b = _ordered(bins[(bins["horizon"] == horizon) & (bins["count"] > 0)], colors)
    if b.empty:
        raise EmptyFigure(f"horizon {horizon}: no calibration bins in eval.json")
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfect calibration")
    seen = set()
    for _, g in b.groupby("run_id", sort=False):
        budget = g["budget"].iloc[0]
        ax.plot(g["mean_pred"], g["frac_pos"], marker="o", ms=3, lw=1, alpha=0.8,
                color=colors.get(budget), label=None if budget in seen else budget)
        seen.add(budget)
    top = float(max(b["mean_pred"].max(), b["frac_pos"].max()))
    ax.set_xlim(0, min(1.0, top * 1.1 + 0.02))
    ax.set_ylim(0, min(1.0, top * 1.1 + 0.02))
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed frequency (bin)")
    ax.set_title(f"Calibration on test, horizon {horizon}", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, path)


def backtest_figure(equity: dict, runs: pd.DataFrame, horizon: int, colors: dict, path: Path) -> Path:
    ids = [r for r in _ordered(runs[runs["horizon"] == horizon], colors)["run_id"] if r in equity]
    if not ids:
        raise EmptyFigure(f"horizon {horizon}: no backtest in eval.json")
    budget_of = runs.set_index("run_id")["budget"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    seen = set()
    for run_id in ids:
        budget = budget_of[run_id]
        dates = pd.to_datetime(equity[run_id]["dates"])
        ax.plot(dates, equity[run_id]["strategy"], lw=0.9, alpha=0.8, color=colors.get(budget),
                label=None if budget in seen else f"strategy {budget}")
        seen.add(budget)
    first = equity[ids[0]]
    ax.plot(pd.to_datetime(first["dates"]), first["buy_and_hold"], color="black", lw=1.6,
            label="buy and hold")
    ax.set_ylabel("equity (start = 1)")
    ax.set_title(f"Backtest on test days, horizon {horizon} (long when p > threshold, costs included)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    return save(fig, path)
