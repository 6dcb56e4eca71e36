"""Parameter counts: measured from a built model (guard 10) and a closed form equal to it.

Consumes: a built :class:`PatchTST` (``count_parameters``) or its :class:`ModelArgs`
(``estimate_parameters``, no tensors allocated, so a 2B model costs nothing to size).
Produces: ``{"total", "non_embedding", "head"}`` in parameters.
Guarantees: ``estimate_parameters(args) == count_parameters(build_model(args))`` exactly
(tested on random configurations of both channel modes). "non_embedding" is the total
minus the patch projection, the statistics token's projection, the asset table, the learned positions and the head (RevIN's 2*n_inputs affine
weights and the final LayerNorm count as non-embedding, like any other body weight).
"""

from __future__ import annotations

from finscale.model.patchtst import ModelArgs, PatchTST

__all__ = ["count_parameters", "estimate_parameters", "block_parameters"]


def count_parameters(model: PatchTST) -> dict[str, int]:
    """Measured counts of a built PatchTST (numel of its parameters)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for p in model.patch_embed.parameters())
    if model.pos_embed is not None:
        embedding += model.pos_embed.numel()
    if model.stats_embed is not None:
        embedding += sum(p.numel() for p in model.stats_embed.parameters())
    asset_embed = getattr(model, "asset_embed", None)
    if asset_embed is not None:
        embedding += asset_embed.numel()
    head = sum(p.numel() for p in model.head.parameters())
    return {"total": total, "non_embedding": total - embedding - head, "head": head}


def block_parameters(d_model: int, d_ff: int) -> int:
    """One encoder block: 2 LayerNorms, fused QKV, output projection, 2-layer MLP (with biases)."""
    return 4 * d_model * d_model + 2 * d_model * d_ff + 9 * d_model + d_ff


def estimate_parameters(args: ModelArgs) -> dict[str, int]:
    """Closed-form counts; equal to ``count_parameters(build_model(args))``."""
    n_tokens = args.n_tokens
    d = args.d_model
    independent = args.channel_mode == "independent"
    patch_dim = args.patch_len if independent else args.patch_len * args.n_inputs
    seqs = args.n_inputs if independent else 1
    embedding = patch_dim * d + d + (n_tokens * d if args.positional == "learned" else 0)
    if args.revin_stats:  # (mean, log std) of each channel of a sequence -> one token
        embedding += 2 * (args.n_inputs // seqs) * d + d
    embedding += args.n_assets * d   # the asset table (panels)
    head = seqs * n_tokens * d * args.n_targets + args.n_targets
    body = args.num_layers * block_parameters(d, args.d_ff) + 2 * d  # + final LayerNorm
    if args.revin:
        body += 2 * args.n_inputs
    return {"total": embedding + body + head, "non_embedding": body, "head": head}
