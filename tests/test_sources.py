"""External feature sources: tiny random transformers models loaded the way a downloaded one is, and nn.Modules."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from smooth_infomax.errors import UserError
from smooth_infomax.sources import split_options
from smooth_infomax.sources.module import ModuleSource, load_module_source

transformers = pytest.importorskip("transformers")

from smooth_infomax.sources import hf  # noqa: E402  (needs transformers)


@pytest.fixture(scope="module")
def w2v_dir(tmp_path_factory):
    return hf.save_tiny_model(tmp_path_factory.mktemp("hf") / "tiny-w2v", "wav2vec2", seed=0)


def test_options_parse():
    assert split_options("d#layers=0,3,6", "hf:") == ("d", {"layers": "0,3,6"})
    assert split_options("p.m:f#hop=160,dim=8;x=a", "module:") == ("p.m:f", {"hop": "160", "dim": "8", "x": "a"})
    with pytest.raises(UserError, match="KEY=VALUE"):
        split_options("d#layers", "hf:")


def test_hf_folder_loads_like_a_download(w2v_dir):
    assert {p.name for p in w2v_dir.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    src = hf.load_hf_source(str(w2v_dir))
    assert src.output_names == ["layer0", "layer1", "layer2"]
    assert src.hops == [20, 20, 20] and src.dims == [16, 16, 16] and src.sample_rate == 16000
    assert src.receptive_fields == [None, None, None] and src.stochastic is False and src.normalize is True
    assert src.name == "wav2vec2:tiny-w2v"
    for n in (40, 41, 400, 1601, 3200):
        feats = src.encode(torch.randn(2, 1, n))
        assert [tuple(f.shape) for f in feats] == [(2, c, 16) for c in src.frame_counts(n)]
        # the model's own length formula agrees
        assert src.frame_counts(n)[0] == int(src.model._get_feat_extract_output_lengths(torch.tensor(n)))
    assert src.frame_counts(39) == [0, 0, 0]
    with pytest.raises(ValueError, match="too short"):
        src.encode(torch.randn(1, 1, 39))
    x = torch.randn(1, 1, 400)
    torch.testing.assert_close(src.encode(x, mode="stats")[1], src.encode(x)[1])  # deterministic: every mode = mean
    with pytest.raises(ValueError, match="deterministic"):
        src.encode(x, mode="posterior")


def test_hf_layers_subset_and_conv(w2v_dir):
    full = hf.load_hf_source(str(w2v_dir))
    sub = hf.load_hf_source(f"{w2v_dir}#layers=conv,2,-3")
    assert sub.output_names == ["conv", "layer2", "layer0"]
    assert sub.dims == [8, 16, 16] and sub.receptive_fields == [40, None, None]
    x = torch.randn(1, 1, 800)
    a, b = full.encode(x), sub.encode(x)
    torch.testing.assert_close(b[1], a[2])
    torch.testing.assert_close(b[2], a[0])
    assert b[0].shape == (1, 39, 8)
    with pytest.raises(UserError, match="0..2"):
        hf.load_hf_source(f"{w2v_dir}#layers=5")
    with pytest.raises(UserError, match="unknown option"):
        hf.load_hf_source(f"{w2v_dir}#layer=1")


def test_hf_normalisation_is_the_feature_extractors(w2v_dir):
    src = hf.load_hf_source(str(w2v_dir))
    wave = (0.3 * torch.randn(1, 1, 1600) + 0.1).numpy()
    fe = transformers.AutoFeatureExtractor.from_pretrained(str(w2v_dir))
    theirs = fe(wave[0, 0], sampling_rate=16000, return_tensors="pt")["input_values"]
    torch.testing.assert_close(hf.normalize_rows(torch.from_numpy(wave[:, 0])), theirs, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        ref = src.model(theirs, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(src.encode(torch.from_numpy(wave))[-1], ref, rtol=1e-4, atol=1e-4)
    # each row of a batch is scaled on its own: a louder copy gives the same features
    both = src.encode(torch.from_numpy(np.concatenate([wave, 5 * wave])))
    torch.testing.assert_close(both[-1][0], both[-1][1], rtol=1e-3, atol=1e-3)
    raw = hf.load_hf_source(f"{w2v_dir}#normalize=false")
    assert raw.normalize is False and raw.fingerprint() != src.fingerprint()


def test_hf_fingerprint_follows_weights(tmp_path, w2v_dir):
    a, b = hf.load_hf_source(str(w2v_dir)), hf.load_hf_source(str(w2v_dir))
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 16
    other = hf.save_tiny_model(tmp_path / "seed1", "wav2vec2", seed=1)
    assert hf.load_hf_source(str(other)).fingerprint() != a.fingerprint()
    assert hf.load_hf_source(f"{w2v_dir}#layers=1").fingerprint() != a.fingerprint()


@pytest.mark.parametrize("kind", ["hubert", "wavlm", "data2vec-audio"])
def test_other_model_families(tmp_path, kind):
    folder = hf.save_tiny_model(tmp_path / kind, kind, layers=1)
    src = hf.load_hf_source(f"{folder}#layers=conv,0,1")
    feats = src.encode(torch.randn(2, 1, 1000))
    assert [tuple(f.shape) for f in feats] == [(2, 49, 8), (2, 49, 16), (2, 49, 16)]
    assert src.frame_counts(1000) == [49, 49, 49] and src.name.startswith(src.model.config.model_type)


def test_hf_bad_inputs_name_the_fix(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        hf.load_hf_source(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="not a model folder"):
        hf.load_hf_source(str(tmp_path / "missing" / "x"))
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UserError, match=r"pip install 'smooth-infomax\[hf\]'"):
        hf.load_hf_source(str(tmp_path / "empty"))


class _Pooling(nn.Module):
    """(B, T) -> frames of 160 and 320 samples: two outputs, hop measured (no attribute)."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.conv = nn.Conv1d(1, dim, kernel_size=400, stride=160)
        self.pool = nn.AvgPool1d(2)

    def forward(self, wave):
        a = self.conv(wave.unsqueeze(1))
        return [a.transpose(1, 2), self.pool(a).transpose(1, 2)]


def build_pooling(dim: int = 4):
    return _Pooling(dim)


def test_module_source_contract(monkeypatch):
    fake = types.ModuleType("h8_fake_models")
    fake.build = build_pooling
    fake.not_a_module = lambda: 3
    monkeypatch.setitem(sys.modules, "h8_fake_models", fake)
    src = load_module_source("h8_fake_models:build#dim=6,outputs=fine,coarse")
    assert src.output_names == ["fine", "coarse"] and src.dims == [6, 6] and src.hops == [160, 320]
    feats = src.encode(torch.randn(3, 1, 4000))
    assert [tuple(f.shape) for f in feats] == [(3, 23, 6), (3, 11, 6)]
    assert src.frame_counts(4000) == [23, 11] and src.frame_counts(100) == [0, 0]
    assert load_module_source("h8_fake_models:build#hop=160").hops == [160, 160]
    # fingerprints follow the weights: the same module twice agrees, a fresh random init does not
    m = build_pooling()
    assert ModuleSource(m, name="x").fingerprint() == ModuleSource(m, name="x").fingerprint()
    assert ModuleSource(build_pooling(), name="x").fingerprint() != ModuleSource(m, name="x").fingerprint()
    with pytest.raises(UserError, match="not a torch.nn.Module"):
        load_module_source("h8_fake_models:not_a_module")
    with pytest.raises(UserError, match="has no 'nope'"):
        load_module_source("h8_fake_models:nope")
    with pytest.raises(UserError, match="cannot import"):
        load_module_source("h8_no_such_pkg.x:f")
    with pytest.raises(UserError, match="package.path:factory"):
        load_module_source("h8_fake_models")
    with pytest.raises(UserError, match="rejected its arguments"):
        load_module_source("h8_fake_models:build#size=3")


def test_module_source_without_measurable_hop():
    class Global(nn.Module):  # one frame whatever the length: no hop to measure
        def forward(self, wave):
            return wave.mean(-1, keepdim=True)[:, :, None].expand(-1, 1, 3)

    with pytest.raises(UserError, match="#hop="):
        ModuleSource(Global(), name="g")
    assert ModuleSource(Global(), name="g", hops=[16000]).hops == [16000]


def test_resolve_source_dispatches_to_the_adapters(w2v_dir, monkeypatch):
    from smooth_infomax.features import FeatureSource
    from smooth_infomax.sources.resolve import resolve_source

    src = resolve_source(f"hf:{w2v_dir}#layers=1")
    assert isinstance(src, hf.HFSource) and isinstance(src, FeatureSource) and src.output_names == ["layer1"]
    fake = types.ModuleType("h8_fake_models2")
    fake.build = build_pooling
    monkeypatch.setitem(sys.modules, "h8_fake_models2", fake)
    mod = resolve_source("module:h8_fake_models2:build#dim=2")
    assert isinstance(mod, ModuleSource) and isinstance(mod, FeatureSource) and mod.dims == [2, 2]
