"""HPO with real Optuna and real storages (sqlite, journal, PostgreSQL) on the smoke study."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from conftest import postgres_server, run_cli
from finscale import rundata as prepare_mod
from finscale import splits
from finscale.cli.common import resolve_study_path
from finscale.config import load_study
from finscale.hpo import Objective, SurplusTrial, cell_space, decode_arch, encode_arch, run_cell
from finscale.hpo.ledger import make_ledger
from finscale.hpo.outputs import importances
from finscale.hpo.results import best_params_path, cell_params
from finscale.hpo.storage import open_storage, resolve_storage
from finscale.hpo.study import open_study, study_name
from finscale.labels import make_labels
from finscale.model import count_parameters
from finscale.rundata import prepare

FIXED = {"lr": 1.7e-3, "weight_decay": 0.0123, "dropout": 0.17, "warmup_fraction": 0.07,
         "batch_size": 128}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hpo-data")


def tiny(out: Path, data: Path, *extra: str) -> list[str]:
    """Overrides that make a trial a single short epoch on a few years of the bundled data."""
    return [f"output_dir={json.dumps(str(out))}", f"data.data_dir={json.dumps(str(data))}",
            'model.budgets=["cpu-s"]', "target.horizons=[1, 5]", 'splits.train_start="2012-01-01"',
            "hpo.max_epochs=1", "hpo.batch_size=[256]", *extra]


def smoke(tmp_path, data_dir, *extra):
    return load_study(resolve_study_path("smoke"), tiny(tmp_path / "runs", data_dir, *extra))


def study_trials(cfg, url, cell="cpu-s-h1"):
    budget, h = cell.rsplit("-h", 1)
    return optuna.load_study(study_name=study_name(cfg, budget, int(h)), storage=url).get_trials()


def assert_exactly_n(trials, n):
    """The ledger rule: exactly n counting trials, all finished, unique numbers, values kept."""
    led = make_ledger(trials)
    assert len({t.number for t in trials}) == len(trials)
    assert len(led.counted) == n and led.done(n)
    finished = [t for t in led.counted if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    assert len(finished) == n
    for t in led.in_state(TrialState.COMPLETE):  # no lost results: value == the run's own record
        final = [json.loads(x) for x in Path(t.user_attrs["run_dir"], "metrics.jsonl").read_text().splitlines()]
        assert final[-1]["event"] == "final" and final[-1]["val_log_loss"] == pytest.approx(t.value)
    return led


# --------------------------------------------------------------------------- search space

def test_space_arch_is_one_categorical_and_fixed_values_replace_dimensions(tmp_path, data_dir):
    cfg = smoke(tmp_path, data_dir, "hpo.batch_size=[64, 128]", "hpo.dropout=[0.2]")
    space = cell_space(cfg, "cpu-s", 1)
    assert len(space.archs) > 1 and all(encode_arch(decode_arch(a)) == a for a in space.archs)
    assert set(space.searched()) == {"arch", "lr", "weight_decay", "warmup_fraction", "batch_size"}
    assert space.fixed == {"dropout": 0.2}
    assert space.floats["lr"][2] and not space.floats["warmup_fraction"][2]  # log vs uniform

    arch = decode_arch(space.archs[-1])
    cfg = smoke(tmp_path, data_dir, "hpo.dropout=[0.2]",
                f'hpo.fixed={{"cpu-s-h1" = {{d_model = {arch["d_model"]}, num_layers = '
                f'{arch["num_layers"]}, num_heads = {arch["num_heads"]}, d_ff = {arch["d_ff"]}, lr = 0.002}}}}')
    fixed = cell_space(cfg, "cpu-s", 1)
    assert fixed.searched() == ["weight_decay", "warmup_fraction"]
    assert fixed.fixed == {**arch, "lr": 0.002, "dropout": 0.2, "batch_size": 256}
    assert cell_space(cfg, "cpu-s", 5).searched()[0] == "arch"  # other cells keep searching

    with pytest.raises(ValueError, match="hpo.weight_decay.*low > 0"):
        cell_space(smoke(tmp_path, data_dir, "hpo.weight_decay=[0.0, 0.1]"), "cpu-s", 1)
    with pytest.raises(ValueError, match="unknown parameter 'momentum'"):
        cell_space(smoke(tmp_path, data_dir, 'hpo.fixed={"cpu-s-h1" = {momentum = 0.9}}'), "cpu-s", 1)


# --------------------------------------------------------------------------- objective

def test_fixed_trial_values_reach_optimiser_and_model(tmp_path, data_dir):
    """Guard 8: every value of the trial is read back from the trainer's optimiser/model."""
    cfg = smoke(tmp_path, data_dir, "hpo.batch_size=[128, 256]")
    seen = []
    objective = Objective(cfg, "cpu-s", 1, prepare(cfg), on_trainer=seen.append)
    arch = objective.space.archs[0]
    trial = optuna.trial.FixedTrial({"arch": arch, **FIXED}, number=7)
    value = objective(trial)
    assert math.isfinite(value) and 0 < value < 1

    t = seen[0]
    groups = {g["name"]: g for g in t.opt.param_groups}
    assert all(g["initial_lr"] == FIXED["lr"] for g in t.opt.param_groups)
    assert groups["decay"]["weight_decay"] == FIXED["weight_decay"]
    assert t.model.args.dropout == FIXED["dropout"]
    assert all(b.dropout == FIXED["dropout"] for b in t.model.blocks)
    assert t.cfg.batch_size == 128 and t.steps_per_epoch == math.ceil(len(t.data.train) / 128)
    assert t.warmup == round(FIXED["warmup_fraction"] * t.total_steps)
    shape = decode_arch(arch)
    assert {k: getattr(t.model.args, k) for k in shape} == shape
    attrs = trial.user_attrs
    assert attrs["params_total"] == count_parameters(t.model)["total"]  # measured (guard 10)
    assert attrs["seed"] == t.seed and attrs["cell_params"] == {**shape, **FIXED}
    assert Path(attrs["run_dir"]).name.startswith("t0007-")
    config = json.loads(Path(attrs["run_dir"], "config.json").read_text())
    assert {k: config["train"][k] for k in FIXED} == FIXED
    assert config["model_args"]["dropout"] == FIXED["dropout"] and config["seed"] == attrs["seed"]


class Inspected(Exception):
    pass


def test_horizon5_trial_trains_on_horizon5_labels(tmp_path, data_dir):
    """Guard 2: the trial's training labels are make_labels(frame, target, 5)."""
    cfg = smoke(tmp_path, data_dir)
    prep = prepare(cfg)
    seen = []

    def inspect(trainer):
        seen.append(trainer)
        raise Inspected  # the data is what we check; no need to train

    objective = Objective(cfg, "cpu-s", 5, prep, on_trainer=inspect)
    with pytest.raises(Inspected):
        objective(optuna.trial.FixedTrial({"arch": objective.space.archs[0], **FIXED}))
    train = seen[0].data.train
    h5, h1 = make_labels(prep.frame, cfg.target, 5), make_labels(prep.frame, cfg.target, 1)
    np.testing.assert_array_equal(train.labels, h5)
    np.testing.assert_array_equal(train.labels_at_ends, h5[train.ends])
    assert not np.array_equal(train.labels_at_ends, h1[train.ends])  # the check can fail
    run_dir = Path(objective.cfg.study_dir, "hpo", "cpu-s-h5", "trials")
    (config,) = [json.loads(p.read_text()) for p in run_dir.glob("*/config.json")]
    assert config["horizon"] == 5 and config["target"]["horizon"] == 5


def test_tuning_never_builds_or_reads_test_windows(tmp_path, data_dir, monkeypatch):
    """Guard 11, walk-forward: no final split is built and every window ends before the test."""
    def forbidden(*a, **k):
        raise AssertionError("HPO asked for the final (test) split")

    monkeypatch.setattr(splits, "final_split", forbidden)
    monkeypatch.setattr(prepare_mod, "final_data", forbidden)
    cfg = smoke(tmp_path, data_dir, 'hpo.split="walk_forward"', "splits.folds=2",
                "splits.fold_val_days=200")
    prep = prepare(cfg)
    seen = []
    objective = Objective(cfg, "cpu-s", 5, prep, on_trainer=seen.append)
    trial = optuna.trial.FixedTrial({"arch": objective.space.archs[0], **FIXED})
    value = objective(trial)
    assert len(seen) == 2 and value == pytest.approx(np.mean(trial.user_attrs["fold_losses"]))
    test_start = int(prep.dates.searchsorted(pd.Timestamp(cfg.splits.test_start)))
    for trainer in seen:
        for ds in (trainer.data.train, trainer.data.val):
            assert ds.ends.max() + 5 < test_start  # the label period ends before the test too


# --------------------------------------------------------------------------- ledger, report

@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() outside optimize(), on purpose
def test_surplus_trial_is_refused_and_retries_replace_their_original(tmp_path, data_dir):
    cfg = smoke(tmp_path, data_dir)
    spec = resolve_storage("", cfg.study_dir)
    study = open_study(cfg, "cpu-s", 1, open_storage(spec))
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    study.add_trial(optuna.create_trial(params={"lr": 1e-3}, distributions=dist, value=0.5))
    study.add_trial(optuna.create_trial(params={"lr": 2e-3}, distributions=dist, state=TrialState.FAIL))
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params={"lr": 2e-3}, distributions=dist,
                                        system_attrs={"failed_trial": 1, "retry_history": [1]}))
    led = make_ledger(study.get_trials())
    assert [t.number for t in led.counted] == [0, 2] and [t.number for t in led.replaced] == [1]
    assert led.remaining(2) == 0 and not led.done(2)

    objective = Objective(cfg, "cpu-s", 1, prepare(cfg), n_trials=2)
    trial = study.ask()  # pops the WAITING retry (rank 1 < 2): admitted
    assert trial.number == 2 and trial.params == {"lr": 2e-3}
    surplus = study.ask()  # a fresh trial beyond N: refused before any training
    with pytest.raises(SurplusTrial):
        objective(surplus)
    study.tell(surplus, state=TrialState.FAIL)
    assert [t.number for t in make_ledger(study.get_trials()).surplus] == [3]


def test_importances_only_from_informative_trials(tmp_path, data_dir):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'imp.db'}")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
            "dropout": optuna.distributions.FloatDistribution(0.0, 0.3)}

    def add(lr, dropout, value):
        study.add_trial(optuna.create_trial(params={"lr": lr, "dropout": dropout}, distributions=dist,
                                            value=value))

    add(1e-3, 0.1, 0.5)
    assert importances(study, make_ledger(study.get_trials())) == (None, "1 complete trial(s); importances need at least 2")
    add(1e-3, 0.1, 0.4)
    assert importances(study, make_ledger(study.get_trials()))[1] == \
        "no searched parameter varies across the complete trials"
    rng = np.random.default_rng(0)
    for _ in range(20):
        lr, dropout = 10 ** rng.uniform(-4, -2), rng.uniform(0, 0.3)
        add(lr, dropout, (math.log10(lr) + 3) ** 2 + 0.01 * dropout)
    imp, _ = importances(study, make_ledger(study.get_trials()))
    assert set(imp) == {"lr", "dropout"} and imp["lr"] > imp["dropout"]


# --------------------------------------------------------------------------- studies

def test_same_seed_sequential_runs_sample_the_same_parameters(tmp_path, data_dir):
    params = []
    for name in ("a", "b"):
        cfg = smoke(tmp_path / name, data_dir, "hpo.trials=2")
        summary = run_cell(cfg, "cpu-s", 1)
        assert summary["done"] and summary["counts"]["counted"] == 2
        params.append([t.params for t in study_trials(cfg, summary["storage"])])
    assert params[0] == params[1] and len({json.dumps(p, sort_keys=True) for p in params[0]}) == 2
    other = smoke(tmp_path / "c", data_dir, "hpo.trials=1", "hpo.sampler_seed=1")
    run_cell(other, "cpu-s", 1)
    assert study_trials(other, resolve_storage("", other.study_dir).url)[0].params != params[0][0]

    best = json.loads(best_params_path(cfg, "cpu-s", 1).read_text())
    assert cell_params(cfg, "cpu-s", 1)[0] == best["params"]  # final runs read it back
    frame = pd.read_parquet(best_params_path(cfg, "cpu-s", 1).parent / "trials.parquet")
    assert list(frame["number"]) == [0, 1] and set(frame["state"]) == {"COMPLETE"}
    assert best["value"] == pytest.approx(frame["value"].min()) and best["n_trials"] == 2
    # guard 14: 2 trials for several searched dimensions is flagged, with the rule in words
    assert best["searched_dims"] >= 2 and "too_few_trials" in best["hpo_flags"]
    assert any("searched dimensions" in note for note in best["hpo_flag_notes"])


def two_machines(tmp_path: Path, data_dir: Path, storage: str, trials: int) -> None:
    """Two `finscale hpo` processes with their own run directories (as on two machines) joining
    one cell on one storage at the same time. The storage's tables exist first (two processes
    creating one SQLite schema at the same moment race, as the runner's pool knows)."""
    open_storage(resolve_storage(storage, tmp_path))
    procs = [subprocess.Popen([sys.executable, "-m", "finscale", "hpo", "smoke", "--budget", "cpu-s",
                               "--horizon", "1", "--trials", str(trials), "--storage", storage,
                               *[a for o in tiny(tmp_path / f"machine{i}", data_dir) for a in ("--set", o)]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for p in procs:
        _out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and "Traceback" not in err, err


def assert_refused(led) -> None:
    """Two machines racing for the last slot: the loser's trial is refused (marked surplus,
    failed, never trained or counted); exactly N counted trials hold either way."""
    assert all(t.user_attrs.get("surplus") and t.state == TrialState.FAIL and "run_dir" not in t.user_attrs
               for t in led.surplus)


@pytest.mark.slow
def test_two_machines_share_sqlite_exactly_n_trials(tmp_path, data_dir):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    two_machines(tmp_path, data_dir, url, 4)
    cfg = smoke(tmp_path, data_dir)
    trials = study_trials(cfg, url)
    led = assert_exactly_n(trials, 4)
    assert_refused(led)
    # rerunning a finished cell runs nothing; raising N runs only the difference
    again = run_cell(cfg, "cpu-s", 1, trials=4, storage=url)
    assert len(study_trials(cfg, url)) == len(trials) and again["done"]
    assert len(pd.read_csv(Path(again["outputs"]["trials_csv"]))) == len(trials)
    more = run_cell(cfg, "cpu-s", 1, trials=5, storage=url)
    assert_exactly_n(study_trials(cfg, url), 5) and more["done"]


@pytest.mark.slow
def test_killed_worker_trial_is_retried_and_the_cell_finishes(tmp_path, data_dir):
    """SIGKILL a worker mid-trial; the rerun re-queues the trial (same parameters, resumed
    from its checkpoint) and the cell ends with exactly N counting trials."""
    # Epoch 2 (the kill window: after epoch 1's checkpoint, before the trial ends) must last
    # long enough to be seen on an idle machine: more training rows and small batches make it
    # ~100 steps; one epoch of the tiny default was shorter than the polling interval, and on
    # an idle CI machine every trial could finish unseen.
    overrides = [o for o in tiny(tmp_path / "runs", data_dir, "hpo.max_epochs=2", "hpo.trials=3")
                 if not o.startswith(("splits.train_start=", "hpo.batch_size="))]
    overrides += ['splits.train_start="2004-01-01"', "hpo.batch_size=[32]"]
    cfg = load_study(resolve_study_path("smoke"), overrides)
    url = resolve_storage("", cfg.study_dir).url
    open_study(cfg, "cpu-s", 1, open_storage(resolve_storage("", cfg.study_dir)))  # db + study exist
    proc = subprocess.Popen([sys.executable, "-m", "finscale", "hpo", "smoke", "--budget", "cpu-s",
                             "--horizon", "1", "--workers", "1",
                             *[a for o in overrides for a in ("--set", o)]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study, victim = optuna.load_study(study_name=study_name(cfg, "cpu-s", 1), storage=url), None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if "run_dir" in t.user_attrs]
        for t in running:  # after its first epoch's checkpoint: mid-trial
            if list(Path(t.user_attrs["run_dir"], "ckpt").glob("step-*.pt")):
                victim = t
    assert victim is not None, "the worker never reached the middle of a trial"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    metrics = Path(victim.user_attrs["run_dir"], "metrics.jsonl")
    first_epoch = metrics.read_text().splitlines()[0]  # holds its wall-clock timings

    summary = run_cell(cfg, "cpu-s", 1, heartbeat_s=1, grace_s=2)
    trials = study_trials(cfg, url)
    led = assert_exactly_n(trials, 3)
    assert [t.number for t in led.replaced] == [victim.number]
    (retry,) = [t for t in trials if t.system_attrs.get("retry_history") == [victim.number]]
    assert retry.params == victim.params and retry.state == TrialState.COMPLETE
    assert retry.user_attrs["run_dir"] == victim.user_attrs["run_dir"]  # same run: resumed
    status = json.loads(Path(retry.user_attrs["run_dir"], "status.json").read_text())
    assert status["state"] == "done"
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [m["epoch"] for m in lines if m["event"] == "epoch"] == [1, 2]
    assert metrics.read_text().splitlines()[0] == first_epoch  # epoch 1 was not trained again
    assert summary["counts"]["replaced"] == 1 and summary["done"]


@pytest.mark.slow
def test_cli_two_workers_on_a_journal_file(tmp_path, data_dir):
    overrides = tiny(tmp_path / "runs", data_dir, "hpo.trials=3")
    journal = tmp_path / "hpo.journal"
    sets = [a for o in overrides for a in ("--set", o)]
    r = run_cli("hpo", "smoke", *sets, "--budget", "cpu-s", "--horizon", "1", "--workers", "2",
                "--storage", f"journal:{journal}")
    assert r.returncode == 0, r.stderr
    assert "hpo cpu-s-h1" in r.stdout and "smoke/cpu-s-h1" in r.stdout and "3 / 3" in r.stdout
    assert "(3/3 done" in r.stdout  # progress events from the worker processes
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    cfg = load_study(resolve_study_path("smoke"), overrides)
    assert_exactly_n(optuna.load_study(study_name=study_name(cfg, "cpu-s", 1), storage=storage).get_trials(), 3)
    s = run_cli("hpo", "smoke", *sets, "--storage", f"journal:{journal}", "--summary")
    assert s.returncode == 0 and "cpu-s-h5 (incomplete)" in s.stdout and "3 / 3" in s.stdout
    bad = run_cli("hpo", "smoke", *sets, "--budget", "2B")
    assert bad.returncode == 1 and "--budget '2B'" in bad.stderr


# --------------------------------------------------------------------------- PostgreSQL

@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as (url, _stop):
        yield url


@pytest.mark.slow
def test_two_workers_against_postgresql(tmp_path, data_dir, postgres_url):
    cfg = smoke(tmp_path, data_dir)
    two_machines(tmp_path, data_dir, postgres_url, 3)
    summary = run_cell(cfg, "cpu-s", 1, trials=3, storage=postgres_url)
    assert summary["done"] and summary["storage"].startswith("postgresql+psycopg2://postgres:***@")
    led = assert_exactly_n(study_trials(cfg, postgres_url), 3)
    assert_refused(led)
    best = json.loads(best_params_path(cfg, "cpu-s", 1).read_text())
    assert "secret" not in json.dumps(best) and best["study_name"] == study_name(cfg, "cpu-s", 1)
    # a second "machine" joining the same study with more trials runs only the difference
    run_cell(cfg, "cpu-s", 1, trials=4, storage=postgres_url)
    assert_exactly_n(study_trials(cfg, postgres_url), 4)


# --------------------------------------------------------------------------- shipped studies

def _effective(spec, name):
    """The value the trainer uses for a searched dimension (warm-up: steps of a 1,000-step run)."""
    from finscale.train import warmup_steps

    if name == "warmup_fraction":
        return warmup_steps(1000, spec.train)
    return getattr(spec.train, name)


@pytest.mark.parametrize("study", sorted(p.stem for p in resolve_study_path("smoke").parent.glob("*.toml")))
def test_every_searched_value_of_a_shipped_study_changes_what_the_trainer_uses(study):
    """Guard 8 on the shipped studies: each searched dimension, moved from its low to its high
    end, changes the value the trainer reads (phase6a's fixed train.warmup_steps used to
    make warmup_fraction a no-op)."""
    from finscale.runspec import make_spec

    cfg = load_study(resolve_study_path(study), ['hpo.mode="search"'])
    budget, horizon = cfg.model.budgets[0], cfg.target.horizons[0]
    space = cell_space(cfg, budget, horizon)
    assert space.floats, f"{study}: nothing searched"
    arch = {"arch": space.archs[0]} if space.archs else {}
    if space.designs:  # the design search: one design and its own (conditional) shape
        code, shapes = next(iter(space.designs.items()))
        arch = {"design": code, **({f"arch@{code}": shapes[0]} if len(shapes) > 1 else {})}
    mid = {k: (lo * hi) ** 0.5 if log else (lo + hi) / 2 for k, (lo, hi, log) in space.floats.items()}
    if len(space.batch_sizes) > 1:
        mid["batch_size"] = space.batch_sizes[0]
    for name, (lo, hi, _) in space.floats.items():
        seen = []
        for value in (lo, hi):
            params = space.sample(optuna.trial.FixedTrial({**arch, **mid, name: value}))
            seen.append(_effective(make_spec(cfg, budget, horizon, 0, params), name))
        assert seen[0] != seen[1], f"{study}: hpo.{name} {lo}..{hi} gives {seen[0]} both times"


def test_searching_a_value_that_a_fixed_value_overrides_is_a_config_error(tmp_path, data_dir):
    from finscale.config import ConfigError

    with pytest.raises(ConfigError, match=r"hpo.warmup_fraction.*train.warmup_steps = 100"):
        smoke(tmp_path, data_dir, "train.warmup_steps=100")
    with pytest.raises(ConfigError, match=r"hpo.warmup_fraction.*hpo.fixed.cpu-s-h1.warmup_steps"):
        smoke(tmp_path, data_dir, 'hpo.fixed={"cpu-s-h1" = {warmup_steps = 50}}')
    smoke(tmp_path, data_dir, "train.warmup_steps=100", "hpo.warmup_fraction=[0.05]")  # fixed: fine


# --------------------------------------------------------------------------- identity and slots

def test_study_name_hashes_what_changes_trials(tmp_path, data_dir):
    cfg = smoke(tmp_path, data_dir)
    name = study_name(cfg, "cpu-s", 1)
    assert name.startswith("smoke/cpu-s-h1-") and len(name) == len("smoke/cpu-s-h1-") + 8
    for override in ("train.max_epochs=3", "hpo.max_epochs=2", "hpo.sampler_seed=1",
                     "splits.embargo_days=3", "target.threshold=0.02", "hpo.lr=[1e-4, 1e-2]"):
        assert study_name(smoke(tmp_path, data_dir, override), "cpu-s", 1) != name, override
    for override in ("hpo.trials=5", "hpo.workers=2", 'hpo.storage="journal:x"', "seeds=[3]",
                     "evaluate.bootstrap_resamples=60", 'model.budgets=["cpu-s", "cpu-m"]'):
        assert study_name(smoke(tmp_path, data_dir, override), "cpu-s", 1) == name, override


def test_slot_seeded_sampler_repeats_its_draws_after_a_killed_trial(tmp_path, data_dir):
    """A trial killed and re-queued (as the runner does) shifts trial numbers, not draws."""
    from finscale.hpo.sampler import SlotSeededSampler
    from finscale.hpo.storage import retry_callback

    cfg = smoke(tmp_path, data_dir)

    def objective(trial):
        return (trial.suggest_float("x", -5, 5) - 1) ** 2 + trial.suggest_float("y", 0, 1)

    def fresh_params(kill: int | None) -> list[dict]:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study()
        study.sampler = SlotSeededSampler(cfg, "cpu-s-h1", 8, constant_liar=False, study=study)
        for slot in range(8):
            if slot == kill:  # the process dies mid-trial: FAIL, re-queued with its parameters,
                trial = study.ask()  # and a new process (a new sampler) carries on
                objective(trial)
                retry_callback(None)(study, study.tell(trial, state=TrialState.FAIL))
                study.sampler = SlotSeededSampler(cfg, "cpu-s-h1", 8, constant_liar=False, study=study)
            study.optimize(objective, n_trials=1)
        ledger = make_ledger(study.get_trials())
        return [t.params for t in ledger.counted]

    straight = fresh_params(None)
    assert len({json.dumps(p) for p in straight}) == 8  # TPE after the random start: all differ
    assert fresh_params(kill=5) == straight
