"""Latent tools: interpolation, traversal, prior samples, the ICS (batched == naive) and the CLI verbs."""

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from smooth_infomax.cli import main
from smooth_infomax.config import load_config, model_config, save_config
from smooth_infomax.decoding import (
    build_decoder,
    default_ds,
    ics,
    ics_naive,
    ics_subset,
    interpolate,
    sample_prior,
    top_dims,
    train_decoder,
    traversal_latents,
    traverse,
)
from smooth_infomax.model import Encoder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions: one thread is fastest


def tiny_decoder(channels=4, n_samples=800, module=2, dtype=torch.float64):
    torch.manual_seed(0)
    cfg = model_config({"preset": "paper", "channels": channels, "gru_hidden": 3})
    return build_decoder(cfg, module, n_samples).to(dtype).eval()


def latents(n, dec, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dec.n_frames, dec.in_channels, generator=g, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# Interpolation and traversal
# --------------------------------------------------------------------------------------------------


def test_full_interpolation_endpoints_are_exact():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(7, 16, generator=g), torch.randn(7, 16, generator=g)
    zs = interpolate(z1, z2, [0.0, 0.25, 1.0])
    assert zs.shape == (3, 7, 16)
    assert torch.equal(zs[0], z1) and torch.equal(zs[2], z2)
    assert torch.allclose(zs[1], 0.75 * z1 + 0.25 * z2)
    # partial with d = C and lambda = 1 is z2 exactly, d = 0 is z1
    assert torch.equal(interpolate(z1, z2, [1.0], dims=16)[0], z2)
    assert torch.equal(interpolate(z1, z2, [1.0], dims=0)[0], z1)


def test_partial_interpolation_changes_only_the_top_d_dims():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g)
    z2[:, 3] += 10.0  # clearly the largest mean difference, then dim 8
    z2[:, 8] -= 6.0
    top = top_dims(z1, z2, 2)
    assert top.tolist() == [3, 8]
    diff2 = (z1.mean(0) - z2.mean(0)) ** 2
    assert torch.equal(top_dims(z1, z2, 12), torch.argsort(diff2, descending=True))
    for d in (1, 2, 5):
        zs = interpolate(z1, z2, [0.3, 1.0], dims=d)
        sel = set(top_dims(z1, z2, d).tolist())
        changed = {c for c in range(12) if not torch.equal(zs[1][:, c], z1[:, c])}
        assert changed == sel
        rest = [c for c in range(12) if c not in sel]
        assert torch.equal(zs[:, :, rest], z1[:, rest].expand(2, -1, -1))
        assert torch.equal(zs[1][:, sorted(sel)], z2[:, sorted(sel)])
    explicit = interpolate(z1, z2, [1.0], dims=[0, 11])[0]
    assert torch.equal(explicit[:, [0, 11]], z2[:, [0, 11]]) and torch.equal(explicit[:, 1:11], z1[:, 1:11])
    with pytest.raises(ValueError):
        interpolate(z1, z2[:, :5], [0.5])
    with pytest.raises(ValueError):
        top_dims(z1, z2, 13)


def test_traversal_and_prior():
    dec = tiny_decoder(dtype=torch.float32)
    base = torch.zeros(dec.n_frames, dec.in_channels)
    values = torch.linspace(-2.68, 2.68, 5)
    zs = traversal_latents(base, 1, values)
    assert torch.equal(zs[:, :, 1], values[:, None].expand(5, dec.n_frames))
    assert torch.equal(zs[:, :, [0, 2, 3]], torch.zeros(5, dec.n_frames, 3))
    waves = traverse(dec, base, 1, values)
    assert waves.shape == (5, 800) and not torch.equal(waves[0], waves[-1])
    one_frame = traverse(dec, torch.zeros(1, dec.in_channels), 0, [0.0, 1.0])
    assert one_frame.shape[0] == 2 and one_frame.shape[1] == dec.output_length(1)
    a, b = sample_prior(dec, 3, seed=4), sample_prior(dec, 3, dec.n_frames, dec.in_channels, seed=4)
    assert a.shape == (3, 800) and torch.equal(a, b)
    assert not torch.equal(a, sample_prior(dec, 3, seed=5))


# --------------------------------------------------------------------------------------------------
# ICS
# --------------------------------------------------------------------------------------------------


def test_ics_batched_equals_naive():
    dec = tiny_decoder()
    z = latents(6, dec)
    ds = [0, 1, 2, 3, 4]
    fast = ics(dec, z, ds=ds, n_items=200, seed=0, batch_size=7)
    slow = ics_naive(dec, z, ds=ds, n_items=200, seed=0)
    assert fast["n_pairs"] == slow["n_pairs"] == 30
    assert np.allclose(fast["absolute"], slow["absolute"], rtol=1e-6, atol=1e-12)
    assert np.allclose(fast["relative"], slow["relative"], rtol=1e-6, atol=1e-9)
    assert fast["e_max"] == pytest.approx(slow["e_max"], rel=1e-6)
    assert fast["relative"][0] == pytest.approx(1.0)
    assert fast["relative"][-1] == 0.0 and slow["relative"][-1] == pytest.approx(0.0, abs=1e-12)
    # float32 decoders agree to float precision too
    dec32 = tiny_decoder(dtype=torch.float32)
    f32 = ics(dec32, z.float(), ds=[1, 2, 3], batch_size=5)
    n32 = ics_naive(dec32, z.float(), ds=[1, 2, 3])
    assert np.allclose(f32["relative"], n32["relative"], rtol=1e-4, atol=1e-6)


def test_ics_subset_pairs_and_defaults():
    dec = tiny_decoder()
    z = latents(9, dec, seed=3)
    res = ics(dec, z, n_items=4, seed=2)
    assert res["ds"] == default_ds(4) == [2, 4]
    assert res["n_items"] == 4 and res["n_pairs"] == 12 and res["n_available"] == 9
    assert res["items"] == ics_subset(9, 4, seed=2) and len(set(res["items"])) == 4
    assert res["relative"][-1] == 0.0
    assert res == ics(dec, z, n_items=4, seed=2)  # seeded: repeatable
    assert ics_subset(9, 4, seed=2) != ics_subset(9, 4, seed=7)
    # fewer items than n_items: all of them, never an error
    few = ics(dec, z[:3], n_items=200)
    assert few["n_items"] == 3 and few["n_pairs"] == 6 and few["items"] == [0, 1, 2]
    # a seeded subset of the pairs: batched and naive still agree
    sub_fast = ics(dec, z, ds=[1, 3], max_pairs=10, seed=1, batch_size=3)
    sub_slow = ics_naive(dec, z, ds=[1, 3], max_pairs=10, seed=1)
    assert sub_fast["n_pairs"] == 10
    assert np.allclose(sub_fast["absolute"], sub_slow["absolute"], rtol=1e-6)
    assert 0.0 < res["auc"] < 1.0
    with pytest.raises(ValueError):
        ics(dec, z[:1])
    with pytest.raises(ValueError):
        ics(dec, z, ds=[5])


def test_ics_of_identical_latents_dims_is_concentrated():
    """When two groups differ in one dimension only, replacing d = 1 dimension removes the whole error."""
    dec = tiny_decoder()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(dec.n_frames, dec.in_channels, generator=g, dtype=torch.float64)
    z = base.repeat(4, 1, 1)
    z[:, :, 2] = torch.tensor([-2.0, -1.0, 1.0, 2.0], dtype=torch.float64)[:, None]
    res = ics(dec, z, ds=[1, 2])
    assert res["relative"][0] == pytest.approx(0.0, abs=1e-12) and res["e_max"] > 0


# --------------------------------------------------------------------------------------------------
# CLI verbs on a hand-made run directory with a trained decoder
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_with_decoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent_cli")
    data = root / "audio"
    data.mkdir()
    t = np.arange(3600) / 16000
    for i in range(6):
        sf.write(data / f"tone{i}.wav", (0.4 * np.sin(2 * np.pi * (200 + 60 * i) * t)).astype(np.float32), 16000)
    cfg = load_config({
        "data": {"path": str(data), "layout": "folder", "crop": 3200, "random_crop": False},
        "model": {"preset": "paper", "kind": "sim", "channels": 8, "gru_hidden": 6},
        "loss": {"prediction_steps": 4, "negatives": 4, "window": 32},
    })
    run = root / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    enc = Encoder(cfg.model)
    torch.save({"model_config": dataclasses.asdict(cfg.model), "state_dict": enc.state_dict()}, run / "encoder.pt")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_decoder(run, data, 2, epochs=1, batch_size=3, out_dir=run / "decoders" / "module2", mode="sample")
    finally:
        torch.set_num_threads(before)
    return run, data


@pytest.mark.slow
def test_cli_verbs(run_with_decoder, tmp_path, capsys):
    run, data = run_with_decoder
    out = tmp_path / "t"
    assert main(["traverse", "--run", str(run), "--module", "2", "--dim", "0", "3", "--steps", "4",
                 "--out", str(out)]) == 0
    assert (out / "traverse_dim3_3.wav").exists() and (out / "traverse_dim0.png").exists()
    wav, sr = sf.read(out / "traverse_dim0_0.wav")
    assert sr == 16000 and wav.shape == (3200,)
    assert main(["traverse", "--run", str(run), "--module", "2", "--dim", "1", "--base", "item", "--item", "tone2",
                 "--data", str(data), "--steps", "3", "--out", str(tmp_path / "t2")]) == 0
    assert json.loads((tmp_path / "t2" / "traverse.json").read_text())["base"] == "item 2"

    out = tmp_path / "i"
    assert main(["interpolate", "--run", str(run), "--decoder", str(run / "decoders/module2/decoder.pt"),
                 "--data", str(data), "--item-a", "0", "--item-b", "tone4", "--steps", "3", "--dims", "2",
                 "--out", str(out)]) == 0
    info = json.loads((out / "interp_d2.json").read_text())
    assert info["items"] == [0, 4] and len(info["top_dims"]) == 2 and (out / "interp_d2_2.wav").exists()
    assert main(["interpolate", "--run", str(run), "--module", "2", "--data", str(data), "--out", str(out)]) == 0
    assert (out / "interp_9.wav").exists() and (out / "interp.png").exists()

    out = tmp_path / "s"
    assert main(["sample", "--run", str(run), "--module", "2", "--n", "2", "--out", str(out)]) == 0
    assert (out / "prior_1.wav").exists() and (out / "sample.png").exists()

    out = tmp_path / "c"
    assert main(["ics", "--run", str(run), "--module", "2", "--data", str(data), "--n-items", "200",
                 "--out", str(out)]) == 0
    res = json.loads((out / "ics.json").read_text())
    assert res["n_items"] == 6 and res["n_pairs"] == 30 and res["ds"] == [2, 4, 8] and res["relative"][-1] == 0.0
    assert res["mode"] == "sample" and (out / "ics.png").exists()
    capsys.readouterr()
    # user errors: one line, exit code 2
    assert main(["ics", "--run", str(run), "--module", "1", "--data", str(data), "--out", str(out)]) == 2
    assert "decoder train" in capsys.readouterr().err
    assert main(["traverse", "--run", str(run), "--module", "2", "--dim", "99", "--out", str(out)]) == 2
    assert main(["interpolate", "--run", str(run), "--module", "2", "--data", str(data), "--item-b", "nope",
                 "--out", str(out)]) == 2
    assert main(["sample", "--run", str(run), "--out", str(out)]) == 2
