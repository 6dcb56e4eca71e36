"""Trainer behaviour on real torch with small synthetic window datasets."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from finscale.checkpoint import load_checkpoint
from finscale.config import TrainConfig
from finscale.model import ModelArgs
from finscale.rundir import RunDir
from finscale.train import RunData, Trainer, TrainingFailed, build_scheduler, predict_proba, read_final
from finscale.windows import WindowDataset

L, C = 16, 3


def synthetic(n=600, seed=0, signal_strength=1.0):
    """A series whose label depends on the last bar, so a model can learn it."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, C)).astype(np.float32)
    y = (values[:, 0] * signal_strength + 0.3 * rng.normal(size=n) > 0.5).astype(np.float32)
    ends = np.arange(L - 1, n)
    cut = int(len(ends) * 0.75)
    train = WindowDataset(values, y, ends[:cut], L)
    val = WindowDataset(values, y, ends[cut:], L)
    return RunData(train=train, val=val, prior=float(y[ends[:cut]].mean()))


def args(**kw):
    base = dict(n_inputs=C, context_len=L, patch_len=4, stride=4, d_model=16, num_layers=1,
                num_heads=2, d_ff=32, dropout=0.1, channel_mode="mixed", revin=False)
    return ModelArgs(**{**base, **kw})


def trainer(tmp_path, cfg=None, data=None, seed=0, name="run", **kw):
    cfg = cfg or TrainConfig(max_epochs=3, batch_size=32, lr=3e-3, patience=10)
    return Trainer(RunDir(tmp_path / name).create(), model_args=args(**kw), cfg=cfg,
                   data=data or synthetic(), seed=seed, config_hash="h" * 64)


def test_every_training_value_reaches_optimiser_scheduler_model(tmp_path):
    cfg = TrainConfig(max_epochs=4, batch_size=50, lr=7e-3, weight_decay=0.123, beta1=0.8,
                      beta2=0.95, warmup_steps=5, dropout=0.37, grad_accum=2)
    t = trainer(tmp_path, cfg, dropout=cfg.dropout)
    groups = {g["name"]: g for g in t.opt.param_groups}
    assert groups["decay"]["weight_decay"] == 0.123 and groups["no_decay"]["weight_decay"] == 0.0
    assert all(g["betas"] == (0.8, 0.95) for g in t.opt.param_groups)
    assert all(g["initial_lr"] == 7e-3 for g in t.opt.param_groups)
    # Norms, biases and positions are not decayed; weight matrices are.
    decayed = {id(p) for p in groups["decay"]["params"]}
    for name, p in t.model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2 and "pos" not in name), name
    assert t.model.args.dropout == 0.37 and t.model.blocks[0].dropout == 0.37
    assert t.warmup == 5
    assert t.steps_per_epoch == math.ceil(math.ceil(len(t.data.train) / 50) / 2)
    lrs = []
    for _ in range(6):
        lrs.append(t.sched.get_last_lr()[0])
        t.opt.step()
        t.sched.step()
    assert lrs[:5] == pytest.approx([7e-3 * (i + 1) / 5 for i in range(5)])
    t.fit()
    epochs = [m for m in t.run.read_metrics() if m["event"] == "epoch"]
    assert epochs[0]["step"] == t.steps_per_epoch  # accumulation halves the optimiser steps


def test_cosine_schedule_ends_at_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, total_steps=20, warmup=4)
    values = []
    for _ in range(20):
        values.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert values[3] == pytest.approx(1.0) and values[-1] < 0.05
    assert all(a >= b for a, b in zip(values[3:], values[4:]))


def test_same_seed_same_metrics_different_seed_differs(tmp_path):
    a = trainer(tmp_path, name="a", seed=1).fit()
    b = trainer(tmp_path, name="b", seed=1).fit()
    c = trainer(tmp_path, name="c", seed=2).fit()
    assert a["val_log_loss"] == b["val_log_loss"]
    assert a["val_log_loss"] != c["val_log_loss"]


def test_reported_metrics_come_from_restored_best_weights(tmp_path):
    t = trainer(tmp_path, TrainConfig(max_epochs=6, batch_size=32, lr=3e-2, patience=10))
    final = t.fit()
    epochs = [m for m in t.run.read_metrics() if m["event"] == "epoch"]
    best = min(epochs, key=lambda m: m["val_log_loss"])
    assert final["best_epoch"] == best["epoch"]
    assert final["val_log_loss"] == pytest.approx(best["val_log_loss"], rel=1e-9)
    ckpt = load_checkpoint(t.run.ckpt / "best.pt")
    model = type(t.model)(ModelArgs.from_dict(ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    prob = predict_proba(model, t.data.val, 256, torch.device("cpu"))
    from finscale.metrics import classification_metrics

    again = classification_metrics(t.data.val.labels_at_ends, prob, prior=t.data.prior,
                                   threshold=t.data.prior)
    assert again["log_loss"] == pytest.approx(final["val_log_loss"], rel=1e-9)
    assert t.run.state == "done"


def test_model_learns_a_learnable_signal(tmp_path):
    final = trainer(tmp_path, TrainConfig(max_epochs=15, batch_size=32, lr=5e-3, patience=15,
                                          dropout=0.0), dropout=0.0).fit()
    assert final["val_auc"] > 0.85 and final["val_skill"] > 0.2 and not final["collapsed"]


def test_nan_loss_fails_the_run_with_reason(tmp_path):
    data = synthetic()
    data.train.values[20:40] = np.nan  # poisoned inputs -> non-finite loss
    t = trainer(tmp_path, data=data)
    with pytest.raises(TrainingFailed, match="non-finite training loss"):
        t.fit()
    status = t.run.status()
    assert status["state"] == "failed" and "non-finite" in status["reason"]


def test_collapse_is_flagged(tmp_path):
    data = synthetic()
    data.train.values[:] = 1.0   # constant inputs: every prediction is the same number
    t = trainer(tmp_path, TrainConfig(max_epochs=2, batch_size=64, lr=1e-3, patience=5), data=data)
    final = t.fit()
    assert final["collapsed"] is True and "barely vary" in final["collapse_reason"]
    assert final["val_pred_std"] < 1e-3


def test_epoch_callback_sees_each_epoch(tmp_path):
    seen = []
    t = trainer(tmp_path)
    t.callbacks.append(lambda epoch, line: seen.append((epoch, line["val_log_loss"])))
    t.fit()
    assert [e for e, _ in seen] == [1, 2, 3]


RESUME_SCRIPT = textwrap.dedent("""
    import os, sys, json, signal
    sys.path.insert(0, {tests!r})
    from test_train import trainer
    from finscale.config import TrainConfig
    from pathlib import Path
    kill_after = int(sys.argv[2])
    t = trainer(Path(sys.argv[1]), TrainConfig(max_epochs=6, batch_size=32, lr=3e-3, patience=10))
    if kill_after:
        t.callbacks.append(lambda e, line: os.kill(os.getpid(), signal.SIGKILL) if e == kill_after else None)
    final = t.fit()
    print(json.dumps(final["val_log_loss"]))
""")


KILL_AFTER_BEST_SCRIPT = textwrap.dedent("""
    import os, sys, json, signal
    sys.path.insert(0, {tests!r})
    from test_train import trainer
    from finscale.config import TrainConfig
    from finscale.rundir import RunDir
    from pathlib import Path
    kill_at = int(sys.argv[2])
    if kill_at:  # die where a kill -9 can land: best.pt written, the step checkpoint not yet
        append = RunDir.append_metrics
        def append_then_die(self, line):
            if line.get("epoch") == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            append(self, line)
        RunDir.append_metrics = append_then_die
    t = trainer(Path(sys.argv[1]), TrainConfig(max_epochs=3, batch_size=32, lr=3e-3, patience=10))
    final = t.fit()
    print(json.dumps([final["best_epoch"], final["val_log_loss"]]))
""")


def _script_runner(tmp_path, template: str):
    """run(dir, kill_at): ``template`` in a fresh Python process (kill_at > 0: its kill switch)."""
    script = tmp_path / "script.py"
    script.write_text(template.format(tests=os.path.dirname(__file__)))

    def run(d: str, k: int):
        return subprocess.run([sys.executable, str(script), str(tmp_path / d), str(k)],
                              capture_output=True, text=True, timeout=300)
    return run


def test_kill_between_a_new_best_and_its_step_checkpoint_resumes_exactly(tmp_path):
    """The window CI once hit: best.pt of epoch k on disk, the step checkpoint still at
    epoch k-1 (whose best is earlier). The resume must redo epoch k, not refuse best.pt."""
    run = _script_runner(tmp_path, KILL_AFTER_BEST_SCRIPT)
    straight = run("straight", 0)
    assert straight.returncode == 0, straight.stderr
    lines = RunDir(tmp_path / "straight" / "run").read_metrics()
    improved = [m["epoch"] for m in lines if m["event"] == "epoch" and m["improved"] and m["epoch"] > 1]
    assert improved, "no epoch after the first improved: the window is never open"
    killed = run("resumed", improved[0])
    assert killed.returncode == -signal.SIGKILL
    ckpt = tmp_path / "resumed" / "run" / "ckpt"
    assert load_checkpoint(ckpt / "best.pt")["epoch"] == improved[0] - 1  # the new best, uncovered
    resumed = run("resumed", 0)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == json.loads(straight.stdout)
    assert not (ckpt / "best.kept.pt").exists()


def test_resume_after_sigkill_is_exact(tmp_path):
    run = _script_runner(tmp_path, RESUME_SCRIPT)
    straight = run("straight", 0)
    assert straight.returncode == 0, straight.stderr
    killed = run("resumed", 3)
    assert killed.returncode == -signal.SIGKILL
    resumed = run("resumed", 0)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == json.loads(straight.stdout)
    a = load_checkpoint(tmp_path / "straight" / "run" / "ckpt" / "best.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "run" / "ckpt" / "best.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = RunDir(tmp_path / "resumed" / "run").read_metrics()
    assert [m["epoch"] for m in lines if m["event"] == "epoch"] == [1, 2, 3, 4, 5, 6]


def test_stop_request_checkpoints_mid_epoch_and_resumes_exactly(tmp_path):
    from finscale.train import Controls, RunInterrupted

    straight = trainer(tmp_path, name="straight").fit()
    calls = {"n": 0}

    def stop_on_tenth():
        calls["n"] += 1
        return "test stop" if calls["n"] == 10 else None

    t = trainer(tmp_path, name="stopped")
    t.controls = Controls(should_stop=stop_on_tenth)
    with pytest.raises(RunInterrupted):
        t.fit()
    assert t.run.state == "stopped"
    again = trainer(tmp_path, name="stopped").fit()
    assert again["val_log_loss"] == straight["val_log_loss"]
    assert read_final(RunDir(tmp_path / "stopped")) is not None


def test_run_still_improving_at_max_epochs_is_flagged_not_converged(tmp_path):
    """Guard 14: a learnable signal, a small learning rate and few epochs -> still improving."""
    t = trainer(tmp_path, TrainConfig(max_epochs=4, batch_size=32, lr=1e-3, patience=10, dropout=0.0),
                dropout=0.0)
    final = t.fit()
    losses = [m["val_log_loss"] for m in t.run.read_metrics() if m.get("event") == "epoch"]
    assert losses[-1] < losses[0]  # the premise: it was still learning
    assert final["converged"] is False and "still improving" in final["convergence_reason"]
    assert t.run.status()["converged"] is False


def test_early_stopped_run_is_converged(tmp_path):
    data = synthetic()
    data.train.values[:] = 1.0  # nothing to learn: validation loss stops improving at once
    t = trainer(tmp_path, TrainConfig(max_epochs=30, batch_size=64, lr=1e-3, patience=2), data=data)
    final = t.fit()
    assert final["early_stopped"] and final["converged"] is True
    assert final["epochs_run"] < 30
