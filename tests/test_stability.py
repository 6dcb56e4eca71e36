"""Replicate seed sets and how often each finding holds across them (guard 13).

Covers: the derived seed sets (replicate 0 = the study's seeds; disjoint; deterministic; bad
input is a one-line error before any work), run ids and config.json naming the replicate,
the stability rule on synthetic per-run points with planted seed variance (a verdict that
flips between replicates is flagged unstable, one that holds is stated), the seed-variance
interval's coverage by simulation (fast version of benchmarks/bench_scaling_coverage.py), and
one end-to-end smoke study with ``--replicates 2``.
"""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.hpo.results import final_specs
from finscale.report import findings as F
from finscale.report.findings import UNSTABLE, build_findings
from finscale.repro import derive_seed, replicate_seed_sets
from finscale.scaling import FALLS_EXTRAPOLATES, STABLE_SHARE, stability_row
from finscale.scaling.laws import (
    bootstrap_fit,
    compare_to_constant,
    decide_verdict,
    predict_power_law,
    resample_seeds,
)
from finscale.testing.coverage import Truth, alpha_coverage

SIZES = np.geomspace(1e4, 1e6, 5)


# --------------------------------------------------------------------------- seed sets

def test_replicate_zero_is_the_studys_seeds_and_the_sets_are_disjoint_and_deterministic():
    sets = replicate_seed_sets((0, 1), 4)
    assert sets[0] == (0, 1) and len(sets) == 4 and all(len(s) == 2 for s in sets)
    flat = [s for group in sets for s in group]
    assert len(set(flat)) == len(flat)
    assert sets == replicate_seed_sets((0, 1), 4)            # deterministic
    assert replicate_seed_sets((0, 1), 2) == sets[:2]        # adding replicates keeps earlier ones
    assert replicate_seed_sets((5, 9), 2)[1] != sets[1]      # derived from the study's seeds


def test_colliding_or_bad_replicates_are_clear_errors():
    with pytest.raises(ValueError, match=r"replicates: 0; expected an integer >= 1"):
        replicate_seed_sets((0, 1), 0)
    clash = derive_seed("replicate", 1, 0) % 1_000_000  # replicate 1 would derive it from seed 0
    with pytest.raises(ValueError, match=rf"seed {clash} occurs in replicates 0 and 1"):
        replicate_seed_sets((0, clash), 2)


def test_run_ids_of_replicate_zero_do_not_change_and_later_replicates_say_theirs(tmp_path):
    base = load_study(resolve_study_path("smoke"), overrides=[f"output_dir={json.dumps(str(tmp_path))}"])
    two = load_study(resolve_study_path("smoke"), overrides=[f"output_dir={json.dumps(str(tmp_path))}", "replicates=2"])
    one_ids = [s.run_id for s in final_specs(base)]
    specs = final_specs(two)
    assert [s.run_id for s in specs if s.replicate == 0] == one_ids
    later = [s for s in specs if s.replicate == 1]
    assert len(later) == len(one_ids) and all("-r1-s" in s.run_id for s in later)
    assert all(s.config["replicate"] == 1 for s in later)
    assert {s.seed for s in later}.isdisjoint(base.seeds)


# --------------------------------------------------------------------------- stability rule

def _verdict(N, L):
    boot = bootstrap_fit((N, L), resample_seeds(N, L), 60, 0)
    return decide_verdict(boot["alpha_ci"], boot["slope_ci"], compare_to_constant(N, L)["preferred"])


def _planted(A: float, sigma: float, replicates: int, seed: int):
    """(pooled verdict, per-replicate verdicts) of runs from L = 0.3 + A·N^-0.3 with a planted
    seed spread ``sigma`` (log scale), 2 seeds per size and replicate."""
    rng = np.random.default_rng(seed)
    law = {"E": 0.3, "A": A, "alpha": 0.3}
    N = np.repeat(SIZES, 2)
    reps = [predict_power_law(law, N) * np.exp(sigma * rng.standard_normal(N.size)) for _ in range(replicates)]
    pooled = _verdict(np.tile(N, replicates), np.concatenate(reps))
    return pooled, [_verdict(N, L) for L in reps]


def _findings_with(row: dict):
    runs = pd.DataFrame([{"run_id": f"{b}-{s}", "budget": b, "horizon": 1, "seed": s, "params_total": p}
                         for b, p in (("s", 1e4), ("m", 1e5)) for s in (0, 1)])
    evals = runs.assign(log_loss=[0.35, 0.351, 0.34, 0.341])
    runs = runs.assign(val_log_loss=[0.36, 0.361, 0.35, 0.351])  # the best size is chosen on these
    base = pd.DataFrame([{"horizon": 1, "baseline": "logistic", "log_loss": 0.30, "val_log_loss": 0.31}])
    stability = {"measured": row["measured"], "rows": [row]}
    cmps = pd.DataFrame(columns=["run_id", "budget", "horizon", "seed", "baseline", "diff_lo", "diff_hi"])
    return build_findings(runs, evals, base, cmps, pd.DataFrame(),
                          [{"horizon": 1, "verdict": row["verdict"], "text": "pooled verdict text"}],
                          stability)


def test_planted_seed_variance_flags_a_flipping_verdict_unstable_and_states_a_steady_one():
    # Strong law, small seed spread: every replicate finds the decline -> stated.
    pooled, per = _planted(A=2.0, sigma=0.002, replicates=3, seed=0)
    row = stability_row(1, F.HEADLINE_FINDING, pooled, per)
    assert pooled == FALLS_EXTRAPOLATES and row["share"] == 1.0 and row["stable"] is True
    hf = _findings_with(row).horizons[0]
    assert hf.verdict == FALLS_EXTRAPOLATES and hf.verdict_text == "pooled verdict text"
    assert "holds in 3 of 3 replicate seed sets" in hf.stability
    # Weak law, seed spread of the same order: the verdict flips between replicates -> unstable.
    pooled, per = _planted(A=0.05, sigma=0.004, replicates=5, seed=0)
    row = stability_row(1, F.HEADLINE_FINDING, pooled, per)
    assert len(set(per)) > 1 and row["share"] < STABLE_SHARE and row["stable"] is False
    f = _findings_with(row)
    hf = f.horizons[0]
    assert hf.verdict == UNSTABLE and hf.pooled_verdict == pooled
    assert UNSTABLE in hf.verdict_text and "no verdict is stated" in hf.verdict_text
    assert f"holds in only {round(row['share'] * 5)} of 5 replicate seed sets" in hf.verdict_text
    assert "unstable" in [c.kind for c in f.caveats]


def test_one_replicate_says_stability_was_not_measured():
    row = stability_row(1, F.HEADLINE_FINDING, FALLS_EXTRAPOLATES, [FALLS_EXTRAPOLATES])
    assert row["measured"] is False and row["share"] is None and row["stable"] is None
    f = _findings_with(row)
    assert f.horizons[0].verdict == FALLS_EXTRAPOLATES
    assert "Stability across seeds was not measured" in f.horizons[0].stability
    assert "stability_not_measured" in [c.kind for c in f.caveats]


def test_stated_threshold_in_findings_is_the_scaling_stages():
    assert F.STABLE == STABLE_SHARE


def test_missing_replicate_fit_counts_as_not_holding():
    row = stability_row(2, "scaling: log_loss vs params_total", FALLS_EXTRAPOLATES,
                        [FALLS_EXTRAPOLATES] * 4 + [None])
    assert row["share"] == 0.8 and row["stable"] is True and row["replicate_verdicts"][-1] == "no fit"
    row = stability_row(2, "x", FALLS_EXTRAPOLATES, [FALLS_EXTRAPOLATES] * 3 + [None, None])
    assert row["share"] == 0.6 and row["stable"] is False


# --------------------------------------------------------------------------- interval coverage

def test_pooled_seed_interval_covers_alpha_where_the_naive_bootstrap_does_not():
    """Fast version of benchmarks/bench_scaling_coverage.py: 2 seeds per size, planted 1% seed
    spread. The naive percentile bootstrap undercovers; the pooled t-corrected one does not."""
    res = alpha_coverage(Truth(sigma_seed=0.01), 2, sims=16, n_resamples=40, methods=("naive", "pooled"))
    assert res["pooled"]["coverage"] >= 0.85
    assert res["naive"]["coverage"] < res["pooled"]["coverage"]
    assert res["pooled"]["median_width"] > res["naive"]["median_width"]


# --------------------------------------------------------------------------- end to end

def test_cli_rejects_bad_replicates_before_any_work(tmp_path):
    out = f"output_dir={json.dumps(str(tmp_path))}"
    r = run_cli("run", "smoke", "--replicates", "0", "--set", out)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
    assert "--replicates 0: expected an integer >= 1" in r.stderr
    clash = derive_seed("replicate", 1, 0) % 1_000_000
    r = run_cli("run", "smoke", "--replicates", "2", "--set", out, "--set", f"seeds=[0, {clash}]")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
    assert f"seed {clash} occurs in replicates 0 and 1" in r.stderr
    assert not (tmp_path / "smoke").exists()


@pytest.mark.slow
def test_smoke_study_with_two_replicates_writes_replicate_runs_and_stability(tmp_path):
    args = ["run", "smoke", "--replicates", "2", "--no-monitor"]
    for o in (f"output_dir={json.dumps(str(tmp_path))}", f"data.data_dir={json.dumps(str(tmp_path / 'data'))}",
              "train.max_epochs=1", "hpo.trials=1", "hpo.max_epochs=1", "evaluate.bootstrap_resamples=50",
              "evaluate.scaling_resamples=20"):
        args += ["--set", o]
    r = run_cli(*args, timeout=600)
    assert r.returncode == 0, r.stderr
    study = tmp_path / "smoke"
    dirs = sorted((study / "final").iterdir())
    configs = {d.name: json.loads((d / "config.json").read_text()) for d in dirs}
    assert len(dirs) == 12  # 3 budgets x 2 seeds x 2 replicates
    assert sorted(c["replicate"] for c in configs.values()) == [0] * 6 + [1] * 6
    assert all(("-r1-" in name) == (c["replicate"] == 1) for name, c in configs.items())
    doc = json.loads((study / "scaling" / "stability.json").read_text())
    assert doc["measured"] and doc["replicates_evaluated"] == [0, 1]
    table = pd.read_csv(study / "report" / "stability.csv")
    assert {"verdict", "share", "stable", "alpha_r0", "alpha_r1"} <= set(table.columns)
    assert set(table["n_replicates"]) == {2} and table["share"].between(0, 1).all()
    lines = json.loads((study / "report" / "findings.json").read_text())["lines"]
    assert any("of 2 replicate seed sets" in line for line in lines)
    again = run_cli(*args, "--phase", "final", timeout=600)
    assert again.returncode == 0 and "already done: 12" in again.stdout
