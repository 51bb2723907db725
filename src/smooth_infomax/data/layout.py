"""Which layout a dataset folder has (``detect_layout``): the artificial speech dataset (or its compact copy),
the synthetic set, LibriSpeech, or any folder of audio."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DatasetError

LAYOUTS = ("librispeech", "artificial", "folder", "synthetic")


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
    if (p / "reshuffledv2").is_dir() or (p / "split up data padded").is_dir() or (p / "compact.json").is_file():
        return "artificial"  # the WAV folders, or their compact copy (data/compact.py)
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
