"""The built-in synthetic CVCVCV dataset (espeak-ng): layout, determinism, alignment, voices."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from smooth_infomax.errors import UserError

N_WORDS, N_VOICES = 12, 2
HOP = 160


def _gen(out: Path, seed: int) -> Path:
    from smooth_infomax.data.synth import generate

    return generate(out, seed=seed, n_words=N_WORDS, n_voices=N_VOICES)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    base = tmp_path_factory.mktemp("synth")
    return {"a": _gen(base / "a", 0), "b": _gen(base / "b", 0), "c": _gen(base / "c", 1)}


def _factors(root: Path) -> list[dict[str, str]]:
    with open(root / "factors.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _alignment(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for line in (root / "converted_aligned_phones.txt").read_text().splitlines():
        parts = line.split()
        out[parts[0]] = np.array([int(p) for p in parts[1:]])
    return out


def _wave(root: Path, utt: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    spk, chap, _ = utt.split("-")
    return sf.read(root / "train-clean-100" / spk / chap / f"{utt}.wav", dtype="float32")


def _frame_rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt((x[: len(x) // HOP * HOP].reshape(-1, HOP) ** 2).mean(axis=1))


def _f0(x: np.ndarray, sr: int) -> float:
    """Autocorrelation pitch of a short voiced stretch."""
    x = x - x.mean()
    ac = np.correlate(x, x, "full")[len(x) - 1:]
    lo, hi = sr // 400, sr // 60
    return sr / (lo + int(np.argmax(ac[lo:hi])))


def test_layout_and_splits(sets):
    root = sets["a"]
    rows = _factors(root)
    assert len(rows) == N_WORDS
    train = (root / "train_split.txt").read_text().split()
    test = (root / "test_split.txt").read_text().split()
    # 6 words per voice, round(6 * 0.2) = 1 test word per voice
    assert len(train) == 10 and len(test) == 2
    assert not set(train) & set(test)
    assert set(train) | set(test) == {r["utt_id"] for r in rows}
    assert {r["speaker"] for r in rows if r["split"] == "test"} == {"100", "101"}
    for r in rows:
        assert (r["utt_id"] in test) == (r["split"] == "test")
    assert (root / "phones.txt").read_text().split("\n")[:7] == ["0 sil", "1 b", "2 d", "3 g", "4 a", "5 i", "6 u"]
    readme = (root / "README.txt").read_text()
    assert "espeak-ng" in readme and "GPL-3.0" in readme
    for spk in ("100", "101"):
        folder = root / "train-clean-100" / spk / "1"
        lines = (folder / f"{spk}-1.trans.txt").read_text().splitlines()
        assert len(lines) == 6 and len(list(folder.glob("*.wav"))) == 6
        words = {r["utt_id"]: r["word"] for r in rows}
        for line in lines:
            utt, word = line.split()
            assert word == words[utt].upper() and utt.startswith(f"{spk}-1-")


def test_same_seed_is_byte_identical_and_other_seed_differs(sets):
    a, b, c = sets["a"], sets["b"], sets["c"]
    wavs = sorted(p.relative_to(a) for p in a.rglob("*.wav"))
    assert wavs == sorted(p.relative_to(b) for p in b.rglob("*.wav"))
    for rel in wavs:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for name in ("converted_aligned_phones.txt", "factors.csv", "train_split.txt", "test_split.txt"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert [r["word"] for r in _factors(a)] != [r["word"] for r in _factors(c)]


def test_alignment_covers_every_frame(sets):
    root = sets["a"]
    align = _alignment(root)
    assert set(align) == {r["utt_id"] for r in _factors(root)}
    for utt, labels in align.items():
        x, sr = _wave(root, utt)
        assert sr == 16000 and x.ndim == 1
        assert len(x) % HOP == 0 and len(labels) == len(x) // HOP
        assert set(labels.tolist()) <= set(range(7))
        assert labels[0] == 0 and labels[-1] == 0  # silent lead-in and tail
        assert 0.4 <= (labels > 0).sum() / 100 <= 1.2  # the spoken word lasts about 0.5-1 s


def test_phone_labels_agree_with_energy(sets):
    root = sets["a"]
    for utt, labels in _alignment(root).items():
        x, _ = _wave(root, utt)
        rms = _frame_rms(x)
        sil, vowel, stop = rms[labels == 0], rms[labels >= 4], rms[(labels >= 1) & (labels <= 3)]
        assert vowel.mean() > 10 * sil.mean(), utt
        assert vowel.mean() > 1.5 * np.median(stop), utt
        # "sil" frames before the word are digital silence; after it the last vowel fades out within a few frames
        first, last = np.flatnonzero(labels)[[0, -1]]
        assert rms[: first - 1].max() < 1e-3 and rms[last + 10:].max() < 1e-3, utt
        assert rms[last + 2:].max() < 0.2 * vowel.mean(), utt
        # each word-internal stop starts with a closure (silent or a voice bar) much quieter than the vowels
        for f in range(1, len(labels)):
            if 1 <= labels[f] <= 3 and labels[f - 1] >= 4:
                end = f
                while 1 <= labels[end] <= 3:
                    end += 1
                assert rms[f:end].min() < 0.6 * vowel.mean(), (utt, f)


def test_voices_differ(sets):
    root = sets["a"]
    align = _alignment(root)
    pitch: dict[str, list[float]] = {}
    for r in _factors(root):
        x, sr = _wave(root, r["utt_id"])
        labels = align[r["utt_id"]]
        for f in range(0, len(labels) - 4, 2):
            if (labels[f: f + 4] >= 4).all():
                pitch.setdefault(r["voice"], []).append(_f0(x[f * HOP: (f + 4) * HOP], sr))
    assert len(pitch) == N_VOICES
    low, high = sorted(float(np.median(v)) for v in pitch.values())
    assert high > 1.5 * low, pitch.keys()


def test_factors_match_phone_labels(sets):
    from smooth_infomax.data.synth import SYLLABLES

    root = sets["a"]
    align = _alignment(root)
    ids = {"b": 1, "d": 2, "g": 3, "a": 4, "i": 5, "u": 6}
    voice_of = {}
    for r in _factors(root):
        labels = align[r["utt_id"]]
        assert r["utt_id"].split("-")[0] == r["speaker"]
        assert voice_of.setdefault(r["speaker"], r["voice"]) == r["voice"]
        syllables = [r[f"syllable_{k}"] for k in (1, 2, 3)]
        assert "".join(syllables) == r["word"] and all(s in SYLLABLES for s in syllables)
        inside = np.zeros(len(labels), bool)
        for k in (1, 2, 3):
            a, b = int(r[f"start_frame_{k}"]), int(r[f"end_frame_{k}"])
            c, v = r[f"consonant_{k}"], r[f"vowel_{k}"]
            assert c + v == r[f"syllable_{k}"]
            span = labels[a:b]
            n_c = int((span == ids[c]).sum())
            assert n_c >= 1 and (span[:n_c] == ids[c]).all() and (span[n_c:] == ids[v]).all() and n_c < len(span)
            inside[a:b] = True
        assert (labels[~inside] == 0).all() and labels[inside].min() > 0
        assert int(r["start_frame_2"]) == int(r["end_frame_1"]) and int(r["start_frame_3"]) == int(r["end_frame_2"])


def test_same_parameters_are_reused_and_foreign_folders_refused(sets, tmp_path):
    from smooth_infomax.data.synth import generate

    root = sets["a"]
    stamp = (root / "factors.csv").stat().st_mtime_ns
    assert generate(root, seed=0, n_words=N_WORDS, n_voices=N_VOICES) == root
    assert (root / "factors.csv").stat().st_mtime_ns == stamp
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        generate(foreign, n_words=3, n_voices=1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    # an older synthetic dataset with other parameters is replaced
    small = generate(tmp_path / "small", seed=3, n_words=2, n_voices=1, test_fraction=0.0)
    generate(small, seed=3, n_words=3, n_voices=1, test_fraction=0.0)
    assert len(_factors(small)) == 3
    assert not list(tmp_path.glob(".small*"))  # no temporary folders left behind


def test_loads_with_the_librispeech_loader(sets):
    try:
        from smooth_infomax.data.librispeech import LibriSpeechDataset
    except ImportError:
        pytest.skip("LibriSpeech loader not available")
    ds = LibriSpeechDataset(sets["a"], split="test")
    assert len(ds) == 2
    item = ds[0]
    assert item.labels["phones"].shape[0] == item.wave.shape[-1] // HOP


@pytest.mark.parametrize("kwargs", [{"n_words": 0}, {"n_voices": 0}, {"n_voices": 99}, {"sample_rate": 16001},
                                    {"test_fraction": 1.0}, {"n_words": 2, "n_voices": 3}])
def test_bad_arguments(tmp_path, kwargs):
    from smooth_infomax.data.synth import generate

    with pytest.raises(UserError):
        generate(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_missing_engine_is_a_user_error(tmp_path, monkeypatch):
    from smooth_infomax.data import synth

    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes the import fail
    assert not synth.espeak_available()
    with pytest.raises(UserError, match=r"pip install 'smooth-infomax\[synth\]'"):
        synth.generate(tmp_path / "x", n_words=2, n_voices=1)


def test_background_noise_has_the_drawn_snr_and_is_seeded():
    from smooth_infomax.data.synth import add_background_noise

    t = np.arange(16000) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    wave = np.concatenate([np.zeros(1600, np.float32), speech])
    noisy = add_background_noise(wave, speech, [10.0, 10.0], [0, 7])
    noise = noisy - wave
    snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.01) and noisy.dtype == np.float32
    np.testing.assert_array_equal(noisy, add_background_noise(wave, speech, [10.0, 10.0], [0, 7]))
    assert not np.array_equal(noisy, add_background_noise(wave, speech, [10.0, 10.0], [0, 8]))
    # pink: more power below 500 Hz than in the same width above 4 kHz
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / 16000)
    assert power[(freqs > 0) & (freqs < 500)].sum() > 4 * power[(freqs > 4000) & (freqs < 4500)].sum()


@pytest.mark.slow
def test_noisy_dataset_keeps_labels_and_differs_from_clean(sets, tmp_path):
    from smooth_infomax.data.synth import generate

    noisy = generate(tmp_path / "noisy", seed=0, n_words=N_WORDS, n_voices=N_VOICES, noise_snr_db=(5, 15))
    assert (noisy / "converted_aligned_phones.txt").read_text() == \
        (sets["a"] / "converted_aligned_phones.txt").read_text()
    wav = next((noisy / "train-clean-100").rglob("*.wav"))
    clean = sets["a"] / wav.relative_to(noisy)
    assert wav.read_bytes() != clean.read_bytes()
    with pytest.raises(UserError, match="noise_snr_db"):
        generate(tmp_path / "bad", n_words=2, n_voices=1, noise_snr_db=(20, 5))
