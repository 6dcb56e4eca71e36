"""Compute accounting and scaling with compute: recorded FLOPs, the loss envelope, L(C), N_opt."""

import numpy as np
import pandas as pd
import pytest

from finscale.config import TrainConfig
from finscale.model import flops_per_sample
from finscale.rundir import RunDir
from finscale.scaling.compute import compute_optimal, fit_envelope, hpo_compute, loss_envelope
from finscale.train import Trainer, fit_compute_budget
from test_train import args, synthetic, trainer

# A planted Chinchilla surface: L(N, D) = E + A·N^-alpha + B·D^-beta with C = 6·N·D. Its
# compute envelope is E + K·C^-gamma with gamma = alpha·beta / (alpha + beta), and the
# compute-optimal N grows as C^(beta / (alpha + beta)) (Hoffmann et al. 2022, appendix D).
E, A, B, ALPHA, BETA = 0.5, 20.0, 50.0, 0.3, 0.6
GAMMA = ALPHA * BETA / (ALPHA + BETA)  # 0.2
A_EXP = BETA / (ALPHA + BETA)          # 2/3


def planted_points(sizes=np.geomspace(1e4, 1e9, 40), seeds=(0, 1), noise=0.0) -> pd.DataFrame:
    """Runs whose (epoch) points span C/6 in [1e9, 1e13]; for this surface N_opt stays inside
    the sizes over that range, so the envelope is the compute-optimal frontier."""
    rng = np.random.default_rng(0)
    rows = []
    for i, N in enumerate(sizes):
        for s in seeds:
            for e, c6 in enumerate(np.geomspace(1e9, 1e13, 30)):
                D = c6 / N
                L = (E + A * N**-ALPHA + B * D**-BETA) * (1 + noise * rng.normal())
                rows.append(dict(run_id=f"r{i}-s{s}", budget=f"b{i}", seed=s, epoch=e + 1, N=N, D=D,
                                 C=6 * N * D, L=L))
    return pd.DataFrame(rows)


def test_envelope_is_the_running_minimum_over_compute():
    C = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 3.0])
    L = np.array([0.1, 1.0, 0.5, 1.2, 0.6, 0.4])
    env = loss_envelope(C, L)
    assert list(C[env]) == [1.0, 3.0, 5.0] and list(L[env]) == [1.0, 0.4, 0.1]


def test_envelope_of_known_curves_recovers_the_compute_exponent():
    fit = fit_envelope(planted_points(), n_resamples=20, seed=0)
    assert fit["reason"] == ""
    assert fit["fit"]["gamma"] == pytest.approx(GAMMA, abs=0.005)
    assert fit["fit"]["E"] == pytest.approx(E, rel=0.01)
    lo, hi = fit["ci"]["gamma"]
    assert lo <= fit["fit"]["gamma"] <= hi


def test_envelope_interval_covers_the_exponent_under_seed_noise():
    fit = fit_envelope(planted_points(sizes=np.geomspace(1e4, 1e9, 12), noise=0.003), n_resamples=60, seed=1)
    lo, hi = fit["ci"]["gamma"]
    assert lo < hi and lo - 0.05 < GAMMA < hi + 0.05


def test_too_few_envelope_points_say_why():
    pts = pd.DataFrame({"run_id": ["a", "a"], "budget": ["s", "s"], "epoch": [1, 2], "N": [1e3, 1e3],
                        "C": [1.0, 2.0], "D": [1.0, 2.0], "L": [0.7, 0.6]})
    assert "needs >= 3" in fit_envelope(pts, n_resamples=10, seed=0)["reason"]


def test_compute_optimal_size_follows_the_planted_allocation():
    out = compute_optimal(planted_points(sizes=np.geomspace(1e4, 1e9, 10)), n_resamples=20, seed=0)
    assert out["reason"] == ""
    assert out["a_exp"] == pytest.approx(A_EXP, abs=0.01)
    assert out["kappa"] == pytest.approx(1.0)
    n_opt = np.asarray(out["N_opt"])
    slope = np.polyfit(np.log(out["C"]), np.log(n_opt), 1)[0]
    assert slope == pytest.approx(A_EXP, abs=0.01)
    assert all(lo <= n <= hi for lo, n, hi in zip(out["N_lo"], n_opt, out["N_hi"]))


def test_epoch_lines_record_cumulative_training_flops(tmp_path):
    t = trainer(tmp_path)
    t.fit()
    lines = [m for m in t.run.read_metrics() if m.get("event") == "epoch"]
    per_epoch = flops_per_sample(t.args)["train"] * len(t.data.train)
    assert [m["train_flops"] for m in lines] == [per_epoch * e for e in (1, 2, 3)]


def test_compute_budget_sets_the_epochs_from_flops():
    data = synthetic()
    per_epoch = flops_per_sample(args())["train"] * len(data.train)
    cfg = TrainConfig(max_epochs=30, compute_budget=4.4 * per_epoch)
    assert fit_compute_budget(cfg, args(), len(data.train)).max_epochs == 4
    assert fit_compute_budget(TrainConfig(max_epochs=30, compute_budget=0.1), args(), len(data.train)).max_epochs == 1
    assert fit_compute_budget(TrainConfig(max_epochs=7), args(), len(data.train)).max_epochs == 7


def test_compute_budget_run_spends_about_the_budget(tmp_path):
    data = synthetic()
    per_epoch = flops_per_sample(args())["train"] * len(data.train)
    t = Trainer(RunDir(tmp_path / "iso").create(), model_args=args(), data=data, seed=0, config_hash="h" * 64,
                cfg=TrainConfig(max_epochs=30, batch_size=64, patience=50, compute_budget=2 * per_epoch))
    t.fit()
    lines = [m for m in t.run.read_metrics() if m.get("event") == "epoch"]
    assert len(lines) == 2 and lines[-1]["train_flops"] == 2 * per_epoch


def test_hpo_compute_sums_trials_per_cell(tmp_path):
    from finscale.config import load_study

    cfg = load_study(None, overrides=[f"output_dir={tmp_path}", "name=c"])
    cell = tmp_path / "c" / "hpo" / "cpu-s-h1" / "trials"
    for i, flops in enumerate((10.0, 32.0)):
        run = RunDir(cell / f"t000{i}-abcd").create()
        run.append_metrics({"event": "epoch", "epoch": 1, "train_flops": flops / 2})
        run.append_metrics({"event": "epoch", "epoch": 2, "train_flops": flops})
    rows = hpo_compute(cfg)
    assert rows == [{"cell": "cpu-s-h1", "trials": 2, "trials_counted": 2, "flops": 42.0}]


def test_isoflop_slice_finds_the_planted_optimal_size():
    from finscale.scaling.compute import isoflop_slices

    sizes = np.geomspace(1e3, 1e5, 5)
    rows = [{"run_id": f"r{i}-{s}", "budget": f"b{i}", "params_total": N, "train_flops": 1e10,
             "val_log_loss": 0.5 + 0.01 * (np.log(N) - np.log(1e4)) ** 2 + 1e-4 * s}
            for i, N in enumerate(sizes) for s in (0, 1)]
    runs = pd.DataFrame(rows)
    (out,) = isoflop_slices(runs, pd.Series(1e10, index=runs.index), n_resamples=50, seed=0)
    assert out["N_opt"] == pytest.approx(1e4, rel=1e-6) and out["inside"] and out["best_size"] == "b2"
    assert out["N_opt_ci"][0] <= 1e4 <= out["N_opt_ci"][1]
    # loss falling monotonically with size: no convex minimum, no N_opt
    mono = runs.assign(val_log_loss=0.5 - 0.01 * np.log(runs["params_total"]))
    (flat,) = isoflop_slices(mono, pd.Series(1e10, index=runs.index), n_resamples=20, seed=0)
    assert flat["best_size"] == "b4" and (flat["N_opt"] is None or not flat["inside"])
