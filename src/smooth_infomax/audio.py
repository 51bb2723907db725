"""Reading audio files: mono float32 at a chosen sample rate, windowed reads, and a resampling cache.

Every failure a user can fix (a missing, truncated, empty or non-audio file) is raised as
:class:`~smooth_infomax.errors.AudioError` with a one-line message that starts with the file's path.

Conversions: any number of channels is mixed to mono by their mean; every sample format (8/16/24/32-bit PCM,
float, double) becomes float32 without clipping; other sample rates are resampled (soxr, HQ). A WAV whose data
chunk declares fewer bytes than the file holds is read as declared (the rest is ignored); one that declares more
is refused as truncated, as are sample rates outside :data:`SAMPLE_RATE_RANGE` (a damaged header).

``start`` and ``frames`` of :func:`read_audio` count samples at the *output* rate. Without resampling only
the requested window is read from disk. With resampling, the source window that covers the request (plus a
margin for the resampling filter, aligned so that output samples fall on the same time grid as a
whole-file resample) is read and resampled, so long files are never decoded in full for a short crop.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import AudioError

# soundfile and soxr are needed only to read audio files: the package (and the compact dataset copy, see
# data/compact.py) imports and runs without them; the first file read then raises a one-line AudioError
try:
    import soundfile as sf
except ImportError as _exc:  # pragma: no cover - exercised where the package is installed without it
    sf = None
    _SOUNDFILE_MISSING: ImportError | None = _exc
else:
    _SOUNDFILE_MISSING = None
try:
    import soxr
except ImportError as _exc:  # pragma: no cover
    soxr = None
    _SOXR_MISSING: ImportError | None = _exc
else:
    _SOXR_MISSING = None

PathLike = Union[str, "os.PathLike[str]"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")

#: extra output samples read on each side of a resampled window, so that the filter's edge effects stay outside
RESAMPLE_MARGIN = 256

#: sample rates (Hz) outside this range are refused as a damaged header: resampling 4000 frames "at 3 Hz" to
#: 16 kHz would make 21 million samples out of a quarter second of audio
SAMPLE_RATE_RANGE = (1000, 1_000_000)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no decoding). ``duration`` is in seconds."""

    path: str
    frames: int
    sample_rate: int
    channels: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_audio_file(path: PathLike) -> bool:
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def resampled_length(frames: int, source_rate: int, target_rate: int) -> int:
    """Number of samples a whole-file resample from ``source_rate`` to ``target_rate`` yields (soxr rounds)."""
    if source_rate == target_rate:
        return int(frames)
    return (int(frames) * target_rate * 2 + source_rate) // (2 * source_rate)


def _fail(path: PathLike, what: str) -> AudioError:
    return AudioError(f"{path}: {what}")


def _soundfile_problem(path: PathLike, exc: Exception) -> AudioError:
    text = " ".join(str(exc).split())
    # libsndfile repeats the path in its message ("Error opening 'x.wav': ..."); keep only the reason
    if text.startswith("Error opening") and "': " in text:
        text = text.split("': ", 1)[1]
    elif text.startswith("Error :"):
        text = text[len("Error :"):].strip()
    text = text.rstrip(".")
    return _fail(path, f"cannot be decoded as audio ({text or type(exc).__name__}); "
                       f"check that it is a complete wav, flac or ogg file, or re-export/re-download it")


def _check_riff(path: PathLike) -> None:
    """Raise AudioError when a RIFF/WAVE file's data chunk claims more bytes than the file holds.

    libsndfile silently shortens such truncated files, so the check is done here from the chunk headers.
    Streaming writers that leave the size as 0 or 0xFFFFFFFF are accepted.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return
                cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"data":
                    if csize in (0, 0xFFFFFFFF):
                        return
                    have = size - (pos + 8)
                    if have < csize:
                        raise _fail(path, f"is truncated: its header declares {csize} bytes of audio but only {have} "
                                          f"are present; re-export or re-download the file (or pass --skip-bad)")
                    return
                pos += 8 + csize + (csize & 1)
    except OSError:
        return  # soundfile reports unreadable files with a better message


def _open_error(path: PathLike, exc: Exception) -> AudioError:
    p = Path(path)
    if not p.exists():
        return _fail(path, "does not exist; check the path")
    if p.is_dir():
        return _fail(path, "is a folder, not an audio file")
    if isinstance(exc, PermissionError):
        return _fail(path, "cannot be read (permission denied)")
    try:
        if p.stat().st_size == 0:
            return _fail(path, "is an empty (zero-byte) file; re-export or re-download it, or delete it")
    except OSError:
        pass
    return _soundfile_problem(path, exc)


def _need(module: object, missing: ImportError | None, name: str, path: PathLike) -> None:
    """Raise a one-line AudioError when the optional module ``name`` (soundfile, soxr) is not installed."""
    if module is None:
        raise AudioError(f"{path}: reading audio files needs the {name} package, which is not installed "
                         f"({missing}); pip install {name}, or use a compact dataset copy "
                         f"(smooth-infomax reproduce compact)")


def info(path: PathLike) -> AudioInfo:
    """Header information via ``soundfile.info`` (frames, sample rate, channels); raises AudioError on failure.

    Truncated WAV files (data chunk larger than the file) are detected here; other damage inside a compressed
    stream (e.g. a cut FLAC) only shows when the file is decoded by :func:`read_audio`.
    """
    _need(sf, _SOUNDFILE_MISSING, "soundfile", path)
    try:
        meta = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001 - libsndfile / OS errors all mean "cannot use this file"
        raise _open_error(path, exc) from None
    _check_riff(path)
    if meta.frames <= 0:
        raise _fail(path, "holds no audio samples (empty or header-only file); re-export it or delete it")
    if meta.samplerate <= 0 or meta.channels <= 0:
        raise _fail(path, "has an invalid header (sample rate or channel count); re-export it")
    if not SAMPLE_RATE_RANGE[0] <= meta.samplerate <= SAMPLE_RATE_RANGE[1]:
        raise _fail(path, f"declares an implausible sample rate of {meta.samplerate} Hz (a damaged header?); "
                          f"re-export it (rates from {SAMPLE_RATE_RANGE[0]} to {SAMPLE_RATE_RANGE[1]} Hz are read)")
    return AudioInfo(str(path), int(meta.frames), int(meta.samplerate), int(meta.channels), str(meta.format),
                     str(meta.subtype))


def _read_window(handle: sf.SoundFile, path: PathLike, start: int, count: int) -> np.ndarray:
    try:
        if start:
            handle.seek(start)
        data = handle.read(frames=count, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001
        raise _soundfile_problem(path, exc) from None
    if data.shape[0] < count:
        raise _fail(path, f"ended after {start + data.shape[0]} of {handle.frames} samples (truncated or damaged); "
                          f"re-export or re-download it")
    return data


def soundfile_module(purpose: PathLike) -> Any:
    """The soundfile module, or a one-line AudioError naming ``purpose`` (a file or a task) when it is missing."""
    _need(sf, _SOUNDFILE_MISSING, "soundfile", purpose)
    return sf


def resample(x: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """x (T,) float -> float32 at ``target_rate`` (soxr, HQ; the one resampler of the package)."""
    return _resample(x, source_rate, target_rate)


def _resample(x: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    _need(soxr, _SOXR_MISSING, "soxr", f"resampling {source_rate} Hz -> {target_rate} Hz")
    return np.ascontiguousarray(soxr.resample(x, source_rate, target_rate, quality="HQ"), dtype=np.float32)


def read_audio(path: PathLike, sample_rate: int | None = None, mono: bool = True, start: int = 0,
               frames: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 in [-1, 1].

    Returns ``(x, sr)``: ``x`` has shape (T,) when ``mono`` (the mean of the channels), else (T, C); ``sr`` is
    ``sample_rate`` (the file's rate when None). ``start``/``frames`` select a window counted in samples at
    ``sr``; a window that runs past the end is shortened (T < frames), never padded. Raises AudioError naming
    the file for anything unreadable, empty, truncated or holding NaN/Inf samples.
    """
    if start < 0 or (frames is not None and frames < 0):
        raise ValueError(f"start and frames must be >= 0, got start={start}, frames={frames}")
    meta = info(path)
    src_sr = meta.sample_rate
    out_sr = int(sample_rate or src_sr)
    try:
        handle = sf.SoundFile(str(path))
    except Exception as exc:  # noqa: BLE001
        raise _open_error(path, exc) from None
    with handle:
        total_src = handle.frames
        if out_sr == src_sr:
            stop = total_src if frames is None else min(total_src, start + frames)
            count = max(0, stop - start)
            data = _read_window(handle, path, min(start, total_src), count) if count else \
                np.zeros((0, meta.channels), np.float32)
        else:
            total_out = resampled_length(total_src, src_sr, out_sr)
            stop_out = total_out if frames is None else min(total_out, start + frames)
            if stop_out <= start:
                data = np.zeros((0, meta.channels), np.float32)
            elif start == 0 and stop_out == total_out:
                data = _resample(_read_window(handle, path, 0, total_src), src_sr, out_sr)
            else:
                # source blocks of `step_in` samples map to exactly `step_out` output samples
                g = math.gcd(src_sr, out_sr)
                step_in, step_out = src_sr // g, out_sr // g
                block = max(0, start - RESAMPLE_MARGIN) // step_out
                src_a, out_a = block * step_in, block * step_out
                src_b = min(total_src, -(-(stop_out + RESAMPLE_MARGIN) * src_sr // out_sr) + 1)
                chunk = _read_window(handle, path, src_a, src_b - src_a)
                res = _resample(chunk, src_sr, out_sr)
                data = res[start - out_a: stop_out - out_a]
                if data.shape[0] < stop_out - start:  # only possible at the very end of the file
                    pad = np.zeros((stop_out - start - data.shape[0], data.shape[1]), np.float32)
                    data = np.concatenate([data, pad])
    if not np.isfinite(data).all():
        raise _fail(path, "contains NaN or infinite samples; re-export the audio with finite values")
    if mono:
        x = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
        return np.ascontiguousarray(x, dtype=np.float32), out_sr
    return np.ascontiguousarray(data, dtype=np.float32), out_sr


def crop_or_pad(x: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """``x[offset:offset + length]`` along the last axis, zero-padded at the end to exactly ``length``."""
    if length < 0 or offset < 0:
        raise ValueError(f"length and offset must be >= 0, got length={length}, offset={offset}")
    piece = x[..., offset: offset + length]
    missing = length - piece.shape[-1]
    if missing > 0:
        pad = [(0, 0)] * (piece.ndim - 1) + [(0, missing)]
        piece = np.pad(piece, pad)
    return piece


class AudioCache:
    """A small LRU cache of whole files read (and resampled) by :func:`read_audio`.

    Keys are (absolute path, sample rate); an entry is reused while the file's size and modification time are
    unchanged. ``max_bytes`` bounds the memory held. With ``cache_dir``, resampled arrays are also kept on disk
    as ``.npy`` files (written atomically), so later runs skip the resampling as well.
    """

    def __init__(self, max_bytes: int = 512 * 2**20, cache_dir: PathLike | None = None):
        self.max_bytes = int(max_bytes)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._items: OrderedDict[tuple[str, int], tuple[tuple[int, int], np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> dict:
        # DataLoader workers get their own (empty) cache rather than a pickled copy
        state = self.__dict__.copy()
        state["_items"] = OrderedDict()
        state["_bytes"] = 0
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @staticmethod
    def _stamp(path: str) -> tuple[int, int]:
        try:
            st = os.stat(path)
        except OSError:
            return (-1, -1)
        return (int(st.st_size), int(st.st_mtime_ns))

    def _disk_path(self, path: str, sample_rate: int, stamp: tuple[int, int]) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(f"{path}|{sample_rate}|{stamp[0]}|{stamp[1]}".encode()).hexdigest()[:24]
        return self.cache_dir / f"{key}.npy"

    def get(self, path: PathLike, sample_rate: int) -> np.ndarray:
        """The whole file as mono float32 (T,) at ``sample_rate``; read and resampled at most once."""
        apath = os.path.abspath(str(path))
        key = (apath, int(sample_rate))
        stamp = self._stamp(apath)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == stamp:
                self._items.move_to_end(key)
                self.hits += 1
                return hit[1]
        self.misses += 1
        disk = self._disk_path(apath, sample_rate, stamp)
        x = None
        if disk is not None and disk.is_file():
            try:
                x = np.load(disk, allow_pickle=False)
            except (OSError, ValueError):
                x = None
        if x is None:
            x, _ = read_audio(path, sample_rate=sample_rate)
            if disk is not None:
                self._save(disk, x)
        x.setflags(write=False)
        self._put(key, stamp, x)
        return x

    def _save(self, disk: Path, x: np.ndarray) -> None:
        try:
            disk.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{disk.stem}.", suffix=".npy", dir=disk.parent)
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, x, allow_pickle=False)
            os.replace(tmp, disk)
        except OSError:
            pass  # a cache that cannot be written is only slower

    def _put(self, key: tuple[str, int], stamp: tuple[int, int], x: np.ndarray) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1].nbytes
            if x.nbytes > self.max_bytes:
                return
            self._items[key] = (stamp, x)
            self._bytes += x.nbytes
            while self._bytes > self.max_bytes and self._items:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
