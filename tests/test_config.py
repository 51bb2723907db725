from pathlib import Path

import pytest

from smooth_infomax.config import (
    apply_overrides,
    betas,
    load_config,
    module_frame_counts,
    n_trained_modules,
    parse_override,
    save_config,
)
from smooth_infomax.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "smooth_infomax" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert all(n > cfg.loss.prediction_steps for n in module_frame_counts(cfg.model, cfg.data.crop))


def test_paper_and_thesis_frame_counts():
    paper = load_config({"model": {"preset": "paper"}, "data": {"crop": 10240}})
    assert module_frame_counts(paper.model, 10240) == [511, 129, 64]
    assert module_frame_counts(paper.model, 20480) == [1023, 257, 128]
    thesis = load_config({"model": {"preset": "thesis"}, "data": {"crop": 10240}})
    assert module_frame_counts(thesis.model, 10240) == [52, 13]
    assert module_frame_counts(thesis.model, 8800) == [44, 11]


def test_reference_configs_match_method():
    sim = load_config(CONFIGS / "sim-artificial-speech.yaml")
    assert (sim.model.kind, sim.model.channels, sim.model.gru_hidden, sim.model.batch_norm) == ("sim", 512, 256, False)
    assert (sim.loss.beta, sim.train.lr, sim.train.batch_size, sim.data.crop) == (0.01, 2e-4, 64, 10240)
    lib = load_config(CONFIGS / "sim-librispeech.yaml")
    assert (lib.model.batch_norm, lib.loss.beta, lib.loss.prediction_steps, lib.data.crop) == (True, 0.001, 10, 20480)
    thesis = load_config(CONFIGS / "sim-artificial-speech-thesis.yaml")
    got = (thesis.model.channels, thesis.model.gru_hidden, thesis.loss.beta, thesis.train.lr_gamma)
    assert got == (32, None, 0.0035, 0.995)
    assert betas(load_config(CONFIGS / "gim-artificial-speech.yaml")) == [0.0, 0.0, 0.0]
    assert n_trained_modules(sim.model) == 4
    assert n_trained_modules(load_config(CONFIGS / "cpc-artificial-speech.yaml").model) == 1


def test_overrides_parse_yaml_values_and_keep_equals():
    assert parse_override("train.epochs=5") == (["train", "epochs"], 5)
    assert parse_override("data.path=a=b") == (["data", "path"], "a=b")
    assert parse_override("model.gru_hidden=null") == (["model", "gru_hidden"], None)
    cfg = load_config(CONFIGS / "gim-artificial-speech.yaml", ["loss.beta=0.001", "model.gru_hidden=null", "seed=7"])
    assert cfg.loss.beta == 0.001 and cfg.model.gru_hidden is None and cfg.seed == 7
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.epoch=3"], "train.epoch"),
        (["train.epochs=three"], "train.epochs"),
        (["loss.beta=-0.1"], "loss.beta"),
        (["loss.kl_reduction=sum"], "loss.kl_reduction"),
        (["model.kind=vae"], "model.kind"),
        (["data.crop=1000"], "model.modules[2]"),
        (["loss.beta=[0.1, 0.2]"], "loss.beta"),
        (["model.channels=0"], "model.channels"),
        (["train.batch_size=true"], "train.batch_size"),
    ],
)
def test_invalid_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "sim-artificial-speech.yaml", overrides)
    assert f"'{key}" in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_save_and_reload_roundtrip(tmp_path):
    cfg = load_config(CONFIGS / "quick.yaml", ["train.epochs=2"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg


# --------------------------------------------------------------------------------------------------
# Shipped configs are package data; --config takes a shipped name or a path
# --------------------------------------------------------------------------------------------------


def test_shipped_names_resolve_with_or_without_suffix():
    from smooth_infomax.config_files import shipped_configs

    names = shipped_configs()
    assert names == sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert {"quick", "sim-artificial-speech", "base-librispeech"} <= set(names)
    a, b = load_config("sim-artificial-speech"), load_config("sim-artificial-speech.yaml")
    assert a.to_dict() == b.to_dict() == load_config(CONFIGS / "sim-artificial-speech.yaml").to_dict()
    assert a.model.kind == "sim" and len(a.model.modules) == 3  # its base: base-artificial-speech


def test_a_path_wins_and_may_include_a_shipped_base(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick.yaml").write_text("seed: 123\n")  # a local file of a shipped name: the path wins
    assert load_config("quick.yaml").seed == 123
    assert load_config("quick").seed == load_config(CONFIGS / "quick.yaml").seed != 123
    (tmp_path / "mine.yaml").write_text("base: sim-librispeech.yaml\ntrain: {epochs: 3}\n")
    mine = load_config(tmp_path / "mine.yaml")
    assert mine.train.epochs == 3 and mine.model.batch_norm and mine.data.crop == 20480
    (tmp_path / "own-base.yaml").write_text("seed: 9\n")
    (tmp_path / "child.yaml").write_text("base: own-base.yaml\n")
    assert load_config(tmp_path / "child.yaml").seed == 9  # relative bases still resolve next to the file


def test_unknown_config_names_list_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="nope does not exist.*shipped config name.*quick, sim-artificial-speech"):
        load_config("nope")
    with pytest.raises(ConfigError, match="configs/quick.yaml does not exist; the shipped config of that name is "
                                          "--config quick"):
        load_config("configs/quick.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(tmp_path / "loop.yaml")


def test_configs_command_lists_and_shows(capsys):
    from smooth_infomax.cli import main

    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert set(lines) == {p.stem for p in CONFIGS.glob("*.yaml")}
    assert "synthetic speech" in lines["quick"]
    assert main(["configs", "--show", "quick"]) == 0
    assert capsys.readouterr().out == (CONFIGS / "quick.yaml").read_text()
    assert main(["configs", "--show", "nope"]) == 2
    assert "not a shipped config" in capsys.readouterr().err
