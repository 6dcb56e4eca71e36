"""GPU check (run by hand on a CUDA machine, never in CI): `python -m benchmarks.gpu [--out F]`.

The one script to run when a GPU is available; it sizes the phase6a study's published
shapes (studies/phase6a.toml, fixed mode: the cells' own model args) and records:
1. the bf16 matmul peak measured here (8192^3) next to the nominal dense bf16 peak of the
   H100/H200 class (989 TFLOP/s, finscale.model.compute.GPU_CLASSES);
2. bf16-autocast training throughput of 2M-h1 (48 layers: the kernel-launch floor), 20M-h5
   and 200M-h2 at the study's batch (128), with MFU against both peaks and the measured
   seconds per layer per step next to the planner's GPU_LAYER_STEP_S;
3. one forward+backward+AdamW step of the largest 2B shape (2B-h5, 2.27B parameters, activation
   checkpointing as the study sets it) at the study's batch: measured peak memory vs the
   estimator (finscale.model.compute.memory_estimate), and the largest micro-batch the
   estimator says fits this card.
Designed to finish in < 5 minutes on one H100/H200. Results are printed and written as JSON
(``--out``, default ``gpu_benchmark.json``) for docs/reproduction.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.hpo.results import cell_params
from finscale.model import autocast_for, build_model, flops_per_sample, max_micro_batch, memory_estimate
from finscale.model.compute import ASSUMED_MFU, GPU_CLASSES, GPU_LAYER_STEP_S
from finscale.runspec import make_spec

STEPS, WARMUP = 10, 3
THROUGHPUT_CELLS = (("2M", 1), ("20M", 5), ("200M", 2))
MEMORY_CELL = ("2B", 5)
NOMINAL = GPU_CLASSES["H100"].bf16_flops


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


def cell_spec(cfg, budget: str, horizon: int):
    params, _ = cell_params(cfg, budget, horizon)
    return make_spec(cfg, budget, horizon, 0, params)


def throughput(cfg, budget, horizon, peak, device) -> dict:
    spec = cell_spec(cfg, budget, horizon)
    args, batch = spec.model_args, spec.train.batch_size
    model = build_model(args, checkpointing=cfg.model.activation_checkpointing).to(device)
    model.train()
    s = train_steps(model, batch, STEPS, device)
    f = flops_per_sample(args)
    model_flops = f["train"] * batch / s  # MFU counts model FLOPs, not the recomputation
    del model
    torch.cuda.empty_cache()
    return {"cell": f"{budget}-h{horizon}", "d_model": args.d_model, "num_layers": args.num_layers,
            "batch": batch, "step_s": s, "samples_per_s": batch / s, "tflops": model_flops / 1e12,
            "mfu_vs_measured_peak": model_flops / (peak * 1e12), "mfu_vs_989": model_flops / NOMINAL,
            "s_per_layer_step": s / args.num_layers}


def memory_check(cfg, device) -> dict:
    spec = cell_spec(cfg, *MEMORY_CELL)
    args, batch, ckpt = spec.model_args, spec.train.batch_size, cfg.model.activation_checkpointing
    total = torch.cuda.get_device_properties(device).total_memory
    est = memory_estimate(args, batch, "bf16", ckpt, device_type="cuda")["total"]
    model = build_model(args, checkpointing=ckpt).to(device)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    s = train_steps(model, batch, 1, device)
    measured = torch.cuda.max_memory_allocated()
    return {"cell": f"{MEMORY_CELL[0]}-h{MEMORY_CELL[1]}", "params": sum(p.numel() for p in model.parameters()),
            "batch": batch, "checkpointing": ckpt, "step_s": s, "peak_bytes": measured,
            "estimate_bytes": est, "measured_over_estimate": measured / est,
            "device_bytes": total, "max_micro_batch_estimated": max_micro_batch(args, total, "bf16", ckpt, "cuda")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_benchmark.json", help="JSON results file")
    out = ap.parse_args(argv).out
    if not torch.cuda.is_available():
        print("benchmarks.gpu needs a CUDA device; none is available here")
        return 1
    device = torch.device("cuda")
    cfg = load_study(resolve_study_path("phase6a"))
    peak = bf16_peak_tflops()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "measured_bf16_peak_tflops": peak, "nominal_bf16_tflops": NOMINAL / 1e12,
              "planner_assumed_mfu": ASSUMED_MFU, "planner_layer_step_s": GPU_LAYER_STEP_S,
              "throughput": [], "memory": None}
    print(f"device {result['device']}; bf16 matmul peak {peak:.0f} TFLOP/s measured, "
          f"{NOMINAL / 1e12:.0f} nominal (dense)")
    for budget, horizon in THROUGHPUT_CELLS:
        r = throughput(cfg, budget, horizon, peak, device)
        result["throughput"].append(r)
        print(f"{r['cell']}: d/L {r['d_model']}/{r['num_layers']}, batch {r['batch']}: "
              f"{r['samples_per_s']:,.0f} samples/s, {r['tflops']:.1f} TFLOP/s, MFU "
              f"{r['mfu_vs_989']:.1%} of 989 ({r['mfu_vs_measured_peak']:.1%} of measured peak; "
              f"planner assumes {ASSUMED_MFU:.0%}), {r['s_per_layer_step'] * 1e3:.3f} ms/layer/step "
              f"(planner floor {GPU_LAYER_STEP_S * 1e3:.2f})")
    m = memory_check(cfg, device)
    result["memory"] = m
    print(f"{m['cell']}: {m['params']:,} params, batch {m['batch']}, checkpointing {m['checkpointing']}: "
          f"step {m['step_s']:.1f} s, peak {m['peak_bytes'] / 1e9:.1f} GB measured vs "
          f"{m['estimate_bytes'] / 1e9:.1f} GB estimated ({m['measured_over_estimate']:.2f}x); "
          f"card {m['device_bytes'] / 1e9:.0f} GB, estimator's largest micro-batch {m['max_micro_batch_estimated']}")
    with open(out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
