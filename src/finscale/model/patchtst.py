"""PatchTST for binary classification of daily bars: the object of study, every line ours.

Consumes: a window batch ``x`` of shape (B, context_len, n_inputs), float32.
Produces: LOGITS of shape (B, n_targets). There is no sigmoid anywhere in the model
(guard 7): the loss is BCE-with-logits and evaluation applies the sigmoid once.
Guarantees:
- Guard 6, the model sees the latest bar: the series is padded at the END by repeating the
  last value, just enough that patches tile the padded series exactly, so the newest bar
  lies in the last patch for every ``context_len``/``patch_len``/``stride`` (no bar dropped).
- Two channel modes. ``independent``: each input channel is its own token sequence through
  shared weights (the original PatchTST; channels are folded into the batch dimension so
  every matmul sees one large batch), and the flatten head sees all channels' tokens.
  ``mixed``: one token per patch holding all channels (~n_inputs times cheaper).
- Pre-norm encoder blocks with fused QKV and ``scaled_dot_product_attention`` (attention
  dropout only while training; on CPU with dropout, the same math in the inputs' dtype), GELU MLP of width ``d_ff``, final LayerNorm, flatten head.
- Optional affine RevIN (per-window, per-channel statistics over the context), and with
  ``revin_stats`` its statistics given back to the model as one extra token: RevIN divides
  out each window's level and scale, and a classifier has no output to de-normalise, so
  without it the model cannot see e.g. the volatility level that decides whether tomorrow's
  High clears a threshold (DESIGN guard 17). The token embeds (mean, log std) per channel.
- Optional asset embedding (panels, ``n_assets`` > 0): a learned vector per asset, added to
  every token of the asset's windows; ``forward(x, asset)`` takes each window's asset index.
- Optional activation checkpointing per encoder block (``model.checkpointing = True``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, fields
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["ModelArgs", "RevIN", "PatchTST", "build_model", "patch_layout"]

CHANNEL_MODES = ("mixed", "independent")
POSITIONALS = ("learned", "sinusoidal")


@dataclass(frozen=True, kw_only=True)
class ModelArgs:
    """Every value that fixes the architecture (and so the parameter count)."""

    n_inputs: int
    context_len: int
    patch_len: int
    stride: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int
    dropout: float = 0.1
    head_dropout: float = 0.0
    channel_mode: str = "mixed"
    positional: str = "learned"
    revin: bool = True
    revin_stats: bool = False   # RevIN's per-window statistics as an extra token
    n_targets: int = 1
    n_assets: int = 0           # panels: a learned vector per asset added to every token (0 = none)

    def __post_init__(self) -> None:
        for name in ("n_inputs", "context_len", "patch_len", "stride", "d_model", "num_layers",
                     "num_heads", "d_ff", "n_targets"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"ModelArgs.{name}: expected a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))  # numpy integers -> int (JSON, hashing)
        if self.d_model % self.num_heads:
            raise ValueError(f"ModelArgs.num_heads: {self.num_heads} does not divide "
                             f"d_model {self.d_model}")
        if self.stride > self.patch_len:
            raise ValueError(f"ModelArgs.stride: {self.stride} exceeds patch_len {self.patch_len} "
                             "(bars between patches would never be seen)")
        for name in ("dropout", "head_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
                raise ValueError(f"ModelArgs.{name}: expected 0 <= p < 1, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.channel_mode not in CHANNEL_MODES:
            raise ValueError(f"ModelArgs.channel_mode: {self.channel_mode!r} is not one of {list(CHANNEL_MODES)}")
        if self.positional not in POSITIONALS:
            raise ValueError(f"ModelArgs.positional: {self.positional!r} is not one of {list(POSITIONALS)}")
        if isinstance(self.n_assets, bool) or not isinstance(self.n_assets, numbers.Integral) \
                or self.n_assets < 0:
            raise ValueError(f"ModelArgs.n_assets: expected an integer >= 0, got {self.n_assets!r}")
        object.__setattr__(self, "n_assets", int(self.n_assets))
        if self.revin_stats and not self.revin:
            raise ValueError("ModelArgs.revin_stats: needs revin (the statistics are RevIN's)")

    @property
    def n_tokens(self) -> int:
        """Tokens per sequence: the patches, plus one statistics token with ``revin_stats``."""
        return patch_layout(self.context_len, self.patch_len, self.stride)[0] + int(self.revin_stats)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelArgs:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelArgs: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**d)

    def replace(self, **changes) -> ModelArgs:
        return dataclasses.replace(self, **changes)


def patch_layout(context_len: int, patch_len: int, stride: int) -> tuple[int, int]:
    """(number of patches, end padding): the fewest patches that cover every bar.

    Patches start at 0, stride, 2*stride, ...; the series is padded at the end so the last
    patch ends exactly at the padded end. Padding is < stride (or patch_len - context_len
    when the context is shorter than a patch), so the last real bar is in the last patch.
    """
    n = 1 + max(0, math.ceil((context_len - patch_len) / stride))
    return n, (n - 1) * stride + patch_len - context_len


class RevIN(nn.Module):
    """Reversible instance normalisation over the time axis of (B, L, C) windows."""

    def __init__(self, n_channels: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(n_channels))
            self.bias = nn.Parameter(torch.zeros(n_channels))

    def statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-window, per-channel (mean, std) over time, each (B, 1, C)."""
        # Two passes (mean, then mean squared deviation): stable, and on CPU ~10x faster
        # than torch.var_mean over the middle dimension.
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).square().mean(dim=1, keepdim=True)
        return mean, torch.sqrt(var + self.eps)

    def scale_shift(self, stats: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (B, 1, C), with normalize(x) == x * scale + shift."""
        mean, std = stats
        scale = 1.0 / std
        if self.affine:
            scale = scale * self.weight
        shift = -mean * scale
        if self.affine:
            shift = shift + self.bias
        return scale, shift

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Return the normalised window and its (mean, std) statistics, each (B, 1, C)."""
        stats = self.statistics(x)
        scale, shift = self.scale_shift(stats)
        return torch.addcmul(shift, x, scale), stats

    def denormalize(self, z: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mean, std = stats
        if self.affine:
            # eps**2 keeps the inverse finite if training drives a weight to zero.
            z = (z - self.bias) / (self.weight + self.eps * self.eps)
        return z * std + mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x)[0]


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout; on CPU ~2x cheaper than ``F.dropout`` with the same semantics.

    CPU ``F.dropout`` draws its mask with a scalar ``bernoulli_`` plus a division pass;
    ``rand_like(x).ge_(p)`` draws it with the vectorised uniform sampler (same default
    generator, so seeding makes it reproducible). Other devices use the fused kernel.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (S, H, n, d/H), with dropout ``p`` on the probabilities.

    Without dropout: ``scaled_dot_product_attention`` (its fused kernel). With dropout on CPU,
    SDPA falls back to its composite "math" kernel, which under bf16 autocast upcasts q, k, v
    and the probabilities to fp32 and back (five full-size copies per block, forward and
    backward: ~half of the attention's time at n = 7 tokens); this is the same composite in
    the inputs' dtype. In fp32 it is the math kernel op for op (scale split as sqrt on q and
    k, softmax, ``F.dropout``, which draws the same mask from the same generator), so fp32
    results are bit-identical to SDPA's; in bf16 the scores and probabilities stay bf16 (the
    softmax accumulates in fp32 internally), as on a GPU.
    """
    if p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    sf = (1.0 / math.sqrt(q.shape[-1])) ** 0.5
    probs = torch.softmax(torch.matmul(q * sf, k.transpose(-2, -1) * sf), dim=-1)
    return torch.matmul(F.dropout(probs, p, True), v)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)).

    Dropout as in GPT-2: on the attention probabilities and on each residual branch (none
    inside the MLP, whose d_ff-wide activations would make it the costliest mask).
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, n, d = x.shape
        h = self.num_heads
        # One fused projection; q, k, v are strided views (no copies) in (S, H, n, d/H).
        # unbind, not qkv[i]: its backward writes one gradient instead of three zero-filled
        # full-size tensors summed together.
        q, k, v = self.qkv(self.norm1(x)).view(s, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        p = self.dropout if self.training else 0.0
        att = attention(q, k, v, p)
        x = x + dropout(self.proj(att.transpose(1, 2).reshape(s, n, d)), p, self.training)
        return x + dropout(self.fc2(F.gelu(self.fc1(self.norm2(x)))), p, self.training)


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return table


class PatchTST(nn.Module):
    """PatchTST classifier; ``forward(x (B, L, C)) -> logits (B, n_targets)``."""

    def __init__(self, args: ModelArgs, checkpointing: bool = False) -> None:
        super().__init__()
        self.args = args
        self.checkpointing = checkpointing
        self.n_patches, self.pad = patch_layout(args.context_len, args.patch_len, args.stride)
        independent = args.channel_mode == "independent"
        self.seqs_per_sample = args.n_inputs if independent else 1
        patch_dim = args.patch_len if independent else args.patch_len * args.n_inputs
        d = args.d_model
        self.revin = RevIN(args.n_inputs) if args.revin else None
        self.patch_embed = nn.Linear(patch_dim, d)
        # (mean, log std) of each channel a sequence holds -> one token
        self.stats_embed = nn.Linear(2 * (args.n_inputs // self.seqs_per_sample), d) \
            if args.revin_stats else None
        self.n_tokens = args.n_tokens
        # Zero at start (no random draw): an untrained asset's vector is the zero vector, and a
        # fresh model computes what the same model without the table computes.
        self.asset_embed = nn.Parameter(torch.zeros(args.n_assets, d)) if args.n_assets else None
        if args.positional == "learned":
            self.pos_embed: nn.Parameter | None = nn.Parameter(torch.empty(self.n_tokens, d))
        else:
            self.pos_embed = None
            self.register_buffer("pos_table", sinusoidal_positions(self.n_tokens, d), persistent=False)
        self.blocks = nn.ModuleList(EncoderBlock(d, args.num_heads, args.d_ff, args.dropout)
                                    for _ in range(args.num_layers))
        self.norm = nn.LayerNorm(d)
        self.head_in = self.seqs_per_sample * self.n_tokens * d
        self.head = nn.Linear(self.head_in, args.n_targets)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.head.weight.is_meta:
            return  # built on the meta device only to be measured: nothing to initialise
        # GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2*layers) so
        # the residual stream does not grow with depth (the study trains very deep models).
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        for block in cast(list[EncoderBlock], self.blocks):
            for lin in (block.proj, block.fc2):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * self.args.num_layers))
        # Initial logits ~N(0, 0.1^2) whatever the head width (the flatten head can be wide).
        nn.init.normal_(self.head.weight, std=0.1 / math.sqrt(self.head_in))
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed, std=0.02)

    def init_output_bias(self, prior: float) -> None:
        """Start from the base rate: bias = logit(prior), so the first loss is the prior's."""
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior: expected 0 < prior < 1, got {prior!r}")
        with torch.no_grad():
            self.head.bias.fill_(math.log(prior / (1.0 - prior)))

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """(B, L, C) -> (tokens (B * seqs_per_sample, n_patches, patch_dim), end-padded;
        RevIN's (mean, std) statistics, each (B, 1, C), or None without RevIN).

        RevIN is applied here, to the patch view of the raw window, in one fused
        multiply-add: padding repeats the last raw bar, so this equals normalising first,
        and it spares the slow backward of ``unfold`` (the input never needs a gradient).
        """
        b, _, c = x.shape
        a = self.args
        stats = self.revin.statistics(x) if self.revin is not None else None
        if self.pad:
            x = torch.cat([x, x[:, -1:, :].expand(b, self.pad, c)], dim=1)
        patches = x.unfold(1, a.patch_len, a.stride)  # (B, n, C, P), a view
        if self.seqs_per_sample == 1:
            # (B, n, P, C): each patch is one contiguous block of P*C values.
            patches = patches.transpose(2, 3)
            shape, stat_shape = (b, self.n_patches, a.patch_len * c), (b, 1, 1, c)
        else:
            patches = patches.permute(0, 2, 1, 3)  # (B, C, n, P)
            shape, stat_shape = (b * c, self.n_patches, a.patch_len), (b, c, 1, 1)
        if self.revin is not None and stats is not None:
            scale, shift = self.revin.scale_shift(stats)
            patches = torch.addcmul(shift.view(stat_shape), patches, scale.view(stat_shape))
        return patches.reshape(shape), stats

    def stats_token(self, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(B * seqs_per_sample, 1, d): the embedded (mean, log std) of each window's channels.

        Log std makes the scale additive and bounded in practice; with train-only z-scored
        inputs both statistics are in training units, so they are comparable across years.
        """
        mean, std = stats
        b, _, c = mean.shape
        feats = torch.cat([mean, torch.log(std)], dim=1)  # (B, 2, C)
        if self.seqs_per_sample == 1:
            feats = feats.reshape(b, 1, 2 * c)
        else:
            feats = feats.permute(0, 2, 1).reshape(b * c, 1, 2)
        assert self.stats_embed is not None  # forward calls this only with a statistics token
        return self.stats_embed(feats)

    def asset_vectors(self, asset: torch.Tensor | None, b: int) -> torch.Tensor:
        """(B * seqs_per_sample, 1, d): each window's asset vector (panels, ``n_assets`` > 0)."""
        if asset is None or asset.shape != (b,):
            raise ValueError(f"PatchTST: this model has an asset embedding ({self.args.n_assets} "
                             f"assets); expected the asset index of each of the {b} windows, got "
                             f"{None if asset is None else tuple(asset.shape)}")
        assert self.asset_embed is not None  # only called when the model has one (forward)
        vec = self.asset_embed[asset.to(self.asset_embed.device)]
        return vec.repeat_interleave(self.seqs_per_sample, dim=0)[:, None, :]

    def forward(self, x: torch.Tensor, asset: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of windows ``x``; ``asset`` (B,) int: each window's asset index, needed only
        by a model with an asset embedding (ignored otherwise)."""
        a = self.args
        if x.dim() != 3 or x.shape[1] != a.context_len or x.shape[2] != a.n_inputs:
            raise ValueError(f"PatchTST: expected input (B, {a.context_len}, {a.n_inputs}), "
                             f"got {tuple(x.shape)}")
        b = x.shape[0]
        pos = self.pos_embed if self.pos_embed is not None else self.pos_table
        patches, stats = self.patchify(x)
        tokens = self.patch_embed(patches)
        if self.stats_embed is not None and stats is not None:  # revin_stats requires revin
            tokens = torch.cat([tokens, self.stats_token(stats)], dim=1)
        if self.asset_embed is not None:
            tokens = tokens + self.asset_vectors(asset, b)
        h = dropout(tokens + pos, a.dropout, self.training)
        use_ckpt = self.checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            h = checkpoint(block, h, use_reentrant=False) if use_ckpt else block(h)
        h = self.norm(h).reshape(b, self.head_in)
        return self.head(dropout(h, a.head_dropout, self.training))


def build_model(args: ModelArgs, *, checkpointing: bool = False) -> PatchTST:
    """Build a freshly initialised PatchTST (seed torch first for reproducible weights)."""
    return PatchTST(args, checkpointing=checkpointing)
