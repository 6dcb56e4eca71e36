"""Assemble the report's sections (text, tables, figures) from collected runs and fits.

Consumes: the study config, :class:`StudyRuns`, the scaling fits and the folder figures go
to. Produces the ordered list of :class:`~finscale.report.render.Section` named by
``SECTIONS``; every section is always present (saying "no data" and why when empty), so a
reader can rely on the layout. Findings that cannot be shown (no fit, empty figure) are
returned as extra warnings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from finscale.config import StudyConfig, config_to_dict
from finscale.report import figures, tables
from finscale.report.findings import Findings, build_findings
from finscale.report.render import Block, Bullets, Figure, Section, Table, Text, ci_text, with_ci
from finscale.scaling import STABLE_SHARE, HorizonScaling, scaling_table, stability_frame
from finscale.scaling.expected import expected_sentence
from finscale.scaling.fit import BOUND_KEYS
from finscale.study_runs import StudyRuns

SECTIONS = (
    "Findings", "Study configuration and data provenance", "Splits and base rates", "Hyperparameter search",
    "Final results", "Baselines and paired tests", "Scaling laws", "Learning curves",
    "Calibration", "Backtest", "Hardware", "Axes and data scaling", "Compute", "Economics", "Warnings",
)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict) and v and all(isinstance(x, (dict, str, int, float, bool, list)) for x in v.values()) \
                and k not in ("fixed", "architectures"):
            rows += _flatten(v, f"{prefix}{k}.")
        else:
            rows.append((prefix + k, json.dumps(v) if isinstance(v, (dict, list)) else str(v)))
    return rows


def headline_fits(results: list[HorizonScaling] | None) -> list[dict]:
    """The headline fit per horizon: test log-loss vs measured total parameters."""
    out = []
    for hs in results or []:
        for f in hs.fits:
            if f.quantity == "log_loss" and f.axis == "params_total":
                known = expected_sentence(hs.expected)  # calibration markets only
                out.append({"horizon": hs.horizon, "verdict": f.verdict,
                            "text": f"{f.text} {known}" if known else f.text,
                            "bounds": {k: f.bounds.get(k) for k in BOUND_KEYS}})
    return out


def findings(sr: StudyRuns, results: list[HorizonScaling] | None, stability: dict | None = None) -> Findings:
    """What the study found (see :mod:`finscale.report.findings`), from the current runs."""
    runs = sr.runs[sr.runs["current"]] if not sr.runs.empty else sr.runs
    return build_findings(runs, sr.current(sr.evals), sr.baselines, sr.current(sr.comparisons),
                          sr.hpo, headline_fits(results), stability)


def stability_blocks(doc: dict | None, fig_dir: Path, notes: list) -> list:
    """Stability across replicate seed sets: the table (report/stability.csv) and the figure."""
    if doc is None:
        return []
    if not doc.get("measured"):
        return [Text("Stability across seeds: not measured (one replicate seed set; "
                     "`finscale run STUDY --replicates K` fits each of K disjoint seed sets alone and "
                     "reports how often each verdict holds).")]
    frame = stability_frame(doc)
    shown = frame[["horizon", "finding", "verdict", "share", "stable", "replicate_verdicts"]].copy()
    blocks: list[Block]
    blocks = [Text(f"Stability across {doc['n_replicates']} replicate seed sets: each replicate's runs "
                   "fitted alone. share = fraction of replicates in which the pooled verdict (all "
                   f"replicates' runs together) holds; stated as a finding only at >= "
                   f"{STABLE_SHARE:.0%}."),
              Table(frame, "Stability of findings across replicate seed sets", "stability.csv", shown=shown)]
    _add_figure(blocks, notes, lambda p: figures.stability_figure(doc, p), fig_dir / "stability_alpha.png",
                "Scaling exponent alpha per replicate seed set")
    return blocks


def findings_section(found: Findings) -> Section:
    """The report's first section: per horizon, plain sentences a reader can quote; caveats."""
    if not found.horizons:
        return Section(SECTIONS[0], [Text("No evaluated final runs yet, so nothing to report: run "
                                          "`finscale run STUDY` (final and evaluate phases).")])
    blocks: list[Block]
    blocks = [Text("Per horizon: the scaling verdict of test log-loss vs measured parameters, the "
                   "best PatchTST size against the best baseline on the same test windows "
                   "(improvement = baseline log-loss - model log-loss; positive = PatchTST better), "
                   "and whether any size beats every baseline. Caveats follow, most serious first.")]
    for hf in found.horizons:
        blocks.append(Text(f"Horizon {hf.horizon}"))
        blocks.append(Bullets(hf.sentences()))
    blocks.append(Text("Caveats" if found.caveats else "Caveats: none."))
    if found.caveats:
        blocks.append(Bullets([c.text for c in found.caveats]))
    return Section(SECTIONS[0], blocks)


def study_section(cfg: StudyConfig, sr: StudyRuns) -> Section:
    conf = pd.DataFrame(_flatten(config_to_dict(cfg)), columns=["key", "value"])
    s = Section(SECTIONS[1], [Text(
        f"Study {cfg.name!r} in {cfg.study_dir}: {int(sr.runs['current'].sum()) if not sr.runs.empty else 0} "
        f"final run directories of the current config. The report is built only from the run "
        f"directories; rebuilding it retrains nothing.")])
    section = conf["key"].str.split(".").str[0].where(conf["key"].str.contains(r"\."), "study")
    compact = (conf.assign(section=section, item=conf["key"].str.split(".").str[-1] + "=" + conf["value"])
               .groupby("section", sort=False)["item"].agg(", ".join).reset_index()
               .rename(columns={"item": "values"}))
    s.blocks.append(Table(conf, "Resolved study configuration", "config.csv", shown=compact))
    prov = sr.provenance
    s.blocks.append(Table(prov, "Data and code provenance recorded by the runs (env.json)",
                          "provenance.csv", shown=prov.drop(columns=["packages", "device"], errors="ignore")))
    if len(prov) > 1:
        s.blocks.append(Text("WARNING: runs recorded different data hashes or code versions (rows above)."))
    return s


def splits_section(sr: StudyRuns) -> Section:
    return Section(SECTIONS[2], [Table(sr.splits, "Split regions per horizon (windows, dates, base "
                                       "rate of the label): the final split (contiguous) and, "
                                       "beside it, the tuning split(s) HPO used", "splits.csv")])


def hpo_section(cfg: StudyConfig, sr: StudyRuns) -> Section:
    if sr.hpo.empty:
        why = ("hpo.mode is 'fixed': parameters come from [hpo.table]" if cfg.hpo.mode == "fixed"
               else "no HPO results (best_params.json / trials.csv) in runs/<study>/hpo/")
        return Section(SECTIONS[3], [Text(f"No hyperparameter search recorded: {why}.")])
    return Section(SECTIONS[3], [
        Text(f"Optuna search per cell on the tuning split ({cfg.hpo.split}); the objective is "
             "validation log-loss. Importances are shown where the HPO stage recorded them."),
        Table(sr.hpo.drop(columns=["best_params", "hpo_flags", "hpo_flag_note_list"], errors="ignore"),
              "Best trial per cell (hp_*: the chosen hyperparameters)", "hpo.csv",
              shown=sr.hpo.drop(columns=["best_params", "hpo_flags", "hpo_flag_note_list", "importance_note"],
                                errors="ignore")
              .rename(columns=lambda c: c[3:] if c.startswith("hp_") else c))])


def results_section(sr: StudyRuns) -> tuple[Section, pd.DataFrame]:
    res = tables.final_results(sr)
    per_run = _per_run(sr)
    blocks: list[Block]
    blocks = [Text("Test metrics of the final runs (best weights, test split scored once). Cells: "
                   f"mean over seeds with a {tables.CI_LEVEL:.0%} Student-t interval over seeds "
                   "(blank with one seed). Skill = 1 - log-loss / log-loss of the training base "
                   "rate; skill_val = the same against the validation base rate, the reference a "
                   "forecaster had at test time (a base-rate shift from training to test is not "
                   "skill). Log-loss = miscalibration - discrimination + uncertainty (CORP "
                   "decomposition, isotonic recalibration); a run is collapsed when its predictions "
                   "barely vary, it does not beat either base rate, or its AUC interval reaches 0.5.")]
    if res.empty:
        blocks.append(Text("No evaluated final runs yet: run `finscale evaluate`."))
        return Section(SECTIONS[4], blocks), res
    blocks.append(Text(_block_text(sr)))
    shown = res[["horizon", "budget", "seeds", "params_total", "params_non_embedding"]].copy()
    for m in tables.RESULT_METRICS:
        shown[m] = with_ci(res, m)
    shown["collapsed"] = res["collapsed_runs"]
    blocks += [Table(res, "Final results (budget x horizon)", "final_results.csv", shown=shown),
               Table(per_run, "Per-run test metrics with block-bootstrap CIs", "final_runs.csv",
                     shown=_per_run_shown(per_run))]
    blocks += _asset_blocks(sr)
    return Section(SECTIONS[4], blocks), res


def _asset_blocks(sr: StudyRuns) -> list:
    """Panels: per asset and budget x horizon, the mean over seeds of the pooled runs' test
    metrics on that asset's windows (the tables above are pooled over assets)."""
    assets = sr.current(sr.assets)
    if assets.empty:
        return []
    cols = [c for c in ("log_loss", "log_loss_constant", "log_loss_strongest", "optimal_log_loss",
                        "skill", "auc", "sharpe", "bh_sharpe") if c in assets]
    per = assets.groupby(["horizon", "budget", "asset"], as_index=False, sort=False).agg(
        seeds=("seed", "nunique"), test_windows=("test_windows", "first"),
        **{c: (c, "mean") for c in cols})
    return [Text("Panel: the tables above pool every asset's test windows (backtest: an "
                 "equal-weight portfolio of the assets). Per asset, the same runs' test metrics on "
                 "that asset's windows (skill against the asset's own training base rate), beside the "
                 "pooled constant and strongest baselines on the same windows; mean over seeds:"),
            Table(per, "Per-asset test metrics (pooled runs)", "final_assets.csv")]


def _per_run_shown(per_run: pd.DataFrame) -> pd.DataFrame:
    shown = per_run.assign(log_loss_ci=ci_text(per_run, "log_loss_lo", "log_loss_hi"))
    return shown[[c for c in ("run_id", "params_total", "epochs_run", "log_loss", "log_loss_ci", "auc",
                              "skill", "skill_val", "log_loss_miscalibration", "log_loss_discrimination",
                              "brier", "ece", "block_len", "collapsed") if c in shown]]


def _block_text(sr: StudyRuns) -> str:
    """The bootstrap block lengths per horizon, as recorded in eval.json (guard 13)."""
    ev = sr.current(sr.evals)
    if "block_len" not in ev or ev["block_len"].isna().all():
        return "Bootstrap block lengths: not recorded."
    parts = [f"h{int(h)}: {int(g.min())}" + (f"-{int(g.max())}" if g.max() != g.min() else "")
             for h, g in ev.groupby("horizon")["block_len"]]
    return ("Block-bootstrap block lengths in test days, chosen from the data per horizon "
            "(Politis-White on the test labels and the baselines' per-window log-loss and Brier "
            "terms; the longest, at least the horizon): " + ", ".join(parts) + ".")


def _per_run(sr: StudyRuns) -> pd.DataFrame:
    ev = sr.current(sr.evals)
    if ev.empty:
        return ev
    cols = ["run_id", "params_total", "params_non_embedding", "train_flops", "epochs_run",
            "best_epoch", "val_log_loss"]
    out = ev.merge(sr.runs[cols], on="run_id", how="left")
    return out.sort_values(["horizon", "params_total", "seed"], ignore_index=True)


def baselines_section(sr: StudyRuns) -> Section:
    base = sr.baselines
    blocks: list[Block]
    blocks = [Text("Baselines on the identical test windows: the constant training base rate "
                   "(constant), the recalibrated constant at the validation base rate "
                   "(constant_val), logistic regression and gradient boosting on the raw features at "
                   "day t and, suffix _rel, on the stationary a20_rel features standardised on "
                   "training rows; baselines over the model's own context window, each tuned on "
                   "validation: window_logistic (the flattened last k days), dlinear (a DLinear-style "
                   "linear model over the window), volatility (range/ATR features only) and momentum "
                   "(past returns). The strongest baseline of a horizon is the one with the lowest "
                   "VALIDATION log-loss (chosen before the test split is read; constant_val, fitted "
                   "on the validation labels, is never a candidate). Paired "
                   "tests: the improvement, i.e. the mean per-window test log-loss of the baseline "
                   "minus that of the model (positive = PatchTST better, as everywhere in this "
                   "report), with its interval over seeds; 'seeds better/worse' count seeds whose "
                   "paired block-bootstrap interval (whose p-value inverts it) excludes 0. 'median DM p': the "
                   "Diebold-Mariano test on per-day differentials (Newey-West variance, bandwidth = "
                   "block length, Harvey-Leybourne-Newbold correction); 'median DM p (Holm)': the same, "
                   "Holm-corrected across every model-vs-baseline comparison of the study — the test "
                   "the findings use. See docs/statistics.md.")]
    if base.empty:
        return Section(SECTIONS[5], blocks + [Text("No evaluated runs, so no baselines.")])
    shown = base[["horizon", "baseline", "n"]].copy()
    for m in tables.RESULT_METRICS[:4]:
        shown[m] = with_ci(base, m)
    shown["ece"] = base["ece"]
    shown["val log-loss"] = base.get("val_log_loss")  # what "strongest" was chosen on
    cmp = tables.comparison_summary(sr)
    cmp_shown = cmp[["horizon", "budget", "baseline", "seeds"]].copy() if not cmp.empty else cmp
    if not cmp.empty:
        cmp_shown["improvement [CI over seeds]"] = with_ci(cmp, "improvement")
        cmp_shown[["seeds better", "seeds worse", "median p"]] = cmp[["seeds_better", "seeds_worse", "median_p"]]
        cmp_shown[["median DM p", "median DM p (Holm)"]] = cmp[["median_dm_p", "median_dm_p_holm"]]
    strongest = _strongest_rows(sr, cmp)
    if not strongest.empty:
        blocks.append(Table(strongest, "Models vs the strongest baseline per horizon",
                            "strongest_baseline.csv",
                            shown=strongest[["horizon", "budget", "baseline", "seeds"]].assign(
                                **{"improvement [CI over seeds]": with_ci(strongest, "improvement")},
                                **strongest[["seeds_better", "seeds_worse", "median_p", "median_dm_p",
                                             "median_dm_p_holm"]])))
    blocks += inference_blocks(sr)
    blocks += [Table(base, "Baselines per horizon (block-bootstrap CIs)", "baselines.csv", shown=shown),
               Table(cmp, "Paired tests, model vs baseline (summary over seeds)",
                     "paired_tests_summary.csv", shown=cmp_shown),
               Table(sr.current(sr.comparisons), "Paired tests per run", "paired_tests.csv", show=False)]
    return Section(SECTIONS[5], blocks)


def inference_blocks(sr: StudyRuns) -> list:
    """Per horizon (and axis variant) the study-level tests of ``inference/h<h>.json``: SPA
    against the validation-chosen strongest baseline and the 95% model confidence set."""
    rows = []
    for key, doc in sr.inference.items():
        spa, mcs = doc["spa"], doc.get("mcs") or {}
        rows.append({"horizon": doc["horizon"], "file": key, "SPA benchmark": spa["benchmark"],
                     "SPA p": spa["p"], "sizes better (SPA)": ", ".join(spa["better_models"]) or "none",
                     "95% MCS": ", ".join(mcs.get("included", [])),
                     "Holm family": doc.get("holm", {}).get("m")})
    if not rows:
        return []
    return [Table(pd.DataFrame(rows), "Study-level tests per horizon (Hansen's SPA: does any size beat the "
                  "strongest baseline, chosen on validation? Model confidence set over sizes and baselines)",
                  "inference.csv")]


def _strongest_rows(sr: StudyRuns, cmp: pd.DataFrame) -> pd.DataFrame:
    """Paired-test summary rows against each horizon's strongest baseline (from eval.json)."""
    ev = sr.current(sr.evals)
    if cmp.empty or "strongest_baseline" not in ev or ev["strongest_baseline"].isna().all():
        return pd.DataFrame()
    best = ev.dropna(subset=["strongest_baseline"]).groupby("horizon")["strongest_baseline"].first()
    keep = cmp["baseline"] == cmp["horizon"].map(best)
    return cmp[keep].reset_index(drop=True)


def scaling_section(results: list[HorizonScaling] | None, colors: dict, fig_dir: Path,
                    notes: list, sr: StudyRuns | None = None, stability: dict | None = None) -> Section:
    """The stored scaling results (never fitted here); None: the scaling stage has not run."""
    if results is None:
        why = ("no scaling results: the scaling stage has not run for this study "
               "(run `finscale run STUDY --phase scaling`, then rebuild the report)")
        notes.append(("no scaling results", "study", why))
        return Section(SECTIONS[6], [Text(why[0].upper() + why[1:] + ".")])
    table = scaling_table(results)
    stale = _stale_scaling(results, sr)
    if stale:
        notes.append(("scaling results stale", "study", stale))
    blocks: list[Block]
    blocks = [Text("Fits of L(N) = E + A·N^-alpha (Huber loss on log residuals, grid of starts) "
                   "to every final run's test log-loss versus measured total parameters, "
                   "non-embedding parameters and training FLOPs; 1 - AUC and the refinement "
                   "log-loss (its discrimination part, which a base-rate shift cannot move) vs total "
                   "parameters as secondary views. Intervals: bootstrap over moving blocks of test days (one "
                   "block resample shared by all runs of a horizon) and over seeds (pooled, "
                   "small-sample-corrected residuals). Constant model: no scaling "
                   "(leave-one-budget-out error, AIC/BIC). A leave-one-budget-out error far above "
                   "the constant model's means the power law does not extrapolate to a held-out "
                   "size.")]
    if stale:
        blocks.append(Text(f"Warning: {stale}."))
    for hs in results:
        if hs.reason:
            blocks.append(Text(f"Horizon {hs.horizon}: no scaling fit: {hs.reason}."))
            notes.append(("no scaling fit", f"h{hs.horizon}", hs.reason))
            continue
        blocks.append(Bullets([f"Horizon {hs.horizon}, {f.quantity} vs {f.axis}: {f.text}"
                               + (f" Fit: {f.detail}" if f.detail else "") for f in hs.fits]))
        extras = scaling_overlays(sr, hs.horizon)
        if sr is not None and extras.get("optimum") is not None:  # overlays need the runs
            blocks.append(Text(_optimum_text(sr, hs.horizon, extras["optimum"])))
        _add_figure(blocks, notes, lambda p, hs=hs, ex=extras: figures.scaling_figure(hs, colors, p, **ex),
                    fig_dir / f"scaling_h{hs.horizon}.png", f"Scaling fits, horizon {hs.horizon}")
    if "alpha" in table:
        fitted = table.dropna(subset=["alpha"])
        shown = fitted[["horizon", "quantity", "axis", "E", "A", "alpha"]].copy()
        shown["alpha CI"] = ci_text(fitted, "alpha_lo", "alpha_hi")
        shown[["LOBO power", "LOBO const"]] = fitted[["lobo_rmse_power", "lobo_rmse_const"]]
        shown["dAIC"] = fitted["aic_power"] - fitted["aic_const"]
        shown[["dBIC", "verdict"]] = fitted[["delta_bic", "verdict"]]
        if "max_fall_pct" in fitted:  # equivalence bounds (%) and the 80%-power slope
            shown[["max fall %", "max rise %", "min det. slope"]] = fitted[["max_fall_pct", "max_rise_pct",
                                                                           "min_detectable_slope"]]
        blocks.append(Table(table, "Scaling-law fits", "scaling.csv", shown=shown))
    else:  # no horizon could be fitted: the CSV still records why, per horizon
        blocks.append(Table(table, "Scaling-law fits (none)", "scaling.csv", show=False))
    blocks += stability_blocks(stability, fig_dir, notes)
    return Section(SECTIONS[6], blocks)


MIN_GAP = 0.005  # base-rate minus optimal log-loss below which "share of the gap" is noise


def _optimum_text(sr: StudyRuns, horizon: int, optimum: float) -> str:
    """How much of the gap between the base rate and the known optimum the models closed."""
    ev = sr.current(sr.evals)
    ev = ev[ev["horizon"] == horizon]
    best = ev.groupby("budget")["log_loss"].mean()
    base = float(ev["log_loss_const"].mean()) if "log_loss_const" in ev else float("nan")
    text = (f"Horizon {horizon}: the market is synthetic, so the optimal test log-loss is known: "
            f"{optimum:.4f} (dotted line), against {base:.4f} for the training base rate.")
    if len(best) and base - optimum > MIN_GAP:  # on a martingale the gap is noise: no shares
        closed = {b: (base - v) / (base - optimum) for b, v in best.items()}
        text += " Share of that gap closed (mean over seeds): " + ", ".join(
            f"{b} {c:.0%}" for b, c in closed.items()) + "."
    return text


def scaling_overlays(sr: StudyRuns | None, horizon: int) -> dict:
    """The strongest baseline's line (test log-loss and 1 - AUC with their intervals; the others
    are in the baselines table), not-converged runs and the known optimal log-loss of a
    synthetic market (recorded in eval.json)."""
    if sr is None or sr.baselines.empty:
        return {}
    optimum = None
    evals = sr.current(sr.evals)
    if "optimal_log_loss" in evals:
        known = evals.loc[evals["horizon"] == horizon, "optimal_log_loss"].dropna()
        optimum = float(known.iloc[0]) if len(known) else None
    base = sr.baselines[sr.baselines["horizon"] == horizon].groupby("baseline", as_index=False).first()
    strongest = evals.loc[evals["horizon"] == horizon, "strongest_baseline"].dropna() \
        if "strongest_baseline" in evals else pd.Series(dtype=object)
    if len(strongest):  # the figures draw the strongest baseline only; the table lists them all
        base = base[base["baseline"] == strongest.iloc[0]]
    rows = [{"baseline": b["baseline"], "quantity": "log_loss", "value": b["log_loss"],
             "lo": b.get("log_loss_lo"), "hi": b.get("log_loss_hi")} for _, b in base.iterrows()]
    rows += [{"baseline": b["baseline"], "quantity": "auc_error", "value": 1 - b["auc"],
              "lo": 1 - b.get("auc_hi", float("nan")), "hi": 1 - b.get("auc_lo", float("nan"))}
             for _, b in base.iterrows() if pd.notna(b.get("auc"))]
    frame = pd.DataFrame(rows).astype({"value": float, "lo": float, "hi": float})
    runs = sr.runs
    not_converged = frozenset(runs.loc[runs["converged"] == False, "run_id"]) if "converged" in runs else frozenset()  # noqa: E712
    return {"baselines": frame, "not_converged": not_converged, "optimum": optimum}


def _stale_scaling(results: list[HorizonScaling], sr: StudyRuns | None) -> str:
    """Why the stored fits do not match the evaluated runs now on disk ("" when they do)."""
    if sr is None or sr.runs.empty:
        return ""
    runs = sr.current(sr.runs)
    ready = runs[runs["evaluated"] & runs["has_predictions"]]
    changed = [f"h{hs.horizon}" for hs in results
               if set(hs.run_ids) != set(ready.loc[ready["horizon"] == hs.horizon, "run_id"])]
    if not changed:
        return ""
    return (f"the scaling results of {', '.join(changed)} were fitted on other evaluated runs "
            "than the study holds now; rerun the scaling phase")


def _add_figure(blocks: list, notes: list, make, path: Path, caption: str) -> None:
    try:
        make(path)
    except figures.EmptyFigure as exc:
        blocks.append(Text(f"No figure: {exc}."))
        notes.append(("no figure", path.name, str(exc)))
        return
    blocks.append(Figure(Path(path.parent.name) / path.name, caption))


def learning_section(sr: StudyRuns, horizons, colors: dict, fig_dir: Path, notes: list) -> Section:
    blocks: list[Block]
    blocks = [Text("Training loss and validation log-loss per epoch, one line per run; the "
                   "reported weights are those of the best validation epoch.")]
    for h in horizons:
        _add_figure(blocks, notes, lambda p, h=h: figures.learning_figure(sr.current(sr.epochs), h, colors, p),
                    fig_dir / f"learning_h{h}.png", f"Learning curves, horizon {h}")
    ep = sr.current(sr.epochs)
    summary = ep
    if not ep.empty:
        summary = (ep.groupby(["run_id", "horizon", "budget", "seed"])
                   .agg(epochs=("epoch", "max"), train_s=("epoch_s", "sum"),
                        last_train_loss=("train_loss", "last"), best_val_log_loss=("val_log_loss", "min"))
                   .reset_index().merge(sr.runs[["run_id", "budget_params"]], on="run_id")
                   .sort_values(["horizon", "budget_params", "seed"], ignore_index=True)
                   .drop(columns="budget_params"))
    blocks += [Table(summary, "Per-run training summary (from metrics.jsonl)", "training.csv"),
               Table(ep, "Every epoch line", "epochs.csv", show=False)]
    return Section(SECTIONS[7], blocks)


def calibration_section(sr: StudyRuns, horizons, colors: dict, fig_dir: Path, notes: list) -> Section:
    blocks: list[Block]
    blocks = [Text("Reliability diagrams on the test split from the equal-width bins recorded in "
                   "eval.json (empty bins omitted); ECE per cell is in the final results.")]
    for h in horizons:
        _add_figure(blocks, notes,
                    lambda p, h=h: figures.calibration_figure(sr.current(sr.calibration), h, colors, p),
                    fig_dir / f"calibration_h{h}.png", f"Calibration, horizon {h}")
    blocks.append(Table(sr.current(sr.calibration), "Calibration bins per run", "calibration_bins.csv",
                        show=False))
    return Section(SECTIONS[8], blocks)


def backtest_section(sr: StudyRuns, horizons, colors: dict, fig_dir: Path, notes: list) -> Section:
    bt = tables.backtest_table(sr)
    blocks: list[Block]
    blocks = [Text("Long the index for the next h days when the predicted probability exceeds "
                   "the validation-chosen threshold (non-overlapping holding periods), flat "
                   "otherwise, costs included; buy-and-hold over the same days. The deflated "
                   "Sharpe ratio is the probability that a run's true Sharpe ratio exceeds what "
                   "the best of the horizon's trials would reach by luck; the trials are all "
                   "final runs of the horizon.")]
    for h in horizons:
        _add_figure(blocks, notes,
                    lambda p, h=h: figures.backtest_figure(sr.equity, sr.current(sr.runs), h, colors, p),
                    fig_dir / f"backtest_h{h}.png", f"Equity curves, horizon {h}")
    if bt.empty:
        return Section(SECTIONS[9], blocks + [Text("No backtests recorded.")])
    cols = ["run_id", "cagr", "sharpe", "max_drawdown", "n_trades", "hit_rate", "exposure", "dsr",
            "bh_cagr", "bh_sharpe", "bh_max_drawdown"]
    blocks += [Table(tables.backtest_summary(bt), "Best run per horizon and its deflated Sharpe ratio",
                     "backtest_summary.csv"),
               Table(bt, "Backtest per run", "backtests.csv", shown=bt[cols])]
    return Section(SECTIONS[9], blocks)


def hardware_section(sr: StudyRuns) -> Section:
    hw = tables.hardware_table(sr)
    blocks: list[Block]
    blocks = [Text("From each run's hardware.jsonl. 'time_hot_s' is the time spent in the warning "
                   "or critical state between samples, i.e. the time training was paused for heat "
                   "(to one sampling interval).")]
    if hw.empty or int(hw["runs_with_log"].iloc[0]) == 0:
        blocks.append(Text("No hardware log in any run (monitoring was off)."))
    blocks += [Table(hw, "Hardware summary", "hardware.csv"),
               Table(sr.current(sr.hardware), "Hardware per run", "hardware_runs.csv", show=False)]
    return Section(SECTIONS[10], blocks)


def warnings_section(sr: StudyRuns, notes: list) -> tuple[Section, pd.DataFrame]:
    warn = tables.warnings_table(sr, notes)
    blocks: list[Block]
    blocks = [Text("No warnings.")] if warn.empty else [
        Text(f"{int(warn['count'].sum())} finding(s) in {len(warn)} group(s) to read before trusting "
             "the numbers above (identical findings grouped, most serious first).")]
    blocks.append(Table(warn, "Warnings", "warnings.csv"))
    return Section(SECTIONS[-1], blocks), warn
