"""The evaluate phase: score each finished final run on the test split, exactly once.

Consumes: a done final run (``ckpt/best.pt``), the prepared data and the ``[evaluate]``
config. Produces ``eval.json`` (test metrics with block-bootstrap CIs, calibration, the
validation-chosen threshold, baselines on the identical windows, paired tests, backtest)
and ``predictions.npz`` (test window ends, labels, probabilities) in the run directory.
Guarantees: the test split is touched only here, after training (guard 11); an existing
``eval.json`` is never recomputed; baselines are fitted once per horizon on the same
training windows and cached under ``runs/<study>/baselines/``.
"""

from __future__ import annotations

import logging

import numpy as np

from finscale.checkpoint import load_checkpoint
from finscale.config import StudyConfig
from finscale.evaluate import (
    backtest,
    choose_threshold,
    default_block_len,
    evaluate_predictions,
    fit_baselines,
    paired_bootstrap_test,
)
from finscale.model import ModelArgs, build_model, select_device
from finscale.prepare import PreparedData, final_data
from finscale.repro import derive_seed
from finscale.rundir import RunDir
from finscale.spec import RunSpec, final_dir
from finscale.train import RunData, predict_proba
from finscale.windows import WindowDataset

log = logging.getLogger(__name__)


def load_best_model(run: RunDir, device):
    ckpt = load_checkpoint(run.ckpt / "best.pt", map_location=device)
    model = build_model(ModelArgs.from_dict(ckpt["model_args"])).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def horizon_baselines(cfg: StudyConfig, prep: PreparedData, horizon: int, data: RunData,
                      test: WindowDataset) -> dict[str, dict[str, np.ndarray]]:
    """Baseline probabilities on val/test for this horizon (fitted once, then cached)."""
    path = cfg.study_dir / "baselines" / f"h{horizon}.npz"
    keys = {"train": data.train.ends, "val": data.val.ends, "test": test.ends}
    if path.exists():
        cached = np.load(path)
        if all(np.array_equal(cached[f"ends_{k}"], v) for k, v in keys.items()):
            return {name: {s: cached[f"{name}__{s}"] for s in ("val", "test")}
                    for name in {k.split("__")[0] for k in cached.files if "__" in k}}
    X = prep.values  # features at day t, raw: the logistic pipeline standardises on train rows
    probs = fit_baselines(X[data.train.ends], data.train.labels_at_ends,
                          {"val": X[data.val.ends], "test": X[test.ends]}, seed=cfg.seeds[0])
    flat = {f"ends_{k}": v for k, v in keys.items()}
    flat.update({f"{name}__{s}": p for name, d in probs.items() for s, p in d.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    from finscale.files import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **flat)
    return probs


def _backtest(prep: PreparedData, test: WindowDataset, prob: np.ndarray, threshold: float,
              horizon: int, cost_bps: float) -> dict:
    """Backtest over the test days plus the h days after the last window (no signal there),
    so a signal on the last test days can still complete its holding period."""
    first, last = int(test.ends[0]), int(test.ends[-1]) + horizon
    if not np.array_equal(test.ends, np.arange(first, last - horizon + 1)):
        raise ValueError("backtest: test windows must be consecutive days (stride 1)")
    close = prep.frame["price_close"].to_numpy()[first:last + 1]
    days = prep.dates.to_numpy()[first:last + 1]
    signal = np.concatenate([prob, np.full(horizon, np.nan)])
    return backtest(close, days, signal, threshold, horizon, cost_bps)


def evaluate_final_run(cfg: StudyConfig, prep: PreparedData, spec: RunSpec) -> dict:
    run = RunDir(final_dir(cfg, spec))
    if (done := run.read_json("eval.json")) is not None:
        return done
    if run.state != "done":
        raise ValueError(f"{run.path}: run is {run.state!r}, not done; train it before evaluating")
    h, ev = spec.horizon, cfg.evaluate
    data, test = final_data(prep, cfg, h)
    device = select_device(cfg.model.device)
    model, ckpt = load_best_model(run, device)
    prob_val = predict_proba(model, data.val, spec.train.eval_batch_size, device)
    threshold = choose_threshold(data.val.labels_at_ends, prob_val)
    prob = predict_proba(model, test, spec.train.eval_batch_size, device)
    y = test.labels_at_ends
    block_len = default_block_len(h, ev.block_len)
    # One resample seed per horizon: every model and baseline of a horizon sees the same days.
    seed = derive_seed("evaluate", cfg.name, h)
    common = dict(horizon=h, block_len=block_len, n_resamples=ev.bootstrap_resamples, seed=seed,
                  ece_bins=ev.ece_bins, std_floor=spec.train.collapse_std)
    result = evaluate_predictions(y, prob, prior=data.prior, threshold=threshold, **common)
    baselines = horizon_baselines(cfg, prep, h, data, test)
    base_eval, comparisons = {}, {}
    for name, probs in baselines.items():
        base_thr = choose_threshold(data.val.labels_at_ends, probs["val"]) \
            if np.ptp(probs["val"]) > 0 else None
        base_eval[name] = evaluate_predictions(y, probs["test"], prior=data.prior,
                                               threshold=base_thr, **common)
        comparisons[name] = paired_bootstrap_test(y, prob, probs["test"], block_len,
                                                  ev.bootstrap_resamples, seed, horizon=h)
    dates = prep.dates.to_numpy()[test.ends]
    bt = _backtest(prep, test, prob, threshold, h, ev.cost_bps)
    doc = {
        "run_id": spec.run_id, "budget": spec.budget, "horizon": h, "seed": spec.seed,
        "best_epoch": int(ckpt["epoch"]) + 1, "threshold": threshold,
        "train_base_rate": data.prior, "test_windows": len(test),
        "test_first_date": str(dates[0])[:10], "test_last_date": str(dates[-1])[:10],
        "test": result, "baselines": base_eval, "comparisons": comparisons, "backtest": bt,
    }
    np.savez(run.file("predictions.npz"), ends=test.ends, y=y, prob=prob,
             dates=dates.astype("datetime64[D]").astype(str))
    run.write_json("eval.json", doc)
    log.info("%s: test log-loss %.4f (skill %.4f)", spec.run_id, result["metrics"]["log_loss"],
             result["metrics"]["skill"])
    return doc
