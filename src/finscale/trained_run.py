"""Serve a finished run from its directory alone: model, config, metrics, predictions, scoring.

Consumes: a run directory — ``ckpt/best.pt`` (weights, model args and the ``serving`` recipe:
feature set and columns, window length, normaliser statistics, label rule, training-data
hashes), ``config.json``, ``metrics.jsonl`` and, once evaluated, ``predictions.npz``.
Produces: a :class:`Run`; :meth:`Run.predict` turns a daily OHLCV frame into one probability
per window (features, normalisation and windows rebuilt from the checkpoint, not the study).
Guarantees: the checkpoint loads with ``weights_only=True``; data whose feature columns differ
from the checkpoint's, or that is too short for the features' warm-up plus one window, is
refused with a message saying what is missing; scoring the run's own data over its test
dates reproduces its stored test predictions exactly (same windows, batches and weights).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from finscale.checkpoint import CheckpointError, load_checkpoint
from finscale.config import TargetConfig
from finscale.data import fetch, parse_source, validate_ohlcv
from finscale.features import build_features, input_columns, set_lookback
from finscale.labels import make_labels
from finscale.model import ModelArgs, build_model
from finscale.rundir import RunDir
from finscale.train import predict_proba
from finscale.windows import Normalizer, WindowDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """A finished run, loaded from its directory (see :func:`load_run`)."""

    path: Path
    config: dict                        # config.json: the fully resolved run config
    model: torch.nn.Module              # best weights, eval mode
    serving: dict                       # best.pt's recipe (inputs, normaliser, label rule, data)
    metrics: pd.DataFrame               # one row per epoch (metrics.jsonl)
    final: dict | None                  # the final line (validation metrics of the best weights)
    predictions: pd.DataFrame | None    # test predictions (date, end, prob, label[, asset]) once evaluated
    device: torch.device = torch.device("cpu")

    @property
    def precision(self) -> str:
        """The forward's precision the run trained in (its stored predictions were made in
        it); fp32 for runs from before the key and on MPS (no bf16 autocast there)."""
        recorded = self.serving.get("precision", "fp32")
        return recorded if self.device.type in ("cpu", "cuda") else "fp32"

    @property
    def assets(self) -> list[str] | None:
        """The asset names of a run trained on a panel (each has its own normaliser), else None."""
        per_asset = self.serving["normalizer"].get("per_asset")
        return None if per_asset is None else list(per_asset)

    def predict(self, ohlcv: pd.DataFrame, *, start: str | None = None, end: str | None = None,
                batch_size: int | None = None, asset: str | None = None) -> pd.DataFrame:
        """Probability of the run's target for every window of ``ohlcv`` ending between
        ``start`` and ``end`` (ISO dates, inclusive; default: every window).

        ``ohlcv``: daily bars with Open, High, Low, Close[, Volume] and the dates either as a
        ``Date`` (or ``date``) column or as a DatetimeIndex (what ``yfinance`` returns; its
        one-ticker column MultiIndex is accepted too). Returns one row per window:

        - ``date``: the day of the window's last bar (the forecast is made at its close);
        - ``run_id``: the run that scored it; ``horizon``: the target's horizon in days;
        - ``prob``: the predicted probability that the target happens over the next
          ``horizon`` days (e.g. the High reaches Close x (1 + threshold));
        - ``label``: whether it did (1.0/0.0), NaN where the next ``horizon`` days are not in
          the data yet;
        - ``end``: the row of the window's last bar among the bars left after the features'
          warm-up (what ``Run.predictions`` records, to match windows exactly).

        A run trained on a panel needs ``asset``: which of its assets these bars are (its
        normaliser statistics); the frame then has an ``asset`` column too."""
        bars = as_bars(ohlcv)
        raw = validate_ohlcv(bars, origin="data to score", volume_optional="Volume" not in bars)
        return self._score(raw, start, end, batch_size, asset)

    def _normalizer(self, asset: str | None) -> Normalizer:
        record, assets = self.serving["normalizer"], self.assets
        if assets is None:
            if asset is not None:
                raise ValueError(f"asset {asset!r}: this run was trained on one series, not a panel; "
                                 "score it without an asset")
            return Normalizer.from_dict(record)
        if asset is None:
            raise ValueError(f"this run was trained on a panel of {', '.join(assets)}: name the "
                             "asset whose bars these are (--asset NAME); each asset was normalised "
                             "with its own training statistics")
        if asset not in assets:
            raise ValueError(f"asset {asset!r}: not in this run's panel ({', '.join(assets)})")
        return Normalizer.from_dict(record["per_asset"][asset])

    def _score(self, raw: pd.DataFrame, start, end, batch_size, asset=None) -> pd.DataFrame:
        s = self.serving
        norm = self._normalizer(asset)  # before any work: a missing asset is a user error
        frame = self._features(raw)
        values = norm.transform(
            frame[s["inputs"]].to_numpy(dtype=np.float32))
        target = TargetConfig(kind=s["target"]["kind"], threshold=s["target"]["threshold"],
                              price=s["target"]["price"], horizons=(s["horizon"],))
        y = make_labels(frame, target, s["horizon"])
        ends = _window_ends(frame["Date"], s["context_len"], start, end)
        # a panel asset's index (its row of an asset embedding), in the panel's order
        index = None if asset is None or self.assets is None else np.full(len(values), self.assets.index(asset))
        ds = WindowDataset(values, np.zeros(len(values), dtype=np.float32), ends, s["context_len"], index)
        prob = predict_proba(self.model, ds, batch_size or s["eval_batch_size"], self.device,
                             self.precision)
        out = pd.DataFrame({"date": frame["Date"].to_numpy()[ends], "run_id": self.path.name,
                            "horizon": int(s["horizon"]), "prob": prob, "label": y[ends], "end": ends})
        if asset is not None:
            out["asset"] = asset
        return out

    def _features(self, raw: pd.DataFrame) -> pd.DataFrame:
        s = self.serving
        need = set_lookback(s["feature_set"]) + s["context_len"]
        if len(raw) < need:
            raise ValueError(f"data to score: {len(raw)} rows; feature set {s['feature_set']!r} "
                             f"needs {set_lookback(s['feature_set'])} warm-up rows plus a "
                             f"{s['context_len']}-day window ({need} rows)")
        columns = input_columns(s["feature_set"])
        if columns != s["inputs"]:
            raise ValueError(f"feature set {s['feature_set']!r} now has columns {columns}, the "
                             f"checkpoint was trained on {s['inputs']}: install the finscale "
                             "version that trained it")
        return build_features(raw, s["feature_set"])[0]

    def predict_source(self, source: str, **kw) -> pd.DataFrame:
        """:meth:`predict` on a data source (``sample:sp500``, ``file:PATH``, ``yfinance:T``)."""
        self._normalizer(kw.get("asset"))  # a panel run without its asset: fail before fetching
        raw = fetch(parse_source(source), adjusted=bool(self.serving["data"].get("adjusted")))
        return self._score(raw, kw.get("start"), kw.get("end"), kw.get("batch_size"), kw.get("asset"))


def as_bars(ohlcv: pd.DataFrame) -> pd.DataFrame:
    """Daily bars with a ``Date`` column, from a frame that has one (``Date`` or ``date``) or
    that is indexed by date; a yfinance one-ticker column MultiIndex (Price, Ticker) is
    flattened. Anything else is left for validation to name."""
    frame = ohlcv
    if isinstance(frame.columns, pd.MultiIndex):
        tickers = frame.columns.get_level_values(-1).unique()
        if len(tickers) != 1:
            raise ValueError(f"data to score: columns for {len(tickers)} tickers "
                             f"({', '.join(map(str, tickers[:5]))}); pass one ticker's bars")
        frame = frame.droplevel(-1, axis=1)
    if "Date" not in frame.columns:
        if "date" in frame.columns:
            frame = frame.rename(columns={"date": "Date"})
        elif isinstance(frame.index, pd.DatetimeIndex):
            frame = frame.rename_axis("Date").reset_index()
            if frame["Date"].dt.tz is not None:  # yfinance dates carry the exchange's zone
                frame["Date"] = frame["Date"].dt.tz_localize(None)
    return frame


def _window_ends(dates: pd.Series, context_len: int, start, end) -> np.ndarray:
    dates = pd.to_datetime(dates).to_numpy()
    keep = np.arange(len(dates)) >= context_len - 1
    if start:
        keep &= dates >= np.datetime64(pd.Timestamp(start))
    if end:
        keep &= dates <= np.datetime64(pd.Timestamp(end))
    ends = np.flatnonzero(keep)
    if not len(ends):
        raise ValueError(f"data to score: no {context_len}-day window ends between "
                         f"{start or 'the start'} and {end or 'the end'}")
    return ends


def load_run(run_dir: str | Path, *, device: str | torch.device = "cpu") -> Run:
    """Load a finished run from its directory (no study file needed).

    Raises ValueError naming the file when the run has no best checkpoint, or one written
    before checkpoints carried their serving recipe."""
    run = RunDir(Path(run_dir))
    device = torch.device(device)
    model, ckpt = load_best_model(run, device)
    if "serving" not in ckpt:
        raise ValueError(f"{run.best_ckpt}: written without the serving recipe (feature columns, "
                         "normaliser); retrain the run with this finscale version to serve it")
    lines = run.read_metrics()
    finals = [m for m in lines if m.get("event") == "final"]
    return Run(path=run.path, config=run.read_config() or {}, model=model,
               serving=json.loads(ckpt["serving"]),
               metrics=pd.DataFrame([m for m in lines if m.get("event") == "epoch"]),
               final=finals[-1] if finals else None, predictions=_stored_predictions(run),
               device=device)


def load_best_model(run: RunDir, device) -> tuple[torch.nn.Module, dict]:
    """The run's best-validation model (``ckpt/best.pt``), in eval mode, and its checkpoint;
    a ValueError naming the file when there is none. The one loader of a trained model: the
    evaluate stage and serving both use it (guard 9: reported metrics come from these weights)."""
    path = run.best_ckpt
    if not path.exists():
        raise ValueError(f"{path}: no best checkpoint; is {run.path} a trained run directory?")
    ckpt = load_checkpoint(path, map_location=device, require="best")
    try:
        model = build_model(ModelArgs.from_dict(ckpt["model_args"])).to(device)
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:  # a tampered or foreign file
        raise CheckpointError(f"checkpoint {path}: does not fit its model "
                              f"({str(exc).splitlines()[0][:200]})") from None
    return model.eval(), ckpt


def _stored_predictions(run: RunDir) -> pd.DataFrame | None:
    path = run.predictions
    if not path.exists():
        return None
    with np.load(path) as z:
        frame = pd.DataFrame({"date": pd.to_datetime(z["dates"]), "end": z["ends"],
                              "prob": z["prob"], "label": z["y"]})
        if "asset" in z.files:  # panels: each window's asset ("end" indexes the pooled rows)
            frame["asset"] = z["asset"]
        return frame
