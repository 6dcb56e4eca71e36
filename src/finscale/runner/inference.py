"""The study-level inference stage: tests over every evaluated final run of a horizon.

Consumes: each current, evaluated final run's ``eval.json`` and ``predictions.npz``, the
cached baselines of its horizon (:func:`finscale.evaluate.phase.horizon_baselines`, no
refit when the cache is current) and the prepared data (labels, validation windows).
Produces ``runs/<study>/inference/h<h>.json`` (a variant of a study with axes:
``inference/<axis tag>/h<h>.json``), per horizon:

- ``spa``: Hansen's SPA, H0 "no size has a lower expected test log-loss than the strongest
  baseline"; the benchmark is the baseline with the lowest VALIDATION log-loss (guard 16);
- ``mcs``: the 95% model confidence set over sizes and baselines;
- ``adjacent``: Diebold–Mariano of each size against the next larger one;
- ``comparisons``: every model-vs-baseline DM p-value of the horizon (from eval.json;
  ``dm_source`` "recomputed" for runs evaluated before eval.json recorded it) with its
  Holm-adjusted value ``dm_p_holm``; the Holm family is every current model-vs-baseline comparison of the
  study (all horizons, sizes, seeds, replicates, variants), its size ``holm_m``.

A size's loss series is the mean over its runs (seeds, replicates) of their per-window test
log-loss; panels average the assets of each day first. Every bootstrap uses the horizon's
block length (``eval.json["block_length"]``) and a seed derived from the study and horizon.
Guarantees: runs whose predictions do not match the horizon's test windows are an error;
files are written atomically; a horizon without evaluated runs is skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from finscale.atomic import atomic_write_json
from finscale.config import StudyConfig
from finscale.evaluate import diebold_mariano, holm, model_confidence_set, per_sample_log_loss, spa_test
from finscale.evaluate.forecast_tests import daily_differential, daily_losses
from finscale.hpo.results import final_specs
from finscale.model import parse_budget
from finscale.repro import derive_seed
from finscale.rundata import final_data, prepare
from finscale.rundir import RunDir
from finscale.runspec import final_dir
from finscale.study_axes import axis_tag, variants

log = logging.getLogger(__name__)

ALPHA = 0.05


def inference_path(cfg: StudyConfig, horizon: int) -> Path:
    tag = axis_tag(cfg)
    root = cfg.study_dir / "inference"
    return (root / tag if tag else root) / f"h{horizon}.json"


def _evaluated_runs(var: StudyConfig) -> dict[int, list[tuple[RunDir, dict]]]:
    """horizon -> [(run dir, eval.json)] of the variant's current evaluated final runs."""
    out: dict[int, list] = {}
    for spec in final_specs(var):
        run = RunDir(final_dir(var, spec))
        ev = run.read_json("eval.json")
        if ev is not None and run.file("predictions.npz").exists():
            out.setdefault(spec.horizon, []).append((run, ev))
    return out


def _run_losses(run: RunDir, y: np.ndarray, ends: np.ndarray) -> np.ndarray:
    with np.load(run.file("predictions.npz")) as z:
        if not (np.array_equal(z["ends"], ends) and np.array_equal(z["y"], y)):
            raise ValueError(f"{run.path}: predictions.npz does not match the horizon's test windows; "
                             "re-evaluate the run (delete its eval.json)")
        return per_sample_log_loss(y, z["prob"])


def horizon_inference(var: StudyConfig, prep, h: int, runs: list[tuple[RunDir, dict]]) -> dict:
    """SPA, MCS and adjacent-size DM of one horizon (module docstring); comparisons' DM
    p-values as eval.json recorded them (``dm_p_holm`` is filled in by :func:`run_inference`)."""
    from finscale.evaluate import FITTED_ON_VALIDATION
    from finscale.evaluate.phase import horizon_baselines

    data, test = final_data(prep, var, h)
    baselines, _chosen = horizon_baselines(var, prep, h, data, test)
    y, y_val = test.labels_at_ends, data.val.labels_at_ends
    days = prep.dates.to_numpy()[test.ends].astype("datetime64[D]") if prep.is_panel else None
    block_len = int(runs[0][1]["block_length"]["block_len"])
    by_size: dict[str, list[np.ndarray]] = {}
    run_loss = {ev["run_id"]: _run_losses(run, y, test.ends) for run, ev in runs}
    for _, ev in runs:
        by_size.setdefault(ev["budget"], []).append(run_loss[ev["run_id"]])
    sizes = sorted(by_size, key=parse_budget)
    size_loss = daily_losses({b: np.mean(by_size[b], axis=0) for b in sizes}, days)
    window_base = {n: per_sample_log_loss(y, p["test"]) for n, p in baselines.items()}
    base_loss = daily_losses(window_base, days)
    val_loss = {n: float(per_sample_log_loss(y_val, p["val"]).mean()) for n, p in baselines.items()}
    # the strongest baseline as eval.json chose it: on validation, never one fitted on it
    benchmark = min((n for n in val_loss if n not in FITTED_ON_VALIDATION), key=lambda n: (val_loss[n], n))
    reps, seed = var.evaluate.bootstrap_resamples, derive_seed("inference", var.name, h)
    spa = spa_test(base_loss[benchmark], size_loss, block_len, reps, seed, ALPHA)
    spa["benchmark"], spa["benchmark_val_log_loss"] = benchmark, val_loss[benchmark]
    mcs = model_confidence_set({**size_loss, **base_loss}, block_len, reps, seed, ALPHA) \
        if len(size_loss) + len(base_loss) >= 2 else None
    adjacent = [{"smaller": a, "larger": b,
                 **diebold_mariano(daily_differential(np.mean(by_size[b], axis=0)
                                                      - np.mean(by_size[a], axis=0), days), block_len, h)}
                for a, b in zip(sizes, sizes[1:])]
    comparisons = []
    for _, ev in runs:
        for name, c in sorted(ev["comparisons"].items()):
            dm, source = c, "eval.json"
            if c.get("dm_p") is None and name in window_base:  # evaluated before DM was recorded
                dm = diebold_mariano(daily_differential(run_loss[ev["run_id"]] - window_base[name], days),
                                     block_len, h)
                source = "recomputed"
            comparisons.append({"run_id": ev["run_id"], "budget": ev["budget"], "seed": ev["seed"],
                                "baseline": name, "mean_diff": c["mean_diff"], "p_value": c["p_value"],
                                "dm_stat": dm.get("dm_stat"), "dm_p": dm.get("dm_p"), "dm_source": source})
    return {"horizon": h, "block_len": block_len, "seed": seed, "reps": reps, "alpha": ALPHA,
            "sizes": sizes, "runs": [ev["run_id"] for _, ev in runs], "spa": spa, "mcs": mcs,
            "adjacent": adjacent, "comparisons": comparisons}


def run_inference(cfg: StudyConfig, data_dir=None) -> dict[Path, dict]:
    """Every variant's and horizon's study-level tests, Holm across the study; writes the
    files (module docstring) and returns them by path."""
    docs: dict[Path, dict] = {}
    for var in variants(cfg):
        runs = _evaluated_runs(var)
        if not runs:
            continue
        prep = prepare(var, data_dir)
        for h in sorted(runs):
            docs[inference_path(var, h)] = horizon_inference(var, prep, h, runs[h])
    rows = [row for doc in docs.values() for row in doc["comparisons"]]
    adjusted = holm([np.nan if r["dm_p"] is None else r["dm_p"] for r in rows])
    for row, p in zip(rows, adjusted):
        row["dm_p_holm"] = None if np.isnan(p) else float(p)
    m = int(np.isfinite(adjusted).sum())
    for path, doc in docs.items():
        doc["holm"] = {"method": "holm", "m": m, "alpha": ALPHA,
                       "family": "every model-vs-baseline Diebold-Mariano p-value of the study's "
                                 "current final runs (all horizons, sizes, seeds, variants)"}
        atomic_write_json(doc, path)
        log.info("inference %s: SPA p=%.3g (benchmark %s), MCS %s", path.name, doc["spa"]["p"],
                 doc["spa"]["benchmark"], (doc["mcs"] or {}).get("included"))
    return docs
