"""The shared dataset machinery (:class:`AudioDataset`) and the generic :class:`FolderDataset`.

Every dataset of the package is a list of audio files with per-file labels. Files are scanned once with
``soundfile.info`` (no decoding) when the dataset is built, so broken files are reported before training
starts (or skipped with a warning when ``skip_bad=True``). Items are then read on demand:

* files already at the target sample rate are read window by window (a crop never decodes the whole file);
* files that need resampling are read and resampled once, then kept in an :class:`~smooth_infomax.audio.AudioCache`
  (in memory, plus ``.npy`` files under ``cache_dir`` when given).

Cropping: ``crop=None`` returns whole files. With ``crop=N`` every item has exactly N samples: the window
starts at 0, or, with ``random_crop=True``, at a multiple of ``crop_grid`` drawn uniformly from all starts that
keep the window inside the file (0 included; the reference LibriSpeech loader never starts at 0). The draw is a
pure function of ``(seed, epoch, index)`` (a numpy Generator seeded with ``[seed, epoch, index]``), so any
worker process, resumed run or re-run sees the same crops; call :meth:`AudioDataset.set_epoch` at the start of
each epoch. Files shorter than the crop are zero-padded at the end.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..audio import AUDIO_SUFFIXES, AudioCache, crop_or_pad, info, read_audio, resampled_length
from ..errors import AudioError, DatasetError, UserError
from .alignments import files_signature, find_textgrids, load_textgrids, read_phone_names, window_labels
from .records import Utterance

log = logging.getLogger("smooth_infomax.data")

SPLITS = ("train", "test")


@dataclass
class Item:
    """One scanned file: ``frames`` and ``source_rate`` come from the file header; ``labels`` are fixed per file."""

    path: str
    frames: int
    source_rate: int
    labels: dict[str, Any] = field(default_factory=dict)
    key: str = ""


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not available; use 'train' or 'test'")
    return split


def list_audio_files(root: Path) -> list[Path]:
    """Audio files (wav, flac, ogg) under ``root``, recursive, sorted by path; hidden folders are skipped."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES:
                found.append(Path(dirpath) / name)
    return sorted(found)


class AudioDataset(torch.utils.data.Dataset):
    """Base class: a list of :class:`Item` s, read, resampled, cropped and padded into :class:`Utterance` s.

    Subclasses fill ``self.items`` (via :meth:`_scan`) and ``self.label_names`` (task -> class names, for the
    integer label tasks) and may add per-item labels that depend on the crop in :meth:`_window_labels`.
    """

    def __init__(self, *, split: str = "train", sample_rate: int = 16000, crop: int | None = None,
                 random_crop: bool = False, crop_grid: int = 160, seed: int = 0, skip_bad: bool = False,
                 cache_dir: str | os.PathLike[str] | None = None, cache_bytes: int = 512 * 2**20):
        self.split = check_split(split)
        if sample_rate <= 0:
            raise UserError(f"sample_rate must be positive, got {sample_rate}")
        if crop is not None and crop <= 0:
            raise UserError(f"crop must be a positive number of samples or None, got {crop}")
        if crop_grid < 1:
            raise UserError(f"crop_grid must be >= 1, got {crop_grid}")
        self.sample_rate = int(sample_rate)
        self.crop = None if crop is None else int(crop)
        self.random_crop = bool(random_crop)
        self.crop_grid = int(crop_grid)
        self.seed = int(seed)
        self.epoch = 0
        self.skip_bad = bool(skip_bad)
        self.items: list[Item] = []
        self.skipped: list[str] = []
        self.label_names: dict[str, list[str]] = {}
        self.cache = AudioCache(max_bytes=cache_bytes, cache_dir=cache_dir)
        #: frame-level phone labels by item key (a CPC phone file or TextGrids), or None
        self.phone_file: Any = None
        #: names, sizes and times of the phone label files (part of the dataset's identity for feature caches)
        self.phone_signature = ""

    # -- scanning ---------------------------------------------------------------------------------------

    def _scan(self, entries: Iterable[tuple[Path | str, dict[str, Any], str]]) -> list[Item]:
        """Read the header of each ``(path, labels, key)``; unreadable files raise AudioError or, with
        ``skip_bad``, are skipped with one warning line each (and listed in ``self.skipped``)."""
        items = []
        for path, labels, key in entries:
            try:
                meta = info(path)
            except AudioError as exc:
                if not self.skip_bad:
                    raise
                log.warning("skipping %s", exc)
                self.skipped.append(str(path))
                continue
            items.append(Item(str(path), meta.frames, meta.sample_rate, labels, key))
        return items

    # -- crops -------------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of ``epoch`` (crops depend only on seed, epoch and index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def length(self, index: int) -> int:
        """Samples of item ``index`` at ``sample_rate`` before cropping."""
        item = self.items[index]
        return resampled_length(item.frames, item.source_rate, self.sample_rate)

    def crop_offset(self, index: int, length: int | None = None) -> int:
        """First sample of the crop of item ``index`` in the current epoch (0 unless ``random_crop``)."""
        if self.crop is None or not self.random_crop:
            return 0
        n = self.length(index) if length is None else length
        slots = (n - self.crop) // self.crop_grid
        if slots <= 0:
            return 0
        rng = np.random.default_rng([self.seed % 2**63, self.epoch, int(index)])
        return int(rng.integers(0, slots + 1)) * self.crop_grid

    # -- items -------------------------------------------------------------------------------------------

    def _samples(self, item: Item, offset: int, count: int | None) -> np.ndarray:
        if item.source_rate == self.sample_rate:
            x, _ = read_audio(item.path, sample_rate=self.sample_rate, start=offset, frames=count)
            return x
        whole = self.cache.get(item.path, self.sample_rate)
        return whole[offset:] if count is None else whole[offset: offset + count]

    # -- frame-level phones ----------------------------------------------------------------------------

    @property
    def hop(self) -> int:
        """Samples per 10 ms phone frame at ``sample_rate`` (160 at 16 kHz)."""
        return max(1, self.sample_rate // 100)

    def aligned_indices(self) -> list[int]:
        """Indices of the items that have phone labels (none without a phone source)."""
        if self.phone_file is None:
            return []
        return [i for i, it in enumerate(self.items) if it.key in self.phone_file]

    def _window_labels(self, index: int, offset: int, length: int) -> dict[str, Any]:
        """Labels that depend on the returned window: frame-level ``phones`` (LongTensor (F,), one id per
        10 ms frame, -1 = no label) when the dataset has a phone source; nothing otherwise."""
        if self.phone_file is None:
            return {}
        key = self.items[index].key
        if key in self.phone_file:
            labels = self.phone_file.labels(key, len(self.label_names.get("phones", [])) or None)
        else:  # partial alignments: an item without labels gets "no label" frames
            labels = np.zeros(0, dtype=np.int64)
        return {"phones": torch.from_numpy(window_labels(labels, offset, length, self.hop, self.length(index)))}

    def __getitem__(self, index: int) -> Utterance:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        item = self.items[index]
        n = self.length(index)
        offset = self.crop_offset(index, n)
        want = n if self.crop is None else self.crop
        x = crop_or_pad(self._samples(item, offset, want), want)
        labels = dict(item.labels)
        labels.update(self._window_labels(index, offset, want))
        wave = torch.from_numpy(np.array(x, dtype=np.float32)).view(1, -1)
        return Utterance(wave=wave, sample_rate=self.sample_rate, path=item.path, labels=labels, offset=offset)

    # -- description ---------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts for ``smooth-infomax data info``: files, hours, sample rates and label class counts."""
        seconds = sum(it.frames / it.source_rate for it in self.items)
        rates = Counter(it.source_rate for it in self.items)
        labels: dict[str, dict[str, int]] = {}
        for task, names in self.label_names.items():
            counts = Counter(it.labels.get(task) for it in self.items if isinstance(it.labels.get(task), int))
            if not counts:
                continue
            labels[task] = {(names[k] if 0 <= k < len(names) else str(k)): v for k, v in sorted(counts.items())}
        out: dict[str, Any] = {
            "files": len(self.items),
            "hours": round(seconds / 3600.0, 4),
            "sample_rates": {str(k): v for k, v in sorted(rates.items())},
            "labels": labels,
        }
        if "speaker" in self.label_names:
            out["speakers"] = len({it.labels.get("speaker") for it in self.items})
        if self.skipped:
            out["skipped"] = list(self.skipped)
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split!r}, items={len(self)}, sample_rate={self.sample_rate}, "
                f"crop={self.crop}, random_crop={self.random_crop})")


# ------------------------------------------------------------------------------------------------------
# Any folder of audio files, with an optional CSV manifest
# ------------------------------------------------------------------------------------------------------


def _column_kind(values: Sequence[str]) -> str:
    filled = [v for v in values if v != ""]
    if not filled:
        return "str"
    try:
        [int(v) for v in filled]
        return "int"
    except ValueError:
        pass
    try:
        [float(v) for v in filled]
        return "float"
    except ValueError:
        return "str"


class FolderDataset(AudioDataset):
    """Any folder of audio files (``.wav``, ``.flac``, ``.ogg``; recursive, sorted by path).

    Without a manifest there are no labels and **every split holds every file** (train == test): use it for
    pre-training only, or add a manifest with a ``split`` column.

    ``manifest``: a CSV file with a header row ``path,<label columns...>``; paths are relative to the manifest's
    folder (absolute paths also work). When ``manifest`` is None and ``<root>/manifest.csv`` exists, it is used;
    ``root`` may also be the CSV file itself. Label columns:

    * all-integer columns stay integers (class names "0".."max" in ``label_names``);
    * other text columns become integer classes numbered in sorted order of their names (``label_names``);
    * all-number columns with decimals stay floats (metadata, no ``label_names``);
    * an empty cell is -1 ("no label") in class columns.

    A ``split`` column (values ``train`` / ``test``) selects the rows of each split; without it every row is in
    every split. Missing audio files raise DatasetError naming the manifest and the file.

    Phone alignments: Praat TextGrids beside the audio (``a/b.TextGrid`` next to ``a/b.wav``) or under
    ``<root>/alignments/`` in MFA's output layout (``alignments/a/b.TextGrid``) give frame-level ``phones``
    labels (see :mod:`smooth_infomax.data.alignments`); ``<root>/phones.txt`` (``<id> <name>``), when present,
    fixes the phone ids. Files without a TextGrid get "no label" (-1) frames. ``phone_map`` sets how labels
    become phone names.
    """

    def __init__(self, root: str | os.PathLike[str], manifest: str | os.PathLike[str] | None = None,
                 split: str = "train", *, phone_map: Any = None, **kwargs: Any):
        super().__init__(split=split, **kwargs)
        root = Path(root)
        if root.is_file() and root.suffix.lower() == ".csv" and manifest is None:
            manifest, root = root, root.parent
        if not root.is_dir():
            raise DatasetError(f"{root} is not a folder; pass a folder of audio files (or a CSV manifest)")
        if manifest is None and (root / "manifest.csv").is_file():
            manifest = root / "manifest.csv"
        self.root = root
        self.manifest = None if manifest is None else Path(manifest)
        self.has_split_column = False
        if self.manifest is None:
            files = list_audio_files(root)
            if not files:
                raise DatasetError(f"{root} holds no .wav, .flac or .ogg files")
            self.items = self._scan((p, {}, str(p.relative_to(root))) for p in files)
        else:
            self.items = self._scan(self._read_manifest(self.manifest))
        self._load_textgrids(phone_map)

    def _load_textgrids(self, phone_map: Any) -> None:
        """TextGrids of every audio file under the root (both splits, so that both get the same inventory)."""
        audio = {str(p.relative_to(self.root)): p for p in list_audio_files(self.root)}
        for it in self.items:
            audio.setdefault(it.key, Path(it.path))
        grids = find_textgrids(self.root, audio, relative={k: k for k in audio})
        if not grids:
            return
        names = self.root / "phones.txt"
        self.phone_file = load_textgrids(grids, phone_map,
                                         inventory=read_phone_names(names) if names.is_file() else None)
        self.phone_signature = files_signature([*grids.values(), *([names] if names.is_file() else [])])
        self.label_names["phones"] = self.phone_file.inventory
        by_path = {str(Path(p).resolve()): k for k, p in audio.items()}
        for it in self.items:  # items keyed by manifest path: look their TextGrid up by the audio file
            k = by_path.get(str(Path(it.path).resolve()))
            if k is not None and k != it.key and k in self.phone_file:
                self.phone_file.alias(it.key, k)
        aligned, total = sum(1 for it in self.items if it.key in self.phone_file), len(self.items)
        if aligned < total:
            log.warning("phone labels (%s) cover %d of %d files of %s (%.1f%%); phone probes and ABX use the "
                        "aligned files", self.phone_file.path, aligned, total,
                        self.split if self.has_split_column else "the folder", 100.0 * aligned / max(1, total))

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.phone_file is not None:
            out["phone_alignments"] = len(self.aligned_indices())
            out["phone_classes"] = len(self.label_names.get("phones", []))
            out["phone_source"] = str(self.phone_file.path)
        return out

    def _read_manifest(self, manifest: Path) -> list[tuple[Path, dict[str, Any], str]]:
        try:
            with open(manifest, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                rows = list(reader)
                columns = [(c or "").strip() for c in (reader.fieldnames or [])]
        except FileNotFoundError:
            raise DatasetError(f"manifest {manifest} does not exist; pass an existing CSV file") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"manifest {manifest} cannot be read as CSV ({exc}); fix the file") from None
        if "path" not in columns:
            raise DatasetError(f"manifest {manifest} needs a 'path' column in its header row (found: "
                               f"{', '.join(columns) or 'nothing'})")
        for line, row in enumerate(rows, start=2):
            if None in row:  # csv.DictReader files surplus cells under the key None
                raise DatasetError(f"manifest {manifest} line {line} has more cells than the header row "
                                   f"({len(columns)} columns); fix the row or quote cells that hold commas")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]
        self.has_split_column = "split" in columns
        label_cols = [c for c in columns if c not in ("path", "split") and c]
        kinds = {c: _column_kind([r.get(c, "") for r in rows]) for c in label_cols}
        for c in label_cols:
            if kinds[c] == "str":
                self.label_names[c] = sorted({r.get(c, "") for r in rows} - {""})
            elif kinds[c] == "int":
                top = max((int(r[c]) for r in rows if r.get(c, "") != ""), default=-1)
                self.label_names[c] = [str(i) for i in range(top + 1)]
        index = {c: {name: i for i, name in enumerate(self.label_names[c])} for c in label_cols if kinds[c] == "str"}
        base = manifest.parent
        entries, missing = [], []
        for line, row in enumerate(rows, start=2):
            if self.has_split_column:
                if row.get("split") not in SPLITS:
                    raise DatasetError(f"manifest {manifest} line {line}: split must be train or test, "
                                       f"got {row.get('split')!r}")
                if row["split"] != self.split:
                    continue
            if not row.get("path"):
                raise DatasetError(f"manifest {manifest} line {line} has an empty path")
            path = Path(row["path"])
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                missing.append(row["path"])
                continue
            labels: dict[str, Any] = {}
            for c in label_cols:
                v = row.get(c, "")
                if kinds[c] == "str":
                    labels[c] = index[c][v] if v else -1
                elif kinds[c] == "int":
                    labels[c] = int(v) if v else -1
                else:
                    labels[c] = float(v) if v else float("nan")
            entries.append((path, labels, row["path"]))
        if missing:
            msg = (f"manifest {manifest} lists {len(missing)} file(s) that do not exist (first: {missing[0]}); "
                   f"paths are relative to {base}")
            if not self.skip_bad:
                raise DatasetError(msg)
            for m in missing:
                log.warning("skipping %s: listed in %s but missing", m, manifest)
            self.skipped.extend(missing)
        return entries
