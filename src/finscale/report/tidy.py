"""Tidy, long-format files for analysis outside finscale (pandas: one line to load).

Consumes: the collected tables of the current runs and their ``predictions.npz`` files.
Produces ``report/results.parquet`` — one row per (run, metric): run_id, budget, horizon,
seed, params (measured total parameters), metric, value, lo, hi (the run's block-bootstrap
interval where one was recorded, else NaN) — and ``report/predictions.parquet`` — one row per
(run, test window): date, run_id, budget, horizon, seed, y, prob.
Guarantees: numbers are copied from the run directories unchanged (no recomputation);
intervals are numeric ``lo``/``hi`` columns, never strings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finscale.rundir import RunDir
from finscale.study_runs import CI_METRICS, METRICS, StudyRuns

RESULT_COLUMNS = ["run_id", "budget", "horizon", "seed", "params", "metric", "value", "lo", "hi"]
PREDICTION_COLUMNS = ["date", "run_id", "budget", "horizon", "seed", "y", "prob"]


def results_long(sr: StudyRuns) -> pd.DataFrame:
    ev = sr.current(sr.evals)
    if ev.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    ev = ev.merge(sr.runs[["run_id", "params_total"]], on="run_id", how="left")
    parts = []
    for metric in METRICS:
        lo = ev[f"{metric}_lo"] if metric in CI_METRICS else np.nan
        hi = ev[f"{metric}_hi"] if metric in CI_METRICS else np.nan
        parts.append(pd.DataFrame({"run_id": ev["run_id"], "budget": ev["budget"], "horizon": ev["horizon"],
                                   "seed": ev["seed"], "params": ev["params_total"], "metric": metric,
                                   "value": ev[metric], "lo": lo, "hi": hi}))
    out = pd.concat(parts, ignore_index=True)
    for col in ("value", "lo", "hi", "params"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    return out.sort_values(["horizon", "budget", "seed", "metric"], ignore_index=True)[RESULT_COLUMNS]


def predictions_long(sr: StudyRuns) -> pd.DataFrame:
    runs = sr.runs[sr.runs["current"] & sr.runs["has_predictions"]] if not sr.runs.empty else sr.runs
    parts = []
    for _, r in runs.iterrows():
        with np.load(RunDir(r["path"]).predictions, allow_pickle=False) as npz:
            parts.append(pd.DataFrame({"date": pd.to_datetime(npz["dates"]), "run_id": r["run_id"],
                                       "budget": r["budget"], "horizon": int(r["horizon"]),
                                       "seed": int(r["seed"]), "y": npz["y"].astype("int8"),
                                       "prob": npz["prob"].astype("float64")}))
    if not parts:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    return pd.concat(parts, ignore_index=True)[PREDICTION_COLUMNS]


def write_tidy(sr: StudyRuns, folder: Path) -> list[Path]:
    """Write both files into ``folder``; returns their paths."""
    paths = [folder / "results.parquet", folder / "predictions.parquet"]
    results_long(sr).to_parquet(paths[0], index=False)
    predictions_long(sr).to_parquet(paths[1], index=False)
    return paths
