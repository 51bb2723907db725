"""``smooth-infomax encode``: features of audio files from a trained encoder, saved as ``.npz``.

For every input file the archive holds one array per encoder output, named ``<file>/<module>`` with shape
(T_m, C_m); for a single input file the names are just ``<module>``. Audio is read at the run's sample rate
(resampled once), mixed to mono; ``--max-seconds`` reads only the beginning of very long files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import AudioError, UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def list_audio(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise UserError(f"{path} holds no .wav, .flac or .ogg files")
        return files
    raise UserError(f"{path} does not exist; pass an audio file or a folder of audio files")


def encode_file(encoder: Any, path: Path, *, sample_rate: int, mode: str = "mean",
                max_seconds: float | None = None) -> dict[str, Any]:
    """Encode one file; returns ``{module_name: np.ndarray (T_m, C_m)}``. Raises AudioError naming the file."""
    import torch

    from .audio import read_audio

    frames = None if max_seconds is None else int(max_seconds * sample_rate)
    wave, _ = read_audio(path, sample_rate=sample_rate, frames=frames)
    counts = encoder.frame_counts(len(wave))
    if min(counts) < 1:
        raise AudioError(f"{path}: {len(wave)} samples is too short for this encoder "
                         f"(frames per module {counts}); use clips of at least {_min_samples(encoder)} samples")
    with torch.no_grad():
        x = torch.from_numpy(wave).float().view(1, 1, -1)
        outs = encoder.encode(x, mode=mode)
    return {name: out[0].cpu().numpy() for name, out in zip(encoder.module_names, outs)}


def _min_samples(encoder: Any) -> int:
    n = 1
    while min(encoder.frame_counts(n)) < 1 and n < 10_000_000:
        n *= 2
    lo, hi = n // 2, n
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if min(encoder.frame_counts(mid)) < 1:
            lo = mid
        else:
            hi = mid
    return hi


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("encode", help="encode audio files with a trained encoder into an .npz archive")
    p.add_argument("--run", required=True, help="run directory of a trained encoder")
    p.add_argument("--input", required=True, help="an audio file or a folder of audio files")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--mode", choices=["mean", "sample"], default="mean", help="pass means or posterior samples")
    p.add_argument("--max-seconds", type=float, default=None, help="read at most this many seconds of each file")
    p.set_defaults(func=_cmd_encode)


def _cmd_encode(args: Any) -> int:
    import math

    import numpy as np

    from .checkpoint import atomic_write_bytes
    from .train import load, run_config

    seconds = args.max_seconds
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"--max-seconds must be a positive number of seconds, got {seconds}")
    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a folder; pass the .npz file to write, "
                        f"e.g. {Path(args.out) / 'features.npz'}")
    cfg = run_config(args.run)
    encoder = load(args.run)
    files = list_audio(Path(args.input))
    root = Path(args.input)
    arrays: dict[str, Any] = {}
    for f in files:
        feats = encode_file(encoder, f, sample_rate=cfg.data.sample_rate, mode=args.mode, max_seconds=args.max_seconds)
        prefix = "" if root.is_file() else f"{f.relative_to(root).as_posix()}/"
        for name, arr in feats.items():
            arrays[f"{prefix}{name}"] = arr
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out = Path(args.out)
    atomic_write_bytes(out, buf.getvalue())
    print(f"encoded {len(files)} file(s) -> {out} ({len(arrays)} arrays)")
    return 0
