"""Guard 14: convergence of runs and HPO cells (finscale.convergence, the trainer's final line)."""

import pytest

from finscale.convergence import cell_flags, describe_cell_flags, run_convergence


def test_early_stopped_run_converged():
    out = run_convergence([0.5, 0.4, 0.41, 0.42], early_stopped=True, patience=2)
    assert out["converged"] and "early stopping" in out["convergence_reason"]


def test_run_still_improving_at_max_epochs_is_not_converged():
    out = run_convergence([0.60, 0.55, 0.50, 0.46, 0.43], early_stopped=False, patience=2)
    assert not out["converged"] and "still improving" in out["convergence_reason"]


def test_flat_tail_counts_as_converged():
    out = run_convergence([0.60, 0.50, 0.4500, 0.4499, 0.4500], early_stopped=False, patience=2)
    assert out["converged"] and "flat" in out["convergence_reason"]


def test_too_few_epochs_to_judge_is_not_converged():
    out = run_convergence([0.6, 0.5], early_stopped=False, patience=3)
    assert not out["converged"] and "needs at least 3" in out["convergence_reason"]


@pytest.mark.parametrize("values, expected", [
    ([0.5, 0.4, 0.45, 0.46, 0.47, 0.48, 0.49, 0.50], []),           # best early
    ([0.5, 0.49, 0.48, 0.47, 0.46, 0.45, 0.44, 0.40], ["best_trial_late"]),  # best last
    ([0.5, 0.40, 0.48, 0.47, 0.46, 0.45, 0.44, 0.39999], []),  # last is best by a tie only
])
def test_cell_flags_best_trial_late(values, expected):
    assert cell_flags(range(len(values)), values, n_dims=2, n_trials=len(values)) == expected


def test_cell_flags_too_few_trials_for_dims():
    flags = cell_flags([0, 1, 2, 3], [0.3, 0.2, 0.4, 0.5], n_dims=9, n_trials=4)
    assert flags == ["too_few_trials"]
    assert "4 trials for 9 searched dimensions" in describe_cell_flags(flags, n_dims=9, n_trials=4)[0]
