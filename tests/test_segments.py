"""SegmentDataset: one fixed-length item per syllable of a synthetic dataset."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from smooth_infomax.data.records import collate
from smooth_infomax.errors import DatasetError

N_WORDS, N_VOICES = 12, 2


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    from smooth_infomax.data.synth import generate

    return generate(tmp_path_factory.mktemp("segments") / "data", seed=0, n_words=N_WORDS, n_voices=N_VOICES)


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "factors.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _copy_with_factors(root: Path, dst: Path, edit) -> Path:
    shutil.copytree(root, dst)
    rows = _rows(root)
    fields = list(rows[0])
    rows, fields = edit(rows, fields)
    with open(dst / "factors.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return dst


def test_items_shapes_and_labels(root):
    from smooth_infomax.data.segments import SegmentDataset

    train, test = SegmentDataset(root, "train"), SegmentDataset(root, "test")
    assert len(train) == 3 * 10 and len(test) == 3 * 2
    assert len(SegmentDataset(root, "all")) == 3 * N_WORDS
    assert train.label_names["syllable"] == ["ba", "bi", "bu", "da", "di", "du", "ga", "gi", "gu"]
    assert train.label_names["vowel"] == ["a", "i", "u"] and train.label_names["consonant"] == ["b", "d", "g"]
    assert train.label_names["speaker"] == ["100", "101"] and len(train.speaker_voices) == 2
    assert train.pad_to == 8800
    words = {r["word"] for r in _rows(root) if r["split"] == "train"}
    positions = []
    for i in range(len(train)):
        u = train[i]
        assert u.wave.shape == (1, 8800) and u.wave.dtype == torch.float32 and u.sample_rate == 16000
        lab = u.labels
        assert lab["syllable"] == 3 * lab["consonant"] + lab["vowel"]
        assert lab["speaker"] in (0, 1) and lab["word"] in words
        k = lab["position"]
        assert lab["word"][2 * k: 2 * k + 2] == train.label_names["syllable"][lab["syllable"]]
        positions.append(lab["position"])
    assert sorted(set(positions)) == [0, 1, 2]
    batch = collate([train[i] for i in range(5)])
    assert batch["wave"].shape == (5, 1, 8800) and batch["syllable"].shape == (5,)
    train.set_epoch(3)  # accepted


def test_wave_is_the_centred_syllable(root):
    import soundfile as sf

    from smooth_infomax.data.segments import SegmentDataset

    ds = SegmentDataset(root, "test")
    row = next(r for r in _rows(root) if r["split"] == "test")
    spk, chap, _ = row["utt_id"].split("-")
    x, _ = sf.read(root / "train-clean-100" / spk / chap / f"{row['utt_id']}.wav", dtype="float32")
    for k in (1, 2, 3):
        u = ds[k - 1]
        a, b = int(row[f"start_frame_{k}"]) * 160, int(row[f"end_frame_{k}"]) * 160
        n = b - a
        left = (8800 - n) // 2
        w = u.wave[0].numpy()
        assert u.offset == a and u.path.endswith(f"{row['utt_id']}.wav")
        np.testing.assert_array_equal(w[left: left + n], x[a:b])
        assert not w[:left].any() and not w[left + n:].any()


def test_crop_pad_and_resample(root):
    from smooth_infomax.data.segments import SegmentDataset

    short = SegmentDataset(root, "train", pad_to=1600)
    assert all(short[i].wave.shape == (1, 1600) for i in range(len(short)))
    low = SegmentDataset(root, "test", sample_rate=8000)
    assert low.pad_to == 4400 and low[0].wave.shape == (1, 4400) and low[0].sample_rate == 8000
    crop = SegmentDataset(root, "train", crop=3200, random_crop=True, seed=1)
    first = [crop[i].offset for i in range(6)]
    assert [crop[i].offset for i in range(6)] == first and crop[0].wave.shape == (1, 3200)
    crop.set_epoch(1)
    assert [crop[i].offset for i in range(6)] != first
    assert SegmentDataset(root, "train", crop=9000)[0].wave.shape == (1, 9000)


def test_missing_or_odd_factors(root, tmp_path):
    from smooth_infomax.data.segments import SegmentDataset

    with pytest.raises(DatasetError, match="factors.csv"):
        SegmentDataset(tmp_path)
    no_col = _copy_with_factors(root, tmp_path / "a", lambda r, f: (r, [c for c in f if c != "vowel_2"]))
    with pytest.raises(DatasetError, match=r"factors\.csv.*vowel_2"):
        SegmentDataset(no_col)

    def bad_syllable(rows, fields):
        rows[0]["syllable_1"] = "zo"
        return rows, fields

    with pytest.raises(DatasetError, match=r"factors\.csv line 2"):
        SegmentDataset(_copy_with_factors(root, tmp_path / "b", bad_syllable))

    def bad_span(rows, fields):
        rows[1]["end_frame_2"] = rows[1]["start_frame_2"]
        return rows, fields

    with pytest.raises(DatasetError, match=r"line 3.*spans frames"):
        SegmentDataset(_copy_with_factors(root, tmp_path / "c", bad_span))
    gone = _copy_with_factors(root, tmp_path / "d", lambda r, f: (r, f))
    next(gone.rglob("*.wav")).unlink()
    with pytest.raises(DatasetError, match="without audio"):
        SegmentDataset(gone, "all")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "factors.csv").write_text("")
    with pytest.raises(DatasetError, match="factors.csv"):
        SegmentDataset(tmp_path / "e")
