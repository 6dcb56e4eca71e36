"""Checkpoint contract: atomic files, latest-valid fallback, keep-k pruning, refusing to resume
a different configuration. Real torch files and a real (small) trainer throughout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finscale.checkpoint import (
    latest_valid_checkpoint,
    load_checkpoint,
    prune_step_checkpoints,
    save_checkpoint,
    step_checkpoints,
)
from finscale.config import TrainConfig
from finscale.model import ModelArgs
from finscale.rundir import RunDir
from finscale.train import Controls, RunData, RunInterrupted, Trainer
from finscale.windows import WindowDataset

L, C = 16, 3


def synthetic(n=600):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n, C)).astype(np.float32)
    y = (values[:, 0] + 0.3 * rng.normal(size=n) > 0.5).astype(np.float32)
    ends = np.arange(L - 1, n)
    cut = int(len(ends) * 0.75)
    return RunData(train=WindowDataset(values, y, ends[:cut], L), val=WindowDataset(values, y, ends[cut:], L),
                   prior=float(y[ends[:cut]].mean()))


def args():
    return ModelArgs(n_inputs=C, context_len=L, patch_len=4, stride=4, d_model=16, num_layers=1,
                     num_heads=2, d_ff=32, dropout=0.1, channel_mode="mixed", revin=False)


def _steps(tmp_path, steps):
    for step in steps:
        save_checkpoint({"step": step, "weights": torch.full((3,), float(step))},
                        tmp_path / f"step-{step}.pt")


def test_corrupt_latest_falls_back_to_previous_valid(tmp_path):
    _steps(tmp_path, [1, 2, 3])
    latest = tmp_path / "step-3.pt"
    latest.write_bytes(latest.read_bytes()[:40])  # a torn write
    with pytest.raises(ValueError, match="step-3.pt: unreadable"):
        load_checkpoint(latest)
    assert latest_valid_checkpoint(tmp_path)["step"] == 2
    (tmp_path / "step-2.pt").write_bytes(b"not a checkpoint")
    assert latest_valid_checkpoint(tmp_path)["step"] == 1
    (tmp_path / "step-1.pt").unlink()
    assert latest_valid_checkpoint(tmp_path) is None


def test_keep_k_pruning_keeps_the_newest(tmp_path):
    _steps(tmp_path, [5, 10, 20, 40, 80])
    (tmp_path / "best.pt").write_bytes(b"x")  # never a step checkpoint: never pruned
    prune_step_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in step_checkpoints(tmp_path)] == [40, 80]  # numeric, not text, order
    prune_step_checkpoints(tmp_path, keep=0)
    assert step_checkpoints(tmp_path) == [] and (tmp_path / "best.pt").exists()


def _trainer(tmp_path, name, *, lr=3e-3, config_hash="h" * 64, stop_after=None):
    cfg = TrainConfig(max_epochs=3, batch_size=32, lr=lr, patience=10, checkpoint_every=1)
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return "test stop" if stop_after is not None and calls["n"] == stop_after else None
    return Trainer(RunDir(tmp_path / name).create(), model_args=args(), cfg=cfg, data=synthetic(),
                   seed=0, config_hash=config_hash,
                   controls=Controls(should_stop=should_stop))


def test_resume_from_previous_checkpoint_when_latest_is_corrupt(tmp_path):
    straight = _trainer(tmp_path, "straight").fit()
    stopped = _trainer(tmp_path, "run", stop_after=40)  # 14 steps per epoch: stops in epoch 3
    with pytest.raises(RunInterrupted):
        stopped.fit()
    found = step_checkpoints(stopped.run.ckpt)
    assert len(found) == 2  # the trainer keeps two step checkpoints
    found[-1][1].write_bytes(found[-1][1].read_bytes()[:100])
    resumed = _trainer(tmp_path, "run").fit()  # from the older, valid checkpoint
    assert resumed["val_log_loss"] == straight["val_log_loss"]
    assert step_checkpoints(stopped.run.ckpt) == []  # a finished run keeps only best.pt


def test_resume_with_a_changed_config_is_refused_naming_the_difference(tmp_path):
    with pytest.raises(RunInterrupted):
        _trainer(tmp_path, "run", stop_after=20).fit()
    with pytest.raises(ValueError, match=r"train\.lr: 0\.003 -> 0\.001.*refusing to resume"):
        _trainer(tmp_path, "run", lr=1e-3, config_hash="g" * 64).fit()
