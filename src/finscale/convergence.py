"""Guard 14: convergence rules for training runs and HPO cells (pure functions, no I/O).

Consumes: a run's per-epoch validation losses (and whether early stopping fired), or an HPO
cell's completed trial numbers/values and the number of searched dimensions.
Produces: ``{"converged": bool, "convergence_reason": str}`` for a run and
``{"hpo_flags": [str, ...]}`` for a cell; the trainer, the HPO outputs, ``finscale status``
and the report record and show these verbatim.

Rules (documented in docs/convergence.md; both are deliberately simple so a reader can check
them by hand from metrics.jsonl and trials.csv):
- A run has **converged** when early stopping fired (``patience`` epochs without an
  improvement larger than ``min_delta``), or when its validation loss is *flat at the end*:
  over the last ``window`` epochs (``window = max(2, min(patience, epochs // 2))``) the best
  loss improved on the best of all earlier epochs by less than ``rel_tol`` (0.1%) of that
  earlier best. A run of 2 epochs or fewer cannot be judged and is not converged.
  Otherwise it is flagged ``not_converged``: it was still improving when ``max_epochs``
  stopped it, so more training would likely change its result.
- An HPO cell is flagged ``best_trial_late`` when its best trial is among the last quarter of
  its completed trials AND beats the best earlier trial by at least ``rel_tol`` (the search
  was still finding materially better values; a tie-level improvement late in the search is
  noise, not a sign of an unfinished search), and
  ``too_few_trials`` when it ran fewer than ``MIN_TRIALS_PER_DIM`` trials per searched
  dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

REL_TOL = 1e-3
MIN_TRIALS_PER_DIM = 2


def run_convergence(val_losses: Sequence[float | None], *, early_stopped: bool, patience: int,
                    rel_tol: float = REL_TOL) -> dict:
    """Whether a run converged, with the reason in words (rule in the module docstring)."""
    losses = [v for v in val_losses if v is not None and math.isfinite(v)]
    if early_stopped:
        return {"converged": True, "convergence_reason": f"early stopping after {patience} epochs "
                                                          "without improvement"}
    window = max(2, min(patience, len(losses) // 2))
    if len(losses) <= window:
        return {"converged": False, "convergence_reason": f"only {len(losses)} epoch(s) with a "
                f"finite validation loss; the rule needs at least 3 to judge flatness"}
    before, last = min(losses[:-window]), min(losses[-window:])
    gain = (before - last) / abs(before) if before else 0.0
    if gain < rel_tol:
        return {"converged": True, "convergence_reason": f"validation loss flat over the last {window} "
                f"epochs (improved {gain:.2%} < {rel_tol:.1%})"}
    return {"converged": False, "convergence_reason": f"still improving at the last epoch: the last "
            f"{window} epochs improved validation loss by {gain:.2%} (>= {rel_tol:.1%}); "
            f"raise train.max_epochs"}


def cell_flags(trial_numbers: Sequence[int], values: Sequence[float], *, n_dims: int,
               n_trials: int, rel_tol: float = REL_TOL) -> list[str]:
    """Flags of one HPO cell: ``best_trial_late`` and/or ``too_few_trials`` (see module doc)."""
    flags = []
    done = sorted((n, v) for n, v in zip(trial_numbers, values) if v is not None and math.isfinite(v))
    if len(done) >= 2:
        late = len(done) - max(1, len(done) // 4)
        best_early, best_late = min(v for _, v in done[:late]), min(v for _, v in done[late:])
        if best_late < best_early - rel_tol * abs(best_early):
            flags.append("best_trial_late")
    if n_dims > 0 and n_trials < MIN_TRIALS_PER_DIM * n_dims:
        flags.append("too_few_trials")
    return flags


def describe_cell_flags(flags: Sequence[str], *, n_dims: int, n_trials: int) -> list[str]:
    """Each flag of :func:`cell_flags` as a sentence for status and the report."""
    text = {"best_trial_late": "the best trial is among the last quarter of trials and beats the "
                               "earlier ones by >= 0.1% (the search was still improving; raise "
                               "hpo.trials)",
            "too_few_trials": f"{n_trials} trials for {n_dims} searched dimensions (rule: at least "
                              f"{MIN_TRIALS_PER_DIM} per dimension)"}
    return [text[f] for f in flags]
