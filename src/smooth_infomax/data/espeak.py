"""The espeak-ng engine behind the synthetic speech (``data/synth.py``): its C API through ctypes, with phoneme
events that give each phone's sample position, run in a subprocess so that the library's global state never
lives in the caller's process. The library and its data come from ``espeakng_loader`` (GPL-3.0, the optional
extra ``smooth-infomax[synth]``)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

_MISSING = "synthetic data needs espeak-ng: pip install 'smooth-infomax[synth]'"


# ------------------------------------------------------------------------------------------------------------
# The espeak-ng C API (speak_lib.h) through ctypes
# ------------------------------------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES = 0x0100  # text inside [[ ]] is phoneme mnemonics
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_EVENT_SAMPLERATE = 8
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT: six 32-bit fields, a pointer and an 8-byte union (40 bytes on 64-bit Linux)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of the output
        ("sample", ctypes.c_int),  # sample index from the start of the output
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def _loader_paths() -> tuple[str, str]:
    """(library path, data path) of the bundled espeak-ng; UserError when it is not installed."""
    try:
        import espeakng_loader
    except ImportError:
        raise UserError(_MISSING) from None
    try:
        lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except Exception:  # noqa: BLE001 - a broken install is the same fix
        raise UserError(_MISSING) from None
    if not Path(lib).is_file() or not Path(data).is_dir():
        raise UserError(_MISSING)
    return lib, data


def espeak_available() -> bool:
    """True when the espeak-ng engine (``espeakng_loader``) can be found."""
    try:
        _loader_paths()
    except UserError:
        return False
    return True


class _Engine:
    """One initialised espeak-ng library in synchronous mode, collecting audio and phoneme events."""

    def __init__(self, lib_path: str, data_path: str):
        lib = ctypes.CDLL(lib_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        self.lib = lib
        try:  # espeak-ng's noise has its own generator (seeded below); libc rand() is seeded too, to be safe
            self._libc: Any = ctypes.CDLL(None)
        except OSError:  # pragma: no cover - platforms without a process-wide C library handle
            self._libc = None
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = ctypes.c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_PHONEME_EVENTS)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {rate}) with data at {data_path}")
        self.rate = int(rate)
        self.version = (lib.espeak_Info(None) or b"?").decode(errors="replace")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []
        self._callback = _Callback(self._on_audio)  # keep a reference for the library's lifetime
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav: Any, n: int, events: Any) -> int:
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", errors="replace")
                self._events.append((int(ev.sample), int(ev.audio_position), name))
            i += 1
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def speak(self, phonemes: str, voice: str, pitch: int, range_: int, rate: int,
              seed: int) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
        """Audio (int16 at ``self.rate``) and phoneme events ``(sample, ms, name)`` of ``[[phonemes]]``."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, range_),
                             (_PARAM_VOLUME, 100)):
            if self.lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise RuntimeError(f"espeak_SetParameter({param}, {value}) failed")
        if self._set_seed is not None:
            self._set_seed(int(seed))
        if self._libc is not None:
            self._libc.srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))
        self._chunks, self._events = [], []
        text = f"[[{phonemes}]]".encode() + b"\0"
        status = self.lib.espeak_Synth(text, len(text), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _PHONEMES, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio.astype(np.int16, copy=False), list(self._events)


def _worker(job_path: str, result_path: str) -> None:
    """Entry point of the synthesis subprocess: read the job (JSON), speak every word in order, write an npz."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    engine = _Engine(job["lib"], job["data"])
    waves, events = [], []
    for w in job["words"]:
        audio, evs = engine.speak(w["phonemes"], w["voice"], w["pitch"], w["range"], w["rate"], w["seed"])
        waves.append(audio)
        events.append(evs)
    lengths = np.array([len(a) for a in waves], dtype=np.int64)
    meta = json.dumps({"rate": engine.rate, "version": engine.version, "events": events})
    with open(result_path, "wb") as fh:
        np.savez(fh, audio=np.concatenate(waves) if waves else np.zeros(0, np.int16), lengths=lengths,
                 meta=np.frombuffer(meta.encode("utf-8"), dtype=np.uint8))


def _run_worker(jobs: list[dict[str, Any]], lib: str, data: str) -> tuple[list[np.ndarray], list[list], int, str]:
    """Synthesize ``jobs`` in one fresh Python process (same interpreter, same copy of this package)."""
    src = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="sim-synth-") as tmp:
        job_path, result_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "result.npz")
        Path(job_path).write_text(json.dumps({"lib": lib, "data": data, "words": jobs}), encoding="utf-8")
        code = "import sys; from smooth_infomax.data.espeak import _worker; _worker(sys.argv[1], sys.argv[2])"
        proc = subprocess.run([sys.executable, "-c", code, job_path, result_path], env=env, cwd=tmp,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.isfile(result_path):
            tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
            if "OSError" in tail and "libespeak" in tail:
                raise UserError(_MISSING)
            raise RuntimeError(f"the espeak-ng synthesis process failed (exit {proc.returncode}): {tail}")
        with np.load(result_path) as npz:
            audio, lengths = npz["audio"], npz["lengths"]
            meta = json.loads(npz["meta"].tobytes().decode("utf-8"))
    waves = np.split(audio, np.cumsum(lengths)[:-1]) if len(lengths) else []
    return list(waves), meta["events"], int(meta["rate"]), str(meta["version"])
