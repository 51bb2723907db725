"""A compact copy of the artificial speech dataset: int16 arrays at 16 kHz, readable without soundfile / soxr.

The full dataset is 125 MB of 44.1 / 22.05 kHz WAV; what training, probes, decoders and ICS read of it is
the first 10240 samples of every word at 16 kHz and the whole syllables (8821 samples at 16 kHz). The
compact copy holds exactly that, resampled once by :mod:`smooth_infomax.audio` (soxr HQ) and rounded to int16,
so it travels where the full dataset does not (a 64 MiB carry to a GPU machine) and is read by numpy alone.

Layout of the folder::

    <root>/compact.json     format, sample rate, per view the items (folder/name, length, original length,
                            labels), the class names, and for each split scheme the items of each split
    <root>/audio.npz        one int16 array per view, (N, L): item i is row i, zero-padded after its length

:func:`write_compact` makes the copy from the full dataset; :class:`CompactSpeechDataset` reads it with the
labels, splits (``reference`` and ``leakage_free``, taken from the full dataset when the copy was made) and
crop rules of :class:`~smooth_infomax.data.artificial.ArtificialSpeechDataset`. A word can be cropped to at
most the stored samples, from its start (random crops and whole words need the full dataset).
Values differ from the full dataset's by the int16 rounding only (at most 1.6e-5).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import atomic_write_json
from ..errors import DatasetError, UserError
from .artificial import SPLIT_SCHEMES, VIEWS, ArtificialSpeechDataset, split_files, view_crop
from .folder import AudioDataset, Item

FORMAT = "smooth-infomax-compact-artificial-speech"
VERSION = 1
META = "compact.json"
ARRAYS = "audio.npz"
SAMPLE_RATE = 16000
SCALE = 32767.0
#: samples kept of every word (the reference crop); syllables are kept whole
WORD_SAMPLES = 10240


def is_compact(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder written by :func:`write_compact`."""
    return (Path(path) / META).is_file()


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * SCALE), -32768, 32767).astype(np.int16)


def write_compact(source: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  word_samples: int = WORD_SAMPLES, log: Any = print) -> dict[str, Any]:
    """Write the compact copy of the artificial speech dataset at ``source`` into the folder ``out``.

    Returns a summary ``{"items": {view: n}, "bytes": size of the folder}``. Raises UserError when ``out``
    holds something else than a compact copy (it is overwritten only then).
    """
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise UserError(f"--out {out} is the dataset itself; pass another folder for the compact copy")
    if out.exists() and any(out.iterdir()) and not is_compact(out):
        raise UserError(f"--out {out} exists and is not a compact dataset copy; pass an empty or new folder")
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "source": str(source), "sample_rate": SAMPLE_RATE,
                            "word_samples": int(word_samples), "views": {}, "label_names": {}, "splits": {}}
    arrays: dict[str, np.ndarray] = {}
    for view in VIEWS:
        keep = int(word_samples) if view == "words" else None
        rows, items = [], []
        for split in ("train", "test"):
            ds = ArtificialSpeechDataset(source, view=view, split=split, split_scheme="reference", crop=None,
                                         sample_rate=SAMPLE_RATE)
            meta["label_names"][view] = ds.label_names
            for i, item in enumerate(ds.items):
                wave = ds[i].wave.numpy().reshape(-1)
                rows.append(_to_int16(wave if keep is None else wave[:keep]))
                items.append({"key": _item_key(source, view, item.path), "length": int(rows[-1].shape[0]),
                              "original_length": int(wave.shape[0]), "labels": item.labels})
            log(f"{view} {split}: {len(ds)} items")
        width = max((r.shape[0] for r in rows), default=0)
        block = np.zeros((len(rows), width), np.int16)
        for i, r in enumerate(rows):
            block[i, : r.shape[0]] = r
        arrays[view] = block
        meta["views"][view] = items
    for scheme in SPLIT_SCHEMES:
        meta["splits"][scheme] = {view: {split: [_item_key(source, view, str(p))
                                                 for p, _ in split_files(source, view, split, scheme)]
                                         for split in ("train", "test")} for view in VIEWS}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{ARRAYS}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out / ARRAYS)
    atomic_write_json(out / META, meta)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    return {"items": {v: len(meta["views"][v]) for v in VIEWS}, "bytes": size}


def _item_key(root: Path, view: str, path: str) -> str:
    """``<view folder>/<split folder>/<file>`` of a dataset file: unique (test and train reuse file names)."""
    return Path(path).relative_to(root).as_posix()


class _Store:
    """The parsed ``compact.json`` and the int16 array of one view of a compact folder (loaded once per dataset)."""

    def __init__(self, root: Path, view: str):
        try:
            meta = json.loads((root / META).read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{root / META} cannot be read as JSON ({exc}); write the copy again with "
                               f"'smooth-infomax reproduce compact'") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise DatasetError(f"{root / META} is not a compact artificial speech copy of version {VERSION}; "
                               f"write it again with 'smooth-infomax reproduce compact'")
        try:
            with np.load(root / ARRAYS, allow_pickle=False) as z:
                self.audio = z[view]
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(f"{root / ARRAYS} is missing or damaged ({exc}); write the copy again with "
                               f"'smooth-infomax reproduce compact'") from None
        self.meta = meta


class CompactSpeechDataset(AudioDataset):
    """Words or syllables of a compact copy; the same items, labels and splits as the full dataset's
    :class:`~smooth_infomax.data.artificial.ArtificialSpeechDataset` (see there for the labels and schemes).

    ``crop="reference"`` (the default): words cut to their first 10240 samples, syllables whole.
    """

    def __init__(self, root: str | os.PathLike[str], view: str = "words", split: str = "train",
                 split_scheme: str = "reference", *, crop: int | None | str = "reference", sample_rate: int = 16000,
                 random_crop: bool = False, **kwargs: Any):
        if split_scheme not in SPLIT_SCHEMES:
            raise UserError(f"split_scheme {split_scheme!r} is unknown; use reference or leakage_free")
        crop = view_crop(view, crop)
        root = Path(root)
        store = _Store(root, view)
        if int(sample_rate) != int(store.meta["sample_rate"]):
            raise UserError(f"{root} is a compact copy at {store.meta['sample_rate']} Hz; data.sample_rate "
                            f"{sample_rate} needs the full dataset (or a copy at that rate)")
        super().__init__(split=split, crop=crop, sample_rate=sample_rate, random_crop=random_crop, **kwargs)
        self.root, self.view, self.split_scheme = root, view, split_scheme
        entries = store.meta["views"][view]
        if view == "words":
            kept = int(store.meta["word_samples"])
            cut = any(e["original_length"] > e["length"] for e in entries)
            if cut and (crop is None or crop > kept or random_crop):
                raise UserError(f"{root} holds the first {kept} samples of every word only; data.crop "
                                f"{crop}{' with random_crop' if random_crop else ''} needs the full dataset "
                                f"(use crop <= {kept} and random_crop false, or point data.path at the WAV folders)")
        self.label_names = {k: list(v) for k, v in store.meta["label_names"][view].items()}
        row_of = {e["key"]: i for i, e in enumerate(entries)}
        self._rows: dict[str, int] = {}  # item path -> row of the view's array
        self._audio = store.audio
        self.items = []
        for key in store.meta["splits"][split_scheme][view][self.split]:
            if key not in row_of:
                raise DatasetError(f"{root / META}: split {split_scheme}/{view}/{self.split} names {key}, which "
                                   f"the copy does not hold; write the copy again")
            e = entries[row_of[key]]
            path = str(root / key)
            self._rows[path] = row_of[key]
            self.items.append(Item(path, int(e["length"]), int(sample_rate), dict(e["labels"]), Path(key).stem))

    def _samples(self, item: Item, offset: int, count: int | None) -> np.ndarray:
        row = self._audio[self._rows[item.path], : item.frames]
        piece = row[offset:] if count is None else row[offset: offset + count]
        return piece.astype(np.float32) / np.float32(SCALE)


__all__ = ["CompactSpeechDataset", "write_compact", "is_compact", "WORD_SAMPLES"]
