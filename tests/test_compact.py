"""The compact copy of the artificial speech dataset (data/compact.py): same items, labels, splits and samples as
the WAV folders up to int16 rounding, detected as the artificial layout, refusing what it cannot give."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_audio
from smooth_infomax.data import detect_layout, open_dataset
from smooth_infomax.data.compact import CompactSpeechDataset, is_compact, write_compact
from smooth_infomax.errors import DatasetError, UserError

WORDS = ["".join(s) for s in itertools.product(["ba", "di", "gu"], ["da", "gi"], ["bu", "ga"])]  # 12 words


def fake_artificial(root: Path, n_train_words: int = 8, word_frames: int = 35280) -> Path:
    """A tiny artificial speech dataset in the real layout: words at 44.1 kHz (0.8 s), syllables at 22.05 kHz.

    Syllable test files are the take-2 recordings of the test words, renamed ``_1`` as in the real dataset, and
    the train folder holds a take 2 of the first test word (the overlap the leakage-free split removes).
    """
    train, test = WORDS[:n_train_words], WORDS[n_train_words:]
    for i, w in enumerate(train):
        write_audio(root / "reshuffledv2" / "train" / f"{w}_1.wav", word_frames, 44100, kind="noise", seed=i)
        for pos in range(3):
            write_audio(root / "split up data padded" / "train" / f"{w}_1_{pos + 1}_{w[2 * pos: 2 * pos + 2]}.wav",
                        12156, 22050, kind="noise", seed=100 + 3 * i + pos)
    for i, w in enumerate(test):
        write_audio(root / "reshuffledv2" / "test" / f"{w}_1.wav", word_frames, 44100, kind="noise", seed=50 + i)
        for pos in range(3):
            write_audio(root / "split up data padded" / "test" / f"{w}_1_{pos + 1}_{w[2 * pos: 2 * pos + 2]}.wav",
                        12156, 22050, kind="noise", seed=200 + 3 * i + pos)
    write_audio(root / "reshuffledv2" / "train" / f"{test[0]}_2.wav", word_frames, 44100, kind="noise", seed=99)
    return root


@pytest.fixture(scope="module")
def fake_pair(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("compact")
    src = fake_artificial(base / "wav")
    write_compact(src, base / "compact", log=lambda _: None)
    return src, base / "compact"


@pytest.mark.parametrize("scheme", ["reference", "leakage_free"])
@pytest.mark.parametrize("view,crop", [("words", 10240), ("syllables", None), ("words", 4000)])
def test_compact_matches_the_wav_folders(fake_pair, scheme, view, crop):
    src, compact = fake_pair
    for split in ("train", "test"):
        a = open_dataset(src, view=view, split=split, split_scheme=scheme, crop=crop)
        b = open_dataset(compact, view=view, split=split, split_scheme=scheme, crop=crop)
        assert isinstance(b, CompactSpeechDataset) and len(a) == len(b) > 0
        assert a.label_names == b.label_names
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert x.labels == y.labels
            assert Path(x.path).relative_to(src) == Path(y.path).relative_to(compact)
            assert x.wave.shape == y.wave.shape
            assert float((x.wave - y.wave).abs().max()) <= 0.5 / 32767 + 1e-7


def test_leakage_free_split_comes_from_the_full_dataset(fake_pair):
    _, compact = fake_pair
    ref = open_dataset(compact, view="words", split="train", crop=10240)
    free = open_dataset(compact, view="words", split="train", split_scheme="leakage_free", crop=10240)
    held_out = {WORDS[8]}  # the test word whose take 2 sits in the train folder
    assert len(ref) == 9 and len(free) == 8
    assert not {u.labels["word"] for u in (free[i] for i in range(len(free)))} & held_out


def test_layout_detection_and_size(fake_pair):
    _, compact = fake_pair
    assert detect_layout(compact) == "artificial" and is_compact(compact)
    meta = json.loads((compact / "compact.json").read_text())
    assert meta["sample_rate"] == 16000 and meta["word_samples"] == 10240
    with np.load(compact / "audio.npz") as z:
        assert z["words"].dtype == np.int16 and z["words"].shape == (13, 10240)
        assert z["syllables"].shape == (36, 8821)


def test_compact_refuses_what_it_does_not_hold(fake_pair):
    _, compact = fake_pair
    with pytest.raises(UserError, match="first 10240 samples"):
        open_dataset(compact, view="words", split="train", crop=None)
    with pytest.raises(UserError, match="random_crop"):
        open_dataset(compact, view="words", split="train", crop=8000, random_crop=True)
    with pytest.raises(UserError, match="16000 Hz"):
        open_dataset(compact, view="syllables", split="train", sample_rate=8000)


def test_damaged_or_foreign_folders_are_named(tmp_path, fake_pair):
    (tmp_path / "compact.json").write_text("{not json")
    with pytest.raises(DatasetError, match="compact.json"):
        CompactSpeechDataset(tmp_path)
    (tmp_path / "compact.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DatasetError, match="not a compact"):
        CompactSpeechDataset(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a compact dataset copy"):
        write_compact(fake_pair[0], other, log=lambda _: None)


@pytest.mark.slow
def test_reading_the_compact_copy_needs_neither_soundfile_nor_soxr(fake_pair):
    """A fresh interpreter in which importing soundfile and soxr fails still imports the package and reads it."""
    _, compact = fake_pair
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('soundfile', 'soxr'):
            raise ImportError('blocked for the test: ' + name)
sys.meta_path.insert(0, Block())
import smooth_infomax
from smooth_infomax.data import open_dataset
from smooth_infomax.audio import read_audio
from smooth_infomax.errors import AudioError
ds = open_dataset({str(compact)!r}, view='syllables', split='test')
assert ds[0].wave.shape == (1, 8821)
try:
    read_audio('x.wav')
except AudioError as exc:
    print('ERR', exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "needs the soundfile package" in proc.stdout and "pip install soundfile" in proc.stdout


@pytest.mark.slow
def test_every_command_loads_without_soundfile_or_soxr():
    """The GPU machine runs `python -m smooth_infomax <verb>` without soundfile / soxr: building the command line
    (which imports every command module) must not need them."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('soundfile', 'soxr'):
            raise ImportError('blocked for the test: ' + name)
sys.meta_path.insert(0, Block())
from smooth_infomax.cli import build_parser
build_parser()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1]
