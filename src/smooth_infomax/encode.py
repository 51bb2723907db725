"""``smooth-infomax encode``: features of audio files from a feature source, saved as ``.npz``.

For every input file the archive holds one array per output of the source, named ``<file>/<output>`` with
shape (T_m, C_m); for a single input file the names are just ``<output>``. Audio is read at the source's sample
rate (resampled once), mixed to mono; ``--max-seconds`` reads only the beginning of very long files. Features
come from :func:`smooth_infomax.features.extract_features` (``pool="none"``: every frame, each file exactly as
encoded alone), with ``--run RUN`` or any ``--model SOURCE``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .audio import read_audio
from .checkpoint import atomic_write_bytes
from .data.records import Utterance
from .errors import UserError
from .features import as_source, extract_features
from .sources.resolve import add_source_arguments, source_from_args

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def list_audio(path: Path) -> list[Path]:
    """``path`` itself (a file) or the audio files under it (a folder, recursive, sorted)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise UserError(f"{path} holds no .wav, .flac or .ogg files")
        return files
    raise UserError(f"{path} does not exist; pass an audio file or a folder of audio files")


class AudioFiles(torch.utils.data.Dataset):
    """Audio files as a dataset of :class:`~smooth_infomax.data.records.Utterance` (mono, at ``sample_rate``,
    at most ``max_seconds`` from the start); read on access. AudioError names an unreadable file."""

    def __init__(self, files: Sequence[Path], sample_rate: int, max_seconds: Optional[float] = None):
        self.files = [Path(f) for f in files]
        self.sample_rate = int(sample_rate)
        self.frames = None if max_seconds is None else int(max_seconds * self.sample_rate)
        self.label_names: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Utterance:
        path = self.files[index]
        wave, _ = read_audio(path, sample_rate=self.sample_rate, frames=self.frames)
        return Utterance(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).view(1, -1),
                         self.sample_rate, str(path))


def encode_files(source: Any, files: Sequence[Path], *, mode: str = "mean", max_seconds: Optional[float] = None,
                 device: str = "cpu", batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """Encode audio files; returns per file ``{output_name: (T_m, C_m) float32}``."""
    source = as_source(source)
    fs = extract_features(source, AudioFiles(files, int(source.sample_rate), max_seconds), mode=mode, pool="none",
                          batch_size=batch_size, device=device)
    return [{name: fs.features[m][i] for m, name in enumerate(fs.names)} for i in range(len(files))]


def encode_file(source: Any, path: Path, *, mode: str = "mean", max_seconds: Optional[float] = None,
                device: str = "cpu") -> dict[str, np.ndarray]:
    """Encode one file; returns ``{output_name: np.ndarray (T_m, C_m)}``. Raises a UserError naming the file."""
    return encode_files(source, [path], mode=mode, max_seconds=max_seconds, device=device)[0]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("encode", help="encode audio files with a trained encoder into an .npz archive")
    add_source_arguments(p)
    p.add_argument("--input", required=True, help="an audio file or a folder of audio files")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--mode", choices=["mean", "sample"], default="mean", help="pass means or posterior samples")
    p.add_argument("--max-seconds", type=float, default=None, help="read at most this many seconds of each file")
    p.set_defaults(func=_cmd_encode)


def _cmd_encode(args: Any) -> int:
    seconds = args.max_seconds
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"--max-seconds must be a positive number of seconds, got {seconds}")
    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a folder; pass the .npz file to write, "
                        f"e.g. {Path(args.out) / 'features.npz'}")
    source = source_from_args(args)
    root = Path(args.input)
    files = list_audio(root)
    arrays: dict[str, Any] = {}
    for f, feats in zip(files, encode_files(source, files, mode=args.mode, max_seconds=seconds, device=args.device)):
        prefix = "" if root.is_file() else f"{f.relative_to(root).as_posix()}/"
        for name, arr in feats.items():
            arrays[f"{prefix}{name}"] = arr
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out = Path(args.out)
    atomic_write_bytes(out, buf.getvalue())
    print(f"encoded {len(files)} file(s) -> {out} ({len(arrays)} arrays)")
    if args.mode == "sample" and not source.stochastic:
        print(f"note: {source.name} is deterministic; --mode sample gives its mean features")
    return 0


__all__ = ["list_audio", "AudioFiles", "encode_files", "encode_file", "register"]
