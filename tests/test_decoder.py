"""Decoders: exact mirror lengths for every output of both presets, losses, saving, and training on a frozen encoder."""

import csv
import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from smooth_infomax.checkpoint import torch_load
from smooth_infomax.cli import main
from smooth_infomax.config import load_config, model_config, save_config
from smooth_infomax.decoding import build_decoder, decoder_loss, load_decoder, plan_decoder, save_decoder, train_decoder
from smooth_infomax.errors import UserError
from smooth_infomax.model import Encoder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions: one thread is fastest


def _layer_lengths(module: nn.Module, run, kinds) -> list[int]:
    """Output lengths of every layer of the given kinds, in execution order, while ``run()`` executes."""
    lengths, hooks = [], []
    for m in module.modules():
        if isinstance(m, kinds):
            hooks.append(m.register_forward_hook(lambda _m, _i, out: lengths.append(out.shape[-1])))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return lengths


CASES = [("paper", 10240), ("paper", 20480), ("thesis", 10240), ("thesis", 8800)]


@pytest.mark.parametrize("preset,n_samples", CASES)
def test_every_output_decodes_to_exactly_n_samples_through_the_encoders_lengths(preset, n_samples):
    cfg = model_config({"preset": preset, "channels": 8, "gru_hidden": 6})
    torch.manual_seed(0)
    enc = Encoder(cfg).eval()
    wave = torch.randn(2, 1, n_samples)
    n_outputs = len(enc.module_names)
    assert n_outputs == len(cfg.modules) + 1
    for m in range(n_outputs):
        holder = {}

        def run_encoder(holder=holder, m=m):
            with torch.no_grad():
                holder["z"] = enc.encode(wave, mode="mean", upto=m)[m]

        enc_lengths = _layer_lengths(enc, run_encoder, (nn.Conv1d, nn.MaxPool1d))
        z = holder["z"]
        dec = build_decoder(cfg, m, n_samples)
        assert dec.n_frames == z.shape[1] == enc.frame_counts(n_samples)[m]
        assert dec.in_channels == z.shape[2] == enc.output_dims[m]
        out = {}
        dec_lengths = _layer_lengths(dec, lambda out=out, dec=dec, z=z: out.setdefault("y", dec(z)), nn.ConvTranspose1d)
        assert out["y"].shape == (2, 1, n_samples)
        # the decoder walks the encoder back: its lengths are the encoder's, reversed, ending at the input
        assert dec_lengths == list(reversed([n_samples] + enc_lengths))[1:]
        # the transposed stack itself is exact (no crop / pad needed)
        assert dec.output_length(dec.n_frames) == n_samples
        convs = [mm for mm in dec.modules() if isinstance(mm, nn.ConvTranspose1d)]
        assert convs[0].in_channels == enc.output_dims[m] and convs[-1].out_channels == 1
        assert all(c.out_channels == 8 for c in convs[:-1])
        assert not any(isinstance(mm, (nn.BatchNorm1d, nn.Tanh, nn.Sigmoid)) for mm in dec.modules())
        relus = [mm for mm in dec.net if isinstance(mm, nn.ReLU)]
        assert len(relus) == len(convs) - 1 and not isinstance(dec.net[-1], nn.ReLU)


def test_paper_module2_matches_the_reference_decoder_layers():
    cfg = model_config({"preset": "paper", "channels": 8, "gru_hidden": 6})
    layers = [l for l in plan_decoder(cfg, 2, 10240) if not l.mirrors.endswith("head")]
    assert [(l.kernel, l.stride, l.padding, l.output_padding) for l in layers] == [
        (4, 2, 1, 1), (4, 2, 2, 0), (4, 2, 2, 1), (8, 4, 2, 3), (10, 5, 2, 4)]
    assert [l.in_length for l in layers] + [layers[-1].out_length] == [64, 129, 256, 511, 2047, 10240]
    gru = plan_decoder(cfg, "gru", 10240)
    assert gru[0].in_channels == 6 and [l.kernel for l in gru] == [l.kernel for l in plan_decoder(cfg, 2, 10240)]


def test_thesis_maxpools_become_strided_transposed_convs():
    cfg = model_config({"preset": "thesis", "channels": 8})
    layers = plan_decoder(cfg, 0, 10240)
    pools = [l for l in layers if ".maxpool" in l.mirrors]
    assert [(l.kernel, l.stride) for l in pools] == [(8, 4), (8, 4)]
    assert [l.in_length for l in layers] == [52, 52, 212, 638, 2559]


def test_cpc_outputs():
    cfg = model_config({"preset": "paper", "kind": "cpc", "channels": 8, "gru_hidden": 6})
    enc = Encoder(cfg).eval()
    with torch.no_grad():
        feats = enc.encode(torch.randn(1, 1, 3200))
    for m, name in enumerate(["cnn", "gru"]):
        dec = build_decoder(cfg, name, 3200)
        assert dec.module_index == m
        assert dec(feats[m]).shape == (1, 1, 3200)


def test_other_frame_counts_and_bad_inputs():
    cfg = model_config({"preset": "paper", "channels": 8, "gru_hidden": 6})
    dec = build_decoder(cfg, 2, 10240)
    assert dec(torch.zeros(3, 8, 8)).shape == (3, 1, dec.output_length(8))
    assert dec(torch.zeros(8, 8), length=1280).shape == (1, 1, 1280)
    with pytest.raises(ValueError):
        dec(torch.zeros(1, 64, 5))
    with pytest.raises(ValueError):
        build_decoder(cfg, 2, 5)
    with pytest.raises(ValueError):
        build_decoder(cfg, 7, 10240)
    with pytest.raises(ValueError):
        build_decoder(cfg, "module9", 10240)


def test_losses():
    torch.manual_seed(0)
    a, b = torch.randn(2, 1, 4096), torch.randn(2, 1, 4096)
    assert torch.allclose(decoder_loss(a, b, "mse"), ((a - b) ** 2).mean())
    assert float(decoder_loss(a, a, "mel")) == 0.0
    mel = decoder_loss(a, b, "mel")
    assert mel > 0
    assert torch.allclose(decoder_loss(a, b, "mse+mel"), decoder_loss(a, b, "mse") + mel)
    assert decoder_loss(a[:, :, :500], b[:, :, :500], "mel") > 0  # short clips use smaller windows
    with pytest.raises(ValueError):
        decoder_loss(a, b, "fft")
    with pytest.raises(ValueError):
        decoder_loss(a, b[:, :, :100], "mse")


@pytest.mark.parametrize("kind", ["mse", "mse+mel"])
def test_loss_falls_on_a_tiny_problem(kind):
    torch.manual_seed(0)
    cfg = model_config({"preset": "paper", "channels": 8, "gru_hidden": 6})
    dec = build_decoder(cfg, 1, 1600)
    z = torch.randn(6, dec.n_frames, dec.in_channels)
    t = torch.arange(1600) / 16000
    target = torch.stack([0.5 * torch.sin(2 * np.pi * (100 + 20 * i) * t) for i in range(6)]).unsqueeze(1)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = decoder_loss(dec(z), target, kind)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_save_and_load_roundtrip(tmp_path):
    cfg = model_config({"preset": "thesis", "channels": 8})
    torch.manual_seed(1)
    dec = build_decoder(cfg, 1, 8800)
    save_decoder(dec, tmp_path / "d.pt", loss="mse", mode="mean", history=[{"epoch": 1}])
    state = torch_load(tmp_path / "d.pt")
    assert {"model_config", "module", "n_samples", "loss", "mode", "state_dict", "history"} <= set(state)
    back = load_decoder(tmp_path / "d.pt")
    assert not back.training and back.info["loss"] == "mse" and back.n_samples == 8800
    z = torch.randn(2, dec.n_frames, dec.in_channels)
    with torch.no_grad():
        assert torch.equal(dec(z), back(z))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        load_decoder(tmp_path / "bad.pt")
    with pytest.raises(UserError):
        load_decoder(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------------
# End to end on a hand-made run directory
# --------------------------------------------------------------------------------------------------


def make_run(root, n_files=10, crop=3200, kind="sim"):
    data = root / "audio"
    data.mkdir()
    t = np.arange(4000) / 16000
    for i in range(n_files):
        sf.write(data / f"tone{i:02d}.wav", (0.4 * np.sin(2 * np.pi * (150 + 40 * i) * t)).astype(np.float32), 16000)
    cfg = load_config({
        "seed": 0,
        "data": {"path": str(data), "layout": "folder", "crop": crop, "random_crop": False},
        "model": {"preset": "paper", "kind": kind, "channels": 8, "gru_hidden": 6},
        "loss": {"prediction_steps": 4, "negatives": 4, "window": 32},
    })
    run = root / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    enc = Encoder(cfg.model)
    torch.save({"model_config": dataclasses.asdict(cfg.model), "state_dict": enc.state_dict()}, run / "encoder.pt")
    return run, data, enc


@pytest.mark.slow
def test_train_decoder_end_to_end_and_resume(tmp_path):
    run, data, enc = make_run(tmp_path)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    out = tmp_path / "dec"
    summary = train_decoder(run, data, 2, epochs=2, batch_size=4, lr=1e-3, seed=0, out_dir=out, max_items=8)
    assert summary["n_frames"] == 20 and summary["n_samples"] == 3200 and summary["n_train"] == 8
    for name in ("decoder.pt", "history.csv", "checkpoint.pt", "recon_0.wav", "orig_0.wav", "recon.png"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and all(float(r["val_loss"]) > 0 for r in rows)
    state = torch_load(out / "decoder.pt")
    assert state["module"] == 2 and state["n_samples"] == 3200 and state["loss"] == "mse" and state["mode"] == "mean"
    assert all(k.startswith("net.") for k in state["state_dict"])  # the encoder is not part of the decoder
    wav, sr = sf.read(out / "recon_0.wav")
    assert sr == 16000 and wav.shape == (3200,)
    # the frozen encoder on disk and its weights are untouched
    saved = torch_load(run / "encoder.pt")["state_dict"]
    assert all(torch.equal(saved[k], before[k]) for k in before)

    # resume: a longer re-run continues after epoch 2 and reproduces a straight 3-epoch run
    more = train_decoder(run, data, 2, epochs=3, batch_size=4, lr=1e-3, seed=0, out_dir=out, max_items=8)
    straight = train_decoder(run, data, 2, epochs=3, batch_size=4, lr=1e-3, seed=0, out_dir=tmp_path / "dec2",
                             max_items=8)
    assert [h["epoch"] for h in more["history"]] == [1, 2, 3]
    assert more["history"][:2] == summary["history"]
    assert more["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-6)
    a, b = load_decoder(out / "decoder.pt"), load_decoder(tmp_path / "dec2" / "decoder.pt")
    assert all(torch.allclose(a.state_dict()[k], b.state_dict()[k], atol=1e-6) for k in a.state_dict())
    with pytest.raises(UserError, match="other settings"):
        train_decoder(run, data, 2, loss="mel", epochs=3, batch_size=4, out_dir=out, max_items=8)


@pytest.mark.slow
def test_train_decoder_sample_mode_gru_and_cli(tmp_path, capsys):
    run, data, _ = make_run(tmp_path, n_files=6)
    s = train_decoder(run, data, "gru", mode="sample", loss="mse+mel", epochs=1, batch_size=3, out_dir=tmp_path / "g")
    assert s["module_name"] == "gru" and s["channels"] == 6 and np.isfinite(s["val_loss"])
    code = main(["decoder", "train", "--run", str(run), "--data", str(data), "--module", "1", "--epochs", "1",
                 "--batch-size", "4", "--set", "max_items=4", "--set", "lr=1e-3"])
    assert code == 0
    assert (run / "decoders" / "module1" / "decoder.pt").exists()
    assert main(["decoder", "train", "--run", str(run), "--data", str(data), "--module", "9"]) == 2
    assert "--module" in capsys.readouterr().err
    assert main(["decoder", "train", "--run", str(run), "--data", str(data), "--module", "1",
                 "--set", "nonsense=1"]) == 2
    assert main(["decoder", "train", "--run", str(tmp_path / "nope"), "--data", str(data), "--module", "1"]) == 2
