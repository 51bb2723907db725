"""The "syllables" view of a synthetic dataset: one item per syllable, cut with the frame spans of factors.csv.

A dataset made by :func:`smooth_infomax.data.synth.generate` lists, for every word, the 10 ms frame span
``[start_frame_k, end_frame_k)`` of each syllable ``k = 1, 2, 3`` in ``factors.csv``. :class:`SegmentDataset`
yields one :class:`~smooth_infomax.data.records.Utterance` per syllable, the counterpart of the padded
single-syllable files of the paper's artificial speech dataset:

* ``wave`` (1, L) float32: the syllable's samples, **centred** in ``pad_to`` samples of zeros (``pad_to - n``
  zeros split as ``(pad_to - n) // 2`` in front and the rest behind, like the paper's padded syllables) or,
  when longer than ``pad_to``, the centre ``pad_to`` samples. The default ``pad_to`` is 0.55 s (8800 samples at
  16 kHz, 55 frames), the syllable length of the Smooth InfoMax thesis; generated syllables last 0.13-0.42 s.
  With ``crop=N`` a window of N samples is then taken from that fixed-length item (its start is 0, or with
  ``random_crop`` a multiple of ``crop_grid`` drawn from ``(seed, epoch, index)``), zero-padded if N > pad_to.
* ``labels``: ``syllable`` (ba 0, bi 1, bu 2, da 3, di 4, du 5, ga 6, gi 7, gu 8), ``vowel`` (a 0, i 1, u 2),
  ``consonant`` (b 0, d 1, g 2), ``position`` (0, 1, 2 = first, second, third syllable of the word),
  ``speaker`` (index of the speaker id in sorted order over the whole factors.csv, so both splits share it;
  ``label_names["speaker"]`` holds the ids and ``speaker_voices`` the espeak voice of each), ``word`` (str).
* ``offset``: the sample of the file (at ``sample_rate``) that is the first real, non-padding sample of the item.

Audio is read with soundfile; files at another rate are resampled with soxr (HQ) to ``sample_rate``, and every
whole file read is kept in memory (the synthetic sets are small) unless ``cache=False``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import resample, soundfile_module
from ..errors import AudioError, DatasetError, UserError
from .records import Utterance
from .synth import CONSONANTS, SUBSET, SYLLABLES, VOWELS

#: the default item length in seconds (``pad_to`` = round(PAD_SECONDS * sample_rate))
PAD_SECONDS = 0.55
FACTORS_FILE = "factors.csv"
_REQUIRED = ["utt_id", "split", "speaker", "word"] + [
    f"{name}_{k}" for k in (1, 2, 3) for name in ("consonant", "vowel", "syllable", "start_frame", "end_frame")]
_SPLITS = ("train", "test", "all")


class SegmentDataset(torch.utils.data.Dataset):
    """One item per syllable of a synthetic CVCVCV dataset (see the module docstring).

    ``root``: the dataset folder (holding ``factors.csv`` and ``train-clean-100/``) or the factors.csv file.
    ``split``: ``train``, ``test`` (the ``split`` column of factors.csv) or ``all``.
    ``pad_to``: samples per item at ``sample_rate`` (default 0.55 s); ``crop``: optional window of that item.
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train", *, sample_rate: int = 16000,
                 crop: int | None = None, pad_to: int | None = None, random_crop: bool = False,
                 crop_grid: int = 160, seed: int = 0, cache: bool = True):
        if split not in _SPLITS:
            raise UserError(f"split {split!r} is not available for syllables; use 'train', 'test' or 'all'")
        if int(sample_rate) != sample_rate or sample_rate <= 0 or sample_rate % 100:
            raise UserError(f"sample_rate must be a positive multiple of 100 Hz, got {sample_rate}")
        if crop is not None and crop <= 0:
            raise UserError(f"crop must be a positive number of samples or None, got {crop}")
        if pad_to is not None and pad_to <= 0:
            raise UserError(f"pad_to must be a positive number of samples or None, got {pad_to}")
        if crop_grid < 1:
            raise UserError(f"crop_grid must be >= 1, got {crop_grid}")
        root = Path(root)
        factors = root if root.suffix.lower() == ".csv" and root.is_file() else root / FACTORS_FILE
        self.root = factors.parent
        self.factors_path = factors
        self.split = split
        self.sample_rate = int(sample_rate)
        self.pad_to = int(round(PAD_SECONDS * self.sample_rate)) if pad_to is None else int(pad_to)
        self.crop = None if crop is None else int(crop)
        self.random_crop = bool(random_crop)
        self.crop_grid = int(crop_grid)
        self.seed = int(seed)
        self.epoch = 0
        self.cache_enabled = bool(cache)
        self._cache: dict[str, np.ndarray] = {}

        rows = self._read_factors(factors)
        speakers = sorted({r["speaker"] for r in rows}, key=lambda s: (len(s), s))
        voices = {r["speaker"]: r.get("voice", "") for r in rows}
        self.speaker_voices = [voices[s] for s in speakers]
        self.label_names: dict[str, list[str]] = {
            "syllable": list(SYLLABLES),
            "vowel": list(VOWELS),
            "consonant": list(CONSONANTS),
            "position": ["1", "2", "3"],
            "speaker": speakers,
        }
        speaker_index = {s: i for i, s in enumerate(speakers)}
        chosen = [r for r in rows if split == "all" or r["split"] == split]
        if not chosen:
            raise DatasetError(f"{factors} has no utterances in split {split!r}; generate more words or use "
                               f"another split")
        # items: (path, first sample, end sample, labels) with samples at self.sample_rate
        self.items: list[tuple[str, int, int, dict[str, Any]]] = []
        hop = self.sample_rate // 100
        missing = []
        for r in chosen:
            path = self._audio_path(r["utt_id"])
            if path is None:
                missing.append(r["utt_id"])
                continue
            for k in (1, 2, 3):
                c, v = r[f"consonant_{k}"], r[f"vowel_{k}"]
                labels = {"syllable": SYLLABLES.index(c + v), "vowel": VOWELS.index(v),
                          "consonant": CONSONANTS.index(c), "position": k - 1,
                          "speaker": speaker_index[r["speaker"]], "word": r["word"]}
                self.items.append((str(path), int(r[f"start_frame_{k}"]) * hop, int(r[f"end_frame_{k}"]) * hop,
                                   labels))
        if missing:
            raise DatasetError(f"{factors} lists {len(missing)} utterance(s) without audio under "
                               f"{self.root / SUBSET} (first: {missing[0]}); regenerate the dataset")

    # -- reading ---------------------------------------------------------------------------------------------

    @staticmethod
    def _read_factors(path: Path) -> list[dict[str, str]]:
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
                columns = [(c or "").strip() for c in (reader.fieldnames or [])]
        except FileNotFoundError:
            raise DatasetError(f"{path} does not exist; point to a folder made by 'smooth-infomax data synth' "
                               f"(smooth_infomax.data.synth.generate)") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"{path} cannot be read as CSV ({type(exc).__name__}); regenerate it") from None
        absent = [c for c in _REQUIRED if c not in columns]
        if absent:
            raise DatasetError(f"{path} lacks the column(s) {', '.join(absent)}; regenerate the dataset")
        if not rows:
            raise DatasetError(f"{path} has no rows; regenerate the dataset")
        for line, r in enumerate(rows, start=2):
            where = f"{path} line {line}"
            if r["split"] not in ("train", "test"):
                raise DatasetError(f"{where}: split must be train or test, got {r['split']!r}")
            if not r["speaker"] or not r["utt_id"]:
                raise DatasetError(f"{where}: empty utt_id or speaker")
            last = 0
            for k in (1, 2, 3):
                c, v, s = r[f"consonant_{k}"], r[f"vowel_{k}"], r[f"syllable_{k}"]
                if c not in CONSONANTS or v not in VOWELS or s != c + v:
                    raise DatasetError(f"{where}: syllable {k} is {c!r} + {v!r} = {s!r}, expected one of "
                                       f"{', '.join(SYLLABLES)}")
                try:
                    a, b = int(r[f"start_frame_{k}"]), int(r[f"end_frame_{k}"])
                except ValueError:
                    raise DatasetError(f"{where}: frames of syllable {k} are not integers") from None
                if not last <= a < b:
                    raise DatasetError(f"{where}: syllable {k} spans frames [{a}, {b}), which is empty or "
                                       f"overlaps the previous syllable")
                last = b
        return rows

    def _audio_path(self, utt_id: str) -> Path | None:
        parts = utt_id.split("-")
        if len(parts) != 3:
            raise DatasetError(f"{self.factors_path}: utterance id {utt_id!r} is not <speaker>-<chapter>-<utt>")
        folder = self.root / SUBSET / parts[0] / parts[1]
        for suffix in (".wav", ".flac"):
            p = folder / f"{utt_id}{suffix}"
            if p.is_file():
                return p
        return None

    def _whole(self, path: str) -> np.ndarray:
        x = self._cache.get(path)
        if x is not None:
            return x
        try:
            data, rate = soundfile_module(path).read(path, dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a broken file
            raise AudioError(f"{path}: cannot be read ({' '.join(str(exc).split())}); regenerate the dataset") \
                from None
        x = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
        if rate != self.sample_rate:
            x = resample(x, rate, self.sample_rate)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.cache_enabled:
            self._cache[path] = x
        return x

    # -- items -----------------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of ``epoch`` (only matters with ``crop`` and ``random_crop``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def item_length(self) -> int:
        """Samples in every item: ``crop`` when given, else ``pad_to``."""
        return self.pad_to if self.crop is None else self.crop

    def _crop_start(self, index: int) -> int:
        if self.crop is None or not self.random_crop:
            return 0
        slots = (self.pad_to - self.crop) // self.crop_grid
        if slots <= 0:
            return 0
        rng = np.random.default_rng([self.seed % 2**63, self.epoch, int(index)])
        return int(rng.integers(0, slots + 1)) * self.crop_grid

    def __getitem__(self, index: int) -> Utterance:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        path, a, b, labels = self.items[index]
        whole = self._whole(path)
        seg = whole[a: min(b, len(whole))]
        n, size = len(seg), self.pad_to
        fixed = np.zeros(size, np.float32)
        if n <= size:
            left = (size - n) // 2
            fixed[left: left + n] = seg
            base = a - left  # fixed[j] is file sample base + j inside the syllable
        else:
            cut = (n - size) // 2
            fixed[:] = seg[cut: cut + size]
            base = a + cut
        start = self._crop_start(index)
        if self.crop is not None:
            window = np.zeros(self.crop, np.float32)
            piece = fixed[start: start + self.crop]
            window[: len(piece)] = piece
            fixed = window
        offset = max(a, base + start)
        wave = torch.from_numpy(fixed).view(1, -1)
        return Utterance(wave=wave, sample_rate=self.sample_rate, path=path, labels=dict(labels), offset=int(offset))

    def summary(self) -> dict[str, Any]:
        """Item count, item length and class counts per label task."""
        counts: dict[str, dict[str, int]] = {}
        for task, names in self.label_names.items():
            tally = [0] * len(names)
            for _, _, _, labels in self.items:
                tally[labels[task]] += 1
            counts[task] = dict(zip(names, tally))
        return {"items": len(self), "samples_per_item": self.item_length, "sample_rate": self.sample_rate,
                "labels": counts}

    def __repr__(self) -> str:
        return (f"SegmentDataset(root={str(self.root)!r}, split={self.split!r}, items={len(self)}, "
                f"sample_rate={self.sample_rate}, pad_to={self.pad_to}, crop={self.crop})")
