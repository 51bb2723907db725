"""The built-in synthetic dataset: CVCVCV words spoken by several espeak-ng voices, in the LibriSpeech layout.

It imitates the artificial speech dataset of the Smooth InfoMax paper (de Boer's CVCVCV words made of the
syllables {b, d, g} x {a, i, u}), but is generated locally, with several voices instead of one speaker and with
frame-level phone labels taken from the synthesizer's own phoneme events. :func:`generate` writes::

    <out>/train-clean-100/<spk>/1/<spk>-1-<utt>.wav     16 kHz mono PCM-16, one speaker folder per voice (100, 101, ...)
    <out>/train-clean-100/<spk>/1/<spk>-1.trans.txt     "<utt-id> <WORD>" per line
    <out>/train_split.txt, test_split.txt               utterance ids (every voice occurs in both splits)
    <out>/converted_aligned_phones.txt                  "<utt-id> p_0 p_1 ...": one phone id per 10 ms frame
    <out>/phones.txt                                    "<id> <name>": 0 sil, 1 b, 2 d, 3 g, 4 a, 5 i, 6 u
    <out>/factors.csv                                   one row per utterance: split, speaker, voice, pitch, rate,
                                                        word and, per syllable 1..3, consonant, vowel, syllable
                                                        and its frame span [start_frame, end_frame)
    <out>/README.txt, synth.json                        provenance (espeak-ng, GPL-3.0) and the parameters

Every wav holds a whole number of 10 ms frames and ``converted_aligned_phones.txt`` has exactly
``n_samples // (sample_rate // 100)`` labels per utterance; label ``f`` describes samples
``[f * hop, (f + 1) * hop)`` and is the phone that covers the middle of that frame.

How the audio is made: the espeak-ng library bundled by ``espeakng_loader`` (GPL-3.0, loaded through its C API
with ctypes) speaks each word from phoneme input (``[[b'A:di:gu:]]``) with phoneme events enabled; every
``espeakEVENT_PHONEME`` event carries the sample index at which its phoneme starts. The 22,050 Hz output is
resampled with soxr and framed with a silent lead-in and tail. All synthesis runs in one fresh Python process,
in a fixed order, with espeak's noise generator re-seeded for each word, so a seed always gives byte-identical
files whatever state the calling process is in. The seed chooses the word list (distinct random words while
there are fewer than 729), the balanced assignment of words to voices, the small per-word pitch and rate
jitter, and the split (per voice, so each voice is in both splits; no word is in both splits unless more than
729 words are asked for).

The engine is optional: ``pip install 'smooth-infomax[synth]'``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import resample, soundfile_module
from ..errors import UserError
from .espeak import _loader_paths, _run_worker, espeak_available

__all__ = [
    "CONSONANTS", "VOWELS", "SYLLABLES", "PHONES", "VOICES", "Voice", "FORMAT_VERSION",
    "generate", "espeak_available", "syllable_index", "add_background_noise",
]

CONSONANTS = ("b", "d", "g")
VOWELS = ("a", "i", "u")
#: syllable classes, consonant-major as in the paper: ba 0, bi 1, bu 2, da 3, ..., gu 8
SYLLABLES = tuple(c + v for c in CONSONANTS for v in VOWELS)
#: frame-level phone classes (the ids written to phones.txt)
PHONES = ("sil",) + CONSONANTS + VOWELS
PHONE_ID = {name: i for i, name in enumerate(PHONES)}

#: our phone -> espeak-ng phoneme mnemonic (English voice: long back [A:], close front [i:], close back [u:])
_MNEMONIC = {"b": "b", "d": "d", "g": "g", "a": "A:", "i": "i:", "u": "u:"}
#: espeak phoneme names that are reported as silence (pauses)
_PAUSES = {"_", "_:", "_!", "_|", "_;"}

FORMAT_VERSION = 1
SUBSET = "train-clean-100"
CHAPTER = 1
FIRST_SPEAKER = 100
LEAD_SECONDS = 0.10  # silence before the word (label 0)
TAIL_SECONDS = 0.10  # silence after it, before rounding up to a whole 10 ms frame
PITCH_JITTER = 3  # per-word pitch offset drawn from [-3, 3] (espeak pitch units, 0..100)
RATE_JITTER = 8  # per-word rate offset drawn from [-8, 8] words per minute


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: the English voice with a variant (``m*`` male, ``f*`` female), a base pitch and
    pitch range (espeak units 0..100) and a base rate (words per minute)."""

    name: str
    variant: str
    pitch: int
    range: int
    rate: int

    @property
    def espeak_name(self) -> str:
        return f"en+{self.variant}"


#: the voices, in speaker order (speaker 100 is VOICES[0]); ``n_voices`` takes the first n. Variants, pitch and
#: rate are chosen so that every pair differs audibly (male/female alternate, pitches and rates spread out).
VOICES = (
    Voice("m3-low", "m3", 42, 25, 135),
    Voice("f2-high", "f2", 65, 30, 145),
    Voice("m1-mid", "m1", 55, 20, 125),
    Voice("f4-mid", "f4", 48, 35, 150),
    Voice("m6-high", "m6", 70, 25, 140),
    Voice("f1-low", "f1", 38, 25, 130),
    Voice("m2-low-fast", "m2", 40, 30, 155),
    Voice("f5-high-slow", "f5", 72, 20, 120),
    Voice("m4-mid-slow", "m4", 52, 30, 118),
    Voice("f3-mid-fast", "f3", 58, 25, 155),
    Voice("m7-high-fast", "m7", 64, 20, 150),
    Voice("m5-low-slow", "m5", 46, 35, 122),
)


def syllable_index(consonant: str, vowel: str) -> int:
    """Class of a syllable (ba 0, bi 1, bu 2, da 3, di 4, du 5, ga 6, gi 7, gu 8)."""
    return CONSONANTS.index(consonant) * len(VOWELS) + VOWELS.index(vowel)


# ------------------------------------------------------------------------------------------------------------
# Planning (the seed's choices), alignment, writing
# ------------------------------------------------------------------------------------------------------------


@dataclass
class _Utt:
    index: int
    word: tuple[int, int, int]  # syllable classes
    voice: int
    pitch: int
    rate: int
    seed: int
    split: str = "train"
    utt: int = 0

    @property
    def speaker(self) -> int:
        return FIRST_SPEAKER + self.voice

    @property
    def utt_id(self) -> str:
        return f"{self.speaker}-{CHAPTER}-{self.utt:04d}"

    @property
    def text(self) -> str:
        return "".join(SYLLABLES[s] for s in self.word)

    @property
    def phones(self) -> list[str]:
        return [ch for s in self.word for ch in SYLLABLES[s]]

    @property
    def phonemes(self) -> str:
        # primary stress on the first syllable, like a calm, evenly spoken citation form
        parts = []
        for k, s in enumerate(self.word):
            c, v = SYLLABLES[s]
            parts.append(_MNEMONIC[c] + ("'" if k == 0 else "") + _MNEMONIC[v])
        return "".join(parts)


def _plan(seed: int, n_words: int, n_voices: int, test_fraction: float) -> list[_Utt]:
    rng = np.random.default_rng([int(seed) % 2**63, 0x51A7])
    n_all = len(SYLLABLES) ** 3
    order: list[int] = []
    while len(order) < n_words:  # distinct words until all 729 are used, then another permutation
        order.extend(int(k) for k in rng.permutation(n_all))
    voices = rng.permutation(np.arange(n_words) % n_voices)
    pitch_j = rng.integers(-PITCH_JITTER, PITCH_JITTER + 1, size=n_words)
    rate_j = rng.integers(-RATE_JITTER, RATE_JITTER + 1, size=n_words)
    noise_seeds = rng.integers(1, 2**31 - 1, size=n_words)
    utts = []
    for i in range(n_words):
        k = order[i]
        word = (k // 81, (k // 9) % 9, k % 9)
        v = VOICES[int(voices[i])]
        utts.append(_Utt(i, word, int(voices[i]), int(np.clip(v.pitch + pitch_j[i], 0, 99)),
                         int(v.rate + rate_j[i]), int(noise_seeds[i])))
    for v in range(n_voices):
        mine = [u for u in utts if u.voice == v]
        for n, u in enumerate(mine):
            u.utt = n
        n_test = min(int(math.floor(len(mine) * test_fraction + 0.5)), max(len(mine) - 1, 0))
        for j in rng.choice(len(mine), size=n_test, replace=False) if n_test else []:
            mine[int(j)].split = "test"
    return utts


def _frame_labels(events: list, n_native: int, native_rate: int, sample_rate: int, lead: int,
                  n_frames: int, hop: int, expected: list[str], what: str) -> np.ndarray:
    """One phone id per frame from the phoneme events (start samples at ``native_rate``)."""
    starts, ids = [0], [PHONE_ID["sil"]]
    for sample, ms, name in events:
        if abs(sample - ms * native_rate / 1000.0) > native_rate * 0.002 + 1:
            raise RuntimeError(f"{what}: espeak event sample {sample} disagrees with its time {ms} ms")
        bare = name.lstrip("',%=")
        if bare in _PAUSES:
            pid = PHONE_ID["sil"]
        else:
            phone = next((p for p, m in _MNEMONIC.items() if m == bare), None)
            if phone is None:
                raise RuntimeError(f"{what}: espeak-ng produced an unexpected phoneme {name!r}")
            pid = PHONE_ID[phone]
        starts.append(lead + int(round(sample * sample_rate / native_rate)))
        ids.append(pid)
    starts.append(lead + int(round(n_native * sample_rate / native_rate)))  # end of speech: silence again
    ids.append(PHONE_ID["sil"])
    centers = np.arange(n_frames) * hop + hop // 2
    pos = np.searchsorted(np.asarray(starts), centers, side="right") - 1
    labels = np.asarray(ids, dtype=np.int64)[pos]
    # the spoken phones, in order, each at least one frame long
    runs = [int(labels[0])] + [int(b) for a, b in zip(labels[:-1], labels[1:]) if a != b]
    spoken = [PHONES[p] for p in runs if p != 0]
    if spoken != expected:
        raise RuntimeError(f"{what}: frames show phones {spoken}, expected {expected}")
    return labels


def _syllable_spans(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start_frame, end_frame) of each consonant+vowel pair, from the frame labels."""
    spans, f, n = [], 0, len(labels)
    while f < n:
        if labels[f] in (1, 2, 3):
            start = f
            while f < n and labels[f] in (1, 2, 3):
                f += 1
            while f < n and labels[f] in (4, 5, 6):
                f += 1
            spans.append((start, f))
        else:
            f += 1
    return spans


def _check_args(n_words: int, n_voices: int, sample_rate: int, test_fraction: float) -> None:
    if int(n_words) != n_words or n_words < 1:
        raise UserError(f"n_words must be a positive integer, got {n_words}")
    if int(n_voices) != n_voices or not 1 <= n_voices <= len(VOICES):
        raise UserError(f"n_voices must be between 1 and {len(VOICES)}, got {n_voices}")
    if n_voices > n_words:
        raise UserError(f"n_voices ({n_voices}) cannot exceed n_words ({n_words}); every voice needs a word")
    if int(sample_rate) != sample_rate or sample_rate < 8000 or sample_rate % 100:
        raise UserError(f"sample_rate must be a multiple of 100 Hz and at least 8000, got {sample_rate}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise UserError(f"test_fraction must be in [0, 1), got {test_fraction}")


def _params(seed: int, n_words: int, n_voices: int, sample_rate: int, test_fraction: float) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "seed": int(seed), "n_words": int(n_words), "n_voices": int(n_voices),
            "sample_rate": int(sample_rate), "test_fraction": float(test_fraction)}


def _wav_bytes(x: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    soundfile_module("writing the synthetic WAV files").write(buf, x, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


_FACTOR_COLUMNS = ["utt_id", "split", "speaker", "voice", "pitch", "rate", "word"] + [
    f"{name}_{k}" for k in (1, 2, 3) for name in ("consonant", "vowel", "syllable", "start_frame", "end_frame")]


def _readme(params: dict[str, Any], version: str, n_train: int, n_test: int, voices: list[Voice]) -> str:
    lines = [
        "Synthetic CVCVCV speech (smooth-infomax built-in dataset)",
        "",
        "Words of three syllables from {b, d, g} x {a, i, u}, spoken by espeak-ng voices, in the LibriSpeech",
        "layout (train-clean-100/<speaker>/<chapter>/<utt-id>.wav) with the CPC-style split and phone files.",
        "",
        f"Audio produced by espeak-ng {version} (GPL-3.0-or-later, https://github.com/espeak-ng/espeak-ng),",
        "loaded from the espeakng-loader package. The generated recordings are output of that program; the",
        "smooth-infomax code that drove it is MIT licensed.",
        "",
        f"Parameters: {json.dumps(params)}",
        f"Utterances: {n_train} train, {n_test} test. Sample rate {params['sample_rate']} Hz, mono, PCM-16.",
        "",
        "Files:",
        "  converted_aligned_phones.txt  <utt-id> then one phone id per 10 ms frame (from espeak phoneme events)",
        "  phones.txt                    phone ids: " + ", ".join(f"{i} {p}" for i, p in enumerate(PHONES)),
        "  factors.csv                   per utterance: split, speaker, voice, pitch, rate, word, and per syllable",
        "                                consonant, vowel, syllable class (ba 0 ... gu 8), frames [start, end)",
        "  train_split.txt, test_split.txt",
        "",
        "Voices (speaker id: espeak voice, base pitch, pitch range, base rate in words per minute):",
    ]
    for i, v in enumerate(voices):
        lines.append(f"  {FIRST_SPEAKER + i}: {v.name} = {v.espeak_name}, pitch {v.pitch}, range {v.range}, "
                     f"rate {v.rate}")
    return "\n".join(lines) + "\n"


def _prepare_out(out: Path, params: dict[str, Any]) -> bool:
    """True when ``out`` already holds this exact dataset; UserError when it holds something else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another output path")
    marker = out / "synth.json"
    if marker.is_file():
        try:
            old = json.loads(marker.read_text(encoding="utf-8")).get("params")
        except (OSError, ValueError):
            old = None
        return old == params
    if any(out.iterdir()):
        raise UserError(f"{out} is not empty and is not a synthetic dataset; choose an empty or new folder")
    return False


def generate(out: str | os.PathLike[str], *, seed: int = 0, n_words: int = 300, n_voices: int = 4,
             sample_rate: int = 16000, test_fraction: float = 0.2,
             noise_snr_db: tuple[float, float] | None = None) -> Path:
    """Generate the synthetic CVCVCV dataset into ``out`` (see the module docstring for the layout).

    ``n_words`` utterances (one word each, ~0.7-1.0 s), spread evenly over the first ``n_voices`` of
    :data:`VOICES`; ``test_fraction`` of each voice's words go to ``test_split.txt``. The dataset is built in
    a temporary folder next to ``out`` and moved into place when complete. If ``out`` already holds a dataset
    generated with the same parameters it is returned unchanged; one made with other parameters is replaced;
    any other non-empty folder is refused. Returns ``out``. Raises UserError when espeak-ng is not installed.
    ``noise_snr_db=(lo, hi)`` adds background noise (pink, :func:`add_background_noise`) to every word at a
    signal-to-noise ratio drawn per word from [lo, hi] dB (seeded; labels unchanged).
    """
    _check_args(n_words, n_voices, sample_rate, test_fraction)
    out = Path(out)
    params = _params(seed, n_words, n_voices, sample_rate, test_fraction)
    if noise_snr_db is not None:
        lo, hi = (float(v) for v in noise_snr_db)
        if not lo <= hi:
            raise UserError(f"noise_snr_db must be (low, high) with low <= high, got {noise_snr_db}")
        params["noise_snr_db"] = [lo, hi]
    if _prepare_out(out, params):
        return out
    lib, data = _loader_paths()
    utts = _plan(seed, int(n_words), int(n_voices), float(test_fraction))
    jobs = [{"phonemes": u.phonemes, "voice": VOICES[u.voice].espeak_name, "pitch": u.pitch,
             "range": VOICES[u.voice].range, "rate": u.rate, "seed": u.seed} for u in utts]
    waves, events, native_rate, version = _run_worker(jobs, lib, data)
    if len(waves) != len(utts):
        raise RuntimeError(f"the espeak-ng process returned {len(waves)} words for {len(utts)} requested")

    hop = int(sample_rate) // 100
    lead = int(round(LEAD_SECONDS * sample_rate / hop)) * hop
    tail = int(round(TAIL_SECONDS * sample_rate))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is an ordinary folder
        rows, align_lines, trans = [], [], {}
        for u, raw, evs in zip(utts, waves, events):
            x = raw.astype(np.float32) / 32768.0
            if native_rate != sample_rate:
                x = resample(x, native_rate, int(sample_rate))
            n = -(-(lead + len(x) + tail) // hop) * hop
            wave = np.zeros(n, np.float32)
            wave[lead: lead + len(x)] = x
            if noise_snr_db is not None:
                wave = add_background_noise(wave, x, params["noise_snr_db"], [int(seed) % 2**63, u.index, 0x4E01])
            np.clip(wave, -1.0, 32767 / 32768, out=wave)
            labels = _frame_labels(evs, len(raw), native_rate, int(sample_rate), lead, n // hop, hop,
                                   u.phones, u.utt_id)
            spans = _syllable_spans(labels)
            if len(spans) != 3:
                raise RuntimeError(f"{u.utt_id}: found {len(spans)} syllables in the frame labels, expected 3")
            folder = tmp / SUBSET / str(u.speaker) / str(CHAPTER)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{u.utt_id}.wav").write_bytes(_wav_bytes(wave, int(sample_rate)))
            trans.setdefault(folder / f"{u.speaker}-{CHAPTER}.trans.txt", []).append(f"{u.utt_id} {u.text.upper()}")
            align_lines.append(u.utt_id + " " + " ".join(str(int(p)) for p in labels))
            row: dict[str, Any] = {"utt_id": u.utt_id, "split": u.split, "speaker": u.speaker,
                                   "voice": VOICES[u.voice].name, "pitch": u.pitch, "rate": u.rate, "word": u.text}
            for k, (s, (a, b)) in enumerate(zip(u.word, spans), start=1):
                c, v = SYLLABLES[s]
                row.update({f"consonant_{k}": c, f"vowel_{k}": v, f"syllable_{k}": SYLLABLES[s],
                            f"start_frame_{k}": a, f"end_frame_{k}": b})
            rows.append(row)
        order = sorted(range(len(utts)), key=lambda i: (utts[i].speaker, utts[i].utt))
        for path, lines in trans.items():
            path.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
        for split in ("train", "test"):
            ids = [utts[i].utt_id for i in order if utts[i].split == split]
            (tmp / f"{split}_split.txt").write_text("".join(f"{x}\n" for x in ids), encoding="utf-8")
        (tmp / "converted_aligned_phones.txt").write_text("".join(align_lines[i] + "\n" for i in order),
                                                          encoding="utf-8")
        (tmp / "phones.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(PHONES)), encoding="utf-8")
        with open(tmp / "factors.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=_FACTOR_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows[i] for i in order)
        n_test = sum(u.split == "test" for u in utts)
        voices = list(VOICES[: int(n_voices)])
        (tmp / "README.txt").write_text(_readme(params, version, len(utts) - n_test, n_test, voices),
                                        encoding="utf-8")
        marker = {"params": params, "espeak_ng": version, "native_rate": native_rate,
                  "voices": [asdict(v) for v in voices]}
        (tmp / "synth.json").write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def add_background_noise(wave: np.ndarray, speech: np.ndarray, snr_db: list[float], seed: Any) -> np.ndarray:
    """``wave`` (T,) plus pink noise at an SNR drawn from ``[snr_db[0], snr_db[1]]`` dB relative to the RMS of
    ``speech`` (the word without its silent margins). Pure: the noise comes from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    n = len(wave)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    spectrum[0] = 0.0
    spectrum[1:] /= np.sqrt(freqs[1:] / freqs[1])  # 1/f power: pink
    noise = np.fft.irfft(spectrum, n)
    noise /= max(float(np.sqrt(np.mean(noise ** 2))), 1e-12)
    level = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2))) * 10.0 ** (-rng.uniform(*snr_db) / 20.0)
    return (wave + level * noise).astype(np.float32)


def _install(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an older synthetic dataset (or empty folder)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
