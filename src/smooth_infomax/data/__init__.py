"""Datasets: LibriSpeech, the artificial speech dataset, the synthetic set and any folder of audio files.

:func:`open_dataset` is the one entry point the rest of the package uses; :func:`detect_layout` tells the
layouts apart. Every dataset yields :class:`~smooth_infomax.data.records.Utterance` items (mono float32 wave
of shape (1, T) at ``sample_rate``) and has ``label_names`` and ``set_epoch``.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from ..errors import UserError
from .artificial import ArtificialSpeechDataset
from .compact import CompactSpeechDataset, is_compact
from .folder import AudioDataset, FolderDataset
from .layout import LAYOUTS, detect_layout
from .librispeech import LibriSpeechDataset
from .segments import SegmentDataset

__all__ = ["open_dataset", "detect_layout", "LAYOUTS", "AudioDataset", "FolderDataset", "LibriSpeechDataset",
           "ArtificialSpeechDataset", "CompactSpeechDataset", "SegmentDataset"]


def _call_accepting(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``cls`` with the keyword arguments its signature accepts (for classes written elsewhere)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return cls(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return cls(*args, **kwargs)
    return cls(*args, **{k: v for k, v in kwargs.items() if k in params})


def open_dataset(path: str | os.PathLike[str], *, split: str = "train", view: str | None = None,
                 layout: str = "auto", sample_rate: int = 16000, crop: int | None = None, random_crop: bool = False,
                 crop_grid: int = 160, seed: int = 0, split_scheme: str = "reference", skip_bad: bool = False,
                 cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """Open the ``split`` of the dataset at ``path`` as a torch Dataset of Utterances.

    view: ``utterances`` (LibriSpeech, synthetic, folder; the default there), ``words`` (artificial; its
    default) or ``syllables`` (artificial, synthetic). ``crop=None`` returns whole files (for the artificial
    words too; pass ``crop=10240`` for the reference crop). ``split_scheme`` applies to the artificial dataset
    only. ``skip_bad`` skips unreadable files with a warning instead of failing.
    """
    if split not in ("train", "test"):
        raise UserError(f"split {split!r} is not available; use 'train' or 'test'")
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in LAYOUTS:
        raise UserError(f"layout {layout!r} is unknown; use auto, {', '.join(LAYOUTS)}")
    common: dict[str, Any] = dict(sample_rate=sample_rate, crop=crop, random_crop=random_crop, crop_grid=crop_grid,
                                  seed=seed, skip_bad=skip_bad, cache_dir=cache_dir)

    def bad_view(choices: str) -> UserError:
        return UserError(f"view {view!r} is not available for the {layout} layout of {path}; use {choices}")

    if layout == "artificial":
        view = view or "words"
        if view not in ("words", "syllables"):
            raise bad_view("words or syllables")
        if is_compact(path):
            return CompactSpeechDataset(path, view=view, split=split, split_scheme=split_scheme, **common)
        return ArtificialSpeechDataset(path, view=view, split=split, split_scheme=split_scheme, **common)
    if layout == "synthetic" and view == "syllables":
        return _call_accepting(SegmentDataset, path, split, **common)
    if view not in (None, "utterances"):
        raise bad_view("utterances or syllables" if layout == "synthetic" else "utterances")
    if layout in ("librispeech", "synthetic"):
        return LibriSpeechDataset(path, split=split, **common)
    return FolderDataset(path, split=split, **common)
