"""Property-based tests (hypothesis): shape arithmetic, crops, collation and windowed reads.

* ``config.module_frame_counts`` (and ``Encoder.frame_counts``) equal the tensor shapes ``Encoder.encode``
  really produces, for random valid module stacks and input lengths; inputs they call too short are refused;
* a decoder (``decoder.build_decoder``) maps the encoder's frame count back to exactly the input length;
* ``audio.crop_or_pad`` always returns the requested length holding the right slice, then zeros;
* random crop offsets are on the ``crop_grid`` and inside the file, and a pure function of (seed, epoch, index);
* ``collate`` stacks equal-length items and refuses unequal ones;
* a windowed, resampled ``read_audio`` equals the same window of a whole-file read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smooth_infomax.audio import crop_or_pad, read_audio
from smooth_infomax.config import load_config, module_frame_counts
from smooth_infomax.data.folder import AudioDataset, Item
from smooth_infomax.data.records import Utterance, collate
from smooth_infomax.decoding import build_decoder
from smooth_infomax.errors import ConfigError
from smooth_infomax.model import Encoder

FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
CHANNELS = 3


@st.composite
def layers(draw, first: bool):
    """One conv or maxpool layer (the first layer of the first module is a conv)."""
    if first or draw(st.booleans()):
        return {"type": "conv", "kernel": draw(st.integers(1, 10)), "stride": draw(st.integers(1, 5)),
                "padding": draw(st.integers(0, 4))}
    kernel = draw(st.integers(1, 6))
    return {"type": "maxpool", "kernel": kernel, "stride": draw(st.integers(1, 4)),
            "padding": draw(st.integers(0, kernel // 2))}


@st.composite
def model_sections(draw):
    """A random model section that passes validation (tiny channels)."""
    n_modules = draw(st.integers(1, 3))
    modules = []
    for i in range(n_modules):
        n_layers = draw(st.integers(1, 3))
        mod_layers = [draw(layers(first=(i == 0 and j == 0))) for j in range(n_layers)]
        if not any(layer["type"] == "conv" for layer in mod_layers):
            mod_layers[0] = draw(layers(first=True))
        modules.append({"layers": mod_layers, "head_kernel": draw(st.integers(1, 4)),
                        "head_padding": draw(st.integers(0, 2))})
    kind = draw(st.sampled_from(["sim", "gim", "cpc"]))
    gru = 4 if kind == "cpc" else draw(st.sampled_from([None, 4]))
    return {"kind": kind, "channels": CHANNELS, "gru_hidden": gru, "modules": modules,
            "batch_norm": draw(st.booleans())}


def valid_config(model: dict):
    try:
        return load_config({"model": model, "data": {"crop": 4000},
                            "loss": {"prediction_steps": 1, "window": None}})
    except ConfigError:
        assume(False)


def conv_counts(cfg, n: int) -> list[int]:
    """The frame counts of the conv outputs of an Encoder built from ``cfg`` (CPC: one stack, one output)."""
    counts = module_frame_counts(cfg.model, n)
    return counts[-1:] if cfg.model.kind == "cpc" else counts


@FAST
@given(model=model_sections(), n=st.integers(1, 2500))
def test_frame_counts_equal_the_encoder_shapes(model, n):
    cfg = valid_config(model)
    enc = Encoder(cfg.model).eval()
    counts = conv_counts(cfg, n)
    expected = counts + ([counts[-1]] if cfg.model.gru_hidden is not None else [])
    assert enc.frame_counts(n) == expected
    wave = torch.randn(2, 1, n)
    if min(expected) < 1:
        with pytest.raises(ValueError, match="too short"):
            enc.encode(wave)
        return
    with torch.no_grad():
        outs = enc.encode(wave, mode="sample" if cfg.model.kind == "sim" else "mean")
    assert [tuple(o.shape) for o in outs] == [(2, t, d) for t, d in zip(expected, enc.output_dims)]
    assert all(torch.isfinite(o).all() for o in outs)


@FAST
@given(model=model_sections(), n=st.integers(1, 2500), data=st.data())
def test_a_decoder_returns_exactly_the_input_length(model, n, data):
    cfg = valid_config(model)
    enc = Encoder(cfg.model)
    frames = enc.frame_counts(n)
    assume(min(frames) >= 1)
    output = data.draw(st.integers(0, len(frames) - 1), label="output")
    dec = build_decoder(cfg.model, output, n)
    assert dec.n_frames == frames[output]
    assert dec.in_channels == enc.output_dims[output]
    with torch.no_grad():
        y = dec(torch.randn(2, frames[output], dec.in_channels))
    assert tuple(y.shape) == (2, 1, n)
    # every transposed layer reproduces the encoder's length at its depth: no crop or pad was needed
    assert dec.output_length(frames[output]) == n


@FAST
@given(shape=st.tuples(st.integers(0, 3), st.integers(0, 40)), length=st.integers(0, 60), offset=st.integers(0, 60),
       dtype=st.sampled_from([np.float32, np.float64, np.int16]))
def test_crop_or_pad_invariants(shape, length, offset, dtype):
    rows, t = shape
    x = (np.arange(rows * t).reshape(rows, t) + 1).astype(dtype) if rows else (np.arange(t) + 1).astype(dtype)
    y = crop_or_pad(x, length, offset)
    assert y.shape == x.shape[:-1] + (length,)
    assert y.dtype == x.dtype
    k = max(0, min(length, t - offset))
    np.testing.assert_array_equal(y[..., :k], x[..., offset:offset + k])
    assert not y[..., k:].any()
    if offset == 0 and length == t:
        np.testing.assert_array_equal(y, x)


def test_crop_or_pad_refuses_negative_sizes():
    with pytest.raises(ValueError):
        crop_or_pad(np.zeros(4), -1)
    with pytest.raises(ValueError):
        crop_or_pad(np.zeros(4), 2, -1)


class FakeDataset(AudioDataset):
    """Items with header facts only (no files): enough for the crop arithmetic."""

    def __init__(self, frames: list[tuple[int, int]], **kwargs):
        super().__init__(**kwargs)
        self.items = [Item(f"/nowhere/{i}.wav", n, rate) for i, (n, rate) in enumerate(frames)]


@FAST
@given(files=st.lists(st.tuples(st.integers(1, 200_000), st.sampled_from([8000, 16000, 22050, 44100])),
                      min_size=1, max_size=6),
       crop=st.integers(1, 40_000), grid=st.integers(1, 400), seed=st.integers(0, 2**32 - 1),
       epoch=st.integers(0, 1000))
def test_random_crop_offsets_lie_on_the_grid_inside_the_file(files, crop, grid, seed, epoch):
    ds = FakeDataset(files, crop=crop, crop_grid=grid, random_crop=True, seed=seed)
    ds.set_epoch(epoch)
    offsets = [ds.crop_offset(i) for i in range(len(ds))]
    for i, off in enumerate(offsets):
        n = ds.length(i)
        assert off >= 0 and off % grid == 0
        if n >= crop:
            assert off + crop <= n
        else:
            assert off == 0
    again = FakeDataset(files, crop=crop, crop_grid=grid, random_crop=True, seed=seed)
    again.set_epoch(epoch)
    assert [again.crop_offset(i) for i in range(len(again))] == offsets
    fixed = FakeDataset(files, crop=crop, crop_grid=grid, random_crop=False, seed=seed)
    assert all(fixed.crop_offset(i) == 0 for i in range(len(fixed)))


label_values = st.one_of(st.integers(-5, 50), st.text(max_size=4), st.floats(allow_nan=False), st.none())


@FAST
@given(b=st.integers(1, 5), t=st.integers(1, 64), ints=st.booleans(), frames=st.integers(0, 6),
       extra=st.lists(label_values, min_size=5, max_size=5), data=st.data())
def test_collate_stacks_equal_length_items(b, t, ints, frames, extra, data):
    items = []
    for i in range(b):
        labels = {"phones": torch.arange(frames) + i, "extra": extra[i]}
        if ints:
            labels["speaker"] = i * 3
        items.append(Utterance(wave=torch.full((1, t), float(i)), sample_rate=16000, path=f"f{i}.wav", labels=labels,
                               offset=160 * i))
    batch = collate(items)
    assert batch["wave"].shape == (b, 1, t) and batch["wave"].dtype == torch.float32
    assert torch.equal(batch["wave"][:, 0, 0], torch.arange(b, dtype=torch.float32))
    assert batch["path"] == [f"f{i}.wav" for i in range(b)] and batch["sample_rate"] == 16000
    assert batch["offset"].dtype == torch.long and batch["offset"].tolist() == [160 * i for i in range(b)]
    assert batch["phones"].shape == (b, frames)
    if ints:
        assert batch["speaker"].dtype == torch.long and batch["speaker"].tolist() == [3 * i for i in range(b)]
    values = extra[:b]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        assert batch["extra"].tolist() == values
    else:
        assert batch["extra"] == values
    if b > 1:
        longer = data.draw(st.integers(0, b - 1), label="longer")
        items[longer] = Utterance(wave=torch.zeros(1, t + 1), sample_rate=16000, path="x.wav")
        with pytest.raises(ValueError, match="equal-length"):
            collate(items)


@pytest.fixture(scope="module")
def noise_22k(tmp_path_factory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("prop") / "noise.wav"
    x = np.random.default_rng(3).uniform(-0.5, 0.5, 22050).astype(np.float32)
    sf.write(str(path), x, 22050, subtype="FLOAT")
    return path, read_audio(path, sample_rate=16000)[0]


@FAST
@given(start=st.integers(0, 16500), frames=st.one_of(st.none(), st.integers(0, 17000)))
def test_a_resampled_window_equals_the_same_window_of_the_whole_file(noise_22k, start, frames):
    path, whole = noise_22k
    x, sr = read_audio(path, sample_rate=16000, start=start, frames=frames)
    ref = whole[start: None if frames is None else start + frames]
    assert sr == 16000 and x.shape == ref.shape and x.dtype == np.float32
    np.testing.assert_allclose(x, ref, atol=1e-5)
