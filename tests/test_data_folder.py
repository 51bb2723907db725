import logging

import numpy as np
import pytest

from conftest import write_audio
from smooth_infomax.data import detect_layout, open_dataset
from smooth_infomax.data.folder import FolderDataset
from smooth_infomax.data.records import collate
from smooth_infomax.errors import AudioError, DatasetError


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "clips"
    write_audio(root / "b" / "two.flac", 3200, 16000)
    write_audio(root / "a.wav", 1600, 8000)
    write_audio(root / "b" / "one.ogg", 2205, 22050)
    (root / "notes.txt").write_text("not audio")
    return root


def test_folder_without_manifest(folder):
    assert detect_layout(folder) == "folder"
    train = open_dataset(folder)
    test = FolderDataset(folder, split="test")
    names = [it.key for it in train.items]
    assert names == ["a.wav", "b/one.ogg", "b/two.flac"] == [it.key for it in test.items]
    assert [train[i].wave.shape[-1] for i in range(3)] == [3200, 1600, 3200]
    assert all(train[i].sample_rate == 16000 and train[i].labels == {} for i in range(3))
    batch = collate([FolderDataset(folder, crop=2000)[i] for i in range(3)])
    assert batch["wave"].shape == (3, 1, 2000)
    assert FolderDataset(folder).summary()["sample_rates"] == {"8000": 1, "16000": 1, "22050": 1}


def test_manifest_labels_and_split(folder):
    (folder / "labels.csv").write_text(
        "path,speaker,digit,split,gain\n"
        "a.wav,bob,3,train,0.5\n"
        "b/one.ogg,alice,,test,1.0\n"
        "b/two.flac,bob,1,train,0.25\n")
    train = FolderDataset(folder, manifest=folder / "labels.csv")
    test = open_dataset(folder / "labels.csv", split="test")
    assert train.label_names == {"speaker": ["alice", "bob"], "digit": ["0", "1", "2", "3"]}
    assert [it.key for it in train.items] == ["a.wav", "b/two.flac"] and len(test) == 1
    assert train[0].labels == {"speaker": 1, "digit": 3, "gain": 0.5}
    assert test[0].labels == {"speaker": 0, "digit": -1, "gain": 1.0}
    assert train.summary()["labels"]["speaker"] == {"bob": 2}


def test_default_manifest_and_missing_file(folder):
    (folder / "manifest.csv").write_text("path,word\na.wav,yes\nmissing/x.wav,no\n")
    with pytest.raises(DatasetError) as exc:
        FolderDataset(folder)
    msg = str(exc.value)
    assert "manifest.csv" in msg and "missing/x.wav" in msg and "\n" not in msg
    assert len(FolderDataset(folder, skip_bad=True)) == 1


def test_manifest_needs_path_column(folder):
    (folder / "m.csv").write_text("file,label\na.wav,1\n")
    with pytest.raises(DatasetError, match="'path' column"):
        FolderDataset(folder, manifest=folder / "m.csv")


def test_broken_files_in_a_folder(folder, caplog):
    good = (folder / "a.wav").read_bytes()
    (folder / "cut.wav").write_bytes(good[: len(good) // 2])
    (folder / "zero.wav").write_bytes(b"")
    (folder / "noise.wav").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(AudioError) as exc:
        FolderDataset(folder)
    assert str(exc.value).startswith(str(folder / "cut.wav"))
    with caplog.at_level(logging.WARNING, logger="smooth_infomax.data"):
        ds = FolderDataset(folder, skip_bad=True)
    assert len(ds) == 3 and len(caplog.records) == 3
    assert all("\n" not in r.getMessage() for r in caplog.records)


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="no .wav"):
        FolderDataset(tmp_path)
