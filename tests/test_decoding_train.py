"""decoding.train / cache: settings and --set, latents encoded once, seeded posterior draws, external sources."""

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from smooth_infomax.cli import main
from smooth_infomax.config import load_config, save_config
from smooth_infomax.decoding import (
    DecoderSettings,
    GenericDecoder,
    LatentCache,
    build_decoder,
    load_decoder,
    save_decoder,
    settings_with,
)
from smooth_infomax.decoding.cache import cache_latents
from smooth_infomax.decoding.train import train_decoder
from smooth_infomax.errors import ConfigError, UserError
from smooth_infomax.features.sources import EncoderSource
from smooth_infomax.model import Encoder
from smooth_infomax.runs import open_run_data, run_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions: one thread is fastest


def make_run(root, kind="sim", n_files=8, crop=3200):
    """(run_dir, data_dir): a random-init tiny encoder saved as a run, and tone files in a folder dataset."""
    data = root / "audio"
    data.mkdir(exist_ok=True)
    t = np.arange(4000) / 16000
    for i in range(n_files):
        sf.write(data / f"tone{i:02d}.wav", (0.4 * np.sin(2 * np.pi * (150 + 40 * i) * t)).astype(np.float32), 16000)
    cfg = load_config({"data": {"path": str(data), "layout": "folder", "crop": crop, "random_crop": False},
                       "model": {"preset": "paper", "kind": kind, "channels": 6, "gru_hidden": 4},
                       "loss": {"prediction_steps": 4, "negatives": 4, "window": 32}})
    run = root / f"run-{kind}"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    enc = Encoder(cfg.model)
    torch.save({"model_config": dataclasses.asdict(cfg.model), "state_dict": enc.state_dict()}, run / "encoder.pt")
    return run, data


class Frontend(nn.Module):
    """A deterministic external model: frames of 160 samples -> 5 features (``module:`` contract)."""

    hop = 160

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv1d(1, 5, kernel_size=160, stride=160)

    def forward(self, wave):
        return torch.tanh(self.conv(wave.reshape(wave.shape[0], 1, -1))).transpose(1, 2)


def frontend():
    return Frontend()


# --------------------------------------------------------------------------------------------------
# Settings: one meaning of --set
# --------------------------------------------------------------------------------------------------


def test_settings_overrides_are_typed_and_checked():
    s = settings_with(DecoderSettings(epochs=7), ["lr=1e-3", "max_items=null", "loss=mel", "crop=8000"])
    assert (s.epochs, s.lr, s.max_items, s.loss, s.crop) == (7, 1e-3, None, "mel", 8000)
    assert settings_with(DecoderSettings(), ["epochs=4.0"]).epochs == 4
    for text, key in (("nonsense=1", "nonsense"), ("epochs=2.5", "epochs"), ("loss=fft", "loss"),
                      ("batch_size=0", "batch_size"), ("mode=median", "mode"), ("lr=-1", "lr"), ("crop=0", "crop")):
        with pytest.raises(ConfigError) as info:
            settings_with(DecoderSettings(), [text])
        assert key in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="valid keys here: batch_size"):
        settings_with(DecoderSettings(), ["decoder.epochs=3"])
    with pytest.raises(TypeError):
        train_decoder("nowhere", "nowhere", 0, epochz=3)


def test_decoder_train_help_documents_the_set_keys(capsys):
    with pytest.raises(SystemExit):
        main(["decoder", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for key in ("epochs", "batch_size", "lr", "loss", "mode", "max_items", "crop", "channels"):
        assert key in text
    assert "--model" in text and "--run" in text


def test_cli_set_errors_are_one_line(tmp_path, capsys):
    run, data = make_run(tmp_path)
    assert main(["decoder", "train", "--run", str(run), "--data", str(data), "--module", "1",
                 "--set", "nonsense=1"]) == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and err.count("\n") == 1
    assert main(["decoder", "train", "--model", str(run), "--data", str(data), "--module", "7"]) == 2
    assert "--module" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Cached latents
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_latents_are_encoded_once_not_per_epoch(tmp_path, monkeypatch):
    run, data = make_run(tmp_path)
    calls = []
    real = EncoderSource.encode

    def counting(self, wave, mode="mean", *args, **kwargs):
        calls.append((wave.shape[0], mode))
        return real(self, wave, mode, *args, **kwargs)

    monkeypatch.setattr(EncoderSource, "encode", counting)
    kw = dict(batch_size=3, n_recon=1, out_dir=tmp_path / "d1")
    s1 = train_decoder(run, data, 1, epochs=1, **kw)
    one = len(calls)
    calls.clear()
    s3 = train_decoder(run, data, 1, epochs=3, mode="sample", batch_size=3, n_recon=1, out_dir=tmp_path / "d3")
    assert one == len(calls) == 2  # the train split once, the test split once (both under one encode batch)
    assert sum(n for n, _ in calls) == s3["n_train"] + s3["n_test"] == s1["n_train"] + s1["n_test"]
    assert {m for _, m in calls} == {"stats"}  # SIM samples: posterior statistics, drawn per batch
    assert [h["epoch"] for h in s3["history"]] == [1, 2, 3]


def test_posterior_draws_are_seeded_per_epoch_and_batch(tmp_path):
    run, data = make_run(tmp_path)
    source = EncoderSource.from_run(run)
    ds = open_run_data(run_config(run), "train", data_path=data, crop=3200)
    cache = cache_latents(source, ds, range(len(ds)), 1, "sample", seed=5)
    assert isinstance(cache, LatentCache) and cache.stochastic and cache.logvar.shape == cache.latents.shape

    def epoch(e):
        return torch.cat([z for _, z in cache.batches(4, epoch=e, shuffle=False)])

    assert torch.equal(epoch(0), epoch(0)) and not torch.equal(epoch(0), epoch(1))
    # the draws follow the cached posterior: mean mu, variance exp(logvar)
    many = torch.stack([epoch(e) for e in range(400)])
    assert torch.allclose(many.mean(0), cache.latents, atol=4 * cache.logvar.exp().sqrt().max().item() / 20)
    ratio = many.var(0) / cache.logvar.exp()
    assert 0.8 < float(ratio.mean()) < 1.2
    # means mode, and a deterministic source asked for samples, give fixed latents
    assert not cache_latents(source, ds, [0, 1], 1, "mean").stochastic
    gim_run, _ = make_run(tmp_path, kind="gim")
    gim = cache_latents(EncoderSource.from_run(gim_run), ds, [0, 1], 1, "sample")
    assert not gim.stochastic


# --------------------------------------------------------------------------------------------------
# Sources we cannot mirror: the generic decoder, --model on every verb, prior samples skipped
# --------------------------------------------------------------------------------------------------


class ObjectSource:
    """A hand-written deterministic FeatureSource (the protocol only; encode takes no generator)."""

    name, sample_rate, output_names, hops, dims = "toy", 16000, ["frames"], [80], [3]
    stochastic, receptive_fields = False, [80]

    def encode(self, wave, mode="mean"):
        x = wave.reshape(wave.shape[0], -1)
        frames = x[:, : x.shape[1] // 80 * 80].reshape(x.shape[0], -1, 80)
        return [torch.stack([frames.mean(-1), frames.abs().mean(-1), frames.std(-1)], dim=-1)]

    def frame_counts(self, n_samples):
        return [n_samples // 80]

    def fingerprint(self):
        return "toy-1"


def test_train_decoder_on_a_feature_source_object(tmp_path):
    _, data = make_run(tmp_path)
    with pytest.raises(UserError, match="--out"):
        train_decoder(ObjectSource(), data, 0, epochs=1)
    s = train_decoder(ObjectSource(), data, "frames", epochs=2, batch_size=4, crop=2000, channels=4,
                      out_dir=tmp_path / "toy")
    assert s["architecture"] == "generic" and s["n_frames"] == 25 and s["n_samples"] == 2000
    dec = load_decoder(tmp_path / "toy" / "decoder.pt")
    assert isinstance(dec, GenericDecoder) and dec.hop == 80 and dec.info["stochastic"] is False
    # the resume checkpoint is plain data and tensors too
    state = torch.load(tmp_path / "toy" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["settings"]["run"] == "toy@toy-1" and state["settings"]["channels"] == 4
    again = train_decoder(ObjectSource(), data, 0, epochs=2, batch_size=4, crop=2000, channels=4,
                          out_dir=tmp_path / "toy")
    assert again["history"] == s["history"]  # complete: resumed, nothing retrained
    with pytest.raises(UserError, match="other settings"):
        train_decoder(ObjectSource(), data, 0, epochs=2, batch_size=4, crop=2000, channels=8, out_dir=tmp_path / "toy")
    # a dataset too large for the memory allowed: one line saying how many items fit
    per_item = 4 * (2000 + 25 * 3)
    with pytest.raises(UserError, match="--max-items 2 "):
        train_decoder(ObjectSource(), data, 0, epochs=1, crop=2000, cache_gb=5.5 * per_item / 2 ** 30,
                      out_dir=tmp_path / "big")


@pytest.mark.slow
def test_every_decoder_verb_takes_model(tmp_path, capsys):
    _, data = make_run(tmp_path)
    spec = "module:test_decoding_train:frontend"
    out = tmp_path / "dec"
    assert main(["decoder", "train", "--model", spec, "--data", str(data), "--module", "0", "--epochs", "1",
                 "--batch-size", "4", "--out", str(out), "--set", "crop=3200", "--set", "channels=4"]) == 0
    assert "generic decoder" in capsys.readouterr().out
    dec = ["--model", spec, "--decoder", str(out / "decoder.pt")]
    assert main(["traverse", *dec, "--dim", "1", "--steps", "3", "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "traverse_dim1_mel.png").exists() and (tmp_path / "t" / "traverse_dim1_2.wav").exists()
    assert main(["traverse", *dec, "--dim", "0", "--steps", "2", "--base", "item", "--item", "tone03",
                 "--data", str(data), "--out", str(tmp_path / "t2")]) == 0
    assert main(["interpolate", *dec, "--data", str(data), "--steps", "3", "--out", str(tmp_path / "i")]) == 0
    assert main(["ics", *dec, "--data", str(data), "--n-items", "4", "--out", str(tmp_path / "c")]) == 0
    res = json.loads((tmp_path / "c" / "ics.json").read_text())
    assert res["dims"] == 5 and res["relative"][-1] == 0.0
    capsys.readouterr()
    assert main(["sample", *dec, "--out", str(tmp_path / "s")]) == 0
    printed = capsys.readouterr().out
    assert "deterministic" in printed and printed.count("\n") == 1
    assert not list((tmp_path / "s").glob("*.wav"))
    assert "skipped" in json.loads((tmp_path / "s" / "sample.json").read_text())
    # with --model a decoder path is needed; a decoder for other latents is refused in one line
    assert main(["traverse", "--model", spec, "--dim", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--decoder" in capsys.readouterr().err
    other = tmp_path / "other"
    train_decoder(ObjectSource(), data, 0, epochs=1, batch_size=4, crop=3200, channels=4, out_dir=other)
    assert main(["ics", "--model", spec, "--decoder", str(other / "decoder.pt"), "--data", str(data),
                 "--out", str(tmp_path / "c2")]) == 2
    assert "expects" in capsys.readouterr().err


def test_sample_is_skipped_for_a_deterministic_run(tmp_path, capsys):
    run, _ = make_run(tmp_path, kind="gim")
    save_decoder(build_decoder(run_config(run).model, 1, 3200), run / "decoders" / "module1" / "decoder.pt",
                 mode="mean", sample_rate=16000)
    assert main(["sample", "--run", str(run), "--module", "1", "--out", str(tmp_path / "s")]) == 0
    assert "deterministic" in capsys.readouterr().out and not list((tmp_path / "s").glob("*.wav"))
