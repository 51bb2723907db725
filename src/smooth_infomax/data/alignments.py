"""Phone alignments you bring: Praat TextGrids and CTM files, turned into CPC-style 10 ms frame labels.

Frame rule: label frame ``f`` covers ``[10 f, 10 f + 10)`` ms of the utterance (samples ``[160 f, 160 f + 160)``
at 16 kHz, as in CPC's ``converted_aligned_phones.txt``) and takes the phone of the interval that holds the
frame's middle, ``10 f + 5`` ms. An utterance whose alignment ends at ``t`` seconds gets ``floor(100 t)`` frames.
Time not covered by any interval (Praat's empty intervals, gaps between CTM lines) is silence. So an alignment
whose boundaries sit on the 10 ms grid gives back exactly the frame labels it was written from.

Phone names are normalised by a :class:`PhoneMap`. The default reproduces CPC's 41 classes as we read them:
CPC's LibriSpeech labels come from a Kaldi forced alignment whose phone set is the 39 ARPAbet phones of the CMU
dictionary with the stress digits removed (``AH0``/``AH1``/``AH2`` -> ``AH``) plus Kaldi's silence (``SIL``)
and spoken-noise (``SPN``) phones: 39 + 2 = 41. The default map strips stress, maps ``sil``, ``sp``, empty
labels and ``<eps>`` to ``sil`` and ``spn``/``<unk>`` to ``spn``. CPC does not publish its id order, so
:data:`CPC41` (``sil``, the 39 phones in alphabetical order, ``spn``) is our own; a ``phones.txt`` next to the
labels always rules.

Readers:

* :func:`read_textgrid` (praatio parses the file): the interval tier named ``phones`` (or ``phone``,
  ``phonemes``, ``segments``; MFA's multi-speaker ``<speaker> - phones`` too), else the interval tier whose
  labels look most like phones (most labels in the ARPAbet set, then most intervals, then shortest labels).
* :func:`read_ctm`: ``<utt> <channel> <start> <duration> <phone> [<confidence>]`` per line.

:class:`FrameLabelSet` holds frame labels per utterance with the interface of the CPC phone file
(``in``, ``count``, ``labels``); :func:`write_cpc` writes ``converted_aligned_phones.txt`` and ``phones.txt``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..checkpoint import atomic_write_text
from ..errors import DatasetError, UserError

log = logging.getLogger("smooth_infomax.data")

FRAME_SECONDS = 0.01
ARPABET = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
           "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W",
           "Y", "Z", "ZH")
#: the default inventory: CPC's 41 classes as read above (our id order)
CPC41 = ("sil",) + ARPABET + ("spn",)
SILENCE_LABELS = frozenset({"", "sil", "sp", "<eps>", "<sil>", "silence", "pau", "h#"})
NOISE_LABELS = frozenset({"spn", "<unk>", "<spn>", "nsn", "<noise>"})
PHONE_TIER_NAMES = ("phones", "phone", "phonemes", "phoneme", "segments")
TEXTGRID_SUFFIXES = (".TextGrid", ".textgrid", ".Textgrid")
ALIGNMENT_DIR = "alignments"
_STRESS = re.compile(r"^([A-Za-z]+)[0-2]$")


@dataclass(frozen=True)
class PhoneMap:
    """How raw alignment labels become phone names.

    stress: ``strip`` (``AH0`` -> ``AH``, the default) or ``keep``. silence: the name silence labels
    (:data:`SILENCE_LABELS`, any case) get, or ``drop`` for "no label" (-1). spn: ``spn`` (its own class, the
    default), ``sil`` (counted as silence) or ``drop``. upper: upper-case labels that are ARPAbet phones in
    lower case (``ah1`` -> ``AH``; off by default, so that other phone sets keep their spelling).
    """

    stress: str = "strip"
    silence: str = "sil"
    spn: str = "spn"
    upper: bool = False

    def __post_init__(self) -> None:
        if self.stress not in ("strip", "keep"):
            raise UserError(f"stress mapping {self.stress!r}: use strip or keep")
        if self.spn not in ("spn", "sil", "drop"):
            raise UserError(f"spn mapping {self.spn!r}: use spn, sil or drop")
        if not self.silence or any(c.isspace() for c in self.silence):
            raise UserError(f"silence mapping {self.silence!r}: use a name without spaces, or drop")

    def __call__(self, label: str) -> str | None:
        """The phone name of a raw label, or None for "no label"."""
        raw = label.strip()
        low = raw.lower()
        if low in SILENCE_LABELS:
            return None if self.silence == "drop" else self.silence
        if low in NOISE_LABELS:
            if self.spn == "drop":
                return None
            if self.spn == "sil":
                return None if self.silence == "drop" else self.silence
            return "spn"
        name = raw
        if self.stress == "strip":
            m = _STRESS.match(name)
            if m:
                name = m.group(1)
        if self.upper and name.upper().rstrip("012") in ARPABET:
            name = name.upper()
        return name


@dataclass(frozen=True)
class Segment:
    """One labelled interval of an utterance, in seconds."""

    start: float
    end: float
    label: str


# ------------------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------------------


def _phone_likeness(labels: Sequence[str]) -> float:
    filled = [lab.strip() for lab in labels if lab.strip()]
    if not filled:
        return 0.0
    stripped = [PhoneMap()(lab) or "" for lab in filled]
    known = sum(1 for lab in stripped if lab in CPC41)
    return known / len(filled)


def read_textgrid(path: str | Path, tier: str | None = None) -> tuple[list[Segment], float]:
    """The phone intervals of a TextGrid file and its end time (seconds): ``(segments, xmax)``.

    ``tier`` names the tier; None finds it (see the module docstring). Raises DatasetError naming the file for
    an unreadable file or a file without an interval tier."""
    try:
        from praatio import textgrid as tgio
    except ModuleNotFoundError:  # pragma: no cover - praatio is a dependency
        raise UserError("reading TextGrids needs praatio; install it with 'pip install praatio'") from None
    path = Path(path)
    try:
        tg = tgio.openTextgrid(str(path), includeEmptyIntervals=False, reportingMode="silence")
    except FileNotFoundError:
        raise DatasetError(f"TextGrid {path} does not exist") from None
    except Exception as exc:  # praatio raises many kinds of errors on malformed files
        raise DatasetError(f"TextGrid {path} cannot be read ({type(exc).__name__}: {exc}); "
                           f"re-export it from Praat or the aligner") from None
    tiers = {name: tg.getTier(name) for name in tg.tierNames}
    intervals = {n: t for n, t in tiers.items() if type(t).__name__ == "IntervalTier"}
    if tier is not None:
        if tier not in intervals:
            raise DatasetError(f"TextGrid {path} has no interval tier {tier!r} (interval tiers: "
                               f"{', '.join(intervals) or 'none'}); pass the name of its phone tier")
        chosen = intervals[tier]
    else:
        if not intervals:
            raise DatasetError(f"TextGrid {path} has no interval tier; phone alignments need one")
        named = [n for n in intervals if n.strip().lower() in PHONE_TIER_NAMES
                 or n.strip().lower().endswith(("- phones", "-phones", "_phones"))]
        if named:
            chosen = intervals[named[0]]
        else:
            def score(name: str) -> tuple[float, int, float]:
                labels = [e.label for e in intervals[name].entries]
                mean_len = float(np.mean([len(lab) for lab in labels])) if labels else 99.0
                return (_phone_likeness(labels), len(labels), -mean_len)

            chosen = intervals[max(intervals, key=score)]
    segments = [Segment(float(e.start), float(e.end), str(e.label)) for e in chosen.entries]
    return segments, float(tg.maxTimestamp)


def numbered_fields(path: Path, what: str, fix: str, *, missing_is_error: bool = False) -> list[tuple[int, list[str]]]:
    """The whitespace-separated fields of every non-blank line of a UTF-8 text file, with its 1-based line number.

    An unreadable file raises DatasetError ``"<what> <path> cannot be read (<reason>); <fix>"``; with
    ``missing_is_error`` a missing file raises ``"<what> <path> does not exist"`` instead.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        if missing_is_error and isinstance(exc, FileNotFoundError):
            raise DatasetError(f"{what} {path} does not exist") from None
        raise DatasetError(f"{what} {path} cannot be read ({exc}); {fix}") from None
    return [(n, parts) for n, line in enumerate(text.splitlines(), start=1) if (parts := line.split())]


def read_ctm(path: str | Path) -> dict[str, list[Segment]]:
    """Segments per utterance of a CTM file (``<utt> <channel> <start> <duration> <phone> [<conf>]``)."""
    path = Path(path)
    out: dict[str, list[Segment]] = {}
    for n, parts in numbered_fields(path, "CTM file", "fix the file", missing_is_error=True):
        if parts[0].startswith(";;"):
            continue
        if len(parts) < 5:
            raise DatasetError(f"CTM file {path} line {n}: expected '<utt> <channel> <start> <duration> <phone>'; "
                               f"fix the line")
        try:
            start, dur = float(parts[2]), float(parts[3])
        except ValueError:
            raise DatasetError(f"CTM file {path} line {n}: start and duration must be numbers; fix the line") from None
        if not (math.isfinite(start) and math.isfinite(dur)) or start < 0 or dur < 0:
            raise DatasetError(f"CTM file {path} line {n}: negative or non-finite time; fix the line")
        out.setdefault(parts[0], []).append(Segment(start, start + dur, parts[4]))
    for segs in out.values():
        segs.sort(key=lambda s: s.start)
    return out


# ------------------------------------------------------------------------------------------------------
# Segments -> frame labels
# ------------------------------------------------------------------------------------------------------


def frame_count(end_seconds: float) -> int:
    """10 ms label frames of an utterance whose alignment ends at ``end_seconds``: ``floor(100 t)``."""
    return max(0, int(math.floor(end_seconds / FRAME_SECONDS + 1e-6)))


def segments_to_frames(segments: Sequence[Segment], n_frames: int, phone_map: PhoneMap | None = None,
                       ) -> list[str | None]:
    """The phone name of every 10 ms frame (None: no label): the interval holding the frame's middle wins;
    uncovered time is silence (see the module docstring)."""
    pm = phone_map or PhoneMap()
    silence = pm("")
    names: list[str | None] = [silence] * n_frames
    if n_frames == 0:
        return names
    for seg in segments:
        # frames whose middle (f + 0.5) * 10 ms lies in [start, end)
        first = max(0, int(math.ceil(seg.start / FRAME_SECONDS - 0.5 - 1e-6)))
        last = min(n_frames, int(math.ceil(seg.end / FRAME_SECONDS - 0.5 - 1e-6)))
        if last > first:
            name = pm(seg.label)
            names[first:last] = [name] * (last - first)
    return names


def build_inventory(names: Iterable[str | None]) -> list[str]:
    """:data:`CPC41` when every name is in it, else the names found, sorted (silence first, ``spn`` last)."""
    found = {n for n in names if n is not None}
    if found <= set(CPC41):
        return list(CPC41)
    rest = sorted(found - {"sil", "spn"})
    return (["sil"] if "sil" in found else []) + rest + (["spn"] if "spn" in found else [])


def names_to_ids(names: Sequence[str | None], inventory: Sequence[str], where: str) -> np.ndarray:
    """Frame names -> ids (int64, -1 for None); a name outside ``inventory`` raises DatasetError naming
    ``where``."""
    index = {n: i for i, n in enumerate(inventory)}
    out = np.full(len(names), -1, dtype=np.int64)
    for f, n in enumerate(names):
        if n is None:
            continue
        i = index.get(n)
        if i is None:
            raise DatasetError(f"{where}: phone {n!r} is not in the phone inventory ({len(inventory)} names, "
                               f"e.g. {', '.join(inventory[:5])}); add it to phones.txt or map it (--stress, "
                               f"--silence, --spn)")
        out[f] = i
    return out


class FrameLabelSet:
    """Frame labels per utterance (int64 arrays, -1 = no label) with the CPC phone file's interface.

    ``sources[utt]`` names the file each utterance came from (for error messages)."""

    def __init__(self, labels: Mapping[str, np.ndarray], inventory: Sequence[str], sources: Mapping[str, str],
                 description: str):
        self._labels = dict(labels)
        self.inventory = list(inventory)
        self.sources = dict(sources)
        self.path = description

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self._labels

    def __len__(self) -> int:
        return len(self._labels)

    def keys(self) -> list[str]:
        return list(self._labels)

    def count(self, utt_id: str) -> int:
        return int(len(self._labels[utt_id]))

    def labels(self, utt_id: str, n_classes: int | None = None) -> np.ndarray:
        return self._labels[utt_id]

    def alias(self, new_key: str, existing: str) -> None:
        """Make ``new_key`` give the labels of ``existing`` (an item known under another name)."""
        self._labels[new_key] = self._labels[existing]
        self.sources[new_key] = self.sources.get(existing, "")


def load_textgrids(paths: Mapping[str, Path], phone_map: PhoneMap | None = None, *, tier: str | None = None,
                   inventory: Sequence[str] | None = None) -> FrameLabelSet:
    """Parse the TextGrid of every utterance (``utt -> path``) into frame labels; ``inventory`` None builds
    one from all of them (:func:`build_inventory`)."""
    pm = phone_map or PhoneMap()
    names: dict[str, list[str | None]] = {}
    for utt, path in paths.items():
        segments, xmax = read_textgrid(path, tier)
        names[utt] = segments_to_frames(segments, frame_count(xmax), pm)
    inv = list(inventory) if inventory is not None else build_inventory(n for v in names.values() for n in v)
    labels = {utt: names_to_ids(v, inv, f"TextGrid {paths[utt]}") for utt, v in names.items()}
    desc = (f"{len(paths)} TextGrid file(s) under {os.path.commonpath([str(Path(p).parent) for p in paths.values()])}"
            if paths else "no TextGrid files")
    return FrameLabelSet(labels, inv, {u: str(p) for u, p in paths.items()}, desc)


def load_ctm(path: str | Path, phone_map: PhoneMap | None = None, *,
             inventory: Sequence[str] | None = None) -> FrameLabelSet:
    """Frame labels of every utterance of a CTM file (frames up to the end of its last segment)."""
    pm = phone_map or PhoneMap()
    segs = read_ctm(path)
    names = {utt: segments_to_frames(s, frame_count(max(x.end for x in s)), pm) for utt, s in segs.items()}
    inv = list(inventory) if inventory is not None else build_inventory(n for v in names.values() for n in v)
    labels = {utt: names_to_ids(v, inv, f"CTM file {path} (utterance {utt})") for utt, v in names.items()}
    return FrameLabelSet(labels, inv, {u: str(path) for u in segs}, f"CTM file {path}")


# ------------------------------------------------------------------------------------------------------
# Finding TextGrids next to the audio, and writing the CPC format
# ------------------------------------------------------------------------------------------------------


def textgrid_beside(audio: Path) -> Path | None:
    """``<utt>.TextGrid`` next to ``<utt>.flac`` (any case of the suffix), or None."""
    for suffix in TEXTGRID_SUFFIXES:
        p = audio.with_suffix(suffix)
        if p.is_file():
            return p
    return None


def index_textgrids(folder: Path) -> dict[str, list[Path]]:
    """Every TextGrid under ``folder`` (recursive) by file stem."""
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return found
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() == ".textgrid" and p.is_file():
            found.setdefault(p.stem, []).append(p)
    return found


def find_textgrids(root: Path, audio: Mapping[str, Path], relative: Mapping[str, str] | None = None,
                   ) -> dict[str, Path]:
    """The TextGrid of every utterance (``utt -> audio path``) that has one: beside the audio file, else under
    ``<root>/alignments/`` in MFA's output layout (the audio's relative folder, or any folder when the file
    name is unique). ``relative`` gives each utterance's audio path relative to the corpus root."""
    out: dict[str, Path] = {}
    mfa = root / ALIGNMENT_DIR
    index = index_textgrids(mfa)
    for utt, wav in audio.items():
        p = textgrid_beside(Path(wav))
        if p is None and index:
            stem = Path(wav).stem
            rel = relative.get(utt) if relative else None
            if rel is not None:
                want = Path(rel).with_suffix("")
                exact = [c for c in index.get(stem, []) if c.relative_to(mfa).with_suffix("") == want]
                if exact:
                    p = exact[0]
            if p is None and len(index.get(stem, [])) == 1:
                p = index[stem][0]
        if p is not None:
            out[utt] = p
    return out


def read_phone_names(path: Path) -> list[str]:
    """``phones.txt`` (``<id> <name>`` per line) as a list indexed by id (missing ids named by number)."""
    names: dict[int, str] = {}
    for n, parts in numbered_fields(path, "phone names file", "restore it"):
        if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
            raise DatasetError(f"phone names file {path} line {n}: expected '<id> <name>'; fix the file")
        names[int(parts[0])] = parts[1]
    top = max(names, default=-1)
    return [names.get(i, str(i)) for i in range(max(top + 1, 0))]


def files_signature(paths: Iterable[str | Path]) -> str:
    """A short hash of files' names, sizes and modification times: feature caches keyed on a dataset's plain
    attributes re-encode when its phone labels change."""
    h = hashlib.sha256()
    for p in sorted(str(x) for x in paths):
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:16]


def write_cpc(out_dir: str | Path, labels: FrameLabelSet) -> tuple[Path, Path]:
    """Write ``converted_aligned_phones.txt`` (``<utt> id id ...``, utterances sorted) and ``phones.txt``.

    Frames without a label (-1) are written as -1. Returns the two paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [" ".join([utt, *map(str, labels.labels(utt).tolist())]) for utt in sorted(labels.keys())]
    phone_path, names_path = out / "converted_aligned_phones.txt", out / "phones.txt"
    atomic_write_text(phone_path, "".join(line + "\n" for line in lines))
    atomic_write_text(names_path, "".join(f"{i} {n}\n" for i, n in enumerate(labels.inventory)))
    return phone_path, names_path


def window_labels(labels: np.ndarray, offset: int, length: int, hop: int, real_samples: int) -> np.ndarray:
    """Frame labels (F,) of the window ``[offset, offset + length)`` of an utterance: ``length // hop`` labels
    starting at ``offset // hop``; frames past the alignment or in zero padding (beyond ``real_samples``) are -1."""
    first, count = offset // hop, length // hop
    out = np.full(count, -1, dtype=np.int64)
    piece = labels[first: first + count]
    out[: len(piece)] = piece
    out[max(0, (real_samples - offset) // hop):] = -1
    return out


def coverage_line(source: str, coverage: Mapping[str, tuple[int, int]]) -> str:
    """``<source> covers 12 of 48 utterances of train (25.0%), 3 of 12 of test (25.0%)``."""
    parts = [f"{a} of {n} utterances of {split} ({100.0 * a / max(n, 1):.1f}%)" for split, (a, n) in coverage.items()]
    return f"phone labels ({source}) cover " + ", ".join(parts)
