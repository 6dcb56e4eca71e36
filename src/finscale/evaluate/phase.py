"""The evaluate phase: score each finished final run on the test split, exactly once.

Consumes: a done final run (``ckpt/best.pt``), the prepared data and the ``[evaluate]``
config. Produces ``eval.json`` (test metrics with block-bootstrap CIs, skill against the
training and the validation base rate, the calibration/discrimination decomposition, the
validation-chosen threshold, the data-chosen block length, baselines on the identical
windows on raw and on stationary train-standardised inputs, the strongest baseline, paired
tests, backtest; panels add ``per_asset`` and pool the backtests, synthetic markets add
``optimal_log_loss``, see :mod:`finscale.evaluate.per_asset`) and ``predictions.npz`` (test window
ends, labels, probabilities; panels: each window's asset).
Guarantees: the test split is touched only here, after training (guard 11); an existing
``eval.json`` is never recomputed; baselines are fitted once per content hash of everything
they depend on and cached under ``runs/<study>/baselines/``.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging

import numpy as np

from finscale.config import StudyConfig, config_hash, config_to_dict
from finscale.evaluate import (
    COST_SWEEP_BPS,
    FITTED_ON_VALIDATION,
    backtest,
    choose_block_len,
    choose_threshold,
    compare_forecasts,
    cost_sweep,
    evaluate_predictions,
    fit_baselines,
    fit_window_baselines,
    per_sample_log_loss,
    pool_backtests,
)
from finscale.evaluate.forecast_tests import holm_within_run
from finscale.evaluate.per_asset import optimal_log_loss, panel_signal, per_asset
from finscale.features import input_columns
from finscale.model import select_device
from finscale.repro import derive_seed
from finscale.rundata import (
    STATIONARY_SET,
    PreparedData,
    final_data,
    prepared_for,
    stationary_values,
    window_context,
)
from finscale.rundir import RunDir
from finscale.runspec import RunSpec, design_cfg, final_dir
from finscale.train import RunData, predict_proba
from finscale.trained_run import load_best_model
from finscale.windows import WindowDataset

log = logging.getLogger(__name__)


def _standardised_on_train(X: np.ndarray, train_ends: np.ndarray) -> np.ndarray:
    """Columns z-scored with statistics of the training rows only (guard 5)."""
    mu, sd = X[train_ends].mean(axis=0), X[train_ends].std(axis=0)
    return (X - mu) / np.where(sd > 0, sd, 1.0)


def stationary_inputs(cfg: StudyConfig, prep: PreparedData) -> np.ndarray:
    """The stationary set ``STATIONARY_SET`` on ``prep``'s rows (the study's own inputs when
    it already uses that set)."""
    if cfg.features.set == STATIONARY_SET:
        return prep.values.astype(np.float64)
    # A study whose own set warms up sooner (e.g. `returns`, 1 row) keeps rows inside the
    # stationary set's warm-up (its first <= 199 rows, all training rows): they get 0 (no
    # information) instead of NaN, which no baseline accepts.
    return np.nan_to_num(stationary_values(prep), nan=0.0, posinf=np.inf, neginf=-np.inf)


def baseline_inputs(cfg: StudyConfig, prep: PreparedData, train_ends: np.ndarray) -> dict[str, np.ndarray]:
    """Input variants of the day-t baselines: suffix -> (T, C) matrix at each window's end day.

    "" = the study's own (raw) inputs; "_rel" = the stationary set ``STATIONARY_SET``
    standardised on training rows (left out when the study already uses that set).
    """
    variants = {"": prep.values.astype(np.float64)}
    if cfg.features.set != STATIONARY_SET:
        variants["_rel"] = _standardised_on_train(stationary_inputs(cfg, prep), train_ends)
    return variants


def baseline_key(cfg: StudyConfig, keys: dict[str, np.ndarray], y: np.ndarray,
                 variants: dict[str, np.ndarray]) -> str:
    """sha256 of everything the baselines depend on: window ends, their labels, the inputs at
    those rows (and the window before them), the config values that shape them and the
    baseline code itself."""
    import finscale.evaluate.baselines as code
    import finscale.evaluate.window_baselines as window_code

    h = hashlib.sha256(inspect.getsource(code).encode() + inspect.getsource(window_code).encode())
    context = window_context(cfg)
    config = {"target": config_to_dict(cfg.target), "features": config_to_dict(cfg.features),
              "splits": config_to_dict(cfg.splits), "context_len": context, "seed": cfg.seeds[0]}
    h.update(config_hash(config).encode())
    for name, ends in keys.items():
        h.update(name.encode() + np.ascontiguousarray(ends, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(y[ends], dtype=np.float64).tobytes())
        rows = np.unique((ends[:, None] - np.arange(context)[None, :]).ravel())
        for suffix, X in variants.items():
            h.update(suffix.encode() + np.ascontiguousarray(X[rows], dtype=np.float64).tobytes())
    return h.hexdigest()


def _fit_all_baselines(cfg: StudyConfig, prep: PreparedData, data: RunData, test: WindowDataset,
                       variants: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(probabilities {name: {"val", "test"}}, choices {name: chosen values}) of every baseline."""
    val_prior = float(np.mean(data.val.labels_at_ends))
    probs = {}
    for suffix, X in variants.items():
        probs.update(fit_baselines(X[data.train.ends], data.train.labels_at_ends,
                                   {"val": X[data.val.ends], "test": X[test.ends]}, seed=cfg.seeds[0],
                                   val_prior=val_prior, suffix=suffix, constants=not suffix))
    raw = stationary_inputs(cfg, prep)
    standardised = _standardised_on_train(raw, data.train.ends)
    ends = {"train": data.train.ends, "val": data.val.ends, "test": test.ends}
    window = fit_window_baselines(standardised, raw, input_columns(STATIONARY_SET), data.train.labels,
                                  ends, window_context(cfg), cfg.seeds[0])
    probs.update({name: {"val": r["val"], "test": r["test"]} for name, r in window.items()})
    return probs, {name: r["chosen"] for name, r in window.items()}


def horizon_baselines(cfg: StudyConfig, prep: PreparedData, horizon: int, data: RunData,
                      test: WindowDataset) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Baseline probabilities on val/test for this horizon (fitted once, then cached), and
    the values each tuned baseline chose on validation.

    ``cfg`` and ``prep`` are the STUDY's (not a run's design): every run of a horizon shares
    the same windows, so one set of baselines serves them all. The cache file is named by
    :func:`baseline_key`, so a change of labels (threshold, price, kind), features, splits or
    baseline code fits new baselines instead of reusing stale ones.
    """
    keys = {"train": data.train.ends, "val": data.val.ends, "test": test.ends}
    variants = baseline_inputs(cfg, prep, data.train.ends)
    key = baseline_key(cfg, keys, data.train.labels, variants)
    path = cfg.study_dir / "baselines" / f"h{horizon}-{key[:16]}.npz"
    if path.exists():
        with np.load(path) as cached:
            probs = {name: {s: cached[f"{name}__{s}"] for s in ("val", "test")}
                     for name in {k.split("__")[0] for k in cached.files if "__" in k}}
            return probs, json.loads(str(cached["chosen"]))
    probs, chosen = _fit_all_baselines(cfg, prep, data, test, variants)
    flat = {f"{name}__{s}": p for name, d in probs.items() for s, p in d.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    from finscale.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(key), chosen=np.array(json.dumps(chosen, sort_keys=True)), **flat)
    log.info("baselines h%d fitted (%s) -> %s", horizon, ", ".join(sorted(probs)), path.name)
    return probs, chosen


def test_block_len(y: np.ndarray, baselines: dict, horizon: int, override: int) -> dict:
    """The horizon's bootstrap block length (Politis–White, :mod:`finscale.evaluate.blocklen`)
    from the test labels and every baseline's per-window log-loss and Brier terms.

    Per horizon, not per run: every run and baseline of a horizon is then resampled with the
    same blocks (comparable intervals, one baseline table, the scaling bootstrap's blocks),
    and the choice does not depend on which model happened to be evaluated first. A
    model's per-window losses are dominated by the labels' dependence, which is included."""
    series = {"labels": y}
    for name, probs in sorted(baselines.items()):
        series[f"log_loss_{name}"] = per_sample_log_loss(y, probs["test"])
        series[f"brier_{name}"] = (probs["test"] - y) ** 2
    return choose_block_len(series, horizon, override)


# Per process: the baselines' scores of each horizon's test windows, by content (see below).
_SCORED: dict[str, dict] = {}
_SCORED_MAX = 32


def _scores_key(y, baselines: dict, chosen: dict, val_labels, prior: float, days, common: dict) -> str:
    """sha256 of every input of :func:`scored_baselines`."""
    h = hashlib.sha256(json.dumps([chosen, prior, common], sort_keys=True, default=str).encode())
    for arr in (y, val_labels, days if days is not None else np.zeros(0)):
        h.update(np.ascontiguousarray(arr).tobytes() + b"|")
    for name in sorted(baselines):
        h.update(name.encode() + np.ascontiguousarray(baselines[name]["val"], dtype=np.float64).tobytes()
                 + np.ascontiguousarray(baselines[name]["test"], dtype=np.float64).tobytes())
    return h.hexdigest()


def scored_baselines(y, baselines: dict, chosen: dict, val_labels, prior: float, days,
                     common: dict) -> dict:
    """Each baseline's ``eval.json`` block: test metrics with bootstrap CIs at its
    validation-chosen threshold, its validation log-loss and (tuned ones) the values chosen on
    validation.

    Every run of a horizon shares these inputs (the same windows, labels, baselines, prior,
    resamples), so the result is computed once per process and content: ~0.5 s of each
    run's ~0.6 s evaluation on the default study. The memo is keyed by a hash of every input,
    so a run with other windows or another seed gets its own; callers get a copy."""
    key = _scores_key(y, baselines, chosen, val_labels, prior, days, common)
    if key not in _SCORED:
        out = {}
        for name, probs in baselines.items():
            thr = choose_threshold(val_labels, probs["val"]) if np.ptp(probs["val"]) > 0 else None
            out[name] = evaluate_predictions(y, probs["test"], prior=prior, threshold=thr, days=days,
                                             **common)
            out[name]["val_log_loss"] = float(np.mean(per_sample_log_loss(val_labels, probs["val"])))
            if name in chosen:
                out[name]["chosen_on_validation"] = chosen[name]
        if len(_SCORED) >= _SCORED_MAX:
            _SCORED.pop(next(iter(_SCORED)))
        _SCORED[key] = out
    return copy.deepcopy(_SCORED[key])


def _backtest(prep: PreparedData, ends: np.ndarray, prob: np.ndarray, threshold: float,
              horizon: int, cost_bps: float) -> dict:
    """Backtest over the test days plus the h days after the last window (no signal there),
    so a signal on the last test days can still complete its holding period. ``ends``: one
    asset's test window ends."""
    first, last = int(ends[0]), int(ends[-1]) + horizon
    if not np.array_equal(ends, np.arange(first, last - horizon + 1)):
        raise ValueError("backtest: test windows must be consecutive days (stride 1)")
    close = prep.frame["price_close"].to_numpy()[first:last + 1]
    days = prep.dates.to_numpy()[first:last + 1]
    signal = np.concatenate([prob, np.full(horizon, np.nan)])
    out = backtest(close, days, signal, threshold, horizon, cost_bps)
    # the same positions at 0, 1, 5, 10, 20 bp and the study's cost (docs/compute.md)
    out["cost_sweep"] = cost_sweep(close, days, signal, threshold, horizon, (*COST_SWEEP_BPS, cost_bps))
    return out


def strongest_baseline(base_eval: dict) -> str:
    """The baseline with the lowest VALIDATION log-loss (guard 16: the test split only scores
    what was chosen), among those not fitted on the validation labels themselves."""
    candidates = [n for n in base_eval if n not in FITTED_ON_VALIDATION]
    return min(candidates, key=lambda n: (base_eval[n]["val_log_loss"], n))


def evaluate_final_run(cfg: StudyConfig, prep: PreparedData, spec: RunSpec) -> dict:
    run = RunDir(final_dir(cfg, spec))
    if (done := run.read_eval()) is not None:
        return done
    if run.state != "done":
        raise ValueError(f"{run.path}: run is {run.state!r}, not done; train it before evaluating")
    h, ev = spec.horizon, cfg.evaluate
    run_cfg = design_cfg(cfg, spec.params)  # the run's own inputs, normalisation and context
    data, test = final_data(prepared_for(prep, run_cfg), run_cfg, h)
    device = select_device(cfg.model.device)
    model, ckpt = load_best_model(run, device)
    prob_val = predict_proba(model, data.val, spec.train.eval_batch_size, device, spec.precision)
    threshold = choose_threshold(data.val.labels_at_ends, prob_val)
    prob = predict_proba(model, test, spec.train.eval_batch_size, device, spec.precision)
    y = test.labels_at_ends
    val_prior = float(np.mean(data.val.labels_at_ends))
    baselines, chosen = horizon_baselines(cfg, prep, h, data, test)
    blocks = test_block_len(y, baselines, h, ev.block_len)
    block_len = blocks["block_len"]
    # One resample seed per horizon: every model and baseline of a horizon sees the same days.
    seed = derive_seed("evaluate", cfg.name, h)
    common = dict(horizon=h, block_len=block_len, n_resamples=ev.bootstrap_resamples, seed=seed,
                  ece_bins=ev.ece_bins, std_floor=spec.train.collapse_std, val_prior=val_prior)
    # Panels: intervals resample calendar days with all their assets (same-day rows of
    # correlated assets are not independent evidence); per-asset blocks below are series.
    days = prep.dates.to_numpy()[test.ends].astype("datetime64[D]") if prep.is_panel else None
    result = evaluate_predictions(y, prob, prior=data.prior, threshold=threshold, days=days, **common)
    base_eval = scored_baselines(y, baselines, chosen, data.val.labels_at_ends, data.prior, days, common)
    comparisons = {}
    for name, probs in baselines.items():
        # paired bootstrap + Diebold-Mariano (HAC bandwidth = block_len, HLN), issue 26
        comparisons[name] = compare_forecasts(y, prob, probs["test"], block_len,
                                              ev.bootstrap_resamples, seed, horizon=h, days=days)
    comparisons = holm_within_run(comparisons)
    strongest = strongest_baseline(base_eval)
    dates = prep.dates.to_numpy()[test.ends]
    first_last = (dates.min(), dates.max())
    extra = {}
    if prep.is_panel:  # pooled = equal-weight portfolio of the assets' backtests
        def backtest_of(mask):
            return _backtest(prep, test.ends[mask], prob[mask], threshold, h, ev.cost_bps)

        extra["per_asset"] = per_asset(prep, test, y, prob, baselines, strongest, data.train.ends,
                                       data.train.labels, common, backtest_of)
        bt = pool_backtests({n: b["backtest"] for n, b in extra["per_asset"].items()})
        extra.update(panel_signal(prep, test, prob, h, common))  # ic, topk (evaluate/signal.py)
    else:
        bt = _backtest(prep, test.ends, prob, threshold, h, ev.cost_bps)
    optimum = optimal_log_loss(cfg, prep, test, y, h)
    if optimum is not None:
        extra["optimal_log_loss"] = optimum
    doc = {
        "run_id": spec.run_id, "budget": spec.budget, "horizon": h, "seed": spec.seed,
        "best_epoch": int(ckpt["epoch"]) + 1, "threshold": threshold,
        "train_base_rate": data.prior, "val_base_rate": val_prior, "test_windows": len(test),
        "block_length": blocks, "strongest_baseline": strongest,
        "strongest_baseline_selected_on": "validation",
        "test_first_date": str(first_last[0])[:10], "test_last_date": str(first_last[1])[:10],
        "test": result, "baselines": base_eval, "comparisons": comparisons, "backtest": bt,
        **extra,
    }
    assets = ({"asset": np.asarray(prep.assets)[prep.asset_index[test.ends]]}
              if prep.asset_index is not None else {})  # a panel: each window's asset
    run.write_predictions(ends=test.ends, y=y, prob=prob,
                          dates=dates.astype("datetime64[D]").astype(str), **assets)
    run.write_eval(doc)
    log.info("%s: test log-loss %.4f (skill %.4f)", spec.run_id, result["metrics"]["log_loss"],
             result["metrics"]["skill"])
    return doc
