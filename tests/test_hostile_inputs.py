"""Hostile inputs: every damaged, odd or lying file is either converted as documented or refused in one line.

The corpus is generated here (never committed): truncated, garbage, header-only and zero-byte audio, misnamed
formats, 8/24-bit, float, stereo and 5-channel files, odd sample rates, clips shorter than the receptive field,
silence, NaN / Inf samples, WAV headers that lie about their data size, a 10-minute file (read as a window
only), and label files (phones, split files, CSV manifests) with wrong ids, lengths or paths. Everything goes
through the command line (``smooth_infomax.cli.main``): exit 0 with sensible arrays, or exit 2 with a single
``error: ...`` line naming the file and no traceback; ``--debug`` lets the exception through.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from smooth_infomax.audio import read_audio, resampled_length
from smooth_infomax.cli import main
from smooth_infomax.config import load_config, save_config
from smooth_infomax.errors import AudioError
from smooth_infomax.model import Encoder
from smooth_infomax.runs import save_encoder

SR = 16000


def tone(n: int, rate: int = SR, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """A sine of ``freq`` Hz, (n,) or (n, channels); channel c has amplitude 0.1 * (c + 1)."""
    t = np.arange(n) / rate
    cols = [0.1 * (c + 1) * np.sin(2 * np.pi * freq * t + c) for c in range(channels)]
    x = np.stack(cols, axis=1).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def wav_header(frames: int, rate: int, channels: int = 1, bits: int = 16, data_bytes: int | None = None) -> bytes:
    """A canonical 44-byte PCM WAV header; ``data_bytes`` overrides the size the data chunk declares."""
    block = channels * bits // 8
    size = frames * block if data_bytes is None else data_bytes
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + \
        b"data" + struct.pack("<I", size)


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def with_data_size(data: bytes, size: int) -> bytes:
    """A WAV file whose data chunk claims ``size`` bytes (the audio bytes stay as they are)."""
    at = data.find(b"data")
    return data[: at + 4] + struct.pack("<I", size) + data[at + 8:]


# --------------------------------------------------------------------------------------------------
# The corpus: name -> expectation
# --------------------------------------------------------------------------------------------------

#: files that must encode: name -> number of samples at 16 kHz the encoder sees
ACCEPTED: dict[str, int] = {
    "plain.wav": 4000, "pcm8.wav": 4000, "pcm24.wav": 4000, "float32.wav": 4000, "float64.wav": 4000,
    "stereo.wav": 4000, "five_channels.wav": 4000, "rate11025.wav": resampled_length(2756, 11025, SR),
    "rate44100.wav": 4000, "rate8000.flac": 4000, "below_receptive_field.wav": 400, "silence.wav": 4000,
    "real.flac": 4000, "real.ogg": 4000, "flac_named.wav": 4000, "wav_named.ogg": 4000,
    "ogg_named.flac": 4000, "data_size_smaller.wav": 2000, "data_size_streaming.wav": 4000,
    "riff_size_larger.wav": 4000,
}
#: files that must be refused: name -> words the one-line message contains
REFUSED: dict[str, str] = {
    "truncated.wav": "truncated", "truncated.flac": "cannot be decoded", "garbage.wav": "cannot be decoded",
    "text.flac": "cannot be decoded", "zero_bytes.wav": "empty", "header_only.wav": "truncated",
    "no_frames.wav": "no audio samples", "riff_only.wav": "cannot be decoded",
    "data_size_larger.wav": "truncated", "zero_rate.wav": "", "absurd_rate.wav": "sample rate",
    "zero_channels.wav": "", "nan.wav": "NaN", "inf.wav": "infinite", "too_short.wav": "too short",
}


def _corpus(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def write(name: str, x: np.ndarray, rate: int = SR, **kw) -> Path:
        path = root / name
        sf.write(str(path), x, rate, **kw)
        files[name] = path
        return path

    def raw(name: str, payload: bytes) -> Path:
        path = root / name
        path.write_bytes(payload)
        files[name] = path
        return path

    good = write("plain.wav", tone(4000))
    write("pcm8.wav", tone(4000), subtype="PCM_U8")
    write("pcm24.wav", tone(4000), subtype="PCM_24")
    write("float32.wav", tone(4000), subtype="FLOAT")
    write("float64.wav", tone(4000), subtype="DOUBLE")
    write("stereo.wav", tone(4000, channels=2))
    write("five_channels.wav", tone(4000, channels=5), subtype="FLOAT")
    write("rate11025.wav", tone(2756, 11025), 11025)
    write("rate44100.wav", tone(11025, 44100), 44100)
    write("rate8000.flac", tone(2000, 8000), 8000)
    write("below_receptive_field.wav", tone(400))  # the paper stack sees 465 samples per last-module frame
    write("silence.wav", np.zeros(4000, np.float32))
    flac = write("real.flac", tone(4000), format="FLAC")
    ogg = write("real.ogg", tone(4000), format="OGG")
    raw("flac_named.wav", flac.read_bytes())
    raw("wav_named.ogg", good.read_bytes())
    raw("ogg_named.flac", ogg.read_bytes())
    body = good.read_bytes()
    data_size = len(body) - 44
    raw("data_size_smaller.wav", with_data_size(body, data_size // 2))  # trailing bytes are ignored
    raw("data_size_streaming.wav", with_data_size(body, 0xFFFFFFFF))  # streaming writers: "to the end"
    raw("riff_size_larger.wav", body[:4] + struct.pack("<I", 10 ** 8) + body[8:])

    raw("truncated.wav", body[: len(body) // 2])
    raw("truncated.flac", flac.read_bytes()[: flac.stat().st_size // 2])
    raw("garbage.wav", np.random.default_rng(0).bytes(3000))
    raw("text.flac", b"this is not audio\n" * 40)
    raw("zero_bytes.wav", b"")
    raw("header_only.wav", body[:44])
    sf.write(str(root / "no_frames.wav"), np.zeros(0, np.float32), SR)
    files["no_frames.wav"] = root / "no_frames.wav"
    raw("riff_only.wav", body[:12])
    raw("data_size_larger.wav", with_data_size(body, data_size * 2))
    raw("zero_rate.wav", wav_header(4000, 0) + pcm16(tone(4000)))
    raw("absurd_rate.wav", wav_header(4000, 3) + pcm16(tone(4000)))  # 3 Hz: a damaged header, not audio
    header = wav_header(4000, SR)
    raw("zero_channels.wav", header[:22] + struct.pack("<H", 0) + header[24:] + pcm16(tone(4000)))
    x = tone(4000)
    x[1234] = np.nan
    write("nan.wav", x, subtype="FLOAT")
    x = tone(4000)
    x[99] = -np.inf
    write("inf.wav", x, subtype="FLOAT")
    write("too_short.wav", tone(30))
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return _corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with a tiny random-init paper-stack encoder (4 channels)."""
    cfg = load_config({"data": {"crop": 3200}, "model": {"preset": "paper", "channels": 4, "gru_hidden": 4},
                       "loss": {"prediction_steps": 2, "window": 8}})
    run = tmp_path_factory.mktemp("run")
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    save_encoder(Encoder(cfg.model), cfg, run / "encoder.pt")
    return run


def one_error_line(err: str, *names: str) -> str:
    """The single ``error:`` line of stderr; it names every one of ``names`` and holds no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for name in names:
        assert name in lines[0], (name, err)
    return lines[0]


# --------------------------------------------------------------------------------------------------
# encode, file by file
# --------------------------------------------------------------------------------------------------


def test_corpus_covers_every_file(corpus):
    assert set(corpus) == set(ACCEPTED) | set(REFUSED)
    assert not set(ACCEPTED) & set(REFUSED)


@pytest.mark.parametrize("name", sorted(ACCEPTED) + sorted(REFUSED))
def test_encode_every_hostile_file(name, corpus, run_dir, tmp_path, capsys):
    path = corpus[name]
    out = tmp_path / "x.npz"
    code = main(["encode", "--run", str(run_dir), "--input", str(path), "--out", str(out)])
    captured = capsys.readouterr()
    if name in ACCEPTED:
        assert code == 0, captured.err
        assert "Traceback" not in captured.err
        enc = Encoder.from_config(load_config(run_dir / "config.yaml"))
        with np.load(out) as z:
            assert sorted(z.files) == sorted(enc.module_names)
            counts = enc.frame_counts(ACCEPTED[name])
            for module, n in zip(enc.module_names, counts):
                assert z[module].shape == (n, 4), (module, z[module].shape)
                assert z[module].dtype == np.float32 and np.isfinite(z[module]).all()
    else:
        assert code == 2
        line = one_error_line(captured.err, str(path))
        assert REFUSED[name] in line
        assert not out.exists()


def test_debug_shows_the_exception(corpus, run_dir, tmp_path):
    with pytest.raises(AudioError) as exc:
        main(["--debug", "encode", "--run", str(run_dir), "--input", str(corpus["truncated.wav"]),
              "--out", str(tmp_path / "x.npz")])
    assert str(exc.value).startswith(str(corpus["truncated.wav"]))


def test_a_folder_with_one_bad_file_is_refused_naming_it(corpus, run_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("plain.wav", "stereo.wav", "garbage.wav"):
        (folder / name).write_bytes(corpus[name].read_bytes())
    out = tmp_path / "x.npz"
    assert main(["encode", "--run", str(run_dir), "--input", str(folder), "--out", str(out)]) == 2
    one_error_line(capsys.readouterr().err, str(folder / "garbage.wav"))
    assert not out.exists()


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_encode_refuses_impossible_max_seconds(corpus, run_dir, tmp_path, capsys, value):
    code = main(["encode", "--run", str(run_dir), "--input", str(corpus["plain.wav"]), "--out",
                 str(tmp_path / "x.npz"), "--max-seconds", value])
    assert code == 2
    one_error_line(capsys.readouterr().err, "--max-seconds")


def test_encode_refuses_a_folder_as_output(corpus, run_dir, tmp_path, capsys):
    (tmp_path / "out.npz").mkdir()
    code = main(["encode", "--run", str(run_dir), "--input", str(corpus["plain.wav"]), "--out",
                 str(tmp_path / "out.npz")])
    assert code == 2
    one_error_line(capsys.readouterr().err, str(tmp_path / "out.npz"))


# --------------------------------------------------------------------------------------------------
# The documented conversions
# --------------------------------------------------------------------------------------------------


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def test_channels_are_averaged_and_depths_become_float(corpus):
    five, sr = read_audio(corpus["five_channels.wav"])
    assert sr == SR and five.dtype == np.float32 and five.shape == (4000,)
    np.testing.assert_allclose(five, tone(4000, channels=5).mean(axis=1), atol=1e-6)
    stereo, _ = read_audio(corpus["stereo.wav"])
    np.testing.assert_allclose(stereo, tone(4000, channels=2).mean(axis=1), atol=1e-4)
    for name, atol in (("pcm8.wav", 1 / 100), ("pcm24.wav", 1e-6), ("float32.wav", 0), ("float64.wav", 1e-7)):
        x, _ = read_audio(corpus[name])
        assert x.dtype == np.float32
        np.testing.assert_allclose(x, tone(4000), atol=atol, err_msg=name)
    silence, _ = read_audio(corpus["silence.wav"])
    assert not silence.any()


@pytest.mark.parametrize("name, rate", [("rate11025.wav", 11025), ("rate44100.wav", 44100), ("rate8000.flac", 8000)])
def test_odd_rates_are_resampled_keeping_the_pitch(corpus, name, rate):
    x, sr = read_audio(corpus[name], sample_rate=SR)
    frames = sf.info(str(corpus[name])).frames
    assert sr == SR and x.shape == (resampled_length(frames, rate, SR),)
    assert abs(dominant_frequency(x, SR) - 440.0) < 10


def test_a_data_chunk_smaller_than_the_file_is_believed(corpus):
    x, _ = read_audio(corpus["data_size_smaller.wav"])
    full, _ = read_audio(corpus["plain.wav"])
    np.testing.assert_array_equal(x, full[:2000])


# --------------------------------------------------------------------------------------------------
# A 10-minute file is only ever read as a window
# --------------------------------------------------------------------------------------------------


def sparse_wav(path: Path, seconds: float, rate: int) -> Path:
    """A long 16-bit WAV written in O(1) time and disk: a second of tone, then a sparse run of zeros."""
    frames = int(seconds * rate)
    with open(path, "wb") as fh:
        fh.write(wav_header(frames, rate))
        fh.write(pcm16(tone(rate, rate)))
        fh.truncate(44 + 2 * frames)
    return path


@pytest.fixture
def read_log(monkeypatch) -> list[int]:
    """Frames asked of every ``soundfile.SoundFile.read`` call (-1 would be a whole-file read)."""
    calls: list[int] = []
    real = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        calls.append(int(frames))
        return real(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    monkeypatch.setattr(sf, "read", lambda *a, **k: pytest.fail("soundfile.read decodes whole files"))
    return calls


@pytest.mark.parametrize("rate", [SR, 44100])
def test_ten_minutes_are_read_as_a_window(tmp_path, run_dir, read_log, capsys, rate):
    long = sparse_wav(tmp_path / "long.wav", 600, rate)
    assert sf.info(str(long)).frames == 600 * rate
    out = tmp_path / "x.npz"
    assert main(["encode", "--run", str(run_dir), "--input", str(long), "--out", str(out), "--max-seconds", "1"]) == 0
    assert read_log and all(0 < n <= rate + 2048 for n in read_log), read_log
    enc = Encoder.from_config(load_config(run_dir / "config.yaml"))
    with np.load(out) as z:
        assert [z[m].shape[0] for m in enc.module_names] == enc.frame_counts(SR)
    read_log.clear()
    x, _ = read_audio(long, sample_rate=SR, start=300 * SR, frames=3200)
    assert x.shape == (3200,) and not x.any()
    assert all(0 < n <= 3200 * rate // SR + 2048 for n in read_log), read_log


def test_ten_minutes_in_a_dataset_and_in_data_info(tmp_path, read_log, capsys):
    from smooth_infomax.data import open_dataset

    folder = tmp_path / "long"
    folder.mkdir()
    sparse_wav(folder / "long.wav", 600, SR)
    ds = open_dataset(folder, crop=3200, random_crop=True, seed=1)
    for epoch in range(3):
        ds.set_epoch(epoch)
        item = ds[0]
        assert item.wave.shape == (1, 3200) and item.offset % 160 == 0 and item.offset + 3200 <= 600 * SR
    assert read_log == [3200, 3200, 3200]
    assert main(["data", "info", str(folder), "--json"]) == 0
    assert '"hours": 0.1667' in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# data info on folders with a bad file
# --------------------------------------------------------------------------------------------------

#: damage that file headers show (NaN samples and cut FLAC streams only show when decoded)
HEADER_DAMAGE = ["truncated.wav", "garbage.wav", "text.flac", "zero_bytes.wav", "header_only.wav", "no_frames.wav",
                 "riff_only.wav", "data_size_larger.wav", "zero_rate.wav", "absurd_rate.wav", "zero_channels.wav"]


@pytest.mark.parametrize("bad", HEADER_DAMAGE)
def test_data_info_names_the_bad_file_or_skips_it(bad, corpus, tmp_path, capsys, caplog):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    for name in ("plain.wav", "stereo.wav", "rate44100.wav"):
        (folder / name).write_bytes(corpus[name].read_bytes())
    target = folder / "sub" / bad
    target.write_bytes(corpus[bad].read_bytes())
    assert main(["data", "info", str(folder)]) == 2
    one_error_line(capsys.readouterr().err, str(target))
    with caplog.at_level(logging.WARNING, logger="smooth_infomax.data"):
        assert main(["data", "info", str(folder), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "3 files" in captured.out and f"skipped 1 unreadable file(s), first: {target}" in captured.out
    assert [r for r in caplog.records if str(target) in r.getMessage()], "no warning names the skipped file"
    with pytest.raises(AudioError):
        main(["--debug", "data", "info", str(folder)])


def test_train_refuses_a_bad_file_before_training(corpus, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("plain.wav", "truncated.wav"):
        (folder / name).write_bytes(corpus[name].read_bytes())
    config = tmp_path / "c.yaml"
    config.write_text("data: {crop: 3200, layout: folder}\nmodel: {preset: paper, channels: 4, gru_hidden: 4}\n"
                      "loss: {prediction_steps: 2, window: 8}\ntrain: {epochs: 1, progress: false, "
                      "log_tensorboard: false}\n")
    code = main(["train", "--config", str(config), "--set", f"data.path={folder}", "--out", str(tmp_path / "run")])
    assert code == 2
    one_error_line(capsys.readouterr().err, str(folder / "truncated.wav"))
    assert not (tmp_path / "run" / "checkpoints").exists()


# --------------------------------------------------------------------------------------------------
# Label files that lie: LibriSpeech layout (phones, split files) and CSV manifests
# --------------------------------------------------------------------------------------------------

UTTS = {"1-1-0000": 4800, "1-1-0001": 4000, "2-1-0000": 5600, "2-1-0001": 4480, "3-2-0000": 4160}
TRAIN_IDS = ["1-1-0000", "2-1-0000", "1-1-0001", "2-1-0001"]
TEST_IDS = ["3-2-0000", "1-1-0001"]


def libri(root: Path, *, phones: dict[str, str] | None = None, train_ids=TRAIN_IDS) -> Path:
    """A tiny LibriSpeech-layout folder; ``phones`` replaces the label line of some utterances."""
    for i, (utt, n) in enumerate(UTTS.items()):
        spk, chap, _ = utt.split("-")
        folder = root / "train-clean-100" / spk / chap
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(str(folder / f"{utt}.flac"), tone(n, freq=200 + 50 * i), SR)
    (root / "train_split.txt").write_text("\n".join(train_ids) + "\n")
    (root / "test_split.txt").write_text("\n".join(TEST_IDS) + "\n")
    lines = []
    for utt, n in UTTS.items():
        labels = " ".join(str((f // 3) % 41) for f in range(n // 160))
        lines.append(f"{utt} {(phones or {}).get(utt, labels)}")
    (root / "converted_aligned_phones.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_fixture_is_sound(tmp_path, capsys):
    root = libri(tmp_path / "LS")
    assert main(["data", "info", str(root)]) == 0
    assert "4 files" in capsys.readouterr().out


@pytest.mark.parametrize("labels, words", [
    ("0 1 2 " + " ".join(["5"] * 24) + " 41", "41"),
    ("0 1 2 " + " ".join(["5"] * 24) + " -7", "-7"),
    ("0 1 2 " + " ".join(["5"] * 24) + " x", "non-integer"),
    ("0 1 2 " + " ".join(["5"] * 24) + " 2.5", "non-integer"),
])
def test_bad_phone_ids_are_refused_naming_file_and_utterance(tmp_path, run_dir, capsys, labels, words):
    root = libri(tmp_path / "LS", phones={"2-1-0000": labels + " 1 " * 7})
    code = main(["probe", "--run", str(run_dir), "--data", str(root), "--task", "phone", "--seeds", "1",
                 "--epochs", "1", "--out", str(tmp_path / "probe")])
    assert code == 2
    line = one_error_line(capsys.readouterr().err, str(root / "converted_aligned_phones.txt"), "2-1-0000")
    assert words in line


def test_phone_counts_that_do_not_fit_the_audio(tmp_path, capsys):
    root = libri(tmp_path / "LS", phones={"1-1-0001": " ".join(["3"] * 60)})  # 4000 samples = 25 frames
    assert main(["data", "info", str(root)]) == 2
    one_error_line(capsys.readouterr().err, "1-1-0001", str(root / "converted_aligned_phones.txt"))


def test_split_files_naming_unknown_or_malformed_utterances(tmp_path, capsys, caplog):
    root = libri(tmp_path / "LS", train_ids=[*TRAIN_IDS, "9-9-0009"])
    assert main(["data", "info", str(root)]) == 2
    one_error_line(capsys.readouterr().err, str(root / "train_split.txt"), "9-9-0009")
    with caplog.at_level(logging.WARNING, logger="smooth_infomax.data"):
        assert main(["data", "info", str(root), "--skip-bad"]) == 0
    assert "4 files" in capsys.readouterr().out
    assert any("9-9-0009" in r.getMessage() for r in caplog.records)
    (root / "train_split.txt").write_text("1-1-0000\nnot-an-id\n")
    assert main(["data", "info", str(root), "--skip-bad"]) == 2
    one_error_line(capsys.readouterr().err, str(root / "train_split.txt"), "line 2")
    (root / "train_split.txt").write_bytes(b"\xff\xfe\x00garbage")
    assert main(["data", "info", str(root)]) == 2
    one_error_line(capsys.readouterr().err, str(root / "train_split.txt"))


def manifest_folder(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("a.wav", "b.wav", "c.flac")):
        sf.write(str(root / name), tone(3200, freq=300 + 100 * i), SR)
    (root / "manifest.csv").write_text(text)
    return root


@pytest.mark.parametrize("text, words", [
    ("file,speaker\na.wav,1\n", "'path' column"),
    ("", "'path' column"),
    ("path,speaker\na.wav,1\nmissing.wav,2\n", "missing.wav"),
    ("path,split\na.wav,train\nb.wav,validation\n", "line 3"),
    ("path,speaker\na.wav,1\n,2\n", "line 3"),
    ("path,speaker\na.wav,1,surplus\nb.wav,2\n", "line 2"),
])
def test_manifests_that_lie(tmp_path, capsys, text, words):
    root = manifest_folder(tmp_path / "m", text)
    assert main(["data", "info", str(root)]) == 2
    line = one_error_line(capsys.readouterr().err, str(root / "manifest.csv"))
    assert words in line


def test_manifest_missing_files_are_skipped_with_a_warning(tmp_path, capsys, caplog):
    root = manifest_folder(tmp_path / "m", "path,speaker\na.wav,1\nmissing.wav,2\nc.flac,1\n")
    with caplog.at_level(logging.WARNING, logger="smooth_infomax.data"):
        assert main(["data", "info", str(root), "--skip-bad"]) == 0
    assert "2 files" in capsys.readouterr().out
    assert any("missing.wav" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------------
# --help everywhere
# --------------------------------------------------------------------------------------------------


def command_paths() -> list[tuple[str, ...]]:
    """Every sub-command path of the CLI (e.g. ("data", "info")), found by walking the argparse tree."""
    import argparse

    from smooth_infomax.cli import build_parser

    paths: list[tuple[str, ...]] = []

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    paths.append((*prefix, name))
                    walk(sub, (*prefix, name))

    walk(build_parser(), ())
    return paths


def test_every_sub_command_has_help(capsys):
    paths = command_paths()
    top = {p[0] for p in paths}
    assert {"data", "train", "encode", "probe", "decoder", "run"} <= top
    assert ("data", "info") in paths
    for path in paths:
        with pytest.raises(SystemExit) as exc:
            main([*path, "--help"])
        assert exc.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith("usage: ") and path[-1] in out, path


@pytest.mark.slow
def test_module_help_in_a_fresh_interpreter():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "smooth_infomax", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: smooth-infomax"), done.stderr
    assert "Traceback" not in done.stderr
