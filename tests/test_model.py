"""PatchTST, parameter counting, FLOP and memory estimates, devices (finscale.model)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from finscale.model import (
    ModelArgs,
    RevIN,
    build_model,
    count_parameters,
    estimate_parameters,
    flops_per_sample,
    max_micro_batch,
    memory_estimate,
    patch_layout,
    select_device,
)
from finscale.model.patchtst import attention, dropout

MODES = ("mixed", "independent")


def small_args(**kw) -> ModelArgs:
    base = dict(n_inputs=5, context_len=40, patch_len=16, stride=8, d_model=16, num_layers=2,
                num_heads=2, d_ff=32, dropout=0.0, channel_mode="mixed")
    base.update(kw)
    return ModelArgs(**base)


# --------------------------------------------------------------------------- shapes & args

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
@pytest.mark.parametrize("n_targets", [1, 3])
def test_output_shape_both_modes(mode, positional, n_targets):
    args = small_args(channel_mode=mode, positional=positional, n_targets=n_targets)
    out = build_model(args)(torch.randn(7, 40, 5))
    assert out.shape == (7, n_targets) and out.dtype == torch.float32


def test_wrong_input_shape_is_a_value_error():
    model = build_model(small_args())
    with pytest.raises(ValueError, match=r"expected input \(B, 40, 5\)"):
        model(torch.randn(2, 41, 5))


def test_model_args_validation_and_round_trip():
    args = small_args()
    assert ModelArgs.from_dict(args.to_dict()) == args
    with pytest.raises(ValueError, match="num_heads: 3 does not divide d_model 16"):
        small_args(num_heads=3)
    with pytest.raises(ValueError, match="channel_mode"):
        small_args(channel_mode="both")
    with pytest.raises(ValueError, match="stride: 17 exceeds patch_len 16"):
        small_args(stride=17)
    with pytest.raises(ValueError, match="unknown key 'width'"):
        ModelArgs.from_dict({**args.to_dict(), "width": 3})


# --------------------------------------------------------------------------- guard 6

@pytest.mark.parametrize("context_len", range(60, 91))
def test_patches_cover_every_bar_and_end_with_the_last(context_len):
    n, pad = patch_layout(context_len, 16, 8)
    last_start = (n - 1) * 8
    assert last_start <= context_len - 1 < last_start + 16  # newest bar in the last patch
    assert last_start + 16 == context_len + pad and 0 <= pad < 8


@pytest.mark.parametrize("mode", MODES)
def test_output_changes_when_only_the_last_step_changes(mode):
    """Guard 6, for every context length 60..90 with patch 16 / stride 8.

    RevIN is off here: its statistics would see the change even if the last bar were
    dropped from the patches, hiding exactly the bug this test exists for.
    """
    torch.manual_seed(0)
    for context_len in range(60, 91):
        args = small_args(n_inputs=3, context_len=context_len, channel_mode=mode, revin=False,
                          d_model=8, num_heads=1, num_layers=1)
        model = build_model(args).eval()
        x = torch.randn(4, context_len, 3)
        x2 = x.clone()
        x2[:, -1, :] += 1.0
        with torch.no_grad():
            tokens, tokens2 = model.patchify(x)[0], model.patchify(x2)[0]
            changed = (tokens != tokens2).flatten(2).any(-1)
            assert changed[:, -1].all(), f"context {context_len}: last patch misses the newest bar"
            assert not (model(x) == model(x2)).any(), f"context {context_len}: output unchanged"


@pytest.mark.parametrize("mode", MODES)
def test_first_step_is_seen_too(mode):
    args = small_args(n_inputs=3, context_len=61, channel_mode=mode, revin=False)
    model = build_model(args).eval()
    x = torch.randn(2, 61, 3)
    x2 = x.clone()
    x2[:, 0, :] += 1.0
    with torch.no_grad():
        assert not (model(x) == model(x2)).any()


# --------------------------------------------------------------------------- RevIN

def test_revin_round_trip_and_statistics():
    torch.manual_seed(1)
    revin = RevIN(4)
    with torch.no_grad():
        revin.weight.copy_(torch.tensor([0.5, 2.0, 1.0, 3.0]))
        revin.bias.copy_(torch.tensor([0.1, -1.0, 0.0, 2.0]))
    x = torch.randn(8, 50, 4) * torch.tensor([1.0, 100.0, 0.1, 5.0]) + 30.0
    z, stats = revin.normalize(x)
    torch.testing.assert_close(revin.denormalize(z, stats), x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(z.mean(1), revin.bias.detach().expand(8, 4), rtol=0, atol=1e-3)
    torch.testing.assert_close(z.std(1, correction=0), revin.weight.detach().expand(8, 4), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mode", MODES)
def test_fused_patch_normalisation_equals_normalising_first(mode):
    """RevIN applied to the patch view == RevIN on the window, then a RevIN-less model."""
    torch.manual_seed(2)
    args = small_args(context_len=61, channel_mode=mode)
    with_revin = build_model(args).eval()
    with torch.no_grad():
        with_revin.revin.weight.uniform_(0.5, 2.0)
        with_revin.revin.bias.uniform_(-1.0, 1.0)
    without = build_model(args.replace(revin=False)).eval()
    without.load_state_dict({k: v for k, v in with_revin.state_dict().items() if not k.startswith("revin.")})
    x = torch.randn(3, 61, 5) * 10 + 5
    with torch.no_grad():
        torch.testing.assert_close(with_revin(x), without(with_revin.revin(x)), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- guard 7

@pytest.mark.parametrize("mode", MODES)
def test_extreme_inputs_give_finite_logits_and_gradients(mode):
    torch.manual_seed(3)
    model = build_model(small_args(channel_mode=mode, dropout=0.1)).train()
    base = torch.randn(4, 40, 5)
    for x in (base * 1e8, base * 1e-8, torch.full((4, 40, 5), 3e6), base + 1e7):
        model.zero_grad()
        logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], torch.ones(4))
        loss.backward()
        assert torch.isfinite(logits).all() and torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_model_returns_logits_not_probabilities():
    model = build_model(small_args()).eval()
    model.init_output_bias(0.02)  # logit(0.02) ~ -3.9: a probability can never be negative
    with torch.no_grad():
        out = model(torch.randn(16, 40, 5))
        assert (out < 0).all()
        model.head.bias.fill_(5.0)
        assert (model(torch.randn(16, 40, 5)) > 1).all()
    with pytest.raises(ValueError, match="prior"):
        model.init_output_bias(1.0)


# --------------------------------------------------------------------------- dropout, checkpointing

def test_dropout_only_in_training():
    torch.manual_seed(4)
    model = build_model(small_args(dropout=0.3, head_dropout=0.3))
    x = torch.randn(8, 40, 5)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_cpu_dropout_keeps_the_expectation():
    torch.manual_seed(5)
    x = torch.ones(200_000)
    y = dropout(x, 0.25, True)
    assert abs((y == 0).float().mean().item() - 0.25) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.01
    assert dropout(x, 0.25, False) is x


@pytest.mark.parametrize("mode", MODES)
def test_activation_checkpointing_gives_the_same_gradients(mode):
    args = small_args(channel_mode=mode, dropout=0.2)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(6)
        model = build_model(args, checkpointing=checkpointing).train()
        x = torch.randn(4, 40, 5)
        model(x).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- parameters

def random_args(rng: random.Random, mode: str) -> ModelArgs:
    heads = rng.choice([1, 2, 4])
    context = rng.randint(8, 120)
    patch = rng.randint(1, min(24, context))
    return ModelArgs(n_inputs=rng.randint(1, 30), context_len=context, patch_len=patch,
                     stride=rng.randint(1, patch), d_model=heads * rng.randint(1, 12),
                     num_layers=rng.randint(1, 3), num_heads=heads, d_ff=rng.randint(1, 64),
                     channel_mode=mode, positional=rng.choice(["learned", "sinusoidal"]),
                     revin=rng.random() < 0.5, n_targets=rng.randint(1, 3))


def test_estimator_equals_numel_on_50_random_configurations():
    rng = random.Random(7)
    for i in range(50):
        args = random_args(rng, MODES[i % 2])
        model = build_model(args)
        counted = count_parameters(model)
        assert counted == estimate_parameters(args), args
        assert counted["total"] == sum(p.numel() for p in model.parameters())


def test_parameter_categories():
    args = small_args(channel_mode="independent")
    model = build_model(args)
    counts = count_parameters(model)
    blocks = sum(p.numel() for p in model.blocks.parameters())
    assert counts["head"] == model.head.weight.numel() + 1
    assert counts["non_embedding"] == blocks + 2 * 16 + 2 * 5  # + final LayerNorm + RevIN affine


# --------------------------------------------------------------------------- FLOPs and memory

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("revin", [True, False])
def test_flop_estimate_matches_flop_counter(mode, revin):
    args = small_args(n_inputs=7, context_len=61, d_model=32, num_heads=4, d_ff=96,
                      channel_mode=mode, revin=revin, n_targets=2)
    model, x, batch = build_model(args), torch.randn(3, 61, 7), 3
    est = flops_per_sample(args)
    with sdpa_kernel(SDPBackend.MATH):  # the CPU fused kernel is not in the counter's registry
        model.eval()
        with FlopCounterMode(display=False) as fwd:
            model(x)
        model.train()
        with FlopCounterMode(display=False) as train:
            model(x).sum().backward()
    assert abs(est["forward"] - fwd.get_total_flops() / batch) <= 0.05 * est["forward"]
    assert abs(est["train"] - train.get_total_flops() / batch) <= 0.05 * est["train"]


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves in a training forward."""
    params = {p.data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in params:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train()(x)
    return sum(storages.values())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("drop", [0.0, 0.1])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_memory_estimate_matches_saved_tensors_on_cpu(mode, drop, checkpointing):
    args = small_args(n_inputs=6, context_len=61, d_model=32, num_heads=4, d_ff=128,
                      num_layers=3, dropout=drop, head_dropout=drop, channel_mode=mode)
    model = build_model(args, checkpointing=checkpointing)
    measured = saved_activation_bytes(model, torch.randn(8, 61, 6))
    est = memory_estimate(args, 8, "fp32", checkpointing, device_type="cpu")["activations_saved"]
    assert abs(est - measured) <= 0.05 * measured, (est, measured)


def test_memory_breakdown_and_micro_batch():
    args = small_args(d_model=64, num_heads=4, d_ff=256, num_layers=4)
    n = estimate_parameters(args)["total"]
    fp32 = memory_estimate(args, 32, "fp32")
    bf16 = memory_estimate(args, 32, "bf16")
    assert fp32["weights"] == fp32["grads"] == 4 * n and fp32["optimizer"] == 8 * n
    assert bf16["weight_copies"] == 2 * n and bf16["activations"] < fp32["activations"]
    assert memory_estimate(args, 32, "fp32", checkpointing=True)["activations"] < fp32["activations"]
    memory = 50_000_000
    b = max_micro_batch(args, memory, "fp32")
    assert memory_estimate(args, b, "fp32")["total"] <= 0.9 * memory < memory_estimate(args, b + 1, "fp32")["total"]
    assert max_micro_batch(args, 16 * n, "fp32") == 0  # the weights alone do not fit
    with pytest.raises(ValueError, match="precision"):
        memory_estimate(args, 1, "fp16")


# --------------------------------------------------------------------------- devices

def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda': CUDA is not available"):
            select_device("cuda")
    with pytest.raises(ValueError, match="'tpu'"):
        select_device("tpu")


@pytest.mark.parametrize("mode", MODES)
def test_revin_hides_the_level_and_the_statistics_token_gives_it_back(mode):
    """Guard 17: plain RevIN makes the output blind to a window's level and scale (a classifier
    has nothing to de-normalise), so a volatility-level target is invisible; with
    ``revin_stats`` the per-window statistics are a token and the output depends on them."""
    torch.manual_seed(0)
    x = torch.randn(4, 32, 3)
    for stats, sees_scale in ((False, False), (True, True)):
        args = small_args(n_inputs=3, context_len=32, channel_mode=mode, revin=True, revin_stats=stats)
        model = build_model(args).eval()
        with torch.no_grad():
            changed = not torch.allclose(model(x), model(2.0 * x + 1.0), atol=1e-5)
        assert changed == sees_scale
        assert estimate_parameters(args) == count_parameters(model)
    with pytest.raises(ValueError, match="revin_stats: needs revin"):
        small_args(revin=False, revin_stats=True)


def test_cpu_attention_with_dropout_is_sdpa_math_with_the_same_mask():
    """The CPU attention used while training with dropout computes what SDPA's math kernel
    computes from the same generator state (values and gradients), and under bf16 autocast
    stays within bf16 rounding of the fp32 result."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(40, 4, 7, 16, requires_grad=True) for _ in range(3))
    grad = torch.randn(40, 4, 7, 16)
    outs = []
    for fn in (lambda: attention(q, k, v, 0.2),
               lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=0.2)):
        torch.manual_seed(3)
        out = fn()
        out.backward(grad)
        outs.append((out.detach(), *(t.grad.clone() for t in (q, k, v))))
        for t in (q, k, v):
            t.grad = None
    for ours, ref in zip(*outs):
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 0.2)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), outs[0][0], rtol=0.05, atol=0.05)
