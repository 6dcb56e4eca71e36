"""Training-step throughput in fp32 and bf16 (CPU autocast) vs HF PatchTST, and share of peak.

Workload (issue 31): bench_model's channel-independent PatchTST (25 inputs, context 60, patch
16, stride 8, dropout 0.1) at ~0.2M / ~2M / ~20M parameters, batch 64 (16 at ~20M, whose
step at 64 takes minutes of wall time on a shared 2-core machine); one training step =
forward (under ``torch.autocast("cpu", bfloat16)`` for bf16, as the trainer does) + fp32
BCE-with-logits on float logits + backward + fused AdamW. Peer, in the same run: HF
``PatchTSTForClassification`` at the same shape, in fp32 and under the same autocast.
Share of peak: achieved GFLOP/s (analytic FLOPs, ``flops_per_sample``) over a 2048^3 matmul
measured in the same run, in the step's precision (bf16 steps against the bf16 peak).
Timing: ONE torch thread and ``time.process_time`` (CPU seconds of this process), median of
a few steps, variants interleaved: on a machine shared with other jobs wall-clock time
measures the neighbours; CPU time of a one-thread process measures the work.
Targets: bf16/fp32 >= 1.6x at ~2M; ours (bf16) >= 1.5x HF at ~2M.
A second table times the default study's CPU ladder (mixed mode, context 80, batch 128,
cpu-s 5k ... cpu-xl 500k) the same way: the measurement behind ``model.precision``'s default
(fp32 on CPU: bf16 does not pay at the smallest sizes).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from benchmarks.bench_model import CONTEXT, INPUTS, SIZES, hf_model, our_args
from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.model import build_model, count_parameters, cpu_bf16_support, flops_per_sample, model_args_for

BATCH = {"0.2M": 64, "2M": 64, "20M": 16}
TARGET_BF16, TARGET_HF = 1.6, 1.5


def _cpu_time(fn: Callable[[], object]) -> float:
    """CPU seconds of this process spent in ``fn()`` (all its threads)."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def step_fn(model: torch.nn.Module, precision: str, batch: int) -> Callable[[], None]:
    """One training step of ``model`` as the trainer runs it, in ``precision`` (fp32 | bf16):
    forward under CPU bf16 autocast for bf16, fp32 BCE-with-logits on float logits, backward,
    fused AdamW. Fixed data (seed 0) of the model's shape (bench_model's for HF)."""
    torch.manual_seed(0)
    args = getattr(model, "args", None)
    context, inputs = (args.context_len, args.n_inputs) if args is not None else (CONTEXT, INPUTS)
    x, y = torch.randn(batch, context, inputs), (torch.rand(batch) < 0.3).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        F.binary_cross_entropy_with_logits(logits[:, 0].float(), y).backward()
        opt.step()
    return step


def measure(variants: dict[str, Callable[[], None]], batch: int, steps: int,
                warmup: int) -> dict[str, float]:
    """{name: training samples/s in CPU time}, median of ``steps``, the variants interleaved."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(steps):
        for name, fn in variants.items():
            times[name].append(_cpu_time(fn))
    return {k: batch / statistics.median(v) for k, v in times.items()}


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    """GFLOP/s of an n^3 matmul in ``dtype`` (CPU time, best of ``reps``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_cpu_time(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def hf_peer(args):
    """HF PatchTST at our shape, or None where transformers is missing."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return None
    return hf_model(args)


def rows(console: Console):
    for label, budget in SIZES.items():
        args = our_args(budget, "independent")
        flops = flops_per_sample(args)["train"]
        ours, hf = build_model(args), hf_peer(args)
        batch = BATCH[label]
        variants = {"fp32": step_fn(ours, "fp32", batch), "bf16": step_fn(build_model(args), "bf16", batch)}
        if hf is not None:
            variants |= {"hf fp32": step_fn(hf, "fp32", batch), "hf bf16": step_fn(hf_peer(args), "bf16", batch)}
        steps, warmup = (2, 1) if budget >= 20_000_000 else (5, 2)
        res = measure(variants, batch, steps, warmup)
        peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
        share = {p: res[p] * flops / 1e9 / peak for p, peak in (("fp32", peak32), ("bf16", peak16))}
        hf_cols = (["-"] * 4 if hf is None else
                   [f"{res['hf fp32']:,.0f}", f"{res['hf bf16']:,.0f}", f"{res['fp32'] / res['hf fp32']:.2f}x",
                    f"{res['bf16'] / res['hf bf16']:.2f}x"])
        row = [label, str(batch), f"{count_parameters(ours)['total']:,}", f"{res['fp32']:,.0f}", f"{res['bf16']:,.0f}",
               f"{res['bf16'] / res['fp32']:.2f}x", *hf_cols, f"{share['fp32']:.0%}", f"{share['bf16']:.0%}",
               f"{peak32:.0f} / {peak16:.0f}"]
        console.print("  measured " + " | ".join(row), style="dim", markup=False)
        yield row


def ladder_rows():
    """bf16/fp32 on the default study's CPU ladder (its model section, 25 inputs, batch 128)."""
    model_cfg = load_study(resolve_study_path("default")).model
    for budget in ("cpu-s", "cpu-m", "cpu-l", "cpu-xl"):
        args = model_args_for(model_cfg, budget, 25, 0.1)
        res = measure({p: step_fn(build_model(args), p, 128) for p in ("fp32", "bf16")}, 128, 10, 3)
        yield [budget, f"{count_parameters(build_model(args))['total']:,}", f"{res['fp32']:,.0f}",
               f"{res['bf16']:,.0f}", f"{res['bf16'] / res['fp32']:.2f}x"]


def main() -> None:
    torch.set_num_threads(1)
    console = Console(width=200)
    flag = cpu_bf16_support()
    console.print(f"torch {torch.__version__}, 1 thread, CPU time; native bf16: {flag or 'no (emulated: slow)'}")
    try:
        import transformers  # noqa: F401
    except ImportError:
        console.print("HF PatchTST peer SKIPPED: transformers is not installed "
                      "(pip install 'finscale[bench]'); HF columns show '-'", markup=False)
    table = Table(title="training step, samples/s (independent mode), fp32 vs bf16 autocast")
    for col in ("size", "batch", "params", "fp32", "bf16", "bf16/fp32", "HF fp32", "HF bf16", "vs HF fp32",
                "vs HF bf16", "fp32 of peak", "bf16 of peak", "peak GFLOP/s fp32 / bf16"):
        table.add_column(col, justify="right")
    for row in rows(console):
        table.add_row(*row)
    console.print(table)
    ladder = Table(title="default study's CPU ladder (mixed, context 80, batch 128), samples/s")
    for col in ("budget", "params", "fp32", "bf16", "bf16/fp32"):
        ladder.add_column(col, justify="right")
    for row in ladder_rows():
        ladder.add_row(*row)
    console.print(ladder)
    console.print(f"targets: bf16/fp32 >= {TARGET_BF16}x at 2M; ours bf16 >= {TARGET_HF}x HF bf16 at 2M. "
                  "'vs HF' = ours / HF in the same precision.")


if __name__ == "__main__":
    main()
