"""Shared test helpers: audio generated on the fly, and the location of the shared artificial speech dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TINY_DATA = {"layout": "folder", "crop": 3200, "random_crop": False}
TINY_LOSS = {"beta": 0.01, "prediction_steps": 3, "negatives": 4, "window": 64}
TINY_TRAIN = {"batch_size": 4, "lr": 2e-3, "progress": False, "log_tensorboard": False}

ARTIFICIAL_SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "artificial-speech"


def make_wave(n: int, sample_rate: int = 16000, *, kind: str = "sine", seed: int = 0, channels: int = 1,
              freq: float = 220.0, amplitude: float = 0.5) -> np.ndarray:
    """A deterministic test signal: (n,) when mono, (n, channels) otherwise."""
    t = np.arange(n) / sample_rate
    cols = []
    for c in range(channels):
        if kind == "sine":
            cols.append(amplitude * np.sin(2 * np.pi * freq * (c + 1) * t))
        else:
            cols.append(amplitude * np.random.default_rng([seed, c]).uniform(-1, 1, n))
    x = np.stack(cols, axis=1).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def write_audio(path: Path, n: int, sample_rate: int = 16000, **kwargs) -> Path:
    """Write a test signal of ``n`` samples (format from the suffix: wav PCM_16, flac, ogg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = kwargs.pop("subtype", None)
    sf.write(str(path), make_wave(n, sample_rate, **kwargs), sample_rate, subtype=subtype)
    return path


def write_vibrato_tones(root: Path, *, n: int, samples: int, f0: float, step: float, depth: float, rate: float,
                        noise: float, seed: int, prefix: str) -> Path:
    """``n`` WAV files ``<prefix>NN.wav`` of frequency-modulated tones (base f0 + step * i, modulation depth and
    rate) plus seeded Gaussian noise: a tiny training corpus that a model can learn something from."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    for i in range(n):
        wave = 0.3 * np.sin(2 * np.pi * (f0 + step * i) * t * (1 + depth * np.sin(2 * np.pi * rate * t)))
        wave = wave + noise * rng.standard_normal(t.size)
        sf.write(str(root / f"{prefix}{i:02d}.wav"), wave.astype(np.float32), 16000)
    return root


@pytest.fixture
def artificial_root() -> Path:
    if not (ARTIFICIAL_SPEECH / "reshuffledv2").is_dir():
        pytest.skip(f"artificial speech dataset not found at {ARTIFICIAL_SPEECH}")
    return ARTIFICIAL_SPEECH


QUICK_OVERRIDES = ["train.epochs=6", "train.progress=false", "train.log_tensorboard=false", "model.channels=32",
                   "model.gru_hidden=32"]


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A small built-in synthetic dataset (160 words, 4 voices), generated once per test session."""
    pytest.importorskip("espeakng_loader")
    from smooth_infomax.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "data", seed=0, n_words=160, n_voices=4)


@pytest.fixture(scope="session")
def quick_run(synth_data, tmp_path_factory) -> tuple[Path, Path]:
    """(run_dir, data_dir): a SIM encoder trained briefly with the shipped quick config on the synthetic data."""
    import torch

    from smooth_infomax.config import load_config
    from smooth_infomax.training import train

    threads = torch.get_num_threads()
    cfg = load_config(Path(__file__).resolve().parents[1] / "src" / "smooth_infomax" / "configs" / "quick.yaml",
                      [*QUICK_OVERRIDES, f"data.path={synth_data}"])
    run = tmp_path_factory.mktemp("quick") / "sim"
    try:
        train(cfg, run)
    finally:
        torch.set_num_threads(threads)
    return run, synth_data


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny convolutions run fastest so and do not oversubscribe a shared CPU)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Fixtures whose set-up synthesises speech or trains a model: every test that uses one belongs to the slow tier
# (`pytest -m "not slow"` is the quick tier; CI runs everything).
SLOW_FIXTURES = frozenset({"synth_data", "quick_run"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def tiny_folder_config(data: Path, *, seed: int, kind: str = "gim", data_extra: dict | None = None,
                       loss: dict | None = None, train: dict | None = None):
    """A paper-preset model at 8 channels on a folder of WAV files (the training tests' corpus): ``TINY_*``
    settings, each section updated by the given dict."""
    from smooth_infomax.config import load_config

    return load_config({
        "seed": seed,
        "data": {"path": str(data), **TINY_DATA, **(data_extra or {})},
        "model": {"preset": "paper", "kind": kind, "channels": 8, "gru_hidden": 8},
        "loss": {**TINY_LOSS, **(loss or {})},
        "train": {**TINY_TRAIN, **(train or {})},
    })


def encoder_weights(run: Path) -> dict:
    """A copy of the state dict of the encoder a training run saved."""
    from smooth_infomax.runs import load_encoder

    return {k: v.clone() for k, v in load_encoder(run).state_dict().items()}
