"""Phase 6A as published (studies/phase6a.toml) and its revised design: reproduction mode
(published shapes run as given, misses flagged), pinned data, split periods, GPU plan."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from conftest import run_cli
from finscale.cli.common import resolve_study_path
from finscale.config import ConfigError, load_study
from finscale.data import DataError, ensure_dataset, fetch_dataset, load_raw, pin_status
from finscale.data.pin import content_sha256
from finscale.data.sources import yfinance_args
from finscale.runspec import make_spec

PUBLISHED = {  # phase6a.md: d_model / num_layers / num_heads per budget and horizon
    "2M": ((64, 48, 2), (64, 32, 2), (64, 32, 2), (64, 64, 16)),
    "20M": ((128, 180, 16), (256, 32, 2), (256, 32, 2), (384, 12, 4)),
    "200M": ((384, 96, 4), (768, 24, 16), (768, 24, 16), (256, 256, 16)),
    "2B": ((1024, 128, 2), (768, 256, 32), (768, 256, 32), (1024, 180, 4)),
}
TRAINING = {"2M": (8.0e-4, 0.12, 1.0e-3, 100), "20M": (5.5e-4, 0.20, 8.0e-4, 100),
            "200M": (6.5e-4, 0.25, 3.0e-4, 200), "2B": (2.5e-4, 0.22, 5.0e-4, 200)}
MISSES = {"2M-h5": "3,225,971", "20M-h1": "35,742,899", "20M-h2": "25,380,147", "20M-h3": "25,380,147"}


def phase6a(*overrides: str):
    return load_study(resolve_study_path("phase6a"), list(overrides))


# --------------------------------------------------------------------------- reproduction mode

def test_phase6a_is_the_published_table_one_seed_per_cell():
    cfg = phase6a()
    assert cfg.hpo.mode == "fixed" and cfg.seeds == (0,)
    for budget, shapes in PUBLISHED.items():
        for h, (d, layers, heads) in zip((1, 2, 3, 5), shapes):
            entry = cfg.hpo.table[f"{budget}-h{h}"]
            assert (entry["d_model"], entry["num_layers"], entry["num_heads"]) == (d, layers, heads)
            assert entry["d_ff"] == 4 * d
            assert (entry["lr"], entry["dropout"], entry["weight_decay"], entry["warmup_steps"]) \
                == TRAINING[budget]
    assert (cfg.train.max_epochs, cfg.train.patience, cfg.model.patch_len, cfg.model.stride) == (50, 10, 16, 8)


def test_fixed_mode_runs_an_off_budget_shape_search_mode_refuses_it():
    """Guard 10 both ways: the published 20M-h1 shape (35.7M measured) is built as published
    in fixed mode, and refused in search mode (as an hpo.fixed architecture)."""
    from finscale.model.budgets import budget_miss, measured_parameters

    cfg = phase6a()
    entry = dict(cfg.hpo.table["20M-h1"])
    spec = make_spec(cfg, "20M", 1, 0, entry)
    assert (spec.model_args.d_model, spec.model_args.num_layers) == (128, 180)
    total = measured_parameters(spec.model_args)["total"]
    assert total == 35_742_899
    assert "1.79x the 20M label" in budget_miss(total, "20M", 0.25)
    assert budget_miss(21_455_283, "20M", 0.25) == ""
    search = phase6a('hpo.mode="search"')
    with pytest.raises(ValueError, match=r"35,742,899 parameters, but budget '20M'"):
        make_spec(search, "20M", 1, 0, {k: entry[k] for k in ("d_model", "num_layers", "num_heads", "d_ff")})


def test_phase6a_dry_run_lists_16_published_runs_offline(tmp_path):
    """The done-when of issue 32: 16 final runs with published shapes and measured counts,
    none refused, test period 2025-01-01..2025-12-31, the data pin, the GPU plan; offline
    (yfinance is never asked) and nothing written."""
    r = run_cli("run", "phase6a", "--dry-run", "--set", f"output_dir={json.dumps(str(tmp_path / 'runs'))}",
                "--data-dir", str(tmp_path / "nodata"), env={"COLUMNS": "300"})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    finals = [line for line in out.splitlines() if line.startswith("│ final │")]
    assert len(finals) == 32  # the plan table and the GPU table, 16 rows each
    assert "16 units of work left" in out and "MISSES BUDGET" not in out
    for budget, shapes in PUBLISHED.items():
        for h, (d, layers, heads) in zip((1, 2, 3, 5), shapes):
            assert re.search(rf"{budget}-h{h} .*d{d}-l{layers}-h{heads}-f{4 * d}", out)
    for cell, count in MISSES.items():
        assert re.search(rf"FLAGGED .*cell {cell}: measured {count} parameters", out)
    assert "2,267,751,475" in out  # 2B-h5, measured
    assert re.search(r"test +│ 2025-01-01\.\.2025-12-31", out)
    assert re.search(r"val +│ 2024-04-01\.\.2024-12-31 .*│ 107 ", out)  # guard 4 at h5: >= 100
    assert "yfinance:SPY 1993-01-01..2025-12-31" in out and "NOT PINNED" in out
    assert "H100 (989 TFLOP/s dense bf16, 80 GB; assumed MFU 35%" in out
    assert re.search(r"estimated total on one H100: [\d.]+ GPU-hours", out)
    assert not (tmp_path / "nodata").exists() and not (tmp_path / "runs").exists()


def test_dry_run_shows_a_pinned_hash_and_a_gpu_class(tmp_path):
    pin = "ab" * 32
    r = run_cli("run", "phase6a", "--dry-run", "--only", "budget=2M", "horizon=1", "--gpu", "H200",
                "--mfu", "0.2", "--set", f'data.sha256="{pin}"', "--data-dir", str(tmp_path / "d"),
                env={"COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    assert f"pinned content sha256 {pin}" in r.stdout
    assert "on one H200 (989 TFLOP/s dense bf16, 141 GB; assumed MFU 20%" in r.stdout
    bad = run_cli("run", "phase6a", "--dry-run", "--mfu", "3", "--data-dir", str(tmp_path / "d"))
    assert bad.returncode == 1 and "--mfu 3.0: expected a fraction" in bad.stderr


def test_gpu_plan_flags_a_step_that_does_not_fit():
    from finscale.model.compute import GPU_CLASSES
    from finscale.runner.gpu_plan import gpu_rows
    from finscale.runner.plan import build_plan

    cfg = phase6a("model.activation_checkpointing=false", "train.batch_size=1024")
    rows = build_plan(cfg, only_budgets=("2B",), only_horizons=(5,))
    (g,) = gpu_rows(cfg, rows, GPU_CLASSES["A100"], 0.35, {5: 107})
    assert g.memory > GPU_CLASSES["A100"].memory_bytes
    assert "usable on A100" in g.problem and "largest micro-batch that fits" in g.problem
    assert "activation_checkpointing = true" in g.problem
    ok = gpu_rows(phase6a(), build_plan(phase6a(), only_budgets=("2B",), only_horizons=(5,)),
                  GPU_CLASSES["H100"], 0.35, {5: 107})[0]
    assert ok.problem == "" and ok.checkpointing and 0 < ok.hours < 1


# --------------------------------------------------------------------------- the revised study

def test_revised_study_header_states_each_deviation():
    path = resolve_study_path("phase6a_revised")
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    items = re.findall(r"^# (\d)\. ", header, re.M)
    assert items == ["1", "2", "3", "4", "5", "6"]
    assert header.count("Reason:") == 6
    for topic in ("SEARCHED", "walk-forward", "Three seeds", "2024-04-01", "2025-12-31", "pinned"):
        assert topic in header
    cfg = load_study(path)
    assert cfg.hpo.mode == "search" and cfg.hpo.split == "walk_forward" and len(cfg.seeds) == 3
    assert (cfg.splits.val_start, cfg.splits.test_end) == ("2024-04-01", "2025-12-31")
    assert cfg.data.end == phase6a().data.end and cfg.model.budgets == phase6a().model.budgets


# --------------------------------------------------------------------------- pinned data

def bars(n: int = 300, start: str = "2020-01-01", bump: float = 0.0) -> pd.DataFrame:
    dates = pd.bdate_range(start, periods=n)
    close = 100 + pd.Series(range(n), dtype=float) * 0.1
    close.iloc[-1] += bump
    return pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "Open": close, "High": close + 1,
                         "Low": close - 1, "Close": close, "Volume": 1000.0})


def test_content_hash_ignores_the_file_format_and_pins_the_values(tmp_path, data_dir):
    frame = bars()
    frame.to_csv(tmp_path / "p.csv", index=False)
    frame.to_parquet(tmp_path / "p.parquet")
    a = fetch_dataset(f"file:{tmp_path / 'p.csv'}", data_dir, name="a")
    b = fetch_dataset(f"file:{tmp_path / 'p.parquet'}", data_dir, name="b")
    assert a["content_sha256"] == b["content_sha256"] == content_sha256(load_raw(data_dir, "a"))
    assert re.fullmatch(r"[0-9a-f]{64}", a["content_sha256"])
    bars(bump=0.01).to_csv(tmp_path / "q.csv", index=False)
    assert fetch_dataset(f"file:{tmp_path / 'q.csv'}", data_dir, name="c")["content_sha256"] != a["content_sha256"]


def test_a_changed_data_file_is_refused_naming_both_hashes(tmp_path, data_dir):
    bars().to_csv(tmp_path / "spy.csv", index=False)
    pin = fetch_dataset(f"file:{tmp_path / 'spy.csv'}", tmp_path / "first")["content_sha256"]
    bars(bump=0.5).to_csv(tmp_path / "spy.csv", index=False)  # the snapshot file changed
    with pytest.raises(DataError) as err:
        fetch_dataset(f"file:{tmp_path / 'spy.csv'}", data_dir, sha256=pin)
    assert pin in str(err.value) and content_sha256(_validated(tmp_path / "spy.csv")) in str(err.value)
    assert "data.sha256" in str(err.value) and "\n" not in str(err.value)
    assert not data_dir.exists()  # checked at fetch: nothing written


def test_the_pin_is_checked_again_before_training(tmp_path, data_dir):
    from finscale.config import DataConfig

    bars().to_csv(tmp_path / "spy.csv", index=False)
    cfg = DataConfig(source=f"file:{tmp_path / 'spy.csv'}", name="SPY")
    pin = ensure_dataset(cfg, data_dir)[1]["content_sha256"]
    pinned = DataConfig(source=cfg.source, name="SPY", sha256=pin)
    assert ensure_dataset(pinned, data_dir)[0] == "SPY"
    assert "stored dataset matches" in pin_status(pinned, data_dir)
    # the stored dataset is replaced by a refetch of a changed file (manifest consistent)
    bars(bump=0.5).to_csv(tmp_path / "spy.csv", index=False)
    found = fetch_dataset(cfg.source, data_dir, name="SPY")["content_sha256"]
    with pytest.raises(DataError, match=rf"content sha256 {found}, expected {pin}"):
        ensure_dataset(pinned, data_dir)
    assert f"STORED DATASET DIFFERS (found {found})" in pin_status(pinned, data_dir)
    # the stored file's bytes changed behind the manifest's back: both file hashes named
    raw = data_dir / "raw" / "SPY.parquet"
    bars(bump=1.0).to_parquet(raw)
    with pytest.raises(DataError, match=r"sha256 differs from the manifest entry \(file changed: found [0-9a-f]{64}, manifest [0-9a-f]{64}\)"):
        ensure_dataset(pinned, data_dir)


def test_date_range_cuts_the_data_and_must_match_the_stored_range(tmp_path, data_dir):
    from finscale.config import DataConfig

    bars(n=400, start="2020-01-01").to_csv(tmp_path / "spy.csv", index=False)
    cfg = DataConfig(source=f"file:{tmp_path / 'spy.csv'}", name="SPY", start="2020-02-01",
                     end="2020-12-31", min_rows=10)
    _, entry = ensure_dataset(cfg, data_dir)
    assert (entry["first_date"], entry["last_date"]) == ("2020-02-03", "2020-12-31")
    assert (entry["start"], entry["end"]) == ("2020-02-01", "2020-12-31")
    later = DataConfig(source=cfg.source, name="SPY", end="2021-03-31", min_rows=10)
    with pytest.raises(DataError, match=r"stored for dates 2020-02-01\.\.2020-12-31, but the study "
                                        r"names data\.start\.\.data\.end = first\.\.2021-03-31"):
        ensure_dataset(later, data_dir)
    with pytest.raises(DataError, match=r"0 rows in 2030-01-01\.\.last \(data.start/data.end\)"):
        fetch_dataset(cfg.source, tmp_path / "e", start="2030-01-01")


def test_yfinance_gets_an_explicit_inclusive_end_and_fails_fast_offline(data_dir):
    import time

    assert yfinance_args("", "2025-12-31")["end"] == "2026-01-01"  # yfinance's end is exclusive
    assert yfinance_args("1993-01-01", "")["start"] == "1993-01-01"
    plain = yfinance_args()
    assert "start" not in plain and "end" not in plain and plain["period"] == "max"
    t = time.monotonic()
    with pytest.raises(DataError, match="yfinance:SPY"):
        fetch_dataset("yfinance:SPY", data_dir, start="1993-01-01", end="2025-12-31", sha256="0" * 64)
    assert time.monotonic() - t < 30 and not data_dir.exists()


@pytest.mark.parametrize("override, message", [
    ('data.sha256="abc"', r"data.sha256: 'abc' is not a sha256 \(expected 64 lowercase hex"),
    (f'data.sha256="{"A" * 64}"', "is not a sha256"),
    ('data.end="2025-13-01"', r"data.end: '2025-13-01' is not an ISO date"),
    ('data.start="2026-01-01"', r"data.end: 2025-12-31 is not after data.start 2026-01-01"),
    ('splits.test_end="2026-06-30"', r"splits.test_end: 2026-06-30 is after data.end 2025-12-31"),
    ('data.source=["sample:sp500", "sample:nasdaq"]', "data.sha256: pins one dataset"),
])
def test_bad_pin_keys_are_config_errors(override, message):
    extra = [f'data.sha256="{"0" * 64}"', 'data.name=""'] if "source" in override else []
    with pytest.raises(ConfigError, match=message):
        phase6a(override, *extra)


def test_cli_fetch_prints_the_pin_and_honours_it(cli, tmp_path):
    bars().to_csv(tmp_path / "spy.csv", index=False)
    r = cli("data", "fetch", f"file:{tmp_path / 'spy.csv'}", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    pin = re.search(r'data.sha256 = "([0-9a-f]{64})"', r.stdout).group(1)
    bad = cli("data", "fetch", f"file:{tmp_path / 'spy.csv'}", "--sha256", "f" * 64,
              "--data-dir", str(tmp_path / "e"))
    assert bad.returncode == 1 and pin in bad.stderr and "f" * 64 in bad.stderr
    assert not (tmp_path / "e").exists()


# --------------------------------------------------------------------------- periods

def test_estimated_periods_count_sessions_and_windows():
    from finscale.runner.periods import final_periods, trading_days

    assert len(trading_days(pd.Timestamp("2024-01-01"), pd.Timestamp("2024-12-31"))) == 252
    assert len(trading_days(pd.Timestamp("2024-04-01"), pd.Timestamp("2024-12-31"))) == 191
    periods = {p.region: p for p in final_periods(phase6a(), "/nonexistent/data")}
    assert not periods["val"].exact
    assert periods["val"].windows == {1: 111, 2: 110, 3: 109, 5: 107}  # 191 - 80 - h + 1
    assert (periods["test"].first, periods["test"].last) == ("2025-01-01", "2025-12-31")
    short = {p.region: p for p in final_periods(phase6a('splits.val_start="2024-10-01"'), "/nonexistent")}
    assert "fewer than splits.min_eval_windows=100 (guard 4)" in short["val"].problem


def test_exact_periods_match_the_split_report(shared_data):
    from finscale.runner.periods import final_periods

    cfg = load_study(resolve_study_path("smoke"), [f"data.data_dir={json.dumps(str(shared_data))}"])
    periods = {p.region: p for p in final_periods(cfg)}
    assert all(p.exact for p in periods.values())
    for p in periods.values():
        assert set(p.windows) == set(cfg.target.horizons) and min(p.windows.values()) > 0


def _validated(path):
    from finscale.data.sources import fetch as fetch_frame
    from finscale.data.sources import parse_source

    return fetch_frame(parse_source(f"file:{path}"))
