"""model.precision: resolution (auto never names a run), run ids, the fp32 loss path, and
bf16 agreeing with fp32 on a planted market within seed noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finscale.cli.common import resolve_study_path
from finscale.config import ConfigError, load_study
from finscale.hpo.identity import study_name
from finscale.model import cpu_bf16_support, resolve_precision
from finscale.runspec import make_spec
from finscale.train import predict_proba
from test_train import args, synthetic


def test_preferences_resolve_to_a_concrete_precision_per_device():
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("bf16-cuda", "cpu") == "fp32"
    assert resolve_precision("bf16-cuda", "mps") == "fp32"
    assert resolve_precision("auto", "mps") == "fp32"
    cuda = "bf16" if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else "fp32"
    assert resolve_precision("bf16-cuda", "cuda") == resolve_precision("auto", "cuda") == cuda
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_bf16_support() else "fp32")
    with pytest.raises(ValueError, match="not mps"):
        resolve_precision("bf16", "mps")
    with pytest.raises(ValueError, match="model.precision = 'fp16'"):
        resolve_precision("fp16", "cpu")


def test_cpu_bf16_support_reads_x86_and_arm_flags(tmp_path):
    def cpuinfo(text):
        p = tmp_path / "cpuinfo"
        p.write_text(text)
        return cpu_bf16_support(p)

    assert cpuinfo("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16\n") == "avx512_bf16"
    assert cpuinfo("flags : avx512f avx512_bf16 amx_tile amx_bf16\n") == "amx_bf16"
    assert cpuinfo("Features : fp asimd sve bf16 i8mm\n") == "bf16"      # aarch64
    assert cpuinfo("flags : fpu sse2 avx2 avx512f\n") is None
    assert cpu_bf16_support(tmp_path / "absent") is None                  # macOS, Windows


def _cfg(*sets: str):
    return load_study(resolve_study_path("smoke"), ['model.device="cpu"', *sets])


def test_precision_is_part_of_the_run_id_and_auto_resolves_before_it():
    fp32, bf16 = (make_spec(_cfg(f'model.precision="{p}"'), "cpu-s", 1, 0) for p in ("fp32", "bf16"))
    assert fp32.run_id != bf16.run_id
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.config["model"]["precision"] == "bf16"  # config.json says what ran
    # The default on CPU is fp32: the same run (and id) as an explicit fp32, as before the key.
    default = make_spec(_cfg(), "cpu-s", 1, 0)
    assert default.run_id == fp32.run_id and default.config["model"]["precision"] == "fp32"
    auto = make_spec(_cfg('model.precision="auto"'), "cpu-s", 1, 0)
    assert auto.config["model"]["precision"] == auto.precision in ("fp32", "bf16")
    assert auto.run_id == {"fp32": fp32, "bf16": bf16}[auto.precision].run_id
    # HPO cells too: a bf16 search is its own Optuna study.
    names = {p: study_name(_cfg(f'model.precision="{p}"'), "cpu-s", 1) for p in ("fp32", "bf16", "bf16-cuda")}
    assert names["fp32"] == names["bf16-cuda"] != names["bf16"]


def test_unknown_precision_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="precision"):
        _cfg('model.precision="fp16"')


def test_bf16_forward_keeps_loss_and_probabilities_fp32(tmp_path):
    from finscale.config import TrainConfig
    from finscale.rundir import RunDir
    from finscale.train import Trainer

    t = Trainer(RunDir(tmp_path / "run").create(), model_args=args(), data=synthetic(), seed=0,
                cfg=TrainConfig(max_epochs=2, batch_size=32, lr=3e-3), config_hash="h" * 64,
                precision="bf16")
    seen = []
    loss = t.loss

    def recording(logits, y):  # a spy on the real loss: what reached it, what it returned
        out = loss(logits, y)
        seen.append((logits.dtype, out.dtype))
        return out

    t.loss = recording
    final = t.fit()
    assert seen and all(d == (torch.bfloat16, torch.float32) for d in seen)  # autocast was on
    assert np.isfinite(final["val_log_loss"])
    prob = predict_proba(t.model, t.data.val, 64, torch.device("cpu"), "bf16")
    assert prob.dtype == np.float64 and np.all((prob > 0) & (prob < 1))


def _planted_runs(tmp_path, precision: str, seeds) -> tuple[list[float], float, np.ndarray]:
    """Test log-losses per seed of cpu-s on a small planted market, its base-rate log-loss,
    and the first seed's test probabilities."""
    from sklearn.metrics import log_loss

    from finscale.rundata import final_data, prepare
    from finscale.rundir import RunDir
    from finscale.train import Trainer

    cfg = load_study(resolve_study_path("control_planted"), [
        'data.source="synthetic:planted?seed=1&days=3000&vol=constant&strength=2.0&complexity=2&lags=3&linear=0.5"',
        f'data.data_dir="{tmp_path / "data"}"', f'output_dir="{tmp_path / "runs"}"',
        'model.device="cpu"', f'model.precision="{precision}"', "train.max_epochs=6"])
    data, test = final_data(prepare(cfg), cfg, 1)
    losses, first = [], None
    for seed in seeds:
        spec = make_spec(cfg, "cpu-s", 1, seed, {"lr": 3e-3})
        run = RunDir(tmp_path / precision / spec.run_id).create()
        Trainer(run, model_args=spec.model_args, cfg=spec.train, data=data, seed=seed,
                config_hash=spec.digest, precision=spec.precision).fit()
        best = torch.load(run.ckpt / "best.pt", weights_only=True)
        model = Trainer(run, model_args=spec.model_args, cfg=spec.train, data=data, seed=seed,
                        config_hash=spec.digest).model
        model.load_state_dict(best["model"])
        prob = predict_proba(model, test, 1024, torch.device("cpu"), spec.precision)
        losses.append(log_loss(test.labels_at_ends, prob, labels=[0, 1]))
        first = prob if first is None else first
    base = float(np.mean(data.train.labels_at_ends))
    y = test.labels_at_ends
    return losses, log_loss(y, np.full(len(y), base), labels=[0, 1]), first


def test_bf16_agrees_with_fp32_within_seed_noise_on_a_planted_market(tmp_path):
    """The rule (docs/performance.md): |mean bf16 - mean fp32 test log-loss| <=
    max(2 x the fp32 seed std, 0.005 nats), and both find the planted signal (beat the
    base-rate forecast by > 0.01 nats)."""
    seeds = (0, 1, 2)
    f32, base, p32 = _planted_runs(tmp_path, "fp32", seeds)
    b16, _, p16 = _planted_runs(tmp_path, "bf16", seeds)
    assert not np.array_equal(p32, p16), "bf16 made the same predictions: autocast was not on"
    assert max(np.mean(f32), np.mean(b16)) < base - 0.01, (f32, b16, base)
    tolerance = max(2 * np.std(f32, ddof=1), 0.005)
    assert abs(np.mean(b16) - np.mean(f32)) <= tolerance, (f32, b16, tolerance)
