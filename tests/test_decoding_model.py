"""decoding.model / store / media: lengths from the config's one walk, the generic decoder, the file format, WAVs."""

import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from smooth_infomax.config import load_config, model_config, module_frame_counts
from smooth_infomax.decoding import (
    GenericDecoder,
    build_decoder,
    encoder_lengths,
    encoder_steps,
    load_decoder,
    plan_decoder,
    plan_generic,
    save_decoder,
    upsampling_factors,
)
from smooth_infomax.decoding.media import plot_mel_strip, wav_bytes, write_wav
from smooth_infomax.decoding.store import decoder_from_state, decoder_state
from smooth_infomax.errors import UserError
from smooth_infomax.model import Encoder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions: one thread is fastest


CONFIGS = [{"preset": "paper", "channels": 4, "gru_hidden": 3},
           {"preset": "thesis", "channels": 4},
           {"preset": "paper", "kind": "cpc", "channels": 4, "gru_hidden": 3}]


@pytest.mark.parametrize("raw", CONFIGS)
@pytest.mark.parametrize("n_samples", [3200, 8800, 10240])
def test_encoder_lengths_follow_the_encoder_layer_by_layer(raw, n_samples):
    cfg = model_config(raw)
    enc = Encoder(cfg).eval()
    lengths = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: lengths.append(out.shape[-1]))
             for m in enc.modules() if isinstance(m, (nn.Conv1d, nn.MaxPool1d))]
    with torch.no_grad():
        enc.encode(torch.zeros(1, 1, n_samples))
    for h in hooks:
        h.remove()
    n_conv_outputs = len(encoder_steps(cfg))
    walked = encoder_lengths(cfg, n_conv_outputs, n_samples)
    # every conv / pool layer and mean head the encoder runs, in order (mean mode: no log-variance heads)
    assert walked == [n_samples] + lengths
    ends = list(np.cumsum([len(steps) for steps in encoder_steps(cfg)]))
    assert [walked[e] for e in ends] == enc.frame_counts(n_samples)[:n_conv_outputs]
    assert walked[-1] == module_frame_counts(cfg, n_samples)[-1]


def test_mirror_plan_in_lengths_are_the_walk_reversed():
    cfg = model_config({"preset": "paper", "channels": 4, "gru_hidden": 3})
    layers = plan_decoder(cfg, 1, 10240)
    walk = encoder_lengths(cfg, 2, 10240)
    assert [l.in_length for l in layers] == list(reversed(walk))[:-1]
    assert [l.out_length for l in layers] == list(reversed(walk))[1:]


@pytest.mark.parametrize("hop,expected", [(1, [1]), (2, [2]), (7, [7]), (160, [5, 4, 4, 2]), (320, [5, 4, 4, 4]),
                                          (44, [11, 4]), (9, [3, 3])])
def test_upsampling_factors_multiply_to_the_hop(hop, expected):
    factors = upsampling_factors(hop)
    assert factors == expected and math.prod(factors) == hop and all(f >= 1 for f in factors)
    with pytest.raises(ValueError):
        upsampling_factors(0)


@pytest.mark.parametrize("hop", [1, 7, 160, 320])
def test_generic_decoder_maps_frames_to_n_samples(hop):
    n_frames, dim = 12, 5
    n_samples = hop * n_frames + 3  # a source whose frames do not cover every sample
    dec = GenericDecoder(hop, dim, n_samples, n_frames, channels=6, module_name="layer3", module_index=3)
    assert dec.n_frames == n_frames and dec.in_channels == dim and dec.module_name == "layer3"
    y = dec(torch.randn(2, n_frames, dim))
    assert y.shape == (2, 1, n_samples)
    natural = dec.output_length(n_frames)
    assert natural == hop * n_frames  # the stack itself upsamples by exactly the hop
    convs = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose1d)]
    assert [c.stride[0] for c in convs] == upsampling_factors(hop)
    assert convs[0].in_channels == dim and convs[-1].out_channels == 1
    assert [l.in_length for l in plan_generic(hop, dim, n_frames, 6)][0] == n_frames
    with pytest.raises(ValueError):
        dec(torch.randn(2, n_frames, dim + 1))
    with pytest.raises(ValueError):
        GenericDecoder(hop, dim, n_samples, 0)


def test_decoder_files_load_with_weights_only(tmp_path):
    torch.manual_seed(0)
    mirror = build_decoder(model_config({"preset": "thesis", "channels": 4}), 1, 8800)
    generic = GenericDecoder(160, 5, 3200, 20, channels=6, module_name="hidden2", module_index=2)
    info = {"loss": "mse", "mode": "mean", "history": [{"epoch": 1, "val_loss": None}], "shape": (1, 2),
            "tensor": torch.tensor([1.5, 2.0]), "array": np.arange(3)}
    for dec, name in ((mirror, "m.pt"), (generic, "g.pt")):
        save_decoder(dec, tmp_path / name, **info)
        state = torch.load(tmp_path / name, map_location="cpu", weights_only=True)  # plain data + tensors only
        assert state["shape"] == [1, 2] and state["tensor"] == [1.5, 2.0] and state["array"] == [0, 1, 2]
        back = load_decoder(tmp_path / name)
        assert type(back) is type(dec) and not back.training and back.info["loss"] == "mse"
        z = torch.randn(2, dec.n_frames, dec.in_channels)
        with torch.no_grad():
            assert torch.equal(dec(z), back(z))
    assert load_decoder(tmp_path / "g.pt").module_name == "hidden2"


def test_files_written_before_the_generic_decoder_still_load(tmp_path):
    cfg = load_config({"model": {"preset": "paper", "channels": 4, "gru_hidden": 3}}).model
    dec = build_decoder(cfg, 2, 3200)
    old = decoder_state(dec, loss="mel", mode="sample", sample_rate=16000)
    del old["architecture"]
    torch.save(old, tmp_path / "old.pt")
    back = load_decoder(tmp_path / "old.pt")
    assert back.architecture == "mirror" and back.module_index == 2 and back.info["mode"] == "sample"
    bad = dict(old, architecture="wavenet")
    with pytest.raises(UserError, match="unknown decoder architecture"):
        decoder_from_state(bad)
    broken = dict(old, state_dict={k: v[..., :1] for k, v in old["state_dict"].items()})
    with pytest.raises(UserError, match="do not fit"):
        decoder_from_state(broken)
    with pytest.raises(UserError, match="not a decoder file"):
        decoder_from_state({"weights": 1})


def test_wavs_are_16_bit_pcm_clipped_and_readable(tmp_path):
    t = torch.arange(800) / 16000
    x = 0.5 * torch.sin(2 * math.pi * 440 * t)
    x[10] = 3.0
    x[11] = float("nan")
    write_wav(tmp_path / "a.wav", x.reshape(1, 1, -1), 16000)
    back, sr = sf.read(tmp_path / "a.wav", dtype="float64")
    info = sf.info(tmp_path / "a.wav")
    assert sr == 16000 and info.subtype == "PCM_16" and back.shape == (800,)
    expected = x.double().numpy().copy()
    expected[10], expected[11] = 1.0, 0.0
    assert np.abs(back - expected).max() <= 1.0 / 32767 + 1e-9
    assert sf.read(io.BytesIO(wav_bytes(torch.zeros(5), 8000)))[1] == 8000


def test_mel_strip_is_a_png(tmp_path):
    waves = [0.1 * torch.randn(1600) for _ in range(3)]
    plot_mel_strip(waves, tmp_path / "strip.png", 16000, labels=["-1", "0", "1"], title="strip")
    assert (tmp_path / "strip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
