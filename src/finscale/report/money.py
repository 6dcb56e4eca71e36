"""The report's "Compute" and "Economics" sections, from ``scaling/compute.json`` and
``scaling/economics.json``.

Consumes: the stored results of :mod:`finscale.scaling.compute` (validation-loss envelope over
cumulative training compute, its L(C) fit and band, N_opt per compute level, HPO compute) and
:mod:`finscale.scaling.economics` (Sharpe and deflated Sharpe per run and size over the cost
sweep, paired intervals, the ceiling fit; panels IC / Rank IC and top-k long-short).
Produces the two sections with one figure per horizon each. Guarantees: draws only what was
stored (nothing is fitted here); a missing file makes the section say how to produce it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from finscale.formatting import interval, short
from finscale.report.figures import EmptyFigure, plt, save
from finscale.report.render import Block, Figure, Section, Table, Text

COMPUTE, ECONOMICS = "Compute", "Economics"
_MISSING = "no {0} results: the scaling stage has not written scaling/{0}.json (run the study's scaling phase)"


def _add(blocks: list, notes: list, make, path: Path, caption: str) -> None:
    try:
        make(path)
    except EmptyFigure as exc:
        blocks.append(Text(f"No figure: {exc}."))
        notes.append(("no figure", path.name, str(exc)))
        return
    blocks.append(Figure(Path(path.parent.name) / path.name, caption))


def _log_x(ax, y: bool = False) -> None:
    """Log axes labelled at decades only (minor labels collide on short ranges)."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    if y:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())


def _ci_table(frame: pd.DataFrame, caption: str, csv: str, cols: list[str]) -> Table:
    """A table whose interval columns (lists [lo, hi]) are numeric ``<col>_lo``/``<col>_hi``
    in the CSV and '[lo, hi]' text in the document."""
    data, shown = frame.copy(), frame.copy()
    for col in cols:
        pairs = [v if isinstance(v, (list, tuple)) and len(v) == 2 else (None, None) for v in frame[col]]
        at = list(data.columns).index(col)
        data = data.drop(columns=col)
        data.insert(at, f"{col}_hi", pd.to_numeric([p[1] for p in pairs], errors="coerce"))
        data.insert(at, f"{col}_lo", pd.to_numeric([p[0] for p in pairs], errors="coerce"))
        shown[col] = frame[col].map(_ci)
    return Table(data, caption, csv, shown=shown)


def _ci(ci) -> str:
    return interval(ci, short)  # the digits of the fit's other numbers in these sentences


# --------------------------------------------------------------------------- Compute

def compute_section(doc: dict | None, fig_dir: Path, notes: list) -> Section:
    if doc is None:
        why = _MISSING.format("compute")
        notes.append(("no compute results", "study", why))
        return Section(COMPUTE, [Text(why[0].upper() + why[1:] + ".")])
    blocks: list[Block]
    blocks = [Text("Training compute C is counted per epoch in metrics.jsonl (`train_flops`): "
                   f"{doc['formula']}. The envelope is the lowest VALIDATION log-loss any final run "
                   "reached at each compute level, over all runs and epochs (the test split is not "
                   "used here); L(C) = E + A·C^-gamma is fitted to it with intervals from resampling "
                   "runs within budgets. N_opt(C) comes from the joint L(N, D) fit to the same "
                   "(run, epoch) points (see docs/compute.md).")]
    summary = []
    for h in doc.get("horizons", []):
        summary.append(_summary_row(h))
        if h.get("reason"):
            blocks.append(Text(f"Horizon {h['horizon']}: no envelope fit ({h['reason']})."))
        else:
            blocks.append(Text(f"Horizon {h['horizon']}: {h['text']}"))
        opt = h.get("optimal") or {}
        blocks.append(Text(f"Horizon {h['horizon']} compute-optimal size: " +
                           (opt.get("text") or f"not estimated ({opt.get('reason', 'no points')})")))
        if h.get("points"):
            _add(blocks, notes, lambda p, h=h: compute_figure(h, p), fig_dir / f"compute_h{h['horizon']}.png",
                 f"Validation-loss envelope over training compute and N_opt(C), horizon {h['horizon']}")
    blocks.append(_ci_table(pd.DataFrame(summary), "Compute envelope fits per horizon", "compute_fits.csv",
                            ["gamma_ci", "a_exp_ci"]))
    iso = _isoflop_rows(doc)
    if not iso.empty:
        blocks += [Text("IsoFLOP slices (`train.compute_budget`): at each training-compute budget, the best "
                        "validation log-loss per size (mean over seeds) and N_opt from a parabola in log N "
                        "(Hoffmann et al. 2022, approach 2; interval from resampling seeds within sizes, "
                        "given only when the point fit is convex; 'inside' = within the sizes run)."),
                   _ci_table(iso, "IsoFLOP slices", "compute_isoflop.csv", ["N_opt_ci"])]
    hpo = pd.DataFrame(doc.get("hpo", []))
    blocks.append(Text(f"Training compute of the final runs: {doc.get('final_flops_total', 0):.3g} FLOPs; "
                       f"of the hyperparameter search (all trials, pruned included, every fold): "
                       f"{doc.get('hpo_flops_total', 0):.3g} FLOPs."))
    if not hpo.empty:
        blocks.append(Table(hpo, "HPO compute per cell", "compute_hpo.csv"))
    return Section(COMPUTE, blocks)


def _isoflop_rows(doc: dict) -> pd.DataFrame:
    rows = []
    for h in doc.get("horizons", []):
        for s in h.get("isoflop") or []:
            sizes = s["sizes"]
            rows.append({"horizon": h["horizon"], "compute_budget": s["compute_budget"],
                         "val_log_loss per size": ", ".join(f"{b} {v:.4f}" for b, v in zip(sizes["budget"], sizes["L"])),
                         "best_size": s["best_size"], "N_opt": s["N_opt"], "N_opt_ci": s.get("N_opt_ci"),
                         "inside": s.get("inside"), "convex_share": s.get("convex_share")})
    return pd.DataFrame(rows)


def _summary_row(h: dict) -> dict:
    fit, ci, opt = h.get("fit") or {}, h.get("ci") or {}, h.get("optimal") or {}
    return {"horizon": h["horizon"], "runs": h.get("n_runs"), "points": h.get("n_points"),
            "envelope_points": len((h.get("envelope") or {}).get("C", [])), "E": fit.get("E"),
            "A": fit.get("A"), "gamma": fit.get("gamma"), "gamma_ci": ci.get("gamma"),
            "a_exp (N_opt ∝ C^a)": opt.get("a_exp"), "a_exp_ci": opt.get("a_exp_ci"),
            "final_flops": h.get("final_flops"), "reason": h.get("reason") or opt.get("reason", "")}


def compute_figure(h: dict, path: Path) -> Path:
    pts = pd.DataFrame(h["points"])
    if pts.empty:
        raise EmptyFigure(f"horizon {h['horizon']}: no (run, epoch) points")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    budgets = list(pts.groupby("budget")["N"].mean().sort_values().index)
    cmap = plt.get_cmap("viridis")
    for i, b in enumerate(budgets):
        for j, (_, run) in enumerate(pts[pts["budget"] == b].groupby("run_id")):
            ax.plot(run["C"], run["L"], "-o", ms=2.5, lw=0.8, alpha=0.7, color=cmap(0.85 * i / max(1, len(budgets) - 1)),
                    label=None if j else b)
    env = h.get("envelope") or {}
    ax.plot(env.get("C", []), env.get("L", []), "k^", ms=5, label="envelope")
    if h.get("band"):
        band = h["band"]
        ax.fill_between(band["C"], band["lo"], band["hi"], color="red", alpha=0.15, lw=0)
        C = np.asarray(band["C"], dtype=float)
        f = h["fit"]
        ax.plot(C, f["E"] + f["A"] * C ** -f["gamma"], "r-", lw=1.4, label=f"L(C), gamma={f['gamma']:.3g}")
    _log_x(ax)
    ax.set_xlabel("cumulative training FLOPs C")
    ax.set_ylabel("validation log-loss")
    ax.set_title(f"Envelope over compute, horizon {h['horizon']}", fontsize=9)
    ax.legend(fontsize=7)
    _optimal_panel(bx, h, env)
    return save(fig, path)


def _optimal_panel(bx, h: dict, env: dict) -> None:
    opt = h.get("optimal") or {}
    bx.plot(env.get("C", []), env.get("frontier_N", []), "ks", ms=4, label="size on the envelope")
    if opt.get("N_opt"):
        bx.plot(opt["C"], opt["N_opt"], "b-", lw=1.4, label="N_opt(C), joint fit")
        lo, hi = (np.asarray([np.nan if v is None else v for v in opt[k]], dtype=float) for k in ("N_lo", "N_hi"))
        if np.isfinite(lo).any():
            bx.fill_between(opt["C"], lo, hi, color="blue", alpha=0.15, lw=0)
    _log_x(bx, y=True)
    bx.set_xlabel("cumulative training FLOPs C")
    bx.set_ylabel("parameters N")
    bx.set_title("Compute-optimal size", fontsize=9)
    bx.legend(fontsize=7)


# --------------------------------------------------------------------------- Economics

def economics_section(doc: dict | None, fig_dir: Path, notes: list) -> Section:
    if doc is None:
        why = _MISSING.format("economics")
        notes.append(("no economics results", "study", why))
        return Section(ECONOMICS, [Text(why[0].upper() + why[1:] + ".")])
    blocks: list[Block]
    blocks = [Text("Sharpe ratio of the long/flat backtest on the test days (annualised, daily returns) "
                   "per size over a cost sweep; intervals are paired moving-block bootstraps of the "
                   "same test days for every run. DSR = deflated Sharpe ratio (Bailey & López de Prado "
                   "2014) against every final run of the horizon as trials. Ceiling fit "
                   "S(x) = S_inf - a·x^-b over compute C and size N (docs/compute.md).")]
    for h in doc.get("horizons", []):
        if h.get("reason"):
            blocks.append(Text(f"Horizon {h['horizon']}: {h['reason']}."))
            continue
        blocks += _economics_blocks(h, fig_dir, notes)
    return Section(ECONOMICS, blocks)


def _economics_blocks(h: dict, fig_dir: Path, notes: list) -> list:
    hz = h["horizon"]
    blocks: list[Block]
    blocks = []
    for axis, fit in (h.get("ceiling") or {}).items():
        if fit.get("reason"):
            blocks.append(Text(f"Horizon {hz}: no Sharpe ceiling fit over {axis} ({fit['reason']})."))
        else:
            caveat = "" if fit.get("identified") else (
                " The exponent sits at a bound, so the ceiling is NOT identified (no curvature in "
                "the data): S_inf and a are not to be read.")
            blocks.append(Text(
                f"Horizon {hz}, Sharpe vs {axis} at {h['study_cost_bps']:g} bp: S = {fit['S_inf']:.3g} - "
                f"{fit['a']:.3g}·{axis}^-{fit['b']:.3g}; S_inf CI {_ci(fit.get('S_inf_ci'))}, b CI "
                f"{_ci(fit.get('b_ci'))}; +25% {axis} beyond the largest size adds {fit['gain_25pct']:+.3g} "
                f"Sharpe (CI {_ci(fit.get('gain_25pct_ci'))})." + caveat))
    budgets = pd.DataFrame(h.get("budgets", []))
    _add(blocks, notes, lambda p: economics_figure(h, p), fig_dir / f"economics_h{hz}.png",
         f"Sharpe vs size across the cost sweep, horizon {hz}")
    if not budgets.empty:
        blocks.append(_ci_table(budgets[["budget", "cost_bps", "N", "C", "sharpe", "sharpe_ci", "dsr"]],
                                f"Sharpe per budget and cost level, horizon {hz}", f"economics_h{hz}.csv",
                                ["sharpe_ci"]))
    diffs = pd.DataFrame(h.get("differences", []))
    if not diffs.empty:
        blocks.append(_ci_table(diffs[["cost_bps", "largest", "smallest", "diff", "ci"]],
                                f"Largest minus smallest budget, paired on the same days, horizon {hz}",
                                f"economics_diff_h{hz}.csv", ["ci"]))
    per_run = pd.DataFrame(h.get("runs", []))
    first = ["run_id", "budget", "seed", "cost_bps", "N", "C", "sharpe", "dsr", "turnover", "total_return"]
    per_run = per_run[[c for c in first if c in per_run] + [c for c in per_run if c not in first]]
    blocks.append(Table(per_run, f"Sharpe, DSR and turnover per run, horizon {hz}",
                        f"economics_runs_h{hz}.csv", show=False))
    if h.get("ic"):
        blocks += _ic_blocks(h["ic"], hz)
    return blocks


def _ic_blocks(ic: dict, hz: int) -> list:
    runs, budgets = pd.DataFrame(ic.get("runs", [])), pd.DataFrame(ic.get("budgets", []))
    out: list[Block]
    out = [Text(f"Horizon {hz} panel signal: daily cross-sectional IC (Pearson) and Rank IC (Spearman) "
                "of the predicted probability against the realised h-day return; t = ICIR·sqrt(days), "
                "t_hac with Newey–West errors (h - 1 lags, overlapping returns); top-k long-short with "
                "qlib costs (5 bp open, 15 bp close).")]
    order = ["run_id", "budget", "seed", "N", "mean", "t", "t_hac", "icir", "rank_ic", "rank_t", "rank_t_hac",
             "rank_icir", "n_days", "topk_sharpe", "topk_sharpe_gross", "topk_turnover"]
    if not runs.empty:
        runs = runs[[c for c in order if c in runs] + [c for c in runs if c not in order]]
        out.append(Table(runs, f"IC, Rank IC and top-k long-short per run, horizon {hz}", f"ic_h{hz}.csv"))
    if not budgets.empty:
        out.append(_ci_table(budgets[["budget", "N", "metric", "mean", "ci"]],
                             f"Mean daily IC per budget with block-bootstrap CIs, horizon {hz}",
                             f"ic_budgets_h{hz}.csv", ["ci"]))
    return out


def economics_figure(h: dict, path: Path) -> Path:
    b = pd.DataFrame(h.get("budgets", []))
    if b.empty:
        raise EmptyFigure(f"horizon {h['horizon']}: no Sharpe ratios (no trades?)")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    cmap = plt.get_cmap("plasma")
    costs = sorted(b["cost_bps"].unique())
    for i, c in enumerate(costs):
        g = b[b["cost_bps"] == c].sort_values("N")
        ax.plot(g["N"], g["sharpe"], "-o", ms=3, color=cmap(0.85 * i / max(1, len(costs) - 1)), label=f"{c:g} bp")
        if c == h["study_cost_bps"]:
            lo = [ci[0] if ci else np.nan for ci in g["sharpe_ci"]]
            hi = [ci[1] if ci else np.nan for ci in g["sharpe_ci"]]
            ax.fill_between(g["N"], lo, hi, color="gray", alpha=0.2, lw=0)
    ax.axhline(0, color="black", lw=0.6)
    _log_x(ax)
    ax.set_xlabel("parameters N (budget mean)")
    ax.set_ylabel("Sharpe (annualised)")
    ax.set_title(f"Sharpe vs N over costs, horizon {h['horizon']}", fontsize=9)
    ax.legend(fontsize=7)
    runs = pd.DataFrame(h.get("runs", []))
    at = runs[(runs["cost_bps"] == h["study_cost_bps"]) & runs["sharpe"].notna()]
    bx.plot(at["C"], at["sharpe"], "ko", ms=3, label="runs")
    fit = (h.get("ceiling") or {}).get("C") or {}
    if not fit.get("reason") and fit:
        C = np.geomspace(at["C"].min(), at["C"].max() * 1.25, 40)
        label = "S(C) ceiling fit" + ("" if fit.get("identified") else " (not identified)")
        bx.plot(C, fit["S_inf"] - fit["a"] * C ** -fit["b"], "r-" if fit.get("identified") else "r:", label=label)
    _log_x(bx)
    bx.set_xlabel("training FLOPs C")
    bx.set_title(f"Sharpe vs compute at {h['study_cost_bps']:g} bp", fontsize=9)
    bx.legend(fontsize=7)
    return save(fig, path)
