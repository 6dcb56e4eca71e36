import json

import pytest

from finscale.config import ConfigError, StudyConfig, config_hash, load_study, parse_override, replace_section


def write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_file_override_precedence(tmp_path):
    p = write(tmp_path, 'name = "x"\n[train]\nlr = 0.002\nbatch_size = 64\n')
    cfg = load_study(p, ["train.lr=0.005"])
    assert cfg.train.lr == 0.005            # override beats file
    assert cfg.train.batch_size == 64       # file beats default
    assert cfg.train.max_epochs == StudyConfig().train.max_epochs  # default kept
    assert cfg.name == "x"


def test_unknown_key_is_named(tmp_path):
    p = write(tmp_path, "[train]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key train\.learning_rate"):
        load_study(p)
    with pytest.raises(ConfigError, match="unknown key nosuch"):
        load_study(None, ["nosuch.x=1"])


@pytest.mark.parametrize("text, match", [
    ('[train]\nbatch_size = "big"\n', r"train\.batch_size: expected an integer, got 'big'"),
    ("[train]\nlr = -1.0\n", r"train\.lr: -1\.0 is below the minimum"),
    ('[model]\nchannel_mode = "weird"\n', r"model\.channel_mode: 'weird' is not one of"),
    ("[target]\nhorizons = [1, 0]\n", r"target\.horizons\[1\]: 0 is below the minimum 1"),
    ("[train]\nmax_epochs = 2.5\n", r"train\.max_epochs: expected an integer, got 2\.5"),
    ("seeds = 3\n", r"seeds: expected a list"),
    ("[model]\npatch_len = 100\ncontext_len = 80\n", r"model\.patch_len: 100 exceeds"),
    ("train = 3\n", r"train: expected a table"),
])
def test_bad_values_name_key_and_value(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_study(write(tmp_path, text))


def test_hash_is_stable_under_key_order(tmp_path):
    a = write(tmp_path, "[train]\nlr = 0.001\nbatch_size = 32\n[model]\ncontext_len = 60\n", "a.toml")
    b = write(tmp_path, "[model]\ncontext_len = 60\n[train]\nbatch_size = 32\nlr = 0.001\n", "b.toml")
    assert config_hash(load_study(a)) == config_hash(load_study(b))
    assert config_hash(load_study(a)) != config_hash(load_study(a, ["train.lr=0.002"]))
    assert len(config_hash(load_study(a))) == 64


def test_override_parsing():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("target.horizons=[1,2]") == (["target", "horizons"], [1, 2])
    assert parse_override("data.source=sample:nasdaq") == (["data", "source"], "sample:nasdaq")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("train.lr")


def test_config_is_frozen_and_replace_validates():
    cfg = StudyConfig()
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # type: ignore[misc]
    assert replace_section(cfg.train, lr=0.01).lr == 0.01
    with pytest.raises(ConfigError, match="lr"):
        replace_section(cfg.train, lr="fast")


def test_missing_and_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_study(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_study(write(tmp_path, "[train\n"))


@pytest.mark.parametrize("study", ["default", "smoke", "phase6a", "phase6a_revised"])
def test_shipped_studies_load(study):
    from finscale.cli.common import resolve_study_path

    cfg = load_study(resolve_study_path(study))
    assert cfg.name == study


def test_config_show_cli(cli, tmp_path):
    p = write(tmp_path, 'name = "x"\n')
    r = cli("config", "show", str(p), "--set", "train.lr=0.01")
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition("config hash: ")
    assert json.loads(body)["train"]["lr"] == 0.01
    assert tail.strip() == config_hash(load_study(p, ["train.lr=0.01"]))
    bad = cli("config", "show", str(p), "--set", "train.nope=1")
    assert bad.returncode == 1 and "unknown key train.nope" in bad.stderr


def test_every_key_is_documented():
    from pathlib import Path

    from finscale.config import describe_fields

    doc = (Path(__file__).resolve().parents[1] / "docs" / "study.md").read_text()
    missing = [key for key, *_ in describe_fields(StudyConfig)
               if f"`{key.split('.')[-1]}`" not in doc]
    assert not missing, f"keys missing from docs/study.md: {missing}"


def test_mutable_defaults_are_not_shared_between_configs():
    from finscale.config import HpoConfig

    a, b = HpoConfig(), HpoConfig()
    assert a.table == {} and a.table is not b.table and a.fixed is not b.fixed
    a.table["cpu-s-h1"] = {"lr": 1e-3}  # frozen dataclass, mutable dict: must not leak
    assert HpoConfig().table == {} and b.table == {}


def test_docs_key_tables_are_generated_from_config_metadata():
    """docs/study.md's key tables are exactly what the fields' doc= metadata renders
    (regenerate: python -c "from pathlib import Path; from finscale.config import render_key_docs as r;
    p = Path('docs/study.md'); p.write_text(r(p.read_text()))")."""
    from pathlib import Path

    from finscale.config import describe_fields, render_key_docs

    doc = (Path(__file__).resolve().parents[1] / "docs" / "study.md").read_text()
    assert render_key_docs(doc) == doc, "docs/study.md key tables are stale: regenerate them"
    sections = {key.rpartition(".")[0] or "top" for key, *_ in describe_fields(StudyConfig)}
    for section in sections:
        assert f"<!-- keys {section}: generated" in doc, f"no generated key table for [{section}]"
    assert all(d for *_, d in describe_fields(StudyConfig)), "every key needs a doc= text"
