"""The run directory format and the one data opener (`smooth_infomax.runs`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import smooth_infomax
from smooth_infomax.checkpoint import atomic_torch_save
from smooth_infomax.config import load_config, save_config
from smooth_infomax.errors import UserError
from smooth_infomax.model import Encoder, SmoothInfoMax
from smooth_infomax.runs import is_run_dir, load_encoder, open_run_data, open_training_data, run_config, save_encoder

SYLS = ["ba", "bi", "bu", "da", "di", "du", "ga", "gi", "gu"]
#: ten words; the first three are the syllable-test words H (their take-1 syllables form the syllable test set)
WORDS = ["gibadu", "babibu", "dadidu", "gagigu", "bidaga", "dubagi", "gudiba", "bugida", "diguba", "dagubi"]
HELD_OUT = set(WORDS[:3])
SMALL = ["model.channels=8", "model.gru_hidden=8", "train.log_tensorboard=false", "train.progress=false"]


def _wave(n: int, seed: int, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    return (0.3 * np.sin(2 * np.pi * (150 + 40 * (seed % 9)) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def make_artificial(root: Path, word_samples: int = 8000, syllable_samples: int = 3200) -> Path:
    """A tiny artificial-speech folder (16 kHz): words train = take 1 of every word + take 2 of the H words
    (13 files), words test = take 3 of three other words; syllables train = the take-1 syllables of every word
    (30), syllables test = the take-1 syllables of H (9). Leakage-free: words train 7, syllables train 21."""
    wt, ws = root / "reshuffledv2" / "train", root / "reshuffledv2" / "test"
    st, ss = root / "split up data padded" / "train", root / "split up data padded" / "test"
    for d in (wt, ws, st, ss):
        d.mkdir(parents=True, exist_ok=True)
    for i, w in enumerate(WORDS):
        sf.write(wt / f"{w}_1.wav", _wave(word_samples, i), 16000)
        if w in HELD_OUT:
            sf.write(wt / f"{w}_2.wav", _wave(word_samples, 100 + i), 16000)
        for pos in range(3):
            syl = w[2 * pos: 2 * pos + 2]
            target = ss if w in HELD_OUT else st
            sf.write(target / f"{w}_1_{pos + 1}_{syl}.wav", _wave(syllable_samples, SYLS.index(syl)), 16000)
            if w in HELD_OUT:  # the reference train folder also holds other takes' syllables of H words
                sf.write(st / f"{w}_2_{pos + 1}_{syl}.wav", _wave(syllable_samples, SYLS.index(syl) + 50), 16000)
    for i, w in enumerate(WORDS[3:6]):
        sf.write(ws / f"{w}_3.wav", _wave(word_samples, 200 + i), 16000)
    return root


def make_run(root: Path, data: Path, overrides: tuple[str, ...] = (), seed: int = 0) -> Path:
    """A run directory holding a randomly initialised quick-config encoder (no training)."""
    cfg = load_config("quick.yaml", [*SMALL, f"data.path={data}", *overrides])
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "config.yaml")
    torch.manual_seed(seed)
    save_encoder(Encoder(cfg.model), cfg, root / "encoder.pt")
    return root


@pytest.fixture
def artificial(tmp_path) -> Path:
    return make_artificial(tmp_path / "art")


def test_save_and_load_encoder_round_trip(tmp_path, artificial):
    run = make_run(tmp_path / "run", artificial)
    assert is_run_dir(run) and not is_run_dir(tmp_path)
    enc = load_encoder(run)
    assert not enc.training
    again = smooth_infomax.load(run)  # the package API points here
    x = torch.randn(1, 1, 4000)
    assert all(torch.equal(a, b) for a, b in zip(enc.encode(x), again.encode(x)))
    assert run_config(run).data.path == str(artificial)


def test_load_encoder_falls_back_to_the_checkpoint(tmp_path, artificial):
    cfg = load_config("quick.yaml", [*SMALL, f"data.path={artificial}"])
    run = tmp_path / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(1)
    sim = SmoothInfoMax(cfg.model, cfg.loss)
    atomic_torch_save({"model": sim.state_dict()}, run / "checkpoints" / "last.pt")
    enc = load_encoder(run)
    x = torch.randn(1, 1, 4000)
    assert torch.equal(enc.encode(x)[0], sim.encoder.eval().encode(x)[0])


def test_not_a_run_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        run_config(tmp_path)
    with pytest.raises(UserError, match="no trained encoder"):
        load_encoder(tmp_path)


def _words(ds) -> set[str]:
    return {it.labels["word"] for it in ds.items}


def test_open_run_data_applies_the_configs_split_scheme(tmp_path, artificial):
    ref = load_config("quick.yaml", [f"data.path={artificial}"])
    free = load_config("quick.yaml", [f"data.path={artificial}", "data.split_scheme=leakage_free"])
    assert len(open_run_data(ref, "train", task="vowel")) == 30
    syl = open_run_data(free, "train", task="vowel")
    assert len(syl) == 21 and not (_words(syl) & HELD_OUT)
    assert len(open_run_data(free, "test", task="vowel")) == 9
    # pre-training view: words; leakage_free moves the H words out of train
    train, val = open_training_data(free)
    assert len(train) == 7 and not (_words(train) & HELD_OUT)
    assert len(val) == 3 + 6 and train[0].wave.shape[-1] == free.data.crop
    ref_train, _ = open_training_data(ref)
    assert len(ref_train) == 13
    # an explicit scheme overrides the config's; whole items for tasks
    assert len(open_run_data(free, "train", task="vowel", split_scheme="reference")) == 30
    assert open_run_data(free, "test", task="syllable")[0].wave.shape[-1] == 3200


def test_open_run_data_checks_the_task_and_paths(tmp_path, artificial):
    cfg = load_config("quick.yaml", [f"data.path={artificial}"])
    with pytest.raises(UserError, match="needs LibriSpeech-layout"):
        open_run_data(cfg, "train", task="phone")
    with pytest.raises(UserError, match="does not exist"):
        open_run_data(cfg, "train", data_path=tmp_path / "missing")
    empty = load_config("quick.yaml")
    empty.data.path = None
    with pytest.raises(UserError, match="data.path"):
        open_run_data(empty, "train")
    with pytest.raises(UserError, match="crop"):
        open_run_data(cfg, "train", crop="whole")
