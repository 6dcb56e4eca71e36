"""GPU check (issue 5; run by hand on a CUDA machine, never in CI): `python -m benchmarks.gpu`.

1. bf16-autocast training throughput and model FLOP utilisation (MFU) of the 20M and 200M
   budgets (the phase6a study's model section: mixed mode, 25 inputs, context 80), against
   a bf16 matmul peak measured in the same run (8192^3).
2. One forward+backward+AdamW step of the 2B budget at the largest micro-batch the memory
   estimator says fits (activation checkpointing on), with the measured peak memory next to
   the estimate. Designed to finish in < 5 minutes on one H100/H200.
"""

from __future__ import annotations

import sys
import time

import torch

from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.model import (
    autocast_for,
    build_model,
    flops_per_sample,
    max_micro_batch,
    memory_estimate,
    model_args_for,
)

BATCH, STEPS, WARMUP = 256, 10, 3


def bf16_peak_tflops(n: int = 8192, reps: int = 10) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def train_steps(model, batch: int, steps: int, device) -> float:
    """Mean seconds per fwd+bwd+AdamW step (bf16 autocast), synchronised."""
    args = model.args
    x = torch.randn(batch, args.context_len, args.n_inputs, device=device)
    y = (torch.rand(batch, device=device) < 0.3).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast_for(device, "bf16"):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0].float(), y)
        loss.backward()
        opt.step()
    for _ in range(WARMUP if steps > 1 else 0):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main() -> int:
    if not torch.cuda.is_available():
        print("benchmarks.gpu needs a CUDA device; none is available here")
        return 1
    device = torch.device("cuda")
    cfg = load_study(resolve_study_path("phase6a")).model
    peak = bf16_peak_tflops()
    print(f"device {torch.cuda.get_device_name()}; bf16 matmul peak {peak:.0f} TFLOP/s")
    for budget in ("20M", "200M"):
        args = model_args_for(cfg, budget, 25, 0.1)
        model = build_model(args).to(device)
        s = train_steps(model, BATCH, STEPS, device)
        flops = flops_per_sample(args)["train"] * BATCH / s / 1e12
        print(f"{budget}: d/L/H {args.d_model}/{args.num_layers}/{args.num_heads}, batch {BATCH}: "
              f"{BATCH / s:,.0f} samples/s, {flops:.1f} TFLOP/s, MFU {flops / peak:.1%}")
        del model
        torch.cuda.empty_cache()
    args = model_args_for(cfg, "2B", 25, 0.1)
    total = torch.cuda.get_device_properties(device).total_memory
    micro = max_micro_batch(args, total, "bf16", checkpointing=True)
    est = memory_estimate(args, micro, "bf16", checkpointing=True)["total"]
    model = build_model(args, checkpointing=True).to(device)
    torch.cuda.reset_peak_memory_stats()
    s = train_steps(model, micro, 1, device)
    measured = torch.cuda.max_memory_allocated()
    print(f"2B: d/L/H {args.d_model}/{args.num_layers}/{args.num_heads}, micro-batch {micro} "
          f"(estimator, {total / 1e9:.0f} GB card): step {s:.1f} s, peak {measured / 1e9:.1f} GB "
          f"measured vs {est / 1e9:.1f} GB estimated ({measured / est:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
