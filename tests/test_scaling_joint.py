"""Joint L(N, D) fit, intervals, form comparison, verdicts (finscale.scaling.joint) and
`finscale scaling fit` (finscale.scaling.points, finscale.cli.scaling)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from finscale.cli import main
from finscale.scaling.joint import (
    BOTH_MATTER,
    DATA_LIMITED,
    EXPONENT_MAX,
    NO_SCALING,
    PARAMETER_LIMITED,
    JointFit,
    analyze_joint,
    bootstrap_joint,
    check_joint_points,
    fit_joint,
    joint_verdict,
    optimal_allocation,
    predict_joint,
    tokens_from_flops,
)

CHINCHILLA = Path(__file__).parent / "data" / "chinchilla_svg_extracted_data.csv"
# Besiroglu et al. 2024, Table 1 / data_analysis.ipynb (5 highest losses excluded): estimates
# and the 95% bootstrap intervals (4,000 resamples) they published.
EPOCH = {"E": 1.8169, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
EPOCH_CI = {"E": (1.769, 1.871), "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}
TRUE = JointFit(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28, objective=0.0, success=True,
                n_points=0, n_sizes=0, n_data=0)


def _grid(law: JointFit, sd: float = 0.0, seed: int = 0, reps: int = 1):
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 5), np.geomspace(1e9, 1e12, 5)))
    N, D = np.repeat(N, reps), np.repeat(D, reps)
    L = predict_joint(law, N, D) * np.exp(np.random.default_rng(seed).normal(0, sd, N.size))
    return N, D, L


def _law(**kw) -> JointFit:
    return JointFit(**{**TRUE.__dict__, **kw})


def test_fit_recovers_exact_parameters_without_noise():
    fit = fit_joint(*_grid(TRUE))
    for k in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit, k) == pytest.approx(getattr(TRUE, k), rel=1e-3), k
    assert fit.a_exp == pytest.approx(0.28 / 0.62, rel=1e-3)
    assert fit.b_exp == pytest.approx(0.34 / 0.62, rel=1e-3)


def test_noisy_fit_intervals_contain_the_truth():
    N, D, L = _grid(TRUE, sd=0.01, seed=3, reps=2)
    fit = fit_joint(N, D, L)
    intervals, samples, failed = bootstrap_joint(N, D, L, fit, n_resamples=150, seed=0)
    assert failed == 0 and samples["alpha"].shape == (150,)
    for k in ("E", "A", "B", "alpha", "beta"):
        lo, hi = intervals[k]
        assert lo < getattr(TRUE, k) < hi, (k, intervals[k])
        assert lo <= getattr(fit, k) <= hi, k
    lo, hi = intervals["a_exp"]
    assert lo < TRUE.a_exp < hi


@pytest.mark.parametrize("law, expected", [
    (TRUE, BOTH_MATTER),
    (_law(B=1e-12), PARAMETER_LIMITED),  # no data term: more data does not help
    (_law(A=1e-12), DATA_LIMITED),
    (_law(A=1e-12, B=1e-12), NO_SCALING),
])
def test_verdict_branches(law, expected):
    N, D, L = _grid(law, sd=0.01, seed=1, reps=2)
    res = analyze_joint(N, D, L, n_resamples=40, seed=0)
    assert res.verdict == expected, res.text
    assert res.text.startswith(expected)
    cmp = res.comparison  # the comparison agrees with the verdict it supports
    assert cmp.n_folds == 10
    assert cmp.joint_beats("d_only") == (expected in (BOTH_MATTER, PARAMETER_LIMITED))
    assert cmp.joint_beats("n_only") == (expected in (BOTH_MATTER, DATA_LIMITED))
    if expected == DATA_LIMITED:
        assert cmp.score("d_only").cv_rmse < cmp.score("n_only").cv_rmse
    json.dumps(res.to_dict())  # plain types only


def test_an_exponent_at_its_bound_does_not_count_as_that_axis_scaling():
    # Both terms matter on these points; the same numbers with beta on its bound (a step
    # between the two smallest data sizes, as few data sizes can produce) must not say so.
    res = analyze_joint(*_grid(TRUE, sd=0.01, seed=1, reps=2), n_resamples=40, seed=0)
    assert res.verdict == BOTH_MATTER
    verdict, text = joint_verdict(dataclasses.replace(res.fit, beta=EXPONENT_MAX), res.intervals,
                                  res.comparison)
    assert verdict == PARAMETER_LIMITED and "beta at the bound 5" in text
    verdict, _ = joint_verdict(dataclasses.replace(res.fit, alpha=0.95 * EXPONENT_MAX),
                               res.intervals, res.comparison)
    assert verdict == DATA_LIMITED


def test_optimal_allocation_spends_the_compute_and_minimises_the_loss():
    C = np.array([1e20, 1e23])
    N_opt, D_opt = optimal_allocation(TRUE, C)
    assert np.allclose(6 * N_opt * D_opt, C)
    for n, c in zip(N_opt, C):
        best = predict_joint(TRUE, n, c / (6 * n))
        for factor in (0.8, 1.25):
            assert predict_joint(TRUE, n * factor, c / (6 * n * factor)) > best
    with pytest.raises(ValueError, match="both exponents"):
        optimal_allocation(_law(alpha=0.0), C)


@pytest.mark.parametrize("change, message", [
    (lambda N, D, L: (N, np.minimum(D, 2e9), L), "3 distinct values of D"),
    (lambda N, D, L: (N, D, -L), "L must be finite and positive"),
    (lambda N, D, L: (N[:5], D[:5], L[:5]), ">= 8 points"),
    (lambda N, D, L: (N, D[:-1], L), "one each per point"),
])
def test_bad_points_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        check_joint_points(*change(*_grid(TRUE)))


def _cli(capsys, *args):
    code = main(["scaling", "fit", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_recovers_the_published_chinchilla_replication(capsys, tmp_path):
    out_file = tmp_path / "fit.json"
    code, out, err = _cli(capsys, CHINCHILLA, "--n", "Model Size", "--flops", "Training FLOP",
                          "--loss", "loss",
                          "--exclude-top", 5, "--resamples", 100, "--out", out_file)
    assert code == 0, err
    assert "both matter" in out and "240 of 245 points" in out
    res = json.loads(out_file.read_text())
    assert res["n_fitted"] == 240 and res["form"] == "joint"
    fit, iv = res["result"]["fit"], res["result"]["intervals"]
    assert fit["E"] == pytest.approx(EPOCH["E"], abs=0.01)
    assert fit["alpha"] == pytest.approx(EPOCH["alpha"], abs=0.005)
    assert fit["beta"] == pytest.approx(EPOCH["beta"], abs=0.005)
    assert fit["A"] == pytest.approx(EPOCH["A"], rel=0.05)
    assert fit["B"] == pytest.approx(EPOCH["B"], rel=0.05)
    for k, (lo, hi) in EPOCH_CI.items():  # 100 resamples, so the ends are noisy (1,000: benchmark)
        tol = 0.25 * (hi - lo)
        assert iv[k][0] == pytest.approx(lo, abs=tol) and iv[k][1] == pytest.approx(hi, abs=tol), k


def test_cli_n_only_fit_and_json(capsys, tmp_path):
    N = np.repeat(np.geomspace(1e4, 1e8, 5), 2)
    L = 0.5 + 3.0 * N**-0.3 * np.exp(np.random.default_rng(0).normal(0, 0.01, N.size))
    path = tmp_path / "p.csv"
    path.write_text("params,logloss\n" + "".join(f"{n},{v}\n" for n, v in zip(N, L)))
    code, out, _ = _cli(capsys, path, "--n", "params", "--loss", "logloss", "--resamples", 50, "--json")
    assert code == 0
    res = json.loads(out)
    assert res["form"] == "n_only" and res["result"]["fit"]["alpha"] == pytest.approx(0.3, abs=0.05)
    lo, hi = res["result"]["intervals"]["alpha"]
    assert lo < res["result"]["fit"]["alpha"] < hi


def test_flops_give_tokens():
    assert tokens_from_flops(6e20, 1e9) == pytest.approx(1e11)


@pytest.mark.parametrize("text, extra, message", [
    (None, ["--loss", "l"], "not found"),
    ("n,l\n1,2\n", ["--loss", "loss"], "no column 'loss'; columns are 'n', 'l'"),
    ("n,l\n1e6,abc\n", ["--loss", "l"], "column 'l', data row 1: 'abc' is not a number"),
    ("n,l\n1e6,2\n-5,2\n", ["--loss", "l"], "column 'n', data row 2: '-5'; expected a finite positive"),
    ("n,l\n1e6,2\n1e7,1.5\n", ["--loss", "l"], ">= 3 distinct sizes"),
    ("n,d,l\n1e6,1e9,2\n1e7,1e9,1.5\n1e8,1e9,1.2\n", ["--loss", "l", "--d", "d"], ">= 8 points"),
    ("n,l\n1e6,2\n1e7,1.5\n", ["--loss", "l", "--exclude-top", "2"], "exclude_top=2; expected 0 <= K < 2"),
])
def test_cli_errors_are_one_line(capsys, tmp_path, text, extra, message):
    path = tmp_path / "p.csv"
    if text is not None:
        path.write_text(text)
    out_file = tmp_path / "out.json"
    code, out, err = _cli(capsys, path, "--n", "n", *extra, "--out", out_file)
    assert code == 1
    assert message in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and not out_file.exists()


def test_cli_d_and_flops_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["scaling", "fit", str(CHINCHILLA), "--n", "x", "--loss", "y", "--d", "a", "--flops", "b"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_out_must_be_a_writable_file_path(capsys, tmp_path):
    for out, message in ((tmp_path, "is a directory"), (tmp_path / "no" / "f.json", "does not exist")):
        code, _, err = _cli(capsys, CHINCHILLA, "--n", "Model Size", "--loss", "loss", "--out", out)
        assert code == 1 and message in err and err.count("\n") == 1
