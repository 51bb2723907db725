"""Feature sources and the one feature-extraction function (`smooth_infomax.features`)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from smooth_infomax.config import load_config
from smooth_infomax.data.records import Utterance
from smooth_infomax.errors import UserError
from smooth_infomax.features import (
    EncoderSource,
    FeatureSource,
    LogMelSource,
    align_to_label_frames,
    extract_features,
    repool,
    standardize,
)
from smooth_infomax.mel import log_mel
from smooth_infomax.model import Encoder
from smooth_infomax.sources.resolve import add_source_arguments, resolve_source, source_from_args
from test_runs import make_run


def _encoder(preset: str = "paper", kind: str = "sim", input_norm: str = "rms", seed: int = 0) -> Encoder:
    cfg = load_config({"model": {"preset": preset, "kind": kind, "channels": 8, "gru_hidden": 8,
                                 "input_norm": input_norm, "logvar_bias_init": -1.0}})
    torch.manual_seed(seed)
    return Encoder(cfg.model).eval()


class Items(list):
    """An in-memory dataset of Utterances."""

    label_names = {"speaker": ["a", "b"]}


def _items(lengths, seed: int = 0) -> Items:
    rng = np.random.default_rng(seed)
    out = Items()
    for i, n in enumerate(lengths):
        phones = torch.from_numpy(rng.integers(-1, 5, n // 160 + 2))  # a few labels past the end, some -1
        out.append(Utterance(torch.from_numpy(rng.uniform(-0.5, 0.5, (1, n)).astype(np.float32)), 16000, f"u{i}.wav",
                             {"speaker": i % 2, "phones": phones, "word": "x"}))
    return out


LENGTHS = [4000, 6400, 3210, 7777, 5000, 4000]


@pytest.mark.parametrize("preset,input_norm", [("paper", "rms"), ("paper", "none"), ("thesis", "none")])
def test_padded_batches_give_every_item_the_frames_it_gets_alone(preset, input_norm):
    enc = _encoder(preset, input_norm=input_norm)
    src = EncoderSource(enc)
    assert src.padding_exact and isinstance(src, FeatureSource)
    T = max(LENGTHS)
    wave = torch.zeros(len(LENGTHS), 1, T)
    alone = []
    for b, n in enumerate(LENGTHS):
        x = torch.randn(1, 1, n)
        wave[b, :, :n] = x
        alone.append(x)
    for mode in ("mean", "sample"):
        gens = [torch.Generator().manual_seed(b) for b in range(len(LENGTHS))]
        outs = src.encode(wave, mode, lengths=LENGTHS, generators=gens)
        for b, x in enumerate(alone):
            ref = enc.encode(x, mode=mode, generator=torch.Generator().manual_seed(b))
            for m, (o, r) in enumerate(zip(outs, ref)):
                k = enc.frame_counts(LENGTHS[b])[m]
                assert r.shape[1] == k
                assert torch.allclose(o[b, :k], r[0], atol=1e-5), (mode, b, m)
                assert torch.all(o[b, k:] == 0) or m == len(outs) - 1  # padding frames are zeros (GRU aside)


def test_extraction_does_not_depend_on_the_batch_size_and_is_seeded():
    src = EncoderSource(_encoder())
    ds = _items(LENGTHS)
    for mode in ("mean", "sample"):
        a = extract_features(src, ds, mode=mode, pool="none", batch_size=1, seed=3)
        b = extract_features(src, ds, mode=mode, pool="none", batch_size=4, seed=3, max_batch_samples=10**9)
        for fa, fb in zip(a.features, b.features):
            assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(fa, fb))
    c = extract_features(src, ds, mode="sample", pool="mean", seed=4)
    d = extract_features(src, ds, mode="sample", pool="mean", seed=3)
    assert not np.allclose(c.features[0], d.features[0])
    # the frames per item are the encoder's own frame counts
    for m, n_frames in enumerate(zip(*[src.frame_counts(n) for n in LENGTHS])):
        assert [len(x) for x in a.features[m]] == list(n_frames)
    assert a.items == [f"u{i}.wav" for i in range(len(LENGTHS))]
    assert a.labels["speaker"].tolist() == [i % 2 for i in range(len(LENGTHS))]
    assert "word" not in a.labels and len(a.frame_labels["phones"]) == len(LENGTHS)


def test_pools_and_label_frames():
    src = EncoderSource(_encoder())
    ds = _items(LENGTHS)
    frames = extract_features(src, ds, pool="none")
    mean = extract_features(src, ds, pool="mean")
    assert np.allclose(mean.features[1], np.stack([x.mean(0) for x in frames.features[1]]), atol=1e-6)
    assert np.array_equal(repool(frames, "max").features[2], np.stack([x.max(0) for x in frames.features[2]]))
    lf = extract_features(src, ds, pool="label-frames", outputs=["module2", "gru"])
    assert lf.names == ["module2", "gru"] and lf.hops == [160, 160]
    rows = []
    for i, item in enumerate(ds):
        lab = item.labels["phones"].numpy()
        k = min(len(lab), src.frame_counts(item.wave.shape[-1])[2])  # hop 160: frame t <-> label t
        rows.append(np.flatnonzero(lab[:k] >= 0))
        assert np.allclose(lf.features[0][lf.labels["item"] == i], frames.features[2][i][rows[-1]], atol=1e-6)
    assert len(lf.labels["phones"]) == sum(len(r) for r in rows) and (lf.labels["phones"] >= 0).all()
    assert np.array_equal(lf.labels["speaker"], np.repeat([i % 2 for i in range(len(ds))], [len(r) for r in rows]))
    again = repool(extract_features(src, ds, pool="none", outputs=["module2", "gru"]), "label-frames")
    assert all(np.array_equal(x, y) for x, y in zip(lf.features, again.features))
    with pytest.raises(UserError, match="equal length"):
        extract_features(src, ds, pool="flatten")
    with pytest.raises(UserError, match="pool"):
        extract_features(src, ds, pool="median")


def test_label_frame_alignment_rule():
    feats = np.arange(16, dtype=np.float32)[:, None]  # hop 80: two frames per label frame
    assert np.allclose(align_to_label_frames(feats, 80, 8)[:, 0], np.arange(8) * 2 + 0.5)
    coarse = np.arange(5, dtype=np.float32)[:, None]  # hop 320: one frame covers two label frames
    assert np.allclose(align_to_label_frames(coarse, 320, 10)[:, 0], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])


def test_stats_mode_and_deterministic_sources():
    ds = _items(LENGTHS[:3])
    sim = extract_features(EncoderSource(_encoder()), ds, mode="stats", pool="none")
    assert sim.stochastic and sim.mu is not None and sim.logvar[-1] is None  # the GRU has no posterior
    assert not np.allclose(sim.features[0][0], sim.mu[0][0])  # z are samples, mu the means
    gim = EncoderSource(_encoder(kind="gim"))
    assert not gim.stochastic
    a = extract_features(gim, ds, mode="sample", pool="mean")
    b = extract_features(gim, ds, mode="mean", pool="mean")
    assert all(np.array_equal(x, y) for x, y in zip(a.features, b.features))
    assert extract_features(gim, ds, mode="stats", pool="mean").mu is None


def test_log_mel_source_matches_the_direct_computation():
    src = LogMelSource()
    ds = _items([4000, 1000, 6400])
    fs = extract_features(src, ds, pool="none")
    for item, x in zip(ds, fs.features[0]):
        n = item.wave.shape[-1]
        ref = log_mel(item.wave, n_fft=400, hop=160, n_mels=80, sample_rate=16000)[0].T.numpy()[: max(1, n // 160)]
        assert np.allclose(x, ref, atol=1e-5)


def test_cache_reuses_files_and_follows_the_weights(tmp_path):
    ds = _items(LENGTHS[:3])
    src = EncoderSource(_encoder(seed=0))
    a = extract_features(src, ds, pool="none", mode="stats", cache_dir=tmp_path, tag="enc")
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("enc_none_stats_")
    b = extract_features(src, ds, pool="none", mode="stats", cache_dir=tmp_path, tag="enc")
    assert sorted(tmp_path.iterdir()) == files
    assert all(np.array_equal(x, y) for x, y in zip(a.features[1], b.features[1]))
    assert all(np.array_equal(x, y) for x, y in zip(a.mu[0], b.mu[0]))
    assert b.labels.keys() == a.labels.keys() and b.items == a.items and b.names == a.names
    assert np.array_equal(b.frame_labels["phones"][2], a.frame_labels["phones"][2])
    extract_features(EncoderSource(_encoder(seed=1)), ds, pool="none", mode="stats", cache_dir=tmp_path, tag="enc")
    assert len(list(tmp_path.iterdir())) == 2


def test_too_short_items_and_empty_datasets_are_user_errors():
    src = EncoderSource(_encoder())
    with pytest.raises(UserError, match="u0.wav has 10 samples, too short"):
        extract_features(src, _items([10]))
    with pytest.raises(UserError, match="empty"):
        extract_features(src, Items())


def test_standardize_is_per_dimension():
    x = np.random.default_rng(0).normal(3.0, [1.0, 5.0], size=(500, 2)).astype(np.float32)
    z, mean, std = standardize(x)
    assert np.allclose(z.mean(0), 0, atol=1e-5) and np.allclose(z.std(0), 1, atol=1e-4)
    z2, _, _ = standardize(x[:10], mean, std)
    assert np.allclose(z2, z[:10])


def test_resolve_source_and_the_command_line_arguments(tmp_path):
    run = make_run(tmp_path / "run", tmp_path)
    src = resolve_source(str(run))
    assert isinstance(src, EncoderSource) and src.config is not None and src.name == "run"
    assert src.output_names == ["module0", "module1", "module2", "gru"] and src.stochastic
    assert isinstance(resolve_source(_encoder()), EncoderSource)
    with pytest.raises(UserError, match="no such folder"):
        resolve_source(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="not a run directory"):
        resolve_source(str(tmp_path))
    parser = argparse.ArgumentParser()
    add_source_arguments(parser)
    assert isinstance(source_from_args(parser.parse_args(["--model", str(run)])), EncoderSource)
    assert source_from_args(parser.parse_args(["--run", str(run)])).fingerprint() == src.fingerprint()
    with pytest.raises(UserError, match="not a run directory"):
        source_from_args(parser.parse_args(["--run", str(tmp_path)]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--run", str(run), "--model", str(run)])
    twin = src.random_twin()
    assert twin.fingerprint() != src.fingerprint() and twin.fingerprint() == src.random_twin().fingerprint()


def _align_oracle(feats, hop, n_labels):
    """The alignment rule written out label frame by label frame."""
    T = feats.shape[0]
    rows = []
    for f in range(n_labels):
        if hop <= 160:
            inside = [t for t in range(T) if 160 * f <= t * hop < 160 * (f + 1)]
            if not inside:
                break
            rows.append(feats[inside].mean(0))
        else:
            t = (160 * f) // hop
            if t >= T:
                break
            rows.append(feats[t])
    return np.array(rows, dtype=np.float32).reshape(len(rows), feats.shape[1])


@pytest.mark.parametrize("hop", [5, 20, 70, 80, 100, 160, 320])
def test_label_frame_alignment_matches_the_rule_written_out(hop):
    rng = np.random.default_rng(hop)
    for T in (1, 3, 40, 123):
        for n_labels in (0, 1, 7, 60):
            feats = rng.normal(size=(T, 3)).astype(np.float32)
            got, ref = align_to_label_frames(feats, hop, n_labels), _align_oracle(feats, hop, n_labels)
            assert got.shape == ref.shape and np.allclose(got, ref, atol=1e-6), (hop, T, n_labels)


def test_several_pools_from_one_encoding_are_cached_apart(tmp_path):
    from smooth_infomax.features import extract_pooled

    src = EncoderSource(_encoder())
    ds = _items(LENGTHS[:4])
    calls = []
    both = extract_pooled(src, ds, ["label-frames", "mean"], cache_dir=tmp_path, tag="e",
                          progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (4, 4) and len(list(tmp_path.iterdir())) == 2
    mean = extract_features(src, ds, pool="mean", cache_dir=tmp_path, tag="e", progress=lambda *a: calls.append(a))
    assert calls[-1] == (4, 4) and len(calls) == len(set(calls))  # read from the cache: no new encoding
    assert np.array_equal(mean.features[0], both["mean"].features[0])
    assert np.array_equal(both["label-frames"].features[3], extract_features(src, ds, pool="label-frames").features[3])


def test_an_exported_model_folder_resolves_to_the_same_features(tmp_path):
    pytest.importorskip("huggingface_hub")
    from smooth_infomax.hub import export_run

    run = make_run(tmp_path / "run", tmp_path)
    export_run(run, tmp_path / "exported")
    ds = _items(LENGTHS[:3])
    a = extract_features(resolve_source(str(run)), ds, pool="mean")
    b = extract_features(resolve_source(str(tmp_path / "exported")), ds, pool="mean")
    assert b.names == a.names and all(np.allclose(x, y, atol=1e-6) for x, y in zip(a.features, b.features))


class _WholeClipSource:
    """A deterministic source whose frames depend on the whole input (like attention): not padding-exact."""

    name, sample_rate, output_names, hops, dims, stochastic, receptive_fields = ("whole", 16000, ["out"], [160],
                                                                                 [2], False, [None])

    def frame_counts(self, n_samples):
        return [n_samples // 160]

    def fingerprint(self):
        return "whole-v1"

    def encode(self, wave, mode="mean"):
        frames = wave[:, 0, : (wave.shape[-1] // 160) * 160].reshape(wave.shape[0], -1, 160)
        energy = frames.pow(2).mean(-1, keepdim=True)
        return [torch.cat([energy, energy / energy.mean(1, keepdim=True)], dim=-1)]  # (B, T, 2)


def test_sources_that_are_not_padding_exact_are_batched_by_equal_length_only():
    src = _WholeClipSource()
    assert isinstance(src, FeatureSource) and not getattr(src, "padding_exact", False)
    ds = _items([3200, 4800, 3200, 4800, 6400])
    fs = extract_features(src, ds, pool="none", batch_size=8)
    for item, x in zip(ds, fs.features[0]):
        alone = src.encode(item.wave.view(1, 1, -1))[0][0].numpy()
        assert x.shape == alone.shape and np.allclose(x, alone, atol=1e-6)


def test_posterior_noise_differs_between_datasets_with_the_same_waves():
    """Train item i and test item i must not share their posterior draw (that would correlate a sample probe's
    train and test features): the per-item seed includes the dataset's identity."""
    src = EncoderSource(_encoder())

    class Split(Items):
        def __init__(self, items, split):
            super().__init__(items)
            self.split = split

    train, test = Split(_items([4000, 4000]), "train"), Split(_items([4000, 4000]), "test")
    mean = extract_features(src, train, mode="mean", pool="none", seed=0)
    a = extract_features(src, train, mode="sample", pool="none", seed=0)
    b = extract_features(src, test, mode="sample", pool="none", seed=0)
    again = extract_features(src, train, mode="sample", pool="none", seed=0)
    for m in range(len(src.output_names) - 1):  # the Gaussian outputs (the GRU is deterministic)
        noise_a = a.features[m][0] - mean.features[m][0]
        noise_b = b.features[m][0] - mean.features[m][0]
        assert np.abs(noise_a).max() > 0 and not np.allclose(noise_a, noise_b)
        np.testing.assert_array_equal(a.features[m][0], again.features[m][0])  # still seeded
