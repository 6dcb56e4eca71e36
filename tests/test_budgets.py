"""Budgets, ladders, the architecture grid, budget -> ModelArgs, `finscale model describe`."""

from __future__ import annotations

import math

import pytest

from finscale.cli import main
from finscale.config import load_study
from finscale.model import (
    LADDERS,
    ModelArgs,
    architectures_for_budget,
    build_model,
    count_parameters,
    default_architecture,
    measured_parameters,
    model_args_for,
    parse_budget,
)

GRID = dict(n_inputs=25, context_len=80, patch_len=16, stride=8)


def test_parse_budget():
    assert parse_budget("2M") == 2_000_000
    assert parse_budget("20k") == 20_000
    assert parse_budget("1.5B") == 1_500_000_000
    assert parse_budget("8000") == 8000 and parse_budget(8000) == 8000
    assert parse_budget("cpu-s") == LADDERS["cpu"]["cpu-s"]
    for bad in ("2X", "", "cpu-xxl", "-3M", "0"):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)


def test_ladders():
    cpu = sorted(LADDERS["cpu"].values())
    assert list(LADDERS["cpu"]) == ["cpu-s", "cpu-m", "cpu-l", "cpu-xl"]
    assert len(cpu) >= 4 and cpu[-1] / cpu[0] >= 100  # >= 2 orders of magnitude
    assert LADDERS["paper"] == {"2M": 2 * 10**6, "20M": 2 * 10**7, "200M": 2 * 10**8, "2B": 2 * 10**9}


@pytest.mark.parametrize("mode", ["mixed", "independent"])
def test_every_grid_architecture_is_within_tolerance(mode):
    for ladder in LADDERS.values():
        for name, budget in ladder.items():
            archs = architectures_for_budget(budget, channel_mode=mode, **GRID)
            assert archs, f"{name}: empty grid"
            for a in archs:
                assert a["d_model"] % a["num_heads"] == 0
                args = model_args_for(load_study(None, [f"model.channel_mode=\"{mode}\""]).model,
                                      name, 25, 0.1, arch=a) if budget <= 100_000 else None
                if args is not None:  # small enough to build for real: count numel
                    assert count_parameters(build_model(args))["total"] == a["params"]
                assert abs(a["params"] - budget) <= 0.25 * budget, (name, a)


def test_meta_measurement_equals_a_real_build():
    cfg = load_study(None).model
    args = model_args_for(cfg, "cpu-l", 25, 0.1)
    assert measured_parameters(args) == count_parameters(build_model(args))


def test_default_choice_is_deterministic_and_sensible():
    cfg = load_study(None).model
    for ladder in LADDERS.values():
        for name, budget in ladder.items():
            a = default_architecture(budget, channel_mode="mixed", **GRID)
            assert a == default_architecture(budget, channel_mode="mixed", **GRID)
            args = model_args_for(cfg, name, 25, 0.1)
            assert (args.d_model, args.num_layers, args.num_heads) == (a["d_model"], a["num_layers"], a["num_heads"])
            assert abs(math.log(measured_parameters(args)["total"] / budget)) < math.log(1.25)
            assert args.d_ff == cfg.d_ff_ratio * args.d_model


def test_model_args_follow_the_study_config():
    cfg = load_study(None, ['model.channel_mode="independent"', "model.context_len=61",
                            'model.normalization="zscore"', 'model.positional="sinusoidal"',
                            "model.head_dropout=0.2"]).model
    args = model_args_for(cfg, "cpu-m", 25, 0.15)
    assert (args.channel_mode, args.context_len, args.revin, args.positional) == \
        ("independent", 61, False, "sinusoidal")
    assert (args.dropout, args.head_dropout) == (0.15, 0.2)


def test_explicit_architecture_table_is_used():
    cfg = load_study(None, ['model.architectures={"2M"={d_model=128,num_layers=10,num_heads=8}}']).model
    args = model_args_for(cfg, "2M", 25, 0.1)
    assert (args.d_model, args.num_layers, args.num_heads, args.d_ff) == (128, 10, 8, 512)


def test_mislabelled_architecture_is_rejected_with_both_numbers():
    """A study must never label a ~0.2M model "2M"."""
    cfg = load_study(None, ['model.architectures={"2M"={d_model=64,num_layers=4,num_heads=2,d_ff=256}}']).model
    args_count = measured_parameters(ModelArgs(**GRID, d_model=64, num_layers=4, num_heads=2,
                                               d_ff=256))["total"]
    assert args_count < 300_000
    with pytest.raises(ValueError) as err:
        model_args_for(cfg, "2M", 25, 0.1)
    assert f"{args_count:,}" in str(err.value) and "2,000,000" in str(err.value)
    with pytest.raises(ValueError, match="unknown key 'width'"):
        model_args_for(load_study(None).model, "2M", 25, 0.1, arch={"d_model": 128, "width": 3})
    with pytest.raises(ValueError, match="missing num_layers"):
        model_args_for(load_study(None).model, "2M", 25, 0.1, arch={"d_model": 128})


def test_cli_describe_all_budgets(capsys):
    assert main(["model", "describe", "--budget", "all", "--memory", "80GB"]) == 0
    out = capsys.readouterr().out
    for name in [n for ladder in LADDERS.values() for n in ladder]:
        assert name in out
    assert "max micro-batch" in out and "non-embedding" in out


def test_cli_describe_rejects_a_mislabelled_architecture(capsys):
    code = main(["model", "describe", "--budget", "2M", "--set",
                 'model.architectures={"2M"={d_model=32,num_layers=2}}'])
    err = capsys.readouterr().err
    assert code == 1 and "2,000,000" in err and "parameters" in err
    assert main(["model", "describe", "--budget", "2Q"]) == 1
    assert "budget '2Q'" in capsys.readouterr().err
