"""Null control over many market seeds: how often does the pipeline report scaling by chance?

Runs ``studies/control_null.toml`` once per market seed (``synthetic:null?seed=S&...``, a
martingale with i.i.d. shocks, so nothing is predictable and loss cannot truly fall with
size), each in its own study directory, through the CLI as a user would. Per seed it reads the
report's findings (the headline verdict of test log-loss vs parameters) and the final runs'
eval.json (is any run's skill interval above 0?). Prints the false-positive rate of "loss falls
with size" (verdicts FALLS_EXTRAPOLATES or FALLS_IN_RANGE of :mod:`finscale.scaling.laws`) and
of "skill over the base rate", each with a 95 % Wilson interval, against the nominal 5 %.

Usage: ``python -m benchmarks control`` (20 seeds) or
``python -m benchmarks.bench_control --seeds 20 --first 0 --out /tmp/bench_control``.
Cost: one null study per seed (a few minutes each on 2 free cores). Finished seeds are
skipped on a rerun (studies are resumable), so the benchmark can be run in pieces.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

STUDY = Path(__file__).parents[1] / "studies" / "control_null.toml"
MARKET = "synthetic:null?seed={seed}&days=8000&vol=constant"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def run_seed(seed: int, out: Path) -> dict:
    """Run the null study of one market seed; its verdict and skill flags."""
    from finscale.scaling import FALLS_EXTRAPOLATES, FALLS_IN_RANGE

    name = f"control_null-m{seed}"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "finscale", "run", str(STUDY), "--no-monitor",
                        "--set", f'data.source="{MARKET.format(seed=seed)}"', "--set", f'name="{name}"',
                        "--set", f'output_dir="{out / "runs"}"', "--data-dir", str(out / "data")],
                       capture_output=True, text=True, env={**os.environ})
    took = time.perf_counter() - start
    if r.returncode != 0:
        return {"seed": seed, "error": r.stderr.strip().splitlines()[-1:], "seconds": took}
    study = out / "runs" / name
    found = json.loads((study / "report" / "findings.json").read_text())
    verdict = found["horizons"][0]["verdict"] if found["horizons"] else None
    skills = [json.loads(p.read_text())["test"]["ci"] for p in study.glob("final/*/eval.json")]
    return {"seed": seed, "verdict": verdict, "seconds": took,
            "falls": verdict in (FALLS_EXTRAPOLATES, FALLS_IN_RANGE),
            "skill": any((ci.get("skill") or [0, 0])[0] > 0 for ci in skills),
            "skill_val": any((ci.get("skill_val") or [0, 0])[0] > 0 for ci in skills),
            "runs": len(skills)}


def summarize(rows: list[dict]) -> str:
    done = [r for r in rows if "error" not in r]
    lines = [f"{'seed':>5} {'verdict':<60} {'skill>0':>8} {'skill_val>0':>11} {'s':>7}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['seed']:>5} ERROR {r['error']}")
            continue
        lines.append(f"{r['seed']:>5} {str(r['verdict']):<60} {str(r['skill']):>8} "
                     f"{str(r['skill_val']):>11} {r['seconds']:7.0f}")
    for key, what in (("falls", '"loss falls with size"'), ("skill", "skill over the training base rate "
                                                                        "(any run, CI above 0)"),
                      ("skill_val", "skill over the validation base rate (any run)")):
        k = sum(r[key] for r in done)
        lo, hi = wilson(k, len(done))
        lines.append(f"false positives, {what}: {k} of {len(done)} seeds = "
                     f"{k / max(len(done), 1):.2f} (95% Wilson [{lo:.2f}, {hi:.2f}])")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="market seeds to run (default 20)")
    ap.add_argument("--first", type=int, default=0, help="first market seed")
    ap.add_argument("--out", type=Path, default=Path("bench_control"), help="work directory")
    args = ap.parse_args(argv if argv is not None else [])
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.first, args.first + args.seeds):
        rows.append(run_seed(seed, args.out.resolve()))
        print(f"seed {seed}: {rows[-1]}", flush=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(summarize(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
