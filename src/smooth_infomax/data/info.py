"""``smooth-infomax data info``: what a dataset folder holds, from file headers only (no decoding)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..audio import info as audio_info
from ..errors import AudioError
from . import open_dataset
from .artificial import SPLIT_SCHEMES, VIEWS, split_files
from .folder import FolderDataset, list_audio_files
from .layout import detect_layout
from .librispeech import MissingSplitFile

MAX_CLASSES_SHOWN = 12


def _dataset_summary(ds: Any) -> dict[str, Any]:
    out = dict(ds.summary()) if hasattr(ds, "summary") else {
        "labels": {k: {n: None for n in v} for k, v in (getattr(ds, "label_names", {}) or {}).items()}}
    if "files" not in out:  # a dataset class written elsewhere (e.g. syllable segments): count its items
        out.setdefault("items", len(ds))
    return out


def _count(summary: dict[str, Any]) -> int:
    return int(summary.get("files", summary.get("items", 0)))


def _scan_audio(root: Path, skip_bad: bool) -> dict[str, Any]:
    """Files, hours and sample rates of every audio file under ``root`` (for folders without split files)."""
    seconds, rates, files, skipped = 0.0, Counter(), 0, []
    for p in list_audio_files(root):
        try:
            meta = audio_info(p)
        except AudioError:
            if not skip_bad:
                raise
            skipped.append(str(p))
            continue
        files += 1
        seconds += meta.duration
        rates[meta.sample_rate] += 1
    out: dict[str, Any] = {"files": files, "hours": round(seconds / 3600, 4),
                           "sample_rates": {str(k): v for k, v in sorted(rates.items())}, "labels": {}}
    if skipped:
        out["skipped"] = skipped
    return out


def describe(path: str | os.PathLike[str], *, skip_bad: bool = False) -> dict[str, Any]:
    """A JSON-able description of a dataset: ``{"path", "layout", "views": {view: {split: summary}}, ...}``.

    A split summary holds ``files``, ``hours``, ``sample_rates`` (rate -> files), ``labels`` (task -> class ->
    count) and ``speakers`` where known. For the artificial speech dataset ``split_schemes`` gives the file
    counts of both split schemes; folders without a ``split`` column are reported once, as split ``all``.
    """
    p = Path(path)
    layout = detect_layout(p)
    out: dict[str, Any] = {"path": str(p), "layout": layout, "views": {}, "notes": []}
    common = dict(crop=None, skip_bad=skip_bad)
    if layout == "artificial":
        for view in VIEWS:
            out["views"][view] = {s: _dataset_summary(open_dataset(p, view=view, split=s, **common))
                                  for s in ("train", "test")}
        out["split_schemes"] = {
            scheme: {view: {s: len(split_files(p, view, s, scheme)) for s in ("train", "test")} for view in VIEWS}
            for scheme in SPLIT_SCHEMES}
        out["notes"].append("leakage_free: words of the syllable test set are kept out of pre-training (words "
                            "train) and out of the syllable probe's training set")
    elif layout in ("librispeech", "synthetic"):
        try:
            out["views"]["utterances"] = {s: _dataset_summary(open_dataset(p, split=s, **common))
                                          for s in ("train", "test")}
        except MissingSplitFile as exc:
            out["notes"].append(str(exc))
            out["views"]["utterances"] = {"all": _scan_audio(p, skip_bad)}
        if layout == "synthetic":
            try:
                out["views"]["syllables"] = {s: _dataset_summary(open_dataset(p, view="syllables", split=s, **common))
                                             for s in ("train", "test")}
            except ModuleNotFoundError as exc:
                out["notes"].append(f"syllable view not available (module {exc.name} is missing)")
    else:
        train = FolderDataset(p, split="train", **common)
        if train.has_split_column:
            out["views"]["utterances"] = {"train": train.summary(),
                                          "test": FolderDataset(p, split="test", **common).summary()}
        else:
            out["views"]["utterances"] = {"all": train.summary()}
            out["notes"].append("no split column: every file is in both the train and the test split")
        if train.manifest is not None:
            out["manifest"] = str(train.manifest)
    out["totals"] = {view: sum(_count(s) for s in splits.values()) for view, splits in out["views"].items()}
    return out


def _classes(counts: dict[str, Any]) -> str:
    shown = list(counts.items())[:MAX_CLASSES_SHOWN]
    text = ", ".join(f"{k} {v}" if v is not None else str(k) for k, v in shown)
    if len(counts) > MAX_CLASSES_SHOWN:
        text += f", ... ({len(counts)} classes)"
    return text


def format_description(d: dict[str, Any]) -> str:
    """The human-readable form of :func:`describe`'s result."""
    totals = ", ".join(f"{n} {view}" for view, n in (d.get("totals") or {}).items())
    lines = [f"{d['path']}: {d['layout']} layout" + (f" ({totals})" if totals else "")]
    for view, splits in d.get("views", {}).items():
        for split, s in splits.items():
            head = f"  {view} / {split}: " + (f"{s['files']} files" if "files" in s else f"{_count(s)} items")
            if "samples_per_item" in s:
                head += f" of {s['samples_per_item']} samples"
            if "hours" in s:
                head += f", {s['hours']:.3f} h"
            if "speakers" in s:
                head += f", {s['speakers']} speakers"
            if s.get("sample_rates"):
                head += ", sample rates " + ", ".join(f"{r} Hz ({n})" for r, n in s["sample_rates"].items())
            lines.append(head)
            for task, counts in (s.get("labels") or {}).items():
                lines.append(f"    {task}: {_classes(counts)}")
            if "phone_alignments" in s:
                n, a = _count(s), s["phone_alignments"]
                line = (f"    phones: {a} of {n} utterances aligned ({100.0 * a / max(n, 1):.1f}%), "
                        f"{s['phone_classes']} classes")
                if s.get("phone_source"):
                    line += f", from {s['phone_source']}"
                lines.append(line)
            if s.get("skipped"):
                lines.append(f"    skipped {len(s['skipped'])} unreadable file(s), first: {s['skipped'][0]}")
    for scheme, views in (d.get("split_schemes") or {}).items():
        parts = [f"{view} {c['train']} train / {c['test']} test" for view, c in views.items()]
        lines.append(f"  split scheme {scheme}: " + "; ".join(parts))
    if d.get("manifest"):
        lines.append(f"  manifest: {d['manifest']}")
    for note in d.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
