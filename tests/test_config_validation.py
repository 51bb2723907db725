"""Configs that lie: every bad key or value is refused before any work starts, in one line naming the key.

``tests/test_config.py`` covers the basics (an unknown top-level key, a word for a number, a negative scalar
beta, a two-value beta for three modules, a crop too short for the paper stack); this file adds nested keys,
the remaining types and ranges, impossible shapes, ``base:`` loops, ``--set`` syntax, a missing ``data.path``
and a resume whose config no longer matches its checkpoint, checked through the command line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from smooth_infomax.cli import main
from smooth_infomax.config import load_config, parse_override
from smooth_infomax.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "smooth_infomax" / "configs"

TINY = {
    "seed": 0,
    "data": {"crop": 3200, "layout": "folder", "random_crop": False},
    "model": {"preset": "paper", "channels": 4, "gru_hidden": 4},
    "loss": {"prediction_steps": 2, "negatives": 2, "window": 8},
    "train": {"epochs": 1, "batch_size": 2, "progress": False, "log_tensorboard": False},
}


def refused(source, overrides=(), key: str = "") -> str:
    """The ConfigError message for ``source`` + ``overrides``: one line that names ``key``."""
    with pytest.raises(ConfigError) as exc:
        load_config(source, list(overrides))
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert f"'{key}'" in msg or f"'{key}." in msg or f"'{key}[" in msg, msg
    return msg


# --------------------------------------------------------------------------------------------------
# Unknown keys, at any depth
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("patch, key", [
    ({"trian": {"epochs": 1}}, "trian"),
    ({"data": {"crop_size": 3200}}, "data.crop_size"),
    ({"model": {"chanels": 8}}, "model.chanels"),
    ({"model": {"modules": [{"layers": [{"kernel": 10, "stride": 5}], "head_kernal": 3}]}},
     "model.modules[0].head_kernal"),
    ({"model": {"modules": [{"layers": [{"kernel": 10, "stride": 5}]},
                            {"layers": [{"kernel": 4, "stride": 2}, {"kernal": 4}]}]}},
     "model.modules[1].layers[1].kernal"),
])
def test_unknown_keys_are_named_with_their_path(patch, key):
    data = yaml.safe_load(yaml.safe_dump(TINY))
    for section, value in patch.items():
        if isinstance(value, dict) and isinstance(data.get(section), dict):
            data[section].update(value)
        else:
            data[section] = value
    msg = refused(data, key=key)
    assert "unknown config key" in msg


def test_unknown_keys_in_yaml_files_and_their_bases(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**TINY, "loss": {**TINY["loss"], "betaa": 0.1}}))
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain: {epochs: 2}\n")
    refused(tmp_path / "child.yaml", key="loss.betaa")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY))
    refused(tmp_path / "child.yaml", ["train.epocs=3"], key="train.epocs")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmodel: {modules: [{layers: [{kernel: 10, strid: 5}]}]}\n")
    refused(tmp_path / "child.yaml", key="model.modules[0].layers[0].strid")


# --------------------------------------------------------------------------------------------------
# Wrong types
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("model.modules=abc", "model.modules"),
    ("model.modules=[5]", "model.modules[0]"),
    ("model.modules=[{layers: 5}]", "model.modules[0].layers"),
    ("model.modules=[{layers: [{kernel: 2.5}]}]", "model.modules[0].layers[0].kernel"),
    ("model.modules=[{layers: [{kernel: 10, stride: five}]}]", "model.modules[0].layers[0].stride"),
    ("loss.beta=high", "loss.beta"),
    ("loss.beta=[0.1, x, 0.1]", "loss.beta"),
    ("train.lr=[0.001]", "train.lr"),
    ("model.batch_norm=yes please", "model.batch_norm"),
    ("model.gru_hidden=8.5", "model.gru_hidden"),
    ("data=5", "data"),
    ("data.path=[a, b]", "data.path"),
    ("seed=zero", "seed"),
    ("train.module_lr=0.1", "train.module_lr"),
])
def test_wrong_types_name_the_key(override, key):
    refused(TINY, [override], key=key)


def test_numbers_in_exponent_notation_are_numbers():
    # YAML 1.1 reads "1e-3" as a string; a float or integer key takes it as the number it spells
    cfg = load_config(TINY, ["train.lr=1e-3", "loss.beta=5E-3", "train.epochs=2e0"])
    assert cfg.train.lr == 0.001 and cfg.loss.beta == 0.005 and cfg.train.epochs == 2
    refused(TINY, ["train.epochs=2.5e0"], key="train.epochs")
    refused(TINY, ["train.lr=1e-3x"], key="train.lr")


# --------------------------------------------------------------------------------------------------
# Values out of range, impossible shapes
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, key", [
    (["loss.beta=[0.01, -0.01, 0.01]"], "loss.beta"),
    (["loss.beta=.nan"], "loss.beta"),
    (["loss.beta=.inf"], "loss.beta"),
    (["loss.beta=[0.1, 0.1, 0.1, 0.1]"], "loss.beta"),
    (["model.preset=thesis", "model.channels=4", "loss.beta=[0.1, 0.1, 0.1]"], "loss.beta"),
    (["train.lr=.inf"], "train.lr"),
    (["train.lr=.nan"], "train.lr"),
    (["train.lr=0"], "train.lr"),
    (["train.weight_decay=-0.1"], "train.weight_decay"),
    (["train.module_lr=[0.1, -0.1, 0.1, 0.1]"], "train.module_lr"),
    (["train.module_lr=[0.1, 0.1]"], "train.module_lr"),
    (["train.max_steps_per_epoch=0"], "train.max_steps_per_epoch"),
    (["train.grad_clip=.inf"], "train.grad_clip"),
    (["model.logvar_min=-.inf"], "model.logvar_min"),
    (["model.logvar_bias_init=.nan"], "model.logvar_bias_init"),
    (["seed=-1"], "seed"),
    (["seed=18446744073709551616"], "seed"),
    (["train.epochs=-1"], "train.epochs"),
    (["data.sample_rate=0"], "data.sample_rate"),
    (["loss.window=2"], "loss.window"),
    (["model.modules=[{layers: [{kernel: 10, stride: 0}]}]"], "model.modules[0].layers[0].stride"),
    (["model.modules=[{layers: [{type: maxpool, kernel: 4}]}]"], "model.modules[0].layers"),
    (["model.modules=[{layers: [{type: pool, kernel: 4}]}]"], "model.modules[0].layers[0].type"),
])
def test_values_out_of_range_name_the_key(overrides, key):
    refused(TINY, overrides, key=key)


def test_a_maxpool_padding_torch_cannot_run_is_refused():
    # MaxPool1d needs padding <= kernel / 2; without the check the model would fail on its first batch
    mods = "[{layers: [{kernel: 10, stride: 5}, {type: maxpool, kernel: 2, stride: 2, padding: 2}]}]"
    refused(TINY, [f"model.modules={mods}", "model.gru_hidden=null"], key="model.modules[0].layers[1].padding")


@pytest.mark.parametrize("overrides, key", [
    (["data.crop=300"], "model.modules[2]"),  # 300 samples: 14, 5 and 2 frames per module
    (["loss.prediction_steps=30", "loss.window=40"], "model.modules[2]"),  # 3200 samples: 20 frames at module2
    (["model.preset=thesis", "model.channels=4", "data.crop=2000"], "model.modules[1]"),  # 9 and 2 frames
    (["model.modules=[{layers: [{kernel: 10, stride: 5}], head_kernel: 5000}]"], "model.modules[0]"),
])
def test_a_module_shorter_than_the_prediction_horizon_is_refused(overrides, key):
    msg = refused(TINY, overrides, key=key)
    assert "loss.prediction_steps + 1" in msg and "data.crop" in msg


def test_a_config_whose_base_is_itself(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nseed: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nseed: 2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "a.yaml")
    assert "base" in str(exc.value) and "a.yaml" in str(exc.value) and "\n" not in str(exc.value)
    (tmp_path / "c.yaml").write_text("base: [x.yaml]\n")
    with pytest.raises(ConfigError, match="base"):
        load_config(tmp_path / "c.yaml")


# --------------------------------------------------------------------------------------------------
# Through the command line: before anything is created
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def one_error_line(err: str, *words: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, err)
    return lines[0]


@pytest.mark.parametrize("sets, words", [
    (["train.epochs"], ["train.epochs", "key=value"]),
    (["=5"], ["'=5'", "empty key"]),
    ([" =5"], ["empty key"]),
    (["train..epochs=5"], ["empty key"]),
    (["model.modules[0].kernel=3"], ["model.modules[0]"]),
    (["train.epoch=3"], ["train.epoch"]),
    (["loss.beta=-1"], ["loss.beta"]),
])
def test_train_cli_refuses_bad_overrides_before_creating_anything(config_file, tmp_path, capsys, sets, words):
    out = tmp_path / "run"
    argv = ["train", "--config", str(config_file), "--set", f"data.path={tmp_path}", "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    one_error_line(capsys.readouterr().err, *words)
    assert not out.exists()


def test_parse_override_keeps_values_verbatim_after_the_first_equals():
    assert parse_override("data.path=/a b/c=d") == (["data", "path"], "/a b/c=d")
    assert parse_override("data.path=") == (["data", "path"], "")


@pytest.mark.parametrize("path_override, words", [
    ("data.path={tmp}/nowhere", ["'data.path'", "nowhere", "does not exist"]),
    ("data.path=", ["'data.path'", "not set"]),
    ("data.path=null", ["'data.path'", "not set"]),
])
def test_train_cli_names_a_missing_data_path_before_creating_the_run(config_file, tmp_path, capsys, path_override,
                                                                     words):
    out = tmp_path / "run"
    code = main(["train", "--config", str(config_file), "--set", path_override.format(tmp=tmp_path), "--out", str(out)])
    assert code == 2
    one_error_line(capsys.readouterr().err, *words)
    assert not out.exists()


def test_missing_config_and_missing_run(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, "none.yaml", "does not exist")
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, "--config")
    assert not (tmp_path / "run").exists()


def test_resume_with_a_config_that_no_longer_matches_the_checkpoint(config_file, tmp_path, capsys):
    data = tmp_path / "audio"
    data.mkdir()
    t = np.arange(3200) / 16000
    for i in range(4):
        sf.write(str(data / f"u{i}.wav"), (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32), 16000)
    out = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--set", f"data.path={data}", "--out", str(out)]) == 0
    capsys.readouterr()
    ckpt = out / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    saved_config = (out / "config.yaml").read_text()
    code = main(["train", "--config", str(config_file), "--out", str(out), "--resume", "--set", "model.channels=6",
                 "--set", "train.epochs=2"])
    assert code == 2
    one_error_line(capsys.readouterr().err, str(ckpt))
    assert ckpt.read_bytes() == before
    assert (out / "config.yaml").read_text() == saved_config  # the refused resume changed nothing
    # a run that is already there is never overwritten silently
    assert main(["train", "--config", str(config_file), "--set", f"data.path={data}", "--out", str(out)]) == 2
    one_error_line(capsys.readouterr().err, "--resume")
    # a run read through its checkpoint (no encoder.pt) after its config.yaml was edited
    (out / "encoder.pt").unlink()
    saved = out / "config.yaml"
    assert saved.read_text().count("channels: 4\n") == 1
    saved.write_text(saved.read_text().replace("channels: 4\n", "channels: 6\n"))
    code = main(["encode", "--run", str(out), "--input", str(data / "u0.wav"), "--out", str(tmp_path / "x.npz")])
    assert code == 2
    one_error_line(capsys.readouterr().err, str(ckpt), "does not match")
