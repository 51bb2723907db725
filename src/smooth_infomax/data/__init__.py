"""Datasets: LibriSpeech, the artificial speech dataset, the synthetic set and any folder of audio files.

:func:`open_dataset` is the one entry point the rest of the package uses; :func:`detect_layout` tells the
layouts apart. Every dataset yields :class:`~smooth_infomax.data.records.Utterance` items (mono float32 wave
of shape (1, T) at ``sample_rate``) and has ``label_names`` and ``set_epoch``. Importing this package is cheap
(torch is imported when a dataset is opened).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DatasetError, UserError

if TYPE_CHECKING:  # pragma: no cover
    from .artificial import ArtificialSpeechDataset
    from .folder import AudioDataset, FolderDataset
    from .librispeech import LibriSpeechDataset

__all__ = ["open_dataset", "detect_layout", "LAYOUTS", "AudioDataset", "FolderDataset", "LibriSpeechDataset",
           "ArtificialSpeechDataset"]

LAYOUTS = ("librispeech", "artificial", "folder", "synthetic")
_LAZY = {
    "AudioDataset": "folder",
    "FolderDataset": "folder",
    "LibriSpeechDataset": "librispeech",
    "ArtificialSpeechDataset": "artificial",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_subset_dir(folder: Path) -> bool:
    """True when ``folder`` holds LibriSpeech speaker folders: ``<digits>/<digits>/`` (speaker/chapter)."""
    try:
        for spk in folder.iterdir():
            if spk.is_dir() and spk.name.isdigit():
                return any(ch.is_dir() and ch.name.isdigit() for ch in spk.iterdir())
    except OSError:
        pass
    return False


def detect_layout(path: str | os.PathLike[str]) -> str:
    """``"artificial"``, ``"synthetic"``, ``"librispeech"`` or ``"folder"`` for a dataset path.

    * artificial: a ``reshuffledv2`` or ``split up data padded`` folder;
    * synthetic: a ``factors.csv`` file (the project's synthetic generator), in the LibriSpeech layout;
    * librispeech: ``train_split.txt`` / ``test_split.txt``, or a subset folder of speaker folders
      (``<subset>/<speaker>/<chapter>/``), or the path is such a subset folder;
    * folder: anything else (including a CSV manifest file).
    """
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p} does not exist; pass a dataset folder")
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return "folder"
        raise DatasetError(f"{p} is a file; pass a dataset folder (or a CSV manifest)")
    if (p / "reshuffledv2").is_dir() or (p / "split up data padded").is_dir():
        return "artificial"
    if (p / "factors.csv").is_file():
        return "synthetic"
    if (p / "train_split.txt").is_file() or (p / "test_split.txt").is_file():
        return "librispeech"
    if (p / "LibriSpeech100_labels_split").is_dir() or _is_subset_dir(p):
        return "librispeech"
    try:
        children = [c for c in p.iterdir() if c.is_dir()]
    except OSError:
        children = []
    if any(_is_subset_dir(c) for c in children):
        return "librispeech"
    return "folder"


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
        from .artificial import ArtificialSpeechDataset

        view = view or "words"
        if view not in ("words", "syllables"):
            raise bad_view("words or syllables")
        return ArtificialSpeechDataset(path, view=view, split=split, split_scheme=split_scheme, **common)
    if layout == "synthetic" and view == "syllables":
        from .segments import SegmentDataset

        return _call_accepting(SegmentDataset, path, split, **common)
    if view not in (None, "utterances"):
        raise bad_view("utterances or syllables" if layout == "synthetic" else "utterances")
    if layout in ("librispeech", "synthetic"):
        from .librispeech import LibriSpeechDataset

        return LibriSpeechDataset(path, split=split, **common)
    from .folder import FolderDataset

    return FolderDataset(path, split=split, **common)
