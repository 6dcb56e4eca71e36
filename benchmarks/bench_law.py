"""The capacity-limited calibration market: its expected curve, and detection over market seeds.

Two parts, both through the CLI as a user would run them (``studies/control_law.toml``):

- ``--oracle`` (the expected curve, run once per generator default): the study's budgets,
  trained on another market of the same generator (``--oracle-market``, default seed 2; the
  study's is 1) with ``--oracle-days`` days (ample data) for up to ``--oracle-epochs`` epochs
  (ample training, patience raised alike), seeds as in the study.
  Per budget it records the mean test log-loss above the known optimum of its own test days
  (``excess``), which is what ``[evaluate.expected_excess]`` of the study holds: the study's
  expected L(N) is its own optimum + excess. Prints the TOML table to paste.
- ``--seeds K`` (detection): ``control_law`` and ``control_null`` once per market seed S
  (``seed=S`` replaces the seed in each study's source); per seed the headline verdict at
  h=1, ``expected_covered`` from ``scaling/h1.json``; the share of law studies saying "falls
  ... and extrapolates" and of null studies saying anything but "no detectable scaling", with
  95 % Wilson intervals. ``--set KEY=VALUE`` (repeatable) reduces every study alike (say so
  when quoting the numbers).

Usage: ``python -m benchmarks law`` (the oracle) or
``python -m benchmarks.bench_law --seeds 10 --first 0 --out /tmp/bench_law``.
Cost: one study per market seed and control (minutes each); finished studies are skipped
on a rerun (studies are resumable), so it can be run in pieces.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from benchmarks.bench_control import wilson

STUDIES = Path(__file__).parents[1] / "studies"
LAW, NULL = STUDIES / "control_law.toml", STUDIES / "control_null.toml"
THREADS = ("--workers", "1", "--set", "run.threads=1")


def with_param(source: str, key: str, value) -> str:
    """``source`` with ``key=value`` replacing (or appended to) its query."""
    if re.search(rf"[?&]{key}=", source):
        return re.sub(rf"([?&]{key}=)[^&]*", rf"\g<1>{value}", source)
    return f"{source}{'&' if '?' in source else '?'}{key}={value}"


def run_study(study: Path, name: str, source: str, out: Path, sets: list[str]) -> dict:
    """Run one study through the CLI; its wall time and the returncode's last error line."""
    args = [sys.executable, "-m", "finscale", "run", str(study), "--no-monitor", *THREADS,
            "--set", f'data.source="{source}"', "--set", f'name="{name}"',
            "--set", f'output_dir="{out / "runs"}"', "--data-dir", str(out / "data")]
    for s in sets:
        args += ["--set", s]
    start = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ})
    row = {"name": name, "source": source, "seconds": round(time.perf_counter() - start, 1)}
    if r.returncode != 0:
        row["error"] = r.stderr.strip().splitlines()[-1:]
    return row


def study_result(out: Path, name: str) -> dict:
    """Verdict, slope interval and expected fields of h=1, and per-budget mean test log-loss."""
    study = out / "runs" / name
    found = json.loads((study / "report" / "findings.json").read_text())
    verdict = found["horizons"][0]["verdict"] if found["horizons"] else None
    h1 = json.loads((study / "scaling" / "h1.json").read_text())
    head = next((f for f in h1["fits"] if f["quantity"] == "log_loss" and f["axis"] == "params_total"), None)
    losses: dict[str, list[float]] = {}
    optimum: dict[str, list[float]] = {}
    for p in study.glob("final/*/eval.json"):
        ev = json.loads(p.read_text())
        budget = json.loads((p.parent / "config.json").read_text())["budget"]
        losses.setdefault(budget, []).append(ev["test"]["metrics"]["log_loss"])
        optimum.setdefault(budget, []).append((ev.get("optimal_log_loss") or {}).get("pooled"))
    mean = {b: sum(v) / len(v) for b, v in losses.items()}
    opt = {b: sum(v) / len(v) for b, v in optimum.items() if None not in v}
    return {"verdict": verdict, "slope": head["boot"]["fit"]["log_slope"] if head else None,
            "slope_ci": head["boot"].get("slope_ci") if head else None,
            "expected_slope": h1.get("expected_slope"), "expected_covered": h1.get("expected_covered"),
            "max_gap": (h1.get("expected") or {}).get("max_gap"), "log_loss": mean,
            "excess": {b: mean[b] - opt[b] for b in opt}, "optimum": opt}


def oracle(args) -> None:
    cfg = tomllib.loads(LAW.read_text())
    # Another market seed than the study's: the expected curve is the generator's, measured on
    # test days the study never sees (the same seed made the oracle the study retrained).
    source = with_param(with_param(cfg["data"]["source"], "days", args.oracle_days), "seed", args.oracle_market)
    sets = [f"train.max_epochs={args.oracle_epochs}", f"train.patience={args.oracle_patience}",
            "evaluate.expected_excess={}", *args.set]
    row = run_study(LAW, "control_law-oracle", source, args.out, sets)
    print(row, flush=True)
    if "error" in row:
        return
    res = study_result(args.out, "control_law-oracle")
    (args.out / "oracle.json").write_text(json.dumps({**row, **res}, indent=1))
    print(f"oracle: {source}, max_epochs {args.oracle_epochs}, patience {args.oracle_patience}, "
          f"{row['seconds']:.0f} s")
    for b in cfg["model"]["budgets"]:
        print(f"  {b:>8}: test log-loss {res['log_loss'][b]:.4f}, optimum {res['optimum'][b]:.4f}, "
              f"excess {res['excess'][b]:.4f}")
    print("[evaluate.expected_excess]")
    for b in cfg["model"]["budgets"]:
        print(f'"{b}" = {res["excess"][b]:.4f}')


def detection(args) -> None:
    from finscale.scaling import FALLS_EXTRAPOLATES, FLAT

    rows = []
    for seed in range(args.first, args.first + args.seeds):
        for kind, study in (("law", LAW), ("null", NULL)):
            source = with_param(tomllib.loads(study.read_text())["data"]["source"], "seed", seed)
            row = run_study(study, f"{study.stem}-m{seed}", source, args.out, args.set)
            if "error" not in row:
                row.update(study_result(args.out, row["name"]))
            rows.append({"kind": kind, "seed": seed, **row})
            print({k: v for k, v in rows[-1].items() if k not in ("log_loss", "excess", "optimum")}, flush=True)
            (args.out / "detection.json").write_text(json.dumps(rows, indent=1))
    for kind, hit, what in (("law", lambda r: r["verdict"] == FALLS_EXTRAPOLATES, "say 'falls ... and extrapolates'"),
                            ("law", lambda r: bool(r["expected_covered"]), "cover the expected slope"),
                            ("null", lambda r: r["verdict"] != FLAT, "say anything but 'no detectable scaling'")):
        done = [r for r in rows if r["kind"] == kind and "error" not in r]
        k = sum(hit(r) for r in done)
        lo, hi = wilson(k, len(done))
        print(f"control_{kind}: {k} of {len(done)} market seeds {what} = {k / max(len(done), 1):.2f} "
              f"(95% Wilson [{lo:.2f}, {hi:.2f}])")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=0, help="market seeds for detection (default 0: run the oracle)")
    ap.add_argument("--first", type=int, default=0, help="first market seed")
    ap.add_argument("--oracle-days", type=int, default=50_000, help="days of the oracle's market")
    ap.add_argument("--oracle-market", type=int, default=2, help="market seed of the oracle (the study's is 1)")
    ap.add_argument("--oracle-epochs", type=int, default=120)
    ap.add_argument("--oracle-patience", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE for every study (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("bench_law"), help="work directory")
    args = ap.parse_args(argv if argv is not None else [])
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    (detection if args.seeds else oracle)(args)


if __name__ == "__main__":
    main(sys.argv[1:])
