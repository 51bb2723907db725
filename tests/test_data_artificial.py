"""The artificial speech dataset, read in place from ../shared/data/artificial-speech (skipped when absent)."""

import numpy as np
import pytest
import torch

from conftest import write_audio
from smooth_infomax.data import detect_layout, open_dataset
from smooth_infomax.data.artificial import SYLLABLES, ArtificialSpeechDataset
from smooth_infomax.data.info import describe
from smooth_infomax.data.records import collate
from smooth_infomax.errors import DatasetError


@pytest.mark.parametrize("view,split,count", [("words", "train", 680), ("words", "test", 171),
                                              ("syllables", "train", 2181), ("syllables", "test", 360)])
def test_reference_counts(artificial_root, view, split, count):
    assert len(ArtificialSpeechDataset(artificial_root, view, split)) == count


def test_syllables(artificial_root):
    ds = ArtificialSpeechDataset(artificial_root, "syllables", "test")
    assert ds.label_names["syllable"] == SYLLABLES and ds.label_names["position"] == ["1", "2", "3"]
    assert ds.label_names["vowel"] == ["a", "i", "u"] and ds.label_names["consonant"] == ["b", "d", "g"]
    batch = collate([ds[i] for i in range(0, 360, 45)])
    assert batch["wave"].shape == (8, 1, 8821) and batch["sample_rate"] == 16000
    for i in range(0, 360, 45):
        item = ds[i]
        name = item.path.rsplit("/", 1)[1][:-4]
        word, _, pos, syl = name.split("_")
        assert item.labels["syllable"] == SYLLABLES.index(syl)
        assert item.labels["vowel"] == "aiu".index(syl[1]) and item.labels["consonant"] == "bdg".index(syl[0])
        assert item.labels["position"] == int(pos) - 1 and item.labels["word"] == word
    counts = ds.summary()["labels"]["syllable"]
    assert counts == {"ba": 36, "bi": 44, "bu": 29, "da": 39, "di": 41, "du": 32, "ga": 59, "gi": 40, "gu": 40}


def test_words_reference_crop_and_whole(artificial_root):
    ds = ArtificialSpeechDataset(artificial_root, "words", "test")
    item = ds[0]
    assert item.wave.shape == (1, 10240) and item.sample_rate == 16000 and item.offset == 0
    word = item.labels["word"]
    assert [ds.label_names["syllable_1"][item.labels[f"syllable_{k}"]] for k in (1, 2, 3)] == \
        [word[0:2], word[2:4], word[4:6]]
    whole = open_dataset(artificial_root, split="test", crop=None)
    assert detect_layout(artificial_root) == "artificial" and whole.view == "words"
    lengths = {whole[i].wave.shape[-1] for i in range(5)}
    assert min(lengths) >= 10880 and max(lengths) <= 17536
    assert torch.equal(whole[0].wave[:, :10240], item.wave)
    # resampled once: the second read of an item comes from the cache
    misses = whole.cache.misses
    whole[0]
    assert whole.cache.misses == misses


def test_word_random_crops_are_reproducible(artificial_root):
    a = ArtificialSpeechDataset(artificial_root, "words", "train", crop=8000, random_crop=True, seed=1)
    b = ArtificialSpeechDataset(artificial_root, "words", "train", crop=8000, random_crop=True, seed=1)
    a.set_epoch(5)
    b.set_epoch(5)
    idx = [3, 99, 400]
    assert [a[i].offset for i in idx] == [b[i].offset for i in idx]
    assert all(a[i].offset % 160 == 0 for i in idx)
    np.testing.assert_array_equal(a[99].wave.numpy(), b[99].wave.numpy())


def test_leakage_free_split(artificial_root):
    def words(view, split):
        ds = ArtificialSpeechDataset(artificial_root, view, split, "leakage_free")
        return ds, {it.labels["word"] for it in ds.items}

    wtrain, wtrain_words = words("words", "train")
    wtest, _ = words("words", "test")
    strain, strain_words = words("syllables", "train")
    stest, stest_words = words("syllables", "test")
    assert (len(wtrain), len(wtest), len(strain), len(stest)) == (485, 366, 1821, 360)
    assert len(wtrain) + len(wtest) == 851
    assert len(stest_words) == 120
    assert not stest_words & wtrain_words and not stest_words & strain_words
    assert {it.path for it in wtrain.items}.isdisjoint(it.path for it in wtest.items)


def test_describe_counts(artificial_root):
    d = describe(artificial_root)
    assert d["totals"] == {"words": 851, "syllables": 2541}
    assert d["views"]["words"]["train"]["sample_rates"] == {"44100": 680}
    assert d["views"]["syllables"]["test"]["sample_rates"] == {"22050": 360}
    assert d["split_schemes"]["leakage_free"]["words"] == {"train": 485, "test": 366}
    assert d["split_schemes"]["reference"]["syllables"] == {"train": 2181, "test": 360}


def test_bad_file_name_is_named(tmp_path):
    for split in ("train", "test"):
        write_audio(tmp_path / "reshuffledv2" / split / "bababa_1.wav", 4410, 44100)
    odd = write_audio(tmp_path / "reshuffledv2" / "train" / "hello.wav", 4410, 44100)
    with pytest.raises(DatasetError, match=str(odd)):
        ArtificialSpeechDataset(tmp_path, "words", "train")
    assert len(ArtificialSpeechDataset(tmp_path, "words", "test", crop=None)) == 1
    with pytest.raises(DatasetError, match="split up data padded"):
        ArtificialSpeechDataset(tmp_path, "syllables", "test")
