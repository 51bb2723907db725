import logging
import sys

import numpy as np
import pytest
import torch

from conftest import write_audio
from smooth_infomax.data import detect_layout, open_dataset
from smooth_infomax.data.librispeech import LibriSpeechDataset
from smooth_infomax.data.records import collate
from smooth_infomax.errors import AudioError, DatasetError

# utterance id -> samples; speaker 30 only appears in the test split
UTTS = {
    "20-1-0000": 8000, "20-1-0001": 9600, "10-2-0000": 12000, "10-2-0001": 4000, "20-3-0000": 7040,
    "30-4-0000": 6400, "10-2-0002": 5600,
}
TRAIN = ["20-1-0000", "10-2-0000", "20-1-0001", "10-2-0001", "20-3-0000"]
TEST = ["30-4-0000", "10-2-0002"]


def phone_labels(utt: str, n: int) -> list[int]:
    frames = n // 160 - 2  # like a Kaldi alignment: slightly shorter than the audio
    seed = sum(map(int, utt.split("-")))
    return [int(v) for v in np.random.default_rng(seed).integers(0, 41, frames)]


def build(root, *, phones=True, wav_ids=("20-3-0000",)):
    for utt, n in UTTS.items():
        spk, chap, _ = utt.split("-")
        suffix = ".wav" if utt in wav_ids else ".flac"
        write_audio(root / "train-clean-100" / spk / chap / f"{utt}{suffix}", n, kind="noise", seed=n)
    (root / "train_split.txt").write_text("\n".join(TRAIN) + "\n")
    (root / "test_split.txt").write_text("\n".join(TEST) + "\n\n")
    if phones:
        lines = [" ".join([utt, *map(str, phone_labels(utt, n))]) for utt, n in UTTS.items()]
        (root / "converted_aligned_phones.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def libri(tmp_path):
    return build(tmp_path / "LibriSpeech")


def test_layout_items_and_speakers(libri):
    assert detect_layout(libri) == "librispeech"
    train = open_dataset(libri, split="train")
    test = LibriSpeechDataset(libri, "test")
    assert len(train) == 5 and len(test) == 2
    assert train.label_names["speaker"] == ["20", "10", "30"]
    assert [train[i].labels["speaker"] for i in range(5)] == [0, 1, 0, 1, 0]
    assert [test[i].labels["speaker"] for i in range(2)] == [2, 1]
    item = train[1]
    assert item.wave.shape == (1, 12000) and item.wave.dtype == torch.float32 and item.sample_rate == 16000
    assert item.path.endswith("10-2-0000.flac") and item.offset == 0
    assert train[4].path.endswith("20-3-0000.wav")


def test_whole_utterance_phones_cover_every_10ms_frame(libri):
    ds = LibriSpeechDataset(libri, "train")
    assert ds.label_names["phones"] == [str(i) for i in range(41)]
    for i, utt in enumerate(TRAIN):
        item = ds[i]
        n = UTTS[utt]
        ph = item.labels["phones"]
        assert ph.dtype == torch.long and ph.shape == (n // 160,)
        want = phone_labels(utt, n)
        assert ph[: len(want)].tolist() == want and ph[len(want):].tolist() == [-1, -1]


def test_random_crops_are_a_function_of_seed_epoch_index(libri):
    kw = dict(crop=3200, random_crop=True, seed=7)
    a, b = LibriSpeechDataset(libri, "train", **kw), LibriSpeechDataset(libri, "train", **kw)
    offsets = [a[i].offset for i in range(len(a))]
    assert offsets == [b[i].offset for i in reversed(range(len(b)))][::-1]
    assert all(o % 160 == 0 and o + 3200 <= UTTS[TRAIN[i]] for i, o in enumerate(offsets))
    per_epoch = []
    for epoch in range(6):
        a.set_epoch(epoch)
        per_epoch.append(tuple(a[i].offset for i in range(len(a))))
    assert len(set(per_epoch)) > 1
    a.set_epoch(3)
    assert tuple(a[i].offset for i in range(len(a))) == per_epoch[3]
    by_seed = {tuple(LibriSpeechDataset(libri, "train", crop=3200, random_crop=True, seed=s)[i].offset
                     for i in range(5)) for s in range(4)}
    assert len(by_seed) > 1
    # the crop and its phones come from the same place in the utterance
    full = LibriSpeechDataset(libri, "train")
    for i in range(len(a)):
        item = a[i]
        whole = full[i]
        o = item.offset
        assert torch.equal(item.wave, whole.wave[:, o: o + 3200])
        assert torch.equal(item.labels["phones"], whole.labels["phones"][o // 160: o // 160 + 20])


def test_crops_in_dataloader_workers_match(libri):
    ds = LibriSpeechDataset(libri, "train", crop=1600, random_crop=True, seed=3)
    ds.set_epoch(2)
    expected = [ds[i].offset for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["offset"].tolist() == expected
    assert batch["wave"].shape == (5, 1, 1600) and batch["phones"].shape == (5, 10)


def test_short_utterances_are_padded(libri):
    ds = LibriSpeechDataset(libri, "train", crop=6400, random_crop=True)
    item = ds[3]  # 4000 samples
    assert item.wave.shape == (1, 6400) and item.offset == 0
    assert torch.all(item.wave[0, 4000:] == 0)
    ph = item.labels["phones"]
    assert ph.shape == (40,) and torch.all(ph[25:] == -1) and ph[:23].tolist() == phone_labels("10-2-0001", 4000)


def test_resampled_rate_keeps_phones_at_10ms(libri):
    ds = LibriSpeechDataset(libri, "train", sample_rate=8000)
    item = ds[0]
    assert item.wave.shape == (1, 4000) and item.sample_rate == 8000 and item.labels["phones"].shape == (50,)


def test_phone_names_file(libri):
    (libri / "phones.txt").write_text("0 sil\n1 aa\n2 b\n")
    ds = LibriSpeechDataset(libri, "train")
    assert ds.label_names["phones"] == ["sil", "aa", "b"]


def test_without_phone_file(tmp_path):
    root = build(tmp_path / "ls", phones=False)
    ds = LibriSpeechDataset(root, "train")
    assert "phones" not in ds[0].labels and "phones" not in ds.label_names
    with pytest.raises(DatasetError, match="converted_aligned_phones.txt"):
        LibriSpeechDataset(root, "train", phones=True)


def test_split_files_under_the_labels_folder_and_subset_root(tmp_path):
    root = build(tmp_path / "ls")
    labels = root / "LibriSpeech100_labels_split"
    labels.mkdir()
    for name in ("train_split.txt", "test_split.txt", "converted_aligned_phones.txt"):
        (root / name).rename(labels / name)
    assert len(LibriSpeechDataset(root, "test")) == 2
    assert detect_layout(root) == "librispeech"
    sub = LibriSpeechDataset(root / "train-clean-100", "train")  # the subset folder itself
    assert len(sub) == 5 and "phones" in sub[0].labels


def test_missing_split_file(libri):
    (libri / "test_split.txt").unlink()
    with pytest.raises(DatasetError) as exc:
        LibriSpeechDataset(libri, "train")
    msg = str(exc.value)
    assert "test_split.txt" in msg and "\n" not in msg


def test_missing_audio_named_or_skipped(libri, caplog):
    (libri / "train-clean-100" / "10" / "2" / "10-2-0001.flac").unlink()
    with pytest.raises(DatasetError) as exc:
        LibriSpeechDataset(libri, "train")
    assert "train_split.txt" in str(exc.value) and "10-2-0001" in str(exc.value)
    with caplog.at_level(logging.WARNING, logger="smooth_infomax.data"):
        ds = LibriSpeechDataset(libri, "train", skip_bad=True)
    assert len(ds) == 4 and "10-2-0001" in caplog.text


def test_malformed_split_line(libri):
    (libri / "train_split.txt").write_text("20-1-0000\nnot-an-id\n")
    with pytest.raises(DatasetError, match=r"train_split.txt line 2"):
        LibriSpeechDataset(libri, "train")


def test_phone_length_mismatch_names_the_utterance(libri):
    path = libri / "converted_aligned_phones.txt"
    lines = path.read_text().splitlines()
    lines = [line + " 1 1 1 1 1 1" if line.startswith("10-2-0000 ") else line for line in lines]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as exc:
        LibriSpeechDataset(libri, "train")
    assert "10-2-0000" in str(exc.value) and "\n" not in str(exc.value)
    assert len(LibriSpeechDataset(libri, "test")) == 2  # other split unaffected


def test_partial_phone_file_is_accepted_with_one_coverage_warning(libri, caplog):
    path = libri / "converted_aligned_phones.txt"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("20-1-0001")))
    with caplog.at_level(logging.WARNING, logger="smooth_infomax.data"):
        train = LibriSpeechDataset(libri, "train")
        test = LibriSpeechDataset(libri, "test")
    warnings = [r.getMessage() for r in caplog.records if "cover" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "4 of 5 utterances of train (80.0%)" in warnings[0] and "2 of 2 utterances of test" in warnings[0]
    assert train.aligned_indices() == [0, 1, 3, 4] and test.aligned_indices() == [0, 1]
    missing = train[2]  # 20-1-0001: audio and speaker as usual, every phone frame "no label"
    assert missing.wave.shape == (1, 9600) and missing.labels["speaker"] == 0
    assert missing.labels["phones"].shape == (60,) and bool((missing.labels["phones"] == -1).all())
    assert (train[0].labels["phones"][:48] >= 0).all()
    assert train.phone_coverage() == {"train": (4, 5), "test": (2, 2)}
    assert train.summary()["phone_alignments"] == 4


def test_phone_file_of_other_audio_is_refused(libri):
    path = libri / "converted_aligned_phones.txt"
    path.write_text("99-1-0000 1 2 3\n")
    with pytest.raises(DatasetError, match="cover no utterance"):
        LibriSpeechDataset(libri, "train")


def test_unreadable_audio(libri, caplog):
    bad = libri / "train-clean-100" / "20" / "1" / "20-1-0001.flac"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(AudioError) as exc:
        LibriSpeechDataset(libri, "train")
    assert str(exc.value).startswith(str(bad))
    with caplog.at_level(logging.WARNING, logger="smooth_infomax.data"):
        ds = LibriSpeechDataset(libri, "train", skip_bad=True)
    assert len(ds) == 4 and ds.skipped == [str(bad)]
    assert sum(str(bad) in r.getMessage() for r in caplog.records) == 1


def test_synthetic_layout(libri, monkeypatch):
    (libri / "factors.csv").write_text("utt_id,split\n")
    assert detect_layout(libri) == "synthetic"
    ds = open_dataset(libri, split="test")
    assert isinstance(ds, LibriSpeechDataset) and len(ds) == 2

    calls = {}

    class FakeSegments:
        def __init__(self, root, split, sample_rate=16000, crop=None, seed=0):
            calls.update(root=root, split=split, sample_rate=sample_rate, crop=crop, seed=seed)

    monkeypatch.setattr(sys.modules["smooth_infomax.data"], "SegmentDataset", FakeSegments)
    out = open_dataset(libri, split="test", view="syllables", crop=100, seed=4, skip_bad=True)
    assert isinstance(out, FakeSegments)
    assert calls == {"root": libri, "split": "test", "sample_rate": 16000, "crop": 100, "seed": 4}


def test_unknown_view_and_split(libri):
    from smooth_infomax.errors import UserError

    with pytest.raises(UserError, match="view 'words'"):
        open_dataset(libri, view="words")
    with pytest.raises(UserError, match="split 'valid'"):
        open_dataset(libri, split="valid")


def test_phone_file_changes_change_the_dataset_identity(libri):
    from smooth_infomax.features import dataset_identity

    before = dataset_identity(LibriSpeechDataset(libri, "train"))
    assert dataset_identity(LibriSpeechDataset(libri, "train")) == before
    path = libri / "converted_aligned_phones.txt"
    path.write_text(path.read_text().replace("20-1-0000 ", "20-1-0000 5 ", 1))
    assert dataset_identity(LibriSpeechDataset(libri, "train")) != before
