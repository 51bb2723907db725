"""The s3prl-style upstream: padded batches give every item exactly the features it gets alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smooth_infomax.config import load_config, save_config
from smooth_infomax.hub import export_run
from smooth_infomax.model import Encoder
from smooth_infomax.runs import load_encoder, save_encoder
from smooth_infomax.upstream import UpstreamExpert, customized_upstream


def make_run(root: Path, overrides: tuple[str, ...] = ()) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    cfg = load_config("quick", ["model.channels=16", "model.gru_hidden=8", "data.path=/nonexistent", *overrides])
    torch.manual_seed(0)
    encoder = Encoder(cfg.model)
    with torch.no_grad():  # biases away from zero: a padding leak would change the last frames
        for p in encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_config(cfg, run / "config.yaml")
    save_encoder(encoder, cfg, run / "encoder.pt")
    return run


@pytest.mark.parametrize("overrides", [(), ("model.batch_norm=true", "model.input_norm=none"), ("model.kind=cpc",)],
                         ids=["sim-rms", "batchnorm", "cpc"])
def test_padded_batch_equals_each_item_alone(tmp_path, overrides):
    run = make_run(tmp_path, overrides)
    export_run(run, tmp_path / "model")
    upstream = UpstreamExpert(str(tmp_path / "model"))
    encoder = load_encoder(run)
    g = torch.Generator().manual_seed(3)
    lengths = [4000, 2417, 3203, 1601]
    wavs = [0.3 * torch.randn(n, generator=g) for n in lengths]
    out = upstream(wavs)
    names = encoder.module_names
    assert len(out["hidden_states"]) == len(names)
    assert out["last_hidden_state"] is out["hidden_states"][-1]
    for m, name in enumerate(names):
        assert out[name] is out["hidden_states"][m]
        assert out["hidden_states"][m].shape[:2] == (len(wavs), encoder.frame_counts(max(lengths))[m])
        assert out["hidden_states"][m].shape[2] == encoder.output_dims[m]
    for i, wav in enumerate(wavs):
        alone = encoder.encode(wav[None, None, :])
        counts = encoder.frame_counts(lengths[i])
        for m in range(len(names)):
            got = out["hidden_states"][m][i]
            assert torch.allclose(got[:counts[m]], alone[m][0], atol=1e-5, rtol=1e-5), (names[m], i)
            assert torch.count_nonzero(got[counts[m]:]) == 0


def test_naive_padding_would_leak(tmp_path):
    """The check above can fail: plain zero-padding changes the last frames of a shorter item."""
    encoder = load_encoder(make_run(tmp_path))
    wav = 0.3 * torch.randn(2417, generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(wav, (0, 4000 - 2417))
    alone, naive = encoder.encode(wav[None, None]), encoder.encode(padded[None, None])
    n = encoder.frame_counts(2417)[1]
    assert not torch.allclose(alone[1][0], naive[1][0, :n], atol=1e-5)


def test_downsample_rates_and_sources(tmp_path):
    run = make_run(tmp_path)
    upstream = customized_upstream(ckpt=str(run), model_config=None, refresh=False)  # as s3prl calls it
    assert [upstream.get_downsample_rates(n) for n in ("module0", "module1", "module2", "gru")] == [20, 80, 160, 160]
    assert upstream.get_downsample_rates("last_hidden_state") == 160
    with pytest.raises(ValueError, match="different rates.*-s gru"):
        upstream.get_downsample_rates("hidden_states")
    with pytest.raises(ValueError, match="unknown feature key 'nope'"):
        upstream.get_downsample_rates("nope")
    with pytest.raises(ValueError, match="1-D waveforms"):
        upstream([torch.zeros(1, 4000)])
    assert isinstance(upstream, torch.nn.Module)
    assert set(upstream.state_dict()) == {f"model.{k}" for k in load_encoder(run).state_dict()}


def test_extract_features_matches_encode(tmp_path):
    run = make_run(tmp_path)
    export_run(run, tmp_path / "model")
    from smooth_infomax.hub import from_pretrained

    model = from_pretrained(tmp_path / "model")
    wave = 0.3 * torch.randn(2, 3000, generator=torch.Generator().manual_seed(5))
    feats = model.extract_features(wave)
    assert isinstance(feats, list) and len(feats) == 4
    for a, b in zip(feats, load_encoder(run).encode(wave)):
        assert torch.equal(a, b)
    single = model.extract_features(wave[1])
    assert all(torch.allclose(s[0], f[1], atol=1e-6) for s, f in zip(single, feats))  # batch of 1 vs 2: float order


def test_extract_features_with_lengths_zeroes_the_padding(tmp_path):
    run = make_run(tmp_path)
    export_run(run, tmp_path / "model")
    from smooth_infomax.hub import from_pretrained

    model = from_pretrained(tmp_path / "model")
    short = 0.3 * torch.randn(2000, generator=torch.Generator().manual_seed(6))
    batch = torch.stack([torch.nn.functional.pad(short, (0, 1500)), 0.3 * torch.randn(3500)])
    feats = model.extract_features(batch, lengths=[2000, 3500])
    alone = model.extract_features(short)
    for m, count in enumerate(model.frame_counts(2000)):
        assert torch.allclose(feats[m][0, :count], alone[m][0], atol=1e-5)
        assert torch.count_nonzero(feats[m][0, count:]) == 0
