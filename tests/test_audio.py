import os

import numpy as np
import pytest
import soundfile as sf

from conftest import make_wave, write_audio
from smooth_infomax import audio
from smooth_infomax.audio import AudioCache, crop_or_pad, info, read_audio, resampled_length
from smooth_infomax.errors import AudioError


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_read_formats(tmp_path, suffix):
    path = write_audio(tmp_path / f"a{suffix}", 8000, 16000)
    x, sr = read_audio(path)
    assert sr == 16000 and x.dtype == np.float32 and x.shape == (8000,)
    atol = 0.05 if suffix == ".ogg" else 1e-3
    np.testing.assert_allclose(x, make_wave(8000), atol=atol)


def test_stereo_is_mixed_to_mono_and_kept_when_asked(tmp_path):
    path = write_audio(tmp_path / "st.wav", 1000, 16000, channels=2, subtype="FLOAT")
    both = make_wave(1000, channels=2)
    x, _ = read_audio(path)
    np.testing.assert_allclose(x, both.mean(axis=1), atol=1e-6)
    y, _ = read_audio(path, mono=False)
    assert y.shape == (1000, 2)


def test_resample_lengths_match_the_reference(tmp_path):
    syl = write_audio(tmp_path / "syl.wav", 12156, 22050)
    x, sr = read_audio(syl, sample_rate=16000)
    assert sr == 16000 and x.shape == (8821,)
    assert resampled_length(12156, 22050, 16000) == 8821
    word = write_audio(tmp_path / "word.wav", 29988, 44100)
    assert read_audio(word, sample_rate=16000)[0].shape == (resampled_length(29988, 44100, 16000),) == (10880,)
    same, _ = read_audio(word, sample_rate=44100)
    assert same.shape == (29988,)


def test_windowed_read_without_resampling(tmp_path):
    path = write_audio(tmp_path / "n.flac", 5000, 16000, kind="noise")
    full, _ = read_audio(path)
    np.testing.assert_array_equal(read_audio(path, start=1234, frames=500)[0], full[1234:1734])
    assert read_audio(path, start=4900, frames=500)[0].shape == (100,)  # shortened, never padded
    assert read_audio(path, start=6000, frames=10)[0].shape == (0,)
    np.testing.assert_array_equal(read_audio(path, start=4000)[0], full[4000:])


@pytest.mark.parametrize("rate", [22050, 44100, 8000])
def test_windowed_read_with_resampling_matches_whole_file(tmp_path, rate):
    path = write_audio(tmp_path / "n.wav", rate, rate, kind="noise", subtype="FLOAT")  # one second
    full, _ = read_audio(path, sample_rate=16000)
    for start, frames in [(0, 700), (3200, 1000), (16000 - 300, 1000), (9000, None)]:
        win, _ = read_audio(path, sample_rate=16000, start=start, frames=frames)
        ref = full[start: None if frames is None else start + frames]
        assert win.shape == ref.shape
        np.testing.assert_allclose(win, ref, atol=1e-5)


def test_crop_or_pad():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(x, 4, 3), [3, 4, 5, 6])
    np.testing.assert_array_equal(crop_or_pad(x, 5, 8), [8, 9, 0, 0, 0])
    assert crop_or_pad(np.ones((1, 3)), 5).shape == (1, 5)


def test_info(tmp_path):
    path = write_audio(tmp_path / "i.flac", 4410, 22050, channels=2)
    meta = info(path)
    assert (meta.frames, meta.sample_rate, meta.channels) == (4410, 22050, 2)
    assert meta.duration == pytest.approx(0.2)


def _one_line_naming(exc: pytest.ExceptionInfo, path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


def test_broken_files_give_one_line_errors(tmp_path):
    good = write_audio(tmp_path / "good.wav", 16000)
    data = good.read_bytes()
    cases = {
        "truncated.wav": data[: len(data) // 2],
        "empty.wav": b"",
        "garbage.wav": os.urandom(2048),
        "text.ogg": b"this is not audio\n" * 50,
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
    sf.write(str(tmp_path / "header_only.wav"), np.zeros(0, np.float32), 16000)
    expect = {"truncated.wav": "truncated", "empty.wav": "empty", "garbage.wav": "cannot be decoded",
              "text.ogg": "cannot be decoded", "header_only.wav": "no audio samples"}
    for name, words in expect.items():
        path = tmp_path / name
        for fn in (read_audio, info):
            with pytest.raises(AudioError) as exc:
                fn(path)
            assert words in _one_line_naming(exc, path)
    with pytest.raises(AudioError) as exc:
        read_audio(tmp_path / "missing.wav")
    assert "does not exist" in _one_line_naming(exc, tmp_path / "missing.wav")


def test_truncated_flac_fails_on_read(tmp_path):
    good = write_audio(tmp_path / "good.flac", 16000, kind="noise")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(AudioError) as exc:
        read_audio(cut)
    _one_line_naming(exc, cut)


def test_wav_content_with_a_flac_name_still_reads(tmp_path):
    good = write_audio(tmp_path / "good.wav", 800)
    odd = tmp_path / "odd.flac"
    odd.write_bytes(good.read_bytes())
    assert read_audio(odd)[0].shape == (800,)


def test_non_finite_samples_are_rejected(tmp_path):
    x = make_wave(100)
    x[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(str(path), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as exc:
        read_audio(path)
    assert "NaN" in _one_line_naming(exc, path)


def test_cache_resamples_each_file_once(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "c.wav", 22050, 22050)
    calls = []
    real = audio.read_audio
    monkeypatch.setattr(audio, "read_audio", lambda *a, **k: calls.append(a) or real(*a, **k))
    cache = AudioCache()
    first = cache.get(path, 16000)
    second = cache.get(path, 16000)
    assert first is second and len(calls) == 1 and first.shape == (16000,)
    assert (cache.hits, cache.misses) == (1, 1)
    write_audio(path, 11025, 22050)  # the file changes: the entry is stale
    assert cache.get(path, 16000).shape == (8000,) and len(calls) == 2


def test_cache_evicts_least_recently_used(tmp_path):
    paths = [write_audio(tmp_path / f"{i}.wav", 1000, 8000, seed=i) for i in range(3)]
    cache = AudioCache(max_bytes=2 * 2000 * 4)  # two resampled files of 2000 float32 samples
    for p in paths:
        cache.get(p, 16000)
    assert len(cache) == 2
    cache.get(paths[2], 16000)
    assert cache.hits == 1


def test_disk_cache_is_reused(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "d.wav", 4410, 44100, kind="noise")
    first = AudioCache(cache_dir=tmp_path / "cache").get(path, 16000)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("should come from the disk cache")

    monkeypatch.setattr(audio, "read_audio", fail)
    again = AudioCache(cache_dir=tmp_path / "cache").get(path, 16000)
    np.testing.assert_array_equal(first, again)
