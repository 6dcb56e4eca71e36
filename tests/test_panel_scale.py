"""Panels at scale: synthetic many-asset panels, pooling assets as a data-size axis
(``splits.train_assets``) and the learned per-asset vector (``model.asset_embedding``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from finscale.config import load_study
from finscale.data import DataError
from finscale.data.panel import asset_names, source_list
from finscale.data.synthetic import generate, panel_members, parse_synthetic
from finscale.model import ModelArgs, build_model, count_parameters, estimate_parameters
from finscale.rundata import check_splits, final_data, prepare
from finscale.trained_run import load_run

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "studies" / "smoke.toml"
PANEL = "synthetic:panel?assets=3&seed=5&days=900&strength=0.5"
# the smoke study on a 3-asset synthetic panel (2000-01..2003-07): small and offline
SPLITS = ('splits.train_start=""', "splits.val_start=2002-07-01", "splits.test_start=2003-01-01")


def _study(*extra: str, source: str = PANEL):
    return load_study(SMOKE, [f"data.source={json.dumps([source])}", *SPLITS, *extra])


def test_panel_members_share_one_planted_network_with_their_own_shocks_and_offsets():
    members = panel_members(PANEL)
    assert len(members) == 3 and all(m.startswith("synthetic:planted?seed=5&") for m in members)
    markets = [generate(parse_synthetic(m.partition(":")[2])) for m in members]
    for m in markets[1:]:
        assert np.array_equal(m.network.weights, markets[0].network.weights)  # one signal
        assert not np.allclose(m.z, markets[0].z)                              # own shocks
    offsets = [m.drift_offset for m in markets]
    assert len(set(offsets)) == 3 and all(o != 0 for o in offsets)
    # asset 0 without an offset is the planted market of the seed (names kept as before)
    plain = parse_synthetic("planted?seed=5&days=900&strength=0.5&asset=0&offset=0")
    assert plain.canonical == parse_synthetic("planted?seed=5&days=900&strength=0.5").canonical
    assert len(set(asset_names(_study().data))) == 3


def test_bad_synthetic_panels_are_named():
    with pytest.raises(DataError, match=r"a panel of several assets.*data.source = \["):
        parse_synthetic("panel?assets=3")
    with pytest.raises(DataError, match=r"data.source\[0\]: .*parameter assets='0': expected an integer"):
        source_list(_study(source="synthetic:panel?assets=0").data)
    with pytest.raises(DataError, match=r"unknown parameter 'asset' for synthetic:panel"):
        panel_members("synthetic:panel?asset=2")


def test_train_assets_pools_training_windows_and_keeps_every_asset_in_evaluation(tmp_path):
    cfg_all, cfg_two = _study(), _study("splits.train_assets=2")
    prep = prepare(cfg_all, tmp_path / "data")
    full, test_full = final_data(prep, cfg_all, 1)
    pooled, test_pooled = final_data(prep, cfg_two, 1)
    idx = prep.asset_index
    assert set(idx[full.train.ends]) == {0, 1, 2} and set(idx[pooled.train.ends]) == {0, 1}
    assert np.array_equal(pooled.train.ends, full.train.ends[idx[full.train.ends] < 2])
    assert np.array_equal(pooled.val.ends, full.val.ends)          # the same evaluation windows
    assert np.array_equal(test_pooled.ends, test_full.ends) and set(idx[test_pooled.ends]) == {0, 1, 2}
    with pytest.raises(ValueError, match=r"splits.train_assets: 4 is more than the 3 assets of "
                                         r"data.source \(expected 0 = all, or 1..3\)"):
        final_data(prep, _study("splits.train_assets=4"), 1)
    with pytest.raises(ValueError, match=r"splits.train_assets: 4 is more than the 3 assets"):
        check_splits(prep, _study("splits.train_assets=4"), [1], tuning=False)  # before training
    with pytest.raises(ValueError, match=r"splits.train_assets=1: \d+ training windows .* fewer than "
                                         r"splits.min_train_windows=5000"):
        final_data(prep, _study("splits.train_assets=1", "splits.min_train_windows=5000"), 1)


def test_asset_embedding_starts_neutral_counts_as_embedding_and_needs_the_asset():
    base = dict(n_inputs=4, context_len=16, patch_len=4, stride=4, d_model=8, num_layers=1,
                num_heads=2, d_ff=16)
    for mode in ("mixed", "independent"):
        plain, emb = ModelArgs(**base, channel_mode=mode), ModelArgs(**base, channel_mode=mode, n_assets=5)
        torch.manual_seed(0)
        m0 = build_model(plain).eval()
        torch.manual_seed(0)
        m1 = build_model(emb).eval()
        x, asset = torch.randn(6, 16, 4), torch.tensor([0, 1, 2, 3, 4, 0])
        assert torch.equal(m0(x), m1(x, asset))  # a zero table: the model without one
        counts = count_parameters(m1)
        assert counts == estimate_parameters(emb)
        assert counts["total"] - count_parameters(m0)["total"] == 5 * 8
        assert counts["non_embedding"] == count_parameters(m0)["non_embedding"]
        with torch.no_grad():
            m1.asset_embed[1] += torch.randn(8)  # (a multiple of ones: removed by LayerNorm)
        out = m1(x, asset)
        assert not torch.allclose(out[1], m0(x)[1]) and torch.equal(out[0], m0(x)[0])
        with pytest.raises(ValueError, match="has an asset embedding"):
            m1(x)
    with pytest.raises(ValueError, match="n_assets"):
        ModelArgs(**base, n_assets=-1)


def test_run_ids_are_unchanged_without_the_new_keys_and_the_table_has_a_row_per_asset():
    from finscale.runspec import make_spec

    two = ["sample:sp500", "sample:nasdaq"]
    cfg = load_study(SMOKE, [f"data.source={json.dumps(two)}"])
    # ids of a panel run before asset_embedding / train_assets existed
    assert make_spec(cfg, "cpu-s", 1, 0).run_id == "cpu-s-h1-s0-cd5b5a95"
    on = load_study(SMOKE, [f"data.source={json.dumps(two)}", "model.asset_embedding=true"])
    spec = make_spec(on, "cpu-s", 1, 0)
    assert spec.model_args.n_assets == 2 and spec.run_id != "cpu-s-h1-s0-cd5b5a95"
    with pytest.raises(ValueError, match="model.asset_embedding: needs a panel"):
        make_spec(load_study(SMOKE, ["model.asset_embedding=true"]), "cpu-s", 1, 0)


@pytest.mark.slow
def test_pooling_study_with_asset_embedding_runs_end_to_end(tmp_path, cli):
    """A reduced panel_pooling: 3 assets, pooled 1 and 3, asset embedding on, one epoch."""
    r = cli("run", str(SMOKE), "--no-monitor", "--set", f"data.source={json.dumps([PANEL])}",
            *(a for s in SPLITS for a in ("--set", s)), "--set", "seeds=[0]",
            "--set", 'model.budgets=["cpu-s"]', "--set", "model.asset_embedding=true",
            "--set", "train.max_epochs=1", "--set", "hpo.mode=fixed", "--set", 'hpo.table={"cpu-s-h1"={lr=1e-3}}',
            "--set", 'axes={"splits.train_assets"=[1, 3]}', "--set", "evaluate.bootstrap_resamples=20",
            "--set", "evaluate.scaling_resamples=20", "--set", "run.threads=1",
            "--phase", "data", "--phase", "features", "--phase", "final", "--phase", "evaluate",
            "--data-dir", str(tmp_path / "data"), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = {}
    for ev_path in sorted((tmp_path / "runs" / "smoke" / "final").glob("*/eval.json")):
        final = [json.loads(line) for line in (ev_path.parent / "metrics.jsonl").read_text().splitlines()][-1]
        runs[json.loads((ev_path.parent / "config.json").read_text())["splits"]["train_assets"]] = (
            final, json.loads(ev_path.read_text()))
    assert set(runs) == {1, 3}
    (f1, e1), (f3, e3) = runs[1], runs[3]
    assert f3["train_windows"] > 2.5 * f1["train_windows"]     # D grows by pooling
    assert e1["test_windows"] == e3["test_windows"]             # scored on the same windows
    assert {"mean", "t", "rank_ic"} <= set(e3["ic"])
    # the table row of an asset no run trained on stays zero (no gradient ever reached it)
    ckpt = torch.load(next((tmp_path / "runs").rglob("*train_assets1*/ckpt/best.pt")), weights_only=True)
    table = ckpt["model"]["asset_embed"]
    assert table.shape[0] == 3 and table[0].abs().sum() > 0 and table[1:].abs().sum() == 0
    # Run.predict(asset=) feeds the asset's row: it reproduces the stored test predictions
    run = load_run(next((tmp_path / "runs").rglob("*train_assets3*/eval.json")).parent)
    name, member = run.assets[2], panel_members(PANEL)[2]
    stored = run.predictions[run.predictions["asset"] == name]
    first, last = (stored["date"].min().date().isoformat(), stored["date"].max().date().isoformat())
    scored = run.predict_source(member, asset=name, start=first, end=last)
    np.testing.assert_allclose(scored["prob"].to_numpy(), stored["prob"].to_numpy(), rtol=1e-5)
