"""Linear probes: frame alignment, metrics, training, and the protocol end to end on synthetic speech."""

import json

import numpy as np
import pytest

from smooth_infomax.errors import UserError
from smooth_infomax.probe import (
    ProbeSettings,
    align_to_label_frames,
    evaluate,
    predict,
    subsample_per_class,
    train_linear,
)


def test_alignment_identity_for_hop_160():
    feats = np.arange(20, dtype=np.float32).reshape(10, 2)
    assert np.array_equal(align_to_label_frames(feats, 160, 10), feats)
    assert np.array_equal(align_to_label_frames(feats, 160, 7), feats[:7])


def test_alignment_averages_finer_frames_and_picks_for_coarser():
    feats = np.arange(16, dtype=np.float32)[:, None]  # hop 80: two frames per label frame
    out = align_to_label_frames(feats, 80, 8)
    assert out.shape == (8, 1) and np.allclose(out[:, 0], np.arange(8) * 2 + 0.5)
    coarse = np.arange(5, dtype=np.float32)[:, None]  # hop 320: one frame covers two label frames
    out = align_to_label_frames(coarse, 320, 10)
    assert np.allclose(out[:, 0], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])


def test_evaluate_accuracy_f1_confusion():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    r = evaluate(y, p, 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 1 * 0.5 / 1.5]
    assert r["macro_f1"] == pytest.approx(np.mean(f1))


def test_linear_probe_learns_separable_classes_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 10)) * 3
    y = rng.integers(0, 3, 600)
    x = (centres[y] + rng.normal(size=(600, 10))).astype(np.float32)
    a = train_linear(x[:400], y[:400], 3, epochs=20, seed=1)
    b = train_linear(x[:400], y[:400], 3, epochs=20, seed=1)
    assert np.array_equal(a["weight"], b["weight"])
    assert evaluate(y[400:], predict(a, x[400:]), 3)["accuracy"] > 0.9
    nb = train_linear(x[:400], y[:400], 3, epochs=5, seed=1, bias=False)
    assert np.all(nb["bias"] == 0)


def test_subsample_per_class_counts():
    y = np.repeat(np.arange(4), 50)
    idx = subsample_per_class(y, 8, seed=0)
    assert np.bincount(y[idx]).tolist() == [8, 8, 8, 8]


def test_settings_reject_bad_combinations():
    with pytest.raises(UserError, match="--pool none"):
        ProbeSettings(task="phone", pool="mean").check()
    with pytest.raises(UserError, match="--pool mean"):
        ProbeSettings(task="vowel", pool="none").check()
    with pytest.raises(UserError, match="not a probe task"):
        ProbeSettings(task="tone").check()


@pytest.mark.slow
def test_trained_encoder_beats_random_init_on_vowels_and_phones(quick_run, tmp_path):
    from smooth_infomax.probe import run_probe

    run, data = quick_run
    for task, pool in (("vowel", "mean"), ("phone", "none")):
        res = run_probe(run, data, tmp_path, ProbeSettings(task=task, pool=pool, seeds=2, epochs=20),
                        baselines=True)
        enc, rnd = res["results"]["encoder"], res["results"]["random-init"]
        best = max(e["accuracy_mean"] for e in enc.values())
        best_random = max(e["accuracy_mean"] for e in rnd.values())
        assert best > res["chance"] + 0.15, (task, best)
        assert best > best_random, (task, best, best_random)
        assert all(len(e["accuracies"]) == 2 and e["accuracy_std"] >= 0 for e in enc.values())
        saved = json.loads((tmp_path / f"probe_{task}.json").read_text())
        assert saved["results"]["log-mel"]["log-mel"]["n_test"] == enc[next(iter(enc))]["n_test"]
        assert (tmp_path / f"probe_{task}.md").read_text().startswith(f"### {task} probe")


def test_probe_cli_vowel_all_modules(quick_run, tmp_path, capsys):
    from smooth_infomax.cli import main

    run, data = quick_run
    assert main(["probe", "--run", str(run), "--data", str(data), "--task", "vowel", "--module", "all", "--seeds", "2",
                 "--epochs", "10", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "probe_vowel.json").read_text())
    entries = res["results"]["encoder"]
    assert set(entries) == {"module0", "module1", "module2", "gru"}
    assert max(e["accuracy_mean"] for e in entries.values()) > 1 / 3 + 0.15
    assert "| encoder | module0 |" in capsys.readouterr().out
    # features are cached: a second call reuses them
    cached = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert main(["probe", "--run", str(run), "--data", str(data), "--task", "vowel", "--module", "1", "--seeds", "1",
                 "--epochs", "2", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == cached
    assert main(["probe", "--run", str(run), "--data", str(data), "--task", "vowel", "--module", "9",
                 "--out", str(tmp_path)]) == 2


def test_thesis_protocol_flatten_and_label_efficiency(quick_run, tmp_path):
    from smooth_infomax.probe import run_probe

    run, data = quick_run
    res = run_probe(run, data, tmp_path, ProbeSettings(task="syllable", pool="flatten", seeds=1, epochs=3),
                    modules=[2], label_efficiency=(1, 4))
    entry = res["results"]["encoder"]["module2"]
    assert list(res["results"]["encoder"]) == ["module2"]
    assert entry["dim"] == 32 * 55  # 8800-sample syllables -> 55 frames x 32 channels (the quick_run fixture)
    curve = entry["label_efficiency"]
    assert [c["per_class"] for c in curve] == [1, 4]
    assert all(0 <= c["accuracy_mean"] <= 1 for c in curve)


def test_feature_cache_follows_the_weights(quick_run, tmp_path):
    """Probing the same run directory after its encoder changed (trained further) must re-encode."""
    import shutil

    import torch

    from smooth_infomax.probe import run_probe

    run, data = quick_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    settings = ProbeSettings(task="vowel", seeds=1, epochs=2)
    run_probe(copy, data, tmp_path / "out", settings, modules=[0])
    first = sorted(p.name for p in (tmp_path / "out" / "features").iterdir())
    run_probe(copy, data, tmp_path / "out", settings, modules=[0])
    assert sorted(p.name for p in (tmp_path / "out" / "features").iterdir()) == first  # unchanged weights: reused
    state = torch.load(copy / "encoder.pt", weights_only=False)
    state["state_dict"] = {k: v * 1.5 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, copy / "encoder.pt")
    run_probe(copy, data, tmp_path / "out", settings, modules=[0])
    after = sorted(p.name for p in (tmp_path / "out" / "features").iterdir())
    assert len(after) == len(first) + 2 and set(first) < set(after)  # new train + test encodings


# --------------------------------------------------------------------------------------------------
# Quick tier: heads trained in one go equal head-by-head training; the protocol on a tiny artificial set
# --------------------------------------------------------------------------------------------------


def _adam_oracle(x, y, k, *, seed, epochs, batch_size, standardize, bias=True, weight_decay=0.0):
    """One head, trained the way the protocol specifies it (the reference for train_heads)."""
    import torch

    mean = x.mean(0) if standardize else np.zeros(x.shape[1], dtype=np.float32)
    std = x.std(0) + 1e-8 if standardize else np.ones(x.shape[1], dtype=np.float32)
    X = torch.from_numpy(((x - mean) / std).astype(np.float32))
    Y = torch.from_numpy(y.astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(X.shape[1], k, bias=bias)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=weight_decay)
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), batch_size):
            idx = perm[s:s + batch_size]
            loss = torch.nn.functional.cross_entropy(head(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.weight.detach().numpy()


def test_heads_trained_in_one_go_equal_head_by_head_training():
    from smooth_infomax.probe import train_heads

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    xs = [(rng.normal(size=(300, d)) * 2 + 1).astype(np.float32) for d in (12, 5)]
    heads = train_heads(xs, y, 4, [0, 1], epochs=4, batch_size=32, standardize=True, weight_decay=1e-3)
    for f, x in enumerate(xs):
        for s in (0, 1):
            ref = _adam_oracle(x, y, 4, seed=s, epochs=4, batch_size=32, standardize=True, weight_decay=1e-3)
            assert heads[f][s]["weight"].shape == (4, x.shape[1])
            assert np.allclose(heads[f][s]["weight"], ref, atol=1e-6), (f, s)
    rows = [subsample_per_class(y, 5, seed=s) for s in (0, 1)]
    sub = train_heads(xs, y, 4, [0, 1], rows=rows, epochs=3, batch_size=8, bias=False)
    for f, x in enumerate(xs):
        for s in (0, 1):
            ref = _adam_oracle(x[rows[s]], y[rows[s]], 4, seed=s, epochs=3, batch_size=8, standardize=False, bias=False)
            assert np.allclose(sub[f][s]["weight"], ref, atol=1e-6) and not sub[f][s]["bias"].any()


def test_probe_protocol_on_a_leakage_free_run(tmp_path):
    from smooth_infomax.probe import run_probe
    from test_runs import make_artificial, make_run

    data = make_artificial(tmp_path / "art")
    run = make_run(tmp_path / "run", data, ("data.split_scheme=leakage_free",))
    settings = ProbeSettings(task="vowel", seeds=2, epochs=3, standardize=True)
    res = run_probe(run, data, tmp_path / "out", settings, baselines=True)
    assert res["split_scheme"] == "leakage_free"  # the run's config, no flag needed
    assert set(res["results"]) == {"encoder", "random-init", "log-mel"}
    assert set(res["results"]["encoder"]) == {"module0", "module1", "module2", "gru"}
    e = res["results"]["encoder"]["module2"]
    assert e["n_train"] == 21 and e["n_test"] == 9 and len(e["accuracies"]) == 2 and e["chance"] == 1 / 3
    assert res["results"]["log-mel"]["log-mel"]["dim"] == 80
    with np.load(tmp_path / "out" / "weights_vowel.npz") as z:
        assert z["encoder/gru"].shape == (2, 3, 8)
    features = sorted(p.name for p in (tmp_path / "out" / "features").iterdir())
    assert len(features) == 6  # encoder, random-init twin, log-mel; train and test
    # the other syllable tasks pool the same encodings
    cons = run_probe(run, data, tmp_path / "out", ProbeSettings(task="consonant", seeds=1, epochs=2), baselines=True)
    assert sorted(p.name for p in (tmp_path / "out" / "features").iterdir()) == features
    assert cons["results"]["encoder"]["module0"]["n_train"] == 21
    ref = run_probe(run, data, tmp_path / "ref", ProbeSettings(task="vowel", seeds=1, epochs=1), modules=[1],
                    split_scheme="reference")
    assert list(ref["results"]["encoder"]) == ["module1"] and ref["results"]["encoder"]["module1"]["n_train"] == 30


def test_probe_cli_takes_a_model_source(tmp_path, capsys):
    from smooth_infomax.cli import main
    from test_runs import make_artificial, make_run

    data = make_artificial(tmp_path / "art")
    run = make_run(tmp_path / "run", data)
    assert main(["probe", "--model", str(run), "--data", str(data), "--task", "syllable", "--seeds", "1",
                 "--epochs", "1", "--module", "2", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "| encoder | module2 |" in out
    res = json.loads((tmp_path / "o" / "probe_syllable.json").read_text())
    assert res["split_scheme"] == "reference" and res["results"]["encoder"]["module2"]["n_test"] == 9
    assert main(["probe", "--run", str(run), "--data", str(data), "--task", "phone", "--out", str(tmp_path / "p")]) == 2
    assert "needs LibriSpeech-layout" in capsys.readouterr().err


def test_probe_and_analyze_take_a_transformers_model(tmp_path):
    pytest.importorskip("transformers")
    from smooth_infomax.analysis.cli import analyze_run
    from smooth_infomax.probe import run_probe
    from smooth_infomax.sources.hf import save_tiny_model
    from test_runs import make_artificial

    data = make_artificial(tmp_path / "art")
    folder = save_tiny_model(tmp_path / "w2v", layers=1)
    res = run_probe(f"hf:{folder}", data, tmp_path / "p", ProbeSettings(task="vowel", seeds=1, epochs=1),
                    baselines=True)
    assert set(res["results"]) == {"encoder", "log-mel"}  # no random-init twin for external models
    assert any("random-init" in n for n in res["notes"]) and res["split_scheme"] == "reference"
    assert len(res["results"]["encoder"]) >= 2 and all(e["n_test"] == 9 for e in res["results"]["encoder"].values())
    ana = analyze_run(f"hf:{folder}", data, tmp_path / "a", tsne=False)
    assert not ana["stochastic"] and ana["notes"] and ana["n_items"] == 9
