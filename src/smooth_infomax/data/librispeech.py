"""LibriSpeech (train-clean-100 with the CPC split and phone alignments), and the synthetic set in its layout.

Layout (``root`` is the folder that holds the subset folder, usually ``.../LibriSpeech``)::

    <root>/train_split.txt, test_split.txt     one utterance id ``<spk>-<chapter>-<utt>`` per line (required)
    <root>/converted_aligned_phones.txt        optional: ``<utt-id> p1 p2 ...``, one phone id per 10 ms frame
    <root>/phones.txt                          optional: ``<id> <name>`` per line, the phone class names
    <root>/<subset>/.../<utt>.TextGrid         optional, instead of the phone file: Praat TextGrids beside the
    <root>/alignments/.../<utt>.TextGrid       audio, or under ``alignments/`` (MFA's output layout)
    <root>/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac   (``.wav`` and ``.ogg`` are accepted too)
    <root>/<subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt    (not used)

The split, phone and phone-name files are looked up, in this order, in ``<root>``, in the subset folder, and in
``<root>/LibriSpeech100_labels_split`` (where the Greedy InfoMax instructions put them). ``root`` may also be
the subset folder itself (the folder that holds the speaker folders); the label files are then also looked for
in its parent folder.

Partial alignments: a phone file (or a set of TextGrids) that covers only some utterances is accepted with one
warning line giving the coverage per split; the other utterances get "no label" (-1) phone frames, so phone
probes and ABX use the aligned utterances (:meth:`LibriSpeechDataset.aligned_indices`) and everything else uses
all of them. A phone source that covers no utterance of either split is an error (it belongs to other audio).

The project's synthetic generator writes the same layout (wav files) with a ``factors.csv`` next to the split
files; it loads with this class as well.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .alignments import (
    FrameLabelSet,
    PhoneMap,
    coverage_line,
    files_signature,
    find_textgrids,
    load_textgrids,
    numbered_fields,
    read_phone_names,
)
from .folder import AudioDataset

log = logging.getLogger("smooth_infomax.data")

UTTERANCE_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
SPLIT_FILES = {"train": "train_split.txt", "test": "test_split.txt"}
PHONE_FILE = "converted_aligned_phones.txt"
PHONE_NAMES_FILE = "phones.txt"
N_PHONES = 41
#: the largest tolerated difference between the number of phone labels and the 10 ms frames of the audio
PHONE_TOLERANCE = 3
LABEL_DIRS = ("", "LibriSpeech100_labels_split")


class MissingSplitFile(DatasetError):
    """The CPC split files are not there (the audio may still be usable with layout ``folder``)."""


def _is_speaker_dir(path: Path) -> bool:
    """A ``<speaker>`` folder: digits, holding ``<chapter>`` folders (digits)."""
    try:
        return path.is_dir() and path.name.isdigit() and any(c.is_dir() and c.name.isdigit() for c in path.iterdir())
    except OSError:
        return False


def subset_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` that hold speaker folders (``root`` itself when it is one)."""
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    if any(_is_speaker_dir(c) for c in children):
        return [root]
    found = []
    for child in children:
        try:
            if any(_is_speaker_dir(g) for g in child.iterdir()):
                found.append(child)
        except OSError:
            continue
    return found


def find_label_file(root: Path, name: str, subset: Path | None = None) -> Path | None:
    """First existing ``name`` in root, the subset folder or ``root/LibriSpeech100_labels_split``."""
    places = [root / name]
    if subset is not None and subset != root:
        places.append(subset / name)
    places.append(root / LABEL_DIRS[1] / name)
    if subset == root:  # root is the subset folder itself: the label files sit next to it
        places += [root.parent / name, root.parent / LABEL_DIRS[1] / name]
    for p in places:
        if p.is_file():
            return p
    return None


def read_split_file(path: Path) -> list[str]:
    """Utterance ids of a split file; raises DatasetError naming the file and line for a malformed id."""
    ids = []
    for n, parts in numbered_fields(path, "split file", "restore it"):
        token = parts[0]
        for suffix in (".flac", ".wav", ".ogg"):
            token = token.removesuffix(suffix)
        if not UTTERANCE_ID.match(token):
            raise DatasetError(f"split file {path} line {n}: {token!r} is not an utterance id "
                               f"<speaker>-<chapter>-<utterance>; fix the file")
        ids.append(token)
    return ids


def speaker_of(utt_id: str) -> str:
    return utt_id.split("-", 1)[0]


@functools.lru_cache(maxsize=64)
def _warn_once(message: str) -> None:
    """Log ``message`` once per process (the train and test datasets of one corpus share one warning)."""
    log.warning("%s", message)


class PhoneFile:
    """Index of ``converted_aligned_phones.txt``: byte offset and label count per utterance; lines are parsed
    only when an item is read."""

    def __init__(self, path: Path):
        self.path = path
        self.offsets: dict[str, tuple[int, int]] = {}
        try:
            with open(path, "rb") as fh:
                pos = 0
                for line in fh:
                    head = line.split(None, 1)
                    if head:
                        ident = head[0].decode("ascii", "replace")
                        self.offsets[ident] = (pos, len(line.split()) - 1)
                    pos += len(line)
        except OSError as exc:
            raise DatasetError(f"phone file {path} cannot be read ({exc.strerror}); restore it") from None

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self.offsets

    def count(self, utt_id: str) -> int:
        return self.offsets[utt_id][1]

    def labels(self, utt_id: str, n_classes: int | None = None) -> np.ndarray:
        """The phone ids of ``utt_id``; with ``n_classes``, ids outside 0..n_classes-1 (and -1, "no label")
        raise DatasetError naming the file and the utterance."""
        pos, _ = self.offsets[utt_id]
        with open(self.path, "rb") as fh:
            fh.seek(pos)
            parts = fh.readline().split()[1:]
        try:
            ids = np.array([int(p) for p in parts], dtype=np.int64)
        except ValueError:
            raise DatasetError(f"phone file {self.path}: the line of {utt_id} holds a non-integer label; "
                               f"fix the file") from None
        if n_classes is not None:
            bad = ids[(ids < -1) | (ids >= n_classes)]
            if bad.size:
                raise DatasetError(f"phone file {self.path}: the line of {utt_id} holds phone id {int(bad[0])}, "
                                   f"outside 0..{n_classes - 1} ({n_classes} phone classes; list the names in "
                                   f"{PHONE_NAMES_FILE} for another phone set); fix the file")
        return ids


class LibriSpeechDataset(AudioDataset):
    """Utterances of a LibriSpeech-layout folder (see the module docstring for the layout).

    Labels:

    * ``speaker`` (int): speaker ids numbered in order of first appearance in ``train_split.txt``, then
      speakers seen only in ``test_split.txt`` appended; ``label_names["speaker"]`` holds the speaker ids. Both
      split files are needed so that the numbering is the same for both splits.
    * ``phones`` (LongTensor (F,), when the phone file exists): one phone id per 10 ms frame of the returned
      wave (160 samples at 16 kHz). Label ``f`` of the file describes samples ``[160 f, 160 f + 160)`` of the
      utterance, so a crop starting at sample ``s`` gets labels ``[s // 160, s // 160 + crop // 160)`` and a
      whole utterance of T samples gets ``T // 160`` labels; frames without a label (past the end of the
      alignment, or zero padding) are -1. A label list that differs from ``T // 160`` by more than 3 frames
      raises DatasetError naming the utterance. ``label_names["phones"]`` comes from ``phones.txt`` when present,
      else "0".."40".

      Without a phone file, TextGrids beside the audio or under ``<root>/alignments/`` give the labels (see
      :mod:`smooth_infomax.data.alignments`; ``phones.txt``, when present, fixes the names and ids).
      Utterances without an alignment get all -1 (see "Partial alignments" above).

    ``phones``: None loads the phone labels when they exist, True requires them, False ignores them.
    ``phone_map``: how TextGrid labels become phone names (default: CPC's 41 classes).
    ``subset``: the subset folder under ``root``; None takes ``train-clean-100`` when present, else every folder
    under ``root`` that holds speaker folders.
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train", subset: str | None = None, *,
                 phones: bool | None = None, phone_map: PhoneMap | None = None, **kwargs: Any):
        super().__init__(split=split, **kwargs)
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root} is not a folder; pass the LibriSpeech folder that holds {SPLIT_FILES['train']}")
        self.root = root
        if subset is not None:
            subs = [root / subset]
            if not subs[0].is_dir():
                raise DatasetError(f"subset folder {subs[0]} does not exist; check the subset name")
        elif (root / "train-clean-100").is_dir():
            subs = [root / "train-clean-100"]
        else:
            subs = subset_dirs(root)
            if not subs:
                raise DatasetError(f"{root} holds no LibriSpeech subset folder (<subset>/<speaker>/<chapter>/...)")
        self.subsets = subs
        label_sub = subs[0] if len(subs) == 1 else None

        split_paths = {}
        for name, fname in SPLIT_FILES.items():
            p = find_label_file(root, fname, label_sub)
            if p is None:
                raise MissingSplitFile(
                    f"split file {root / fname} does not exist; put the CPC split files train_split.txt and "
                    f"test_split.txt (see 'smooth-infomax data fetch librispeech') in {root}, or open the audio "
                    f"with layout 'folder'")
            split_paths[name] = p
        self.split_file = split_paths[self.split]
        ids = {name: read_split_file(p) for name, p in split_paths.items()}

        speakers: dict[str, int] = {}
        for name in ("train", "test"):
            for utt in ids[name]:
                speakers.setdefault(speaker_of(utt), len(speakers))
        self.label_names["speaker"] = list(speakers)

        self._split_ids = ids
        phone_path = None if phones is False else find_label_file(root, PHONE_FILE, label_sub)
        names_path = find_label_file(root, PHONE_NAMES_FILE, label_sub)
        self.phone_file: PhoneFile | FrameLabelSet | None = None
        if phone_path is not None:
            self.phone_file = PhoneFile(phone_path)
            self.label_names["phones"] = self._phone_names(names_path)
            self.phone_signature = files_signature([phone_path, *([names_path] if names_path else [])])
        elif phones is not False:
            everything = {u: p for name in ("train", "test") for u in ids[name]
                          if (p := self._audio_path(u)) is not None}
            grids = find_textgrids(root, everything)
            if grids:
                inventory = read_phone_names(names_path) if names_path is not None else None
                self.phone_file = load_textgrids(grids, phone_map, inventory=inventory)
                self.label_names["phones"] = self.phone_file.inventory
                self.phone_signature = files_signature([*grids.values(), *([names_path] if names_path else [])])
        if phones and self.phone_file is None:
            raise DatasetError(f"phone file {root / PHONE_FILE} does not exist; put converted_aligned_phones.txt "
                               f"(CPC phone alignments) in {root}, or TextGrids beside the audio or under "
                               f"{root / 'alignments'}")

        entries, missing = [], []
        for utt in ids[self.split]:
            path = self._audio_path(utt)
            if path is None:
                missing.append(utt)
                continue
            entries.append((path, {"speaker": speakers[speaker_of(utt)]}, utt))
        if missing:
            where = " or ".join(str(s) for s in subs)
            msg = (f"split file {self.split_file} lists {len(missing)} utterance(s) with no audio under {where} "
                   f"(first: {missing[0]}); check the subset folder or the split file")
            if not self.skip_bad:
                raise DatasetError(msg)
            log.warning("skipping %s", msg)
            self.skipped.extend(missing)
        self.items = self._scan(entries)
        if self.phone_file is not None:
            self._check_phones()

    def _audio_path(self, utt: str) -> Path | None:
        spk, chapter, _ = utt.split("-")
        for sub in self.subsets:
            folder = sub / spk / chapter
            for suffix in (".flac", ".wav", ".ogg"):
                p = folder / f"{utt}{suffix}"
                if p.is_file():
                    return p
        return None

    @staticmethod
    def _phone_names(path: Path | None) -> list[str]:
        if path is None:
            return [str(i) for i in range(N_PHONES)]
        return read_phone_names(path)

    def phone_coverage(self) -> dict[str, tuple[int, int]]:
        """split -> (utterances with phone labels, utterances in the split file); empty without labels."""
        if self.phone_file is None:
            return {}
        return {name: (sum(1 for u in utts if u in self.phone_file), len(utts))
                for name, utts in self._split_ids.items()}

    def _check_phones(self) -> None:
        assert self.phone_file is not None
        pf = self.phone_file
        coverage = self.phone_coverage()
        if sum(a for a, _ in coverage.values()) == 0:
            raise DatasetError(f"phone labels ({pf.path}) cover no utterance of {self.split_file} or the other "
                               f"split file; use the phone file that matches this corpus")
        if any(a < n for a, n in coverage.values()):
            _warn_once(coverage_line(str(pf.path), coverage) + "; phone probes and ABX use the aligned utterances")
        for i, it in enumerate(self.items):
            if it.key not in pf:
                continue
            frames = self.length(i) // self.hop
            have = pf.count(it.key)
            if abs(have - frames) > PHONE_TOLERANCE:
                where = pf.sources.get(it.key, pf.path) if isinstance(pf, FrameLabelSet) else pf.path
                raise DatasetError(f"utterance {it.key} ({it.path}): {have} phone labels in {where} but the audio "
                                   f"has {frames} frames of 10 ms; the alignment does not belong to this audio")

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.phone_file is not None:
            out["phone_alignments"] = sum(1 for it in self.items if it.key in self.phone_file)
            out["phone_classes"] = len(self.label_names.get("phones", []))
            out["phone_source"] = str(self.phone_file.path)
        return out
