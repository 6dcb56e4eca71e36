"""The report's first screen: a one-sentence answer and the headline figure.

Consumes: the collected runs (each final run's paired test against the strongest baseline of
its horizon, as recorded in eval.json; that baseline is chosen on validation by the evaluate
stage) and the findings' scaling verdicts.
Produces: :func:`headline_frame` (per horizon, size and seed: the improvement over the
strongest baseline with its paired block-bootstrap interval), :func:`answer_sentence` and
:func:`headline_figure` (one panel per horizon: every size's improvement per seed with its
interval, the mean over seeds, zero marked). Guarantees: one sign convention, as in the whole
report: improvement = baseline test log-loss - model test log-loss, positive = PatchTST
better; a size "beats" the baseline only when every seed's interval lies above zero.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from finscale.report.figures import EmptyFigure, save  # noqa: E402
from finscale.report.findings import Findings, corrected_side  # noqa: E402
from finscale.study_runs import StudyRuns  # noqa: E402

HEADLINE_FIGURE = "headline.png"


def headline_frame(sr: StudyRuns) -> pd.DataFrame:
    """One row per evaluated current run: horizon, budget, seed, params_total, the strongest
    baseline, ``improvement`` and its paired interval ``improvement_lo``/``_hi``."""
    evals, cmp = sr.current(sr.evals), sr.current(sr.comparisons)
    cols = ["horizon", "budget", "seed", "params_total", "baseline", "improvement", "improvement_lo",
            "improvement_hi"]
    if evals.empty or cmp.empty or "strongest_baseline" not in evals:
        return pd.DataFrame(columns=cols + ["side"])
    strongest = evals.dropna(subset=["strongest_baseline"]).groupby("horizon")["strongest_baseline"].first()
    rows = cmp[cmp["baseline"] == cmp["horizon"].map(strongest)]
    params = sr.runs.set_index("run_id")["params_total"]
    out = pd.DataFrame({"horizon": rows["horizon"].astype(int), "budget": rows["budget"],
                        "seed": rows["seed"], "params_total": rows["run_id"].map(params),
                        "baseline": rows["baseline"],
                        # eval.json records model - baseline; the report states baseline - model
                        "improvement": -rows["mean_diff"].astype(float),
                        "improvement_lo": -rows["diff_hi"].astype(float),
                        "improvement_hi": -rows["diff_lo"].astype(float),
                        # significance by the findings' test (Holm-corrected DM where recorded)
                        "side": [corrected_side(r)[0] for _, r in rows.iterrows()]})
    return out.sort_values(["horizon", "params_total", "seed"], ignore_index=True)[cols + ["side"]]


def _sides(frame: pd.DataFrame) -> tuple[dict, dict]:
    """Per horizon: sizes whose every seed is significantly better / worse than the baseline."""
    better: dict[int, list[str]] = {}
    worse: dict[int, list[str]] = {}
    for (h, budget), g in frame.groupby(["horizon", "budget"], sort=False):
        if (g["side"] > 0).all():
            better.setdefault(int(h), []).append(str(budget))
        if (g["side"] < 0).all():
            worse.setdefault(int(h), []).append(str(budget))
    return better, worse


def _horizons(hs) -> str:
    hs = sorted(hs)
    return "h=" + ", ".join(str(h) for h in hs)


def _verdict_part(found: Findings) -> str:
    groups: dict[str, list[int]] = {}
    for hf in found.horizons:
        groups.setdefault(hf.verdict or "no scaling fit", []).append(hf.horizon)
    if not groups:
        return "no scaling fit"
    if len(groups) == 1:
        (verdict, hs), = groups.items()
        return f"{verdict} ({'every horizon: ' if len(hs) > 1 else ''}{_horizons(hs)})"
    return "; ".join(f"{v} at {_horizons(hs)}" for v, hs in groups.items())


def answer_sentence(found: Findings, frame: pd.DataFrame) -> str:
    """The study's answer in one sentence: the scaling verdicts of test log-loss vs size, and
    whether any size beats the strongest baseline in every seed (paired 95% intervals)."""
    if not found.horizons:
        return "No answer yet: no evaluated final runs (run `finscale run STUDY`)."
    text = f"Answer: test log-loss vs model size: {_verdict_part(found)}"  # one sentence: ";" joins
    if frame.empty:
        return text + "; no baseline comparison was recorded."
    better, worse = _sides(frame)
    sizes = frame.groupby("horizon")["budget"].nunique()
    if better:
        wins = "; ".join(f"h={h} ({', '.join(b)})" for h, b in sorted(better.items()))
        text += f"; PatchTST beats the strongest baseline in every seed at {wins}"
    else:
        text += "; no PatchTST size beats the strongest baseline in every seed at any horizon"
    lost = [h for h, b in worse.items() if len(b) == sizes.get(h, -1)]
    if lost:
        text += f", and the baseline is significantly better than every size at {_horizons(lost)}"
    return text + (" (per seed, the findings' test: Holm-corrected Diebold-Mariano where recorded, else "
                   "the paired block-bootstrap 95% interval of baseline minus model test log-loss).")


def headline_figure(frame: pd.DataFrame, colors: dict, path: Path) -> Path:
    """Each size vs the strongest baseline, one panel per horizon (see module docstring)."""
    if frame.empty:
        raise EmptyFigure("no paired test against the strongest baseline was recorded")
    horizons = sorted(frame["horizon"].unique())
    fig, axes = plt.subplots(1, len(horizons), figsize=(min(2.9 * len(horizons) + 1.2, 11.5), 2.9),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, h in zip(axes[0], horizons):
        _panel(ax, frame[frame["horizon"] == h], colors)
        ax.set_title(f"h={h}: vs {frame.loc[frame['horizon'] == h, 'baseline'].iloc[0]}", fontsize=8)
    axes[0][0].set_ylabel("improvement over the strongest\nbaseline (log-loss; > 0: PatchTST better)",
                          fontsize=7)
    fig.suptitle("Each PatchTST size against the strongest baseline (chosen on validation): per seed "
                 "with its paired 95% interval, black = mean over seeds", fontsize=8)
    return save(fig, path)


def _panel(ax, rows: pd.DataFrame, colors: dict) -> None:
    order = list(dict.fromkeys(rows.sort_values("params_total")["budget"]))
    ax.axhline(0.0, color="black", lw=0.8, ls="--")
    for i, budget in enumerate(order):
        g = rows[rows["budget"] == budget].reset_index(drop=True)
        offsets = [(k - (len(g) - 1) / 2) * 0.12 for k in range(len(g))]
        for off, (_, r) in zip(offsets, g.iterrows()):
            ax.errorbar(i + off, r["improvement"], yerr=[[r["improvement"] - r["improvement_lo"]],
                                                         [r["improvement_hi"] - r["improvement"]]],
                        fmt="o", ms=3.5, lw=1, capsize=2, color=colors.get(budget, "tab:blue"))
        ax.plot([i - 0.25, i + 0.25], [g["improvement"].mean()] * 2, color="black", lw=1.6)
    ax.set_xticks(range(len(order)))
    params = rows.groupby("budget")["params_total"].median()
    ax.set_xticklabels([f"{b}\n{_short(params.get(b))}" for b in order], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlim(-0.6, len(order) - 0.4)


def _short(n) -> str:
    if n is None or n != n:
        return ""
    n = float(n)
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"
