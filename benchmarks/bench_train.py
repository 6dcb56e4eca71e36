"""Trainer epoch anatomy: data, forward/backward/step and evaluation for a ~1M mixed model.

Workload (issue 6): the default study's data (bundled S&P 500, a20, context 80, horizon 1,
contiguous split), a ~1M-parameter mixed-mode PatchTST, batch 128, fp32 on this CPU.
Reported per epoch (median over epochs): data gathering, forward+backward+AdamW step,
validation, and loop overhead = everything but forward/backward/step (target <= 10% of
the epoch). Peer, measured in the same run: a bare loop doing only forward/backward/step on
the same batches (pre-gathered), i.e. the floor any trainer pays.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.model import build_model
from finscale.rundata import final_data, prepare
from finscale.rundir import RunDir
from finscale.runspec import make_spec
from finscale.train import Trainer, build_optimizer, loss_fn
from finscale.windows import epoch_order

EPOCHS, TARGET_OVERHEAD = 3, 0.10


def bare_epoch(spec, data) -> float:
    """Forward/backward/step only, on batches gathered before the clock starts."""
    torch.manual_seed(0)
    model = build_model(spec.model_args)
    opt, loss = build_optimizer(model, spec.train), loss_fn(spec.train, torch.device("cpu"))
    order = epoch_order(len(data.train), 0, 0)
    bs = spec.train.batch_size
    batches = [data.train.get_batch(order[i:i + bs]) for i in range(0, len(order), bs)]
    model.train()
    t0 = time.perf_counter()
    for x, y in batches:
        loss(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_study(resolve_study_path("default"), [
            f'output_dir="{tmp}/runs"', f'data.data_dir="{tmp}/data"', 'model.budgets=["1M"]',
            f"train.max_epochs={EPOCHS}", f"train.patience={EPOCHS}"])
        spec = make_spec(cfg, "1M", 1, 0)
        data, _ = final_data(prepare(cfg), cfg, 1)
        run = RunDir(Path(tmp) / "run").create()
        Trainer(run, model_args=spec.model_args, cfg=spec.train, data=data, seed=0,
                config_hash=spec.digest).fit()
        epochs = [m for m in run.read_metrics() if m["event"] == "epoch"]
        bare = statistics.median(bare_epoch(spec, data) for _ in range(EPOCHS))
    med = {k: statistics.median(m[k] for m in epochs)
           for k in ("epoch_s", "train_s", "data_s", "compute_s")}
    eval_s = med["epoch_s"] - med["train_s"]
    overhead = 1 - med["compute_s"] / med["epoch_s"]
    args = spec.model_args
    table = Table(title=f"trainer epoch, ~1M mixed PatchTST (d{args.d_model}-l{args.num_layers}), "
                        f"{len(data.train)} train / {len(data.val)} val windows, batch {spec.train.batch_size}")
    for col in ("part", "seconds", "share of epoch"):
        table.add_column(col)
    for name, value in (("data (gather batches)", med["data_s"]),
                        ("forward/backward/step", med["compute_s"]),
                        ("validation", eval_s),
                        ("other loop work", med["train_s"] - med["data_s"] - med["compute_s"]),
                        ("epoch", med["epoch_s"])):
        table.add_row(name, f"{value:.3f}", f"{value / med['epoch_s']:.1%}")
    Console().print(table)
    verdict = "met" if overhead <= TARGET_OVERHEAD else "NOT met"
    print(f"loop overhead (all but forward/backward/step): {overhead:.1%} "
          f"(target <= {TARGET_OVERHEAD:.0%}: {verdict})")
    print(f"peer: bare forward/backward/step loop {bare:.3f} s per epoch; trainer epoch / bare = "
          f"{med['epoch_s'] / bare:.2f}x")


if __name__ == "__main__":
    main()
