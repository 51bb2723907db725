"""The artificial speech dataset (de Boer; github.com/fdenoodt/Artificial-Speech-Dataset @ 1f653c9).

Layout (read in place)::

    <root>/reshuffledv2/{train,test}/<word>_<take>.wav                       words, 44.1 kHz (680 / 171)
    <root>/split up data padded/{train,test}/<word>_<take>_<pos>_<syl>.wav   syllables, 22.05 kHz (2181 / 360)

A word is three syllables from {b, d, g} x {a, i, u}, e.g. ``gibadu``. The syllable test files are the take-2
recordings of 120 words, renamed ``_1`` by the dataset's authors.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import DatasetError, UserError
from .folder import AudioDataset

WORDS_DIR = "reshuffledv2"
SYLLABLES_DIR = "split up data padded"
VIEWS = ("words", "syllables")
SPLIT_SCHEMES = ("reference", "leakage_free")

SYLLABLES = ["ba", "bi", "bu", "da", "di", "du", "ga", "gi", "gu"]
VOWELS = ["a", "i", "u"]
CONSONANTS = ["b", "d", "g"]
POSITIONS = ["1", "2", "3"]
#: reference crops at 16 kHz: the first 10240 samples of a word; syllables whole (8821 samples)
REFERENCE_CROP = {"words": 10240, "syllables": None}

WORD_FILE = re.compile(r"^((?:[bdg][aiu]){3})_(\d+)\.wav$")
SYLLABLE_FILE = re.compile(r"^((?:[bdg][aiu]){3})_(\d+)_([123])_([bdg][aiu])\.wav$")


def _wav_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DatasetError(f"{folder} does not exist; is this the artificial speech dataset? "
                           f"(get it with 'smooth-infomax data fetch artificial-speech --to DIR')")
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(".wav") and not n.startswith("."))


def _parse(folder: Path, name: str, pattern: re.Pattern[str], expected: str) -> re.Match[str]:
    m = pattern.match(name)
    if m is None:
        raise DatasetError(f"{folder / name}: unexpected file name, expected {expected}; remove or rename the file")
    return m


def syllable_labels(syllable: str) -> dict[str, int]:
    return {"syllable": SYLLABLES.index(syllable), "vowel": VOWELS.index(syllable[1]),
            "consonant": CONSONANTS.index(syllable[0])}


def syllable_test_words(root: Path) -> set[str]:
    """Words whose (take-2) syllables form the reference syllable test set."""
    folder = root / SYLLABLES_DIR / "test"
    return {_parse(folder, n, SYLLABLE_FILE, "<word>_<take>_<pos>_<syl>.wav").group(1) for n in _wav_names(folder)}


def split_files(root: str | os.PathLike[str], view: str, split: str,
                split_scheme: str = "reference") -> list[tuple[Path, re.Match[str]]]:
    """The files of one view and split under a split scheme (see :class:`ArtificialSpeechDataset`)."""
    root = Path(root)
    if view not in VIEWS:
        raise UserError(f"view {view!r} is not available for the artificial speech dataset; use words or syllables")
    if split_scheme not in SPLIT_SCHEMES:
        raise UserError(f"split_scheme {split_scheme!r} is unknown; use reference or leakage_free")
    sub, pattern, expected = ((WORDS_DIR, WORD_FILE, "<word>_<take>.wav") if view == "words"
                              else (SYLLABLES_DIR, SYLLABLE_FILE, "<word>_<take>_<pos>_<syl>.wav"))

    def listing(which: str) -> list[tuple[Path, re.Match[str]]]:
        folder = root / sub / which
        return [(folder / n, _parse(folder, n, pattern, expected)) for n in _wav_names(folder)]

    if split_scheme == "reference":
        return listing(split)
    held_out = syllable_test_words(root)
    if view == "syllables":
        if split == "test":
            return listing("test")
        return [(p, m) for p, m in listing("train") if m.group(1) not in held_out]
    train = [(p, m) for p, m in listing("train") if m.group(1) not in held_out]
    if split == "train":
        return train
    moved = [(p, m) for p, m in listing("train") if m.group(1) in held_out]
    return sorted(listing("test") + moved, key=lambda pm: (pm[0].name, str(pm[0])))



def view_crop(view: str, crop: int | None | str) -> int | None:
    """Check ``view`` (words or syllables) and turn ``crop="reference"`` into the reference crop of that view."""
    if view not in VIEWS:
        raise UserError(f"view {view!r} is not available for the artificial speech dataset; use words or syllables")
    if crop == "reference":
        return REFERENCE_CROP[view]
    if isinstance(crop, str):
        raise UserError(f"crop must be an int, None or 'reference', got {crop!r}")
    return crop

class ArtificialSpeechDataset(AudioDataset):
    """Words or single syllables of the artificial speech dataset, resampled to ``sample_rate`` (once, cached).

    view ``words``: labels ``word`` (str, e.g. "gibadu"), ``take`` (int) and ``syllable_1``..``syllable_3``
    (the syllable class at each position). view ``syllables``: labels ``syllable`` (ba 0, bi 1, bu 2, da 3,
    di 4, du 5, ga 6, gi 7, gu 8), ``vowel`` (a 0, i 1, u 2), ``consonant`` (b 0, d 1, g 2), ``position``
    (0..2 for positions 1..3, names "1".."3") and ``word`` (str).

    ``crop="reference"`` (the default) reproduces the reference loader: words are cut to their first 10240
    samples at 16 kHz (no random offset), syllables are returned whole (8821 samples from 12156 at 22.05 kHz).
    ``crop=None`` returns whole files; an int crops (randomly with ``random_crop``) and zero-pads.

    ``split_scheme``:

    * ``reference``: the dataset's folders (words 680 train / 171 test, syllables 2181 / 360). 95 of the 120
      syllable-test words have their take 2 (the very recording the syllable test files were cut from) in the
      words train folder, so an encoder pre-trained on it has heard the probe's test audio.
    * ``leakage_free``: let H be the 120 words of the syllable test folder. Words train = the words train folder
      without any recording of a word in H (485 files); words test = every other word recording, i.e. the words
      test folder plus the H recordings taken out of train (366 files). Syllables train = the syllables train
      folder without the syllables of words in H (1821 files); syllables test = the syllables test folder (360).
      So no probe-test recording was heard in pre-training, no word tested by the probe (in any take) is in
      pre-training, and the probe never trains on a word it is tested on.
    """

    def __init__(self, root: str | os.PathLike[str], view: str = "words", split: str = "train",
                 split_scheme: str = "reference", *, crop: int | None | str = "reference", **kwargs: Any):
        crop = view_crop(view, crop)
        super().__init__(split=split, crop=crop, **kwargs)
        self.root = Path(root)
        self.view = view
        self.split_scheme = split_scheme
        files = split_files(self.root, view, self.split, split_scheme)
        entries = []
        if view == "words":
            for i in (1, 2, 3):
                self.label_names[f"syllable_{i}"] = list(SYLLABLES)
            for path, m in files:
                word = m.group(1)
                labels: dict[str, Any] = {"word": word, "take": int(m.group(2))}
                for i in range(3):
                    labels[f"syllable_{i + 1}"] = SYLLABLES.index(word[2 * i: 2 * i + 2])
                entries.append((path, labels, path.stem))
        else:
            self.label_names.update({"syllable": list(SYLLABLES), "vowel": list(VOWELS),
                                     "consonant": list(CONSONANTS), "position": list(POSITIONS)})
            for path, m in files:
                labels = syllable_labels(m.group(4))
                labels["position"] = int(m.group(3)) - 1
                labels["word"] = m.group(1)
                entries.append((path, labels, path.stem))
        self.items = self._scan(entries)
