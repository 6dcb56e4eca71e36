"""The trainer: one training run from window datasets to best weights and final metrics.

Consumes: model args, the ``[train]`` config, a :class:`RunData` (train/validation window
datasets, the training base rate, normalisation statistics) and a run directory.
Produces in the run directory: ``metrics.jsonl`` (one line per epoch, then a ``final``
line), ``status.json`` (kept current), ``ckpt/step-N.pt`` (full resumable state) and
``ckpt/best.pt`` (best weights plus the recipe to serve them: feature columns, normaliser
statistics, label rule, data hashes). Returns the final validation metrics.
Guarantees: every training value reaches the optimiser/scheduler/model (guard 8); the
model returns logits and the sigmoid is applied once, in :func:`predict_proba` (guard 7);
the returned metrics come from the restored best weights (guard 9); a non-finite loss
fails the run with its reason (never a sentinel value); a collapsed model is flagged
(guard 12); an interrupted run resumes exactly (checkpointed RNG, data order a function of
(seed, epoch), position within the epoch).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from finscale.checkpoint import (
    CheckpointError,
    capture_rng,
    commit_best,
    latest_valid_checkpoint,
    load_checkpoint,
    not_fitting,
    prune_step_checkpoints,
    restore_rng,
    resume_best,
    save_best,
    save_checkpoint,
)
from finscale.config import TrainConfig, config_to_dict
from finscale.convergence import run_convergence
from finscale.metrics import classification_metrics, is_collapsed
from finscale.model import ModelArgs, autocast_for, build_model, count_parameters, patch_layout, prepare_model
from finscale.model.compute import flops_per_sample
from finscale.rundir import RunDir
from finscale.windows import WindowDataset, epoch_order

if TYPE_CHECKING:  # a type only: the monitor is built (or not) by the caller
    from finscale.monitor import HardwareMonitor

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict], None]


class TrainingFailed(RuntimeError):
    """The run diverged (non-finite loss); the reason is recorded in status.json."""


class RunInterrupted(RuntimeError):
    """A stop request (signal, STOP file, thermal critical) checkpointed the run and ended it."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass
class RunData:
    """What one run trains and validates on (built by the runner from the study)."""

    train: WindowDataset
    val: WindowDataset
    prior: float                        # training base rate
    normalizer: dict = field(default_factory=dict)
    split_report: list = field(default_factory=list)
    serving: dict = field(default_factory=dict)   # feature columns, label rule, data hashes


@dataclass
class Controls:
    """Outside influences checked at step boundaries (stop requests, the hardware monitor) and
    an observer of progress.

    ``on_event(kind, **info)`` is called with ``train_start`` (run, epoch, max_epochs), ``batch``
    (run, batch, batches) after every batch, ``epoch`` (run, epoch, max_epochs, train_loss,
    val_log_loss, epoch_s) and ``train_end`` (run, best_epoch, val_log_loss); the CLI draws
    progress bars from them. It must be cheap and must not raise.
    """

    should_stop: Callable[[], str | None] = lambda: None   # returns a reason to stop, or None
    monitor: HardwareMonitor | None = None
    on_event: Callable[..., None] | None = None             # progress observer


# --------------------------------------------------------------------------- building blocks

def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on weight matrices only (not norms, biases or positions)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.dim() >= 2 and "pos" not in name and "revin" not in name
        (decay if is_matrix else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    # fused: one kernel for all parameters; the per-parameter loop dominated small CPU models
    # (73 ms vs 1.5 ms per step at 0.2M parameters).
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def fit_compute_budget(cfg: TrainConfig, args: ModelArgs, n_train: int) -> TrainConfig:
    """``train.compute_budget`` > 0 (IsoFLOP studies): max_epochs = the whole number of epochs
    whose training FLOPs come closest to the budget (at least 1); otherwise ``cfg`` unchanged."""
    if cfg.compute_budget <= 0:
        return cfg
    per_epoch = flops_per_sample(args)["train"] * n_train
    return dataclasses.replace(cfg, max_epochs=max(1, round(cfg.compute_budget / per_epoch)))


def steps_per_epoch(n_train: int, cfg: TrainConfig) -> int:
    return math.ceil(math.ceil(n_train / cfg.batch_size) / cfg.grad_accum)


def warmup_steps(total_steps: int, cfg: TrainConfig) -> int:
    return cfg.warmup_steps if cfg.warmup_steps > 0 else round(cfg.warmup_fraction * total_steps)


def build_scheduler(opt: torch.optim.Optimizer, total_steps: int, warmup: int):
    """Linear warm-up over ``warmup`` optimiser steps, then cosine decay to zero."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def loss_fn(cfg: TrainConfig, device: torch.device):
    pos_weight = torch.tensor([cfg.pos_weight], device=device) if cfg.pos_weight > 0 else None

    def bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # fp32 whatever the forward ran in: bf16 logits (8 mantissa bits) would round the loss.
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), y, pos_weight=pos_weight)
    return bce


@torch.no_grad()
def predict_proba(model: torch.nn.Module, ds: WindowDataset, batch_size: int,
                  device: torch.device, precision: str = "fp32") -> np.ndarray:
    """Probabilities for every window of ``ds``: the one place a sigmoid is applied (in fp32;
    ``precision`` is the forward's, the run's own)."""
    model.eval()
    out = np.empty(len(ds), dtype=np.float64)
    for i in range(0, len(ds), batch_size):
        idx = np.arange(i, min(i + batch_size, len(ds)))
        x, _ = ds.get_batch(idx)
        asset = ds.get_assets(idx)
        with autocast_for(device, precision):
            logits = model(x.to(device, non_blocking=True),
                           None if asset is None else asset.to(device, non_blocking=True))
        out[i:i + len(x)] = torch.sigmoid(logits[:, 0].float()).cpu().numpy()
    return out


def evaluate_split(model, ds: WindowDataset, prior: float, cfg: TrainConfig,
                   device: torch.device, precision: str = "fp32") -> dict:
    prob = predict_proba(model, ds, cfg.eval_batch_size, device, precision)
    return classification_metrics(ds.labels_at_ends, prob, prior=prior, threshold=prior)


# --------------------------------------------------------------------------- the trainer

class Trainer:
    """One run; :meth:`fit` trains (resuming if a checkpoint exists) and returns final metrics."""

    def __init__(self, run: RunDir, *, model_args: ModelArgs, cfg: TrainConfig, data: RunData,
                 seed: int, config_hash: str, device: torch.device | None = None,
                 callbacks: Sequence[EpochCallback] = (), controls: Controls | None = None,
                 checkpointing: bool = False, compile: bool = False, precision: str = "fp32"):
        cfg = fit_compute_budget(cfg, model_args, len(data.train))
        self.run, self.args, self.cfg, self.data = run, model_args, cfg, data
        self.seed, self.config_hash = seed, config_hash
        self.device = device or torch.device("cpu")
        self.precision = precision  # concrete "fp32"/"bf16" (spec.precision): the forward's only
        self.callbacks, self.controls = list(callbacks), controls or Controls()
        torch.manual_seed(seed)
        self.model = build_model(model_args).to(self.device)
        # What is called in training (compiled on CUDA when asked); state is saved from self.model.
        self.forward = prepare_model(self.model, self.device, compile=compile, checkpointing=checkpointing)
        self.model.init_output_bias(float(np.clip(data.prior, 1e-4, 1 - 1e-4)))
        self.opt = build_optimizer(self.model, cfg)
        self.steps_per_epoch = steps_per_epoch(len(data.train), cfg)
        self.total_steps = self.steps_per_epoch * cfg.max_epochs
        self.warmup = warmup_steps(self.total_steps, cfg)
        self.sched = build_scheduler(self.opt, self.total_steps, self.warmup)
        self.loss = loss_fn(cfg, self.device)
        self.state: dict = {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_epoch": -1,
                      "bad_epochs": 0, "loss_sum": 0.0, "loss_n": 0}

    # ---- state -------------------------------------------------------------------------
    def _checkpoint_state(self) -> dict:
        return {"model_args": self.args.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "trainer": dict(self.state), "rng": capture_rng(), "seed": self.seed,
                "normalizer": json.dumps(self.data.normalizer), "config_hash": self.config_hash,
                "run_config": json.dumps(self._run_config())}

    def _run_config(self) -> dict:
        """What a resume must match, readable: named in the refusal when the hash differs."""
        return {"model_args": self.args.to_dict(), "train": config_to_dict(self.cfg),
                "precision": self.precision}

    def _serving(self) -> str:
        """best.pt's recipe for scoring new data (JSON text: loads with weights_only=True)."""
        return json.dumps({**self.data.serving, "normalizer": self.data.normalizer,
                           "eval_batch_size": self.cfg.eval_batch_size, "precision": self.precision})

    def save_step(self) -> None:
        save_checkpoint(self._checkpoint_state(), self.run.step_ckpt(self.state['step']))
        commit_best(self.run.kept_best_ckpt)
        prune_step_checkpoints(self.run.ckpt)

    def _resume(self) -> bool:
        ckpt = latest_valid_checkpoint(self.run.ckpt, require="step")
        if ckpt is None:
            # Starting over (killed before the first step checkpoint, or every one unreadable):
            # epoch lines of the earlier attempt would be logged twice.
            if self.run.file("metrics.jsonl").exists():
                self.run.truncate_metrics(0)
            return False
        if ckpt["config_hash"] != self.config_hash:
            old = json.loads(ckpt.get("run_config", "{}"))
            raise ValueError(f"{self.run.path}: checkpoint was written by config "
                             f"{ckpt['config_hash'][:12]}, this run is {self.config_hash[:12]} "
                             f"({config_difference(old, self._run_config())}); "
                             "refusing to resume a different configuration")
        with not_fitting(ckpt["_path"]):  # a file that loads but does not fit was edited
            state = _trainer_state(ckpt["trainer"])
        self._check_best(state["best_epoch"])
        with not_fitting(ckpt["_path"]):
            self.model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            restore_rng(ckpt["rng"])
        self.state = state
        self.run.truncate_metrics(self.state["epoch"])
        log.info("%s: resumed at epoch %d batch %d", self.run.path.name, self.state["epoch"],
                 self.state["batch"])
        return True

    def _check_best(self, best_epoch: int) -> None:
        """On resume, best.pt must be the one this run wrote at its best epoch: it is what
        the final metrics will come from (CheckpointError naming it otherwise;
        :func:`resume_best` restores the earlier one a kill between a new best.pt and the
        step checkpoint left kept). Loads it into the model, which the step checkpoint's
        weights then replace."""
        if best_epoch < 0:
            return
        best = resume_best(self.run.best_ckpt, self.run.kept_best_ckpt, best_epoch, self.config_hash)
        with not_fitting(self.run.best_ckpt):
            self.model.load_state_dict(best["model"])

    # ---- loop --------------------------------------------------------------------------
    def fit(self) -> dict:
        try:
            resumed = self._resume()
        except CheckpointError as exc:  # tampered or non-finite: a failed run naming the file
            self.run.write_status("failed", reason=str(exc), epoch=self.state["epoch"])
            raise TrainingFailed(str(exc)) from None
        self.run.write_status("running", epoch=self.state["epoch"], resumed=resumed)
        self._emit("train_start", epoch=self.state["epoch"], max_epochs=self.cfg.max_epochs)
        try:
            while self.state["epoch"] < self.cfg.max_epochs and not self._early_stopped():
                self._train_epoch()
            return self._finish()
        except TrainingFailed as exc:
            self.run.write_status("failed", reason=str(exc), epoch=self.state["epoch"])
            raise
        except CheckpointError as exc:  # best.pt tampered while the run was interrupted
            self.run.write_status("failed", reason=str(exc), epoch=self.state["epoch"])
            raise TrainingFailed(str(exc)) from None
        except OSError as exc:  # disk full, read-only or vanished directory
            self._record_failure(f"storage error: {exc}")
            raise

    def _record_failure(self, reason: str) -> None:
        """Best effort: say why in status.json (the failed write's temp file is gone by now,
        so a full disk usually has room for it); never mask the original error."""
        try:
            self.run.write_status("failed", reason=reason, epoch=self.state["epoch"])
        except OSError as exc:
            log.error("%s: cannot record the failure in status.json (%s)", self.run.path, exc)

    def _early_stopped(self) -> bool:
        return self.state["bad_epochs"] >= self.cfg.patience

    def _convergence(self) -> dict:
        """Guard 14: the monitored validation score per epoch, judged by finscale.convergence."""
        key = "val_log_loss" if self.cfg.monitor_metric == "val_loss" else "val_auc"
        scores = [m.get(key) for m in self.run.read_metrics() if m.get("event") == "epoch"]
        if key == "val_auc":  # lower is better everywhere in the rule
            scores = [None if v is None else 1.0 - v for v in scores]
        return run_convergence(scores, early_stopped=self._early_stopped(), patience=self.cfg.patience)

    def _train_epoch(self) -> None:
        st, cfg = self.state, self.cfg
        order = epoch_order(len(self.data.train), self.seed, st["epoch"])
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        t0, data_s, compute_s = time.perf_counter(), 0.0, 0.0
        self.model.train()
        self._emit("batch", batch=st["batch"], batches=len(batches))
        while st["batch"] < len(batches):
            self._obey_controls()
            t1 = time.perf_counter()
            x, y = self.data.train.get_batch(batches[st["batch"]])
            asset = self.data.train.get_assets(batches[st["batch"]])  # None off panels
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            asset = None if asset is None else asset.to(self.device, non_blocking=True)
            t2 = time.perf_counter()
            self._train_step(x, y, asset, last=st["batch"] == len(batches) - 1)
            data_s += t2 - t1
            compute_s += time.perf_counter() - t2
            self._emit("batch", batch=st["batch"], batches=len(batches))
        train_s = time.perf_counter() - t0
        metrics = evaluate_split(self.model, self.data.val, self.data.prior, cfg, self.device,
                                 self.precision)
        self._end_epoch(metrics, train_s, data_s, compute_s, time.perf_counter() - t0)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, asset: torch.Tensor | None,
                    last: bool) -> None:
        st, cfg = self.state, self.cfg
        with autocast_for(self.device, self.precision):
            logits = self.forward(x, asset)
        loss = self.loss(logits, y)  # fp32: outside autocast, on float logits
        if not torch.isfinite(loss):
            raise TrainingFailed(f"non-finite training loss ({loss.item()}) at epoch "
                                 f"{st['epoch'] + 1}, batch {st['batch'] + 1}")
        (loss / cfg.grad_accum).backward()
        st["loss_sum"] += loss.item() * len(y)
        st["loss_n"] += len(y)
        st["batch"] += 1
        if st["batch"] % cfg.grad_accum == 0 or last:
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.sched.step()
            st["step"] += 1

    def _obey_controls(self) -> None:
        """Pause while hot; on a stop request checkpoint mid-epoch and end the run."""
        reason, status = self.controls.should_stop(), "stopped"
        mon = self.controls.monitor
        if reason is None and mon is not None:
            decision = mon.check()
            if decision == "pause":
                self.run.write_status("paused", reason="thermal warning", epoch=self.state["epoch"])
                decision = mon.wait_until_cool()
                self.run.write_status("running", epoch=self.state["epoch"])
            if decision == "stop":
                reason, status = "critical temperature", "thermal_stop"
        if reason is not None:
            self.save_step()
            self.run.write_status(status, reason=reason, epoch=self.state["epoch"])
            raise RunInterrupted(status, reason)

    def _end_epoch(self, metrics: dict, train_s: float, data_s: float, compute_s: float,
                   epoch_s: float) -> None:
        st, cfg = self.state, self.cfg
        key = "log_loss" if cfg.monitor_metric == "val_loss" else "auc"
        value = metrics[key] if metrics[key] is not None else math.nan
        score = value if key == "log_loss" else -value  # lower is better
        improved = st["best"] is None or score < st["best"] - cfg.min_delta
        if improved:
            st["best"], st["best_epoch"], st["bad_epochs"] = score, st["epoch"], 0
            save_best({"model_args": self.args.to_dict(), "model": self.model.state_dict(),
                       "epoch": st["epoch"], "metrics": json.dumps(metrics),
                       "config_hash": self.config_hash, "serving": self._serving()},
                      self.run.best_ckpt, self.run.kept_best_ckpt)
        else:
            st["bad_epochs"] += 1
        line = {"event": "epoch", "epoch": st["epoch"] + 1, "step": st["step"],
                "train_loss": st["loss_sum"] / max(1, st["loss_n"]),
                "lr": self.sched.get_last_lr()[0], "epoch_s": epoch_s, "train_s": train_s,
                "data_s": data_s, "compute_s": compute_s,
                "samples_per_s": len(self.data.train) / max(train_s, 1e-9),
                "improved": improved, **{f"val_{k}": v for k, v in metrics.items()},
                # cumulative training FLOPs after this epoch (docs/compute.md)
                "train_flops": self._epoch_flops() * (st["epoch"] + 1)}
        st.update(epoch=st["epoch"] + 1, batch=0, loss_sum=0.0, loss_n=0)
        self.run.append_metrics(line)  # before the checkpoint: resume truncates to it
        if st["epoch"] % cfg.checkpoint_every == 0 or st["epoch"] == cfg.max_epochs:
            self.save_step()
        self.run.write_status("running", epoch=st["epoch"])
        self._emit("epoch", epoch=st["epoch"], max_epochs=cfg.max_epochs, train_loss=line["train_loss"],
                   val_log_loss=line.get("val_log_loss"), epoch_s=epoch_s)
        for callback in self.callbacks:
            callback(st["epoch"], line)

    def _emit(self, kind: str, **info) -> None:
        if self.controls.on_event is not None:
            self.controls.on_event(kind, run=self.run.path.name, **info)

    def _epoch_flops(self) -> int:
        """Training FLOPs of one epoch: matmul FLOPs per sample (forward + backward,
        :func:`finscale.model.flops_per_sample`) x training windows."""
        return flops_per_sample(self.args)["train"] * len(self.data.train)

    def _patches_per_window(self) -> int:
        a = self.args
        return patch_layout(a.context_len, a.patch_len, a.stride)[0]

    def _finish(self) -> dict:
        """Restore the best weights, recompute validation metrics from them, flag collapse."""
        path = self.run.best_ckpt
        best = load_checkpoint(path, map_location=self.device, require="best")
        with not_fitting(path):
            self.model.load_state_dict(best["model"])
        metrics = evaluate_split(self.model, self.data.val, self.data.prior, self.cfg, self.device,
                                 self.precision)
        collapsed, why = is_collapsed(metrics, self.cfg.collapse_std)
        converged = self._convergence()
        final = {"event": "final", "best_epoch": best["epoch"] + 1,
                 "epochs_run": self.state["epoch"], "early_stopped": self._early_stopped(),
                 "collapsed": collapsed, "collapse_reason": why, **converged,
                 "params": count_parameters(self.model), "train_base_rate": self.data.prior,
                 "train_windows": len(self.data.train), "val_windows": len(self.data.val),
                 # data size D, measured like parameters: samples and patch tokens seen per epoch
                 "train_tokens": len(self.data.train) * self._patches_per_window(),
                 **{f"val_{k}": v for k, v in metrics.items()}}
        if collapsed:
            log.warning("%s: collapsed model (%s)", self.run.path.name, why)
        if not converged["converged"]:
            log.info("%s: not converged (%s)", self.run.path.name, converged["convergence_reason"])
        if self.controls.monitor is not None:
            final["hardware"] = self.controls.monitor.summary()  # max temp, seconds paused
        self.run.append_metrics(final)
        self.run.write_status("done", epoch=self.state["epoch"], collapsed=collapsed,
                              converged=converged["converged"])
        # A finished run never resumes: its step checkpoints (weights + AdamW state, ~16 bytes
        # per parameter) would only cost disk; best.pt is what evaluation reads.
        prune_step_checkpoints(self.run.ckpt, keep=0)
        commit_best(self.run.kept_best_ckpt)
        self._emit("train_end", best_epoch=final["best_epoch"], val_log_loss=final.get("val_log_loss"))
        return final


TRAINER_INTS = ("epoch", "batch", "step", "best_epoch", "bad_epochs", "loss_n")


def _trainer_state(saved: dict) -> dict:
    """The trainer counters of a step checkpoint, type-checked (KeyError/TypeError if edited)."""
    state = dict(saved)
    for key in TRAINER_INTS:
        if isinstance(state[key], bool) or not isinstance(state[key], int):
            raise TypeError(f"trainer entry {key!r} is {type(state[key]).__name__}, expected int")
    if not isinstance(state["loss_sum"], float) or not (state["best"] is None or isinstance(state["best"], float)):
        raise TypeError("trainer entries 'loss_sum'/'best' are not numbers")
    return state


def config_difference(old: dict, new: dict, limit: int = 3) -> str:
    """The first ``limit`` differing keys of two nested dicts, as "key: old -> new"."""
    def flat(d: dict, prefix: str = "") -> dict:
        out: dict = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out
    a, b = flat(old), flat(new)
    diffs = [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
             for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    if not diffs:
        return "same model and training values; other run values differ"
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


def read_final(run: RunDir) -> dict | None:
    """The ``final`` line of a finished run's metrics.jsonl, if any."""
    finals = [m for m in run.read_metrics() if m.get("event") == "final"]
    return finals[-1] if finals else None
