"""The trial ledger: which trials count towards a cell's N, and re-queueing dead trials.

The "exactly N trials" rule, across workers, machines and reruns:
- A trial COUNTS unless it was *replaced* or is *surplus*.
- Replaced: a FAIL trial that was re-queued (its worker died or was interrupted); the
  WAITING copy with the same parameters takes its place (Optuna's retry callback records
  the original numbers in the copy's ``retry_history`` system attribute).
- Surplus: a trial asked when N counting trials with lower numbers already existed (two
  workers raced for the last slot). It is ended at once as FAIL with user attribute
  ``surplus=true`` and trains nothing.
- A cell is done when it has exactly N counting trials and all of them are finished, i.e.
  COMPLETE + PRUNED + counting FAIL == N, and no counting FAIL is *faulted*. A FAIL is a
  real failure (:func:`real_failure`) when the run diverged (``fail_reason``) or a worker
  died more than ``MAX_RETRY`` times on it; any other FAIL — a full disk, a read-only
  directory, a storage outage, an interrupt whose re-queue could not be written — is
  faulted: :func:`requeue_faulted` re-queues it on the next run, so an environment fault
  never turns into a counted failure (and never into a cell tuned on fewer trials).
Because trial numbers only grow and a trial's rank (counting trials below its number) can
only fall, a trial admitted with rank < N stays admitted: the bound holds without locks.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from finscale.hpo.storage import MAX_RETRY, retry_callback

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def retry_history(trial: FrozenTrial) -> list[int]:
    """Numbers of the trials this one re-runs (oldest first); empty for a fresh trial."""
    return list(trial.system_attrs.get("retry_history", []))


def original_number(trial: FrozenTrial) -> int:
    """The number of the first trial of a retry chain (the trial's own number if fresh)."""
    history = retry_history(trial)
    return history[0] if history else trial.number


@dataclass
class Ledger:
    trials: list[FrozenTrial]
    counted: list[FrozenTrial] = field(default_factory=list)
    replaced: list[FrozenTrial] = field(default_factory=list)
    surplus: list[FrozenTrial] = field(default_factory=list)

    def in_state(self, *states: TrialState) -> list[FrozenTrial]:
        return [t for t in self.counted if t.state in states]

    def counts(self) -> dict[str, int]:
        """Counting trials by state, plus replaced and surplus (for tables)."""
        out = {s.name.lower(): len(self.in_state(s)) for s in TrialState}
        return {**out, "counted": len(self.counted), "replaced": len(self.replaced),
                "surplus": len(self.surplus)}

    def remaining(self, n_trials: int) -> int:
        """Slots not yet claimed by any counting trial."""
        return max(0, n_trials - len(self.counted))

    def faulted(self) -> list[FrozenTrial]:
        """Counting FAIL trials that were not real failures: to be re-queued, not counted."""
        return [t for t in self.in_state(TrialState.FAIL) if not real_failure(t)]

    def done(self, n_trials: int) -> bool:
        return (len(self.counted) >= n_trials and len(self.in_state(*FINISHED)) == len(self.counted)
                and not self.faulted())

    def rank(self, number: int) -> int:
        """How many counting trials have a lower number (0-based slot of trial ``number``)."""
        return sum(t.number < number for t in self.counted)


def real_failure(trial: FrozenTrial) -> bool:
    """A FAIL that counts towards the cell's N: the run itself failed (``fail_reason``: a
    non-finite loss), or its worker died ``MAX_RETRY`` times on it (Optuna's retry callback
    then stops re-queueing). A trial ended by an environment fault (``fault``) or by nothing
    recorded is not one."""
    if trial.user_attrs.get("fail_reason"):
        return True
    return not trial.user_attrs.get("fault") and len(retry_history(trial)) >= MAX_RETRY


def make_ledger(trials: list[FrozenTrial]) -> Ledger:
    replaced_numbers = {n for t in trials for n in retry_history(t)}
    led = Ledger(trials)
    for t in sorted(trials, key=lambda t: t.number):
        if t.number in replaced_numbers and t.state == TrialState.FAIL:
            led.replaced.append(t)
        elif t.user_attrs.get("surplus"):
            led.surplus.append(t)
        else:
            led.counted.append(t)
    return led


def study_ledger(study: optuna.Study) -> Ledger:
    return make_ledger(study.get_trials(deepcopy=False))


def trial_slot(trials: list[FrozenTrial], number: int) -> int:
    """The slot (0..N-1) of trial ``number``: which of the cell's N trials it is.

    A fresh trial's slot is its rank among counting trials when it is asked; a retry keeps
    its original's slot (user attribute ``slot``, copied by the retry). Unlike trial numbers,
    slots do not shift when a killed trial is re-queued, so everything derived from them
    (the sampler's seed, the training seed, the run directory) is the same in a resumed
    search as in an uninterrupted one.
    """
    frozen = next(t for t in trials if t.number == number)
    if "slot" in frozen.user_attrs:
        return int(frozen.user_attrs["slot"])
    led = make_ledger(trials)
    return led.rank(original_number(frozen))


# --------------------------------------------------------------------------- worker identity

def worker_identity() -> dict:
    """Host, pid and process start time: enough to tell whether a worker is still alive."""
    import psutil

    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": psutil.Process(pid).create_time()}


def _worker_dead(identity: dict) -> bool:
    """True only for a worker of THIS host whose process is gone (or whose pid was reused)."""
    import psutil

    if not identity or identity.get("host") != socket.gethostname():
        return False
    try:
        return psutil.Process(identity["pid"]).create_time() != identity["started"]
    except psutil.NoSuchProcess:
        return True


def requeue(study: optuna.Study, number: int, reason: str, *, max_retry: int | None) -> bool:
    """Fail a RUNNING trial and queue a copy with its parameters; False if another process
    finished it first."""
    try:
        frozen = study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    if frozen.state != TrialState.FAIL or frozen.user_attrs.get("surplus"):
        return False
    retry_callback(max_retry)(study, frozen)
    log.warning("trial %d re-queued: %s", number, reason)
    return True


def requeue_faulted(study: optuna.Study) -> list[int]:
    """Re-queue (same parameters, same slot) every counting FAIL trial that was not a real
    failure. Two processes doing this at once queue two copies; the later one is surplus."""
    out = []
    for t in study_ledger(study).faulted():
        retry_callback(None)(study, t)
        why = t.user_attrs.get("fault") or t.user_attrs.get("interrupted") or "no recorded reason"
        log.warning("trial %d re-queued: it ended by an environment fault, not a failure of its own "
                    "(%s)", t.number, str(why)[:200])
        out.append(t.number)
    return out


def requeue_dead_local(study: optuna.Study) -> list[int]:
    """Storages without a heartbeat (journal files): re-queue RUNNING trials whose worker
    process on this host has died. Trials of other hosts are left alone."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _worker_dead(t.user_attrs.get("worker", {})) and requeue(
                study, t.number, "its worker process died", max_retry=MAX_RETRY):
            out.append(t.number)
    return out
