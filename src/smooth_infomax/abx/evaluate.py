"""ABX of a feature source on a dataset with phone alignments: features, items, scores, JSON + Markdown.

Features come from :func:`smooth_infomax.features.extract_features` (``pool="none"``: every utterance's frames
of every output) and are mapped onto the 10 ms label frames with
:func:`smooth_infomax.features.align_to_label_frames`, the rule the phone probe uses. An utterance keeps the
label frames that every compared source reaches, so the encoder, its random-init twin and log-mel are scored
on exactly the same items. Only utterances with phone labels are read (partial alignments).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..checkpoint import atomic_write_json, atomic_write_text
from ..errors import UserError
from ..features import LogMelSource, align_to_label_frames, extract_features, source_config
from ..runs import open_run_data
from ..sources.resolve import resolve_source
from .items import ItemTable, item_features, limit_cells, phone_items, silence_ids
from .metric import abx_error

SPLITS = ("train", "test", "all")


def open_aligned(source: Any, data_path: Any, split: str) -> list[tuple[Any, list[int]]]:
    """(dataset, indices of its utterances with phone labels) for ``split`` (``all``: train then test)."""
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: choose train, test or all")
    cfg = source_config(source, data_path)
    out = []
    for s in (("train", "test") if split == "all" else (split,)):
        ds = open_run_data(cfg, s, task="phone", data_path=data_path)
        aligned = getattr(ds, "aligned_indices", None)
        idx = list(aligned()) if callable(aligned) else list(range(len(ds)))
        if idx:
            out.append((ds, idx))
    if not out:
        raise UserError(f"--data {data_path}: no utterance of split {split} has phone labels; add "
                        f"converted_aligned_phones.txt or TextGrids (see 'smooth-infomax data info {data_path}')")
    return out


def label_frames(source: Any, parts: Sequence[tuple[Any, list[int]]], outputs: Optional[Sequence[int]], *,
                 seed: int = 0, device: str = "cpu", batch_size: int = 16, cache_dir: Any = None,
                 tag: Optional[str] = None) -> tuple[list[str], list[list[np.ndarray]], list[np.ndarray], np.ndarray]:
    """(output names, per output the (F_u, C) label-frame features of every utterance, phones (F_u,) per
    utterance, speakers (U,)): frames aligned with the probe's rule.

    A fully aligned split is encoded whole (every output, the probe's settings), so that the encoding is shared
    with the probes through ``cache_dir``; a partly aligned one encodes its aligned utterances only."""
    names: list[str] = []
    frames: list[list[np.ndarray]] = []
    phones: list[np.ndarray] = []
    speakers: list[int] = []
    for ds, idx in parts:
        whole = len(idx) == len(ds)
        fs = extract_features(source, ds, pool="none", mode="mean", seed=seed, device=device, batch_size=batch_size,
                              indices=None if whole else idx, cache_dir=cache_dir, tag=tag)
        rows = list(idx) if whole else list(range(len(idx)))
        picked = list(range(len(fs.names))) if outputs is None else [fs.index(o) for o in outputs]
        names = [fs.names[m] for m in picked]
        if not frames:
            frames = [[] for _ in names]
        labs = fs.frame_labels.get("phones")
        if labs is None:
            raise UserError("the dataset gives no frame-level phone labels; ABX needs phone alignments")
        spk = fs.labels.get("speaker", np.zeros(len(labs), dtype=np.int64))
        for u in rows:
            lab = labs[u]
            aligned = [align_to_label_frames(fs.features[m][u], fs.hops[m], len(lab)) for m in picked]
            n = min(len(a) for a in aligned)
            for k, a in enumerate(aligned):
                frames[k].append(a[:n])
            phones.append(np.asarray(lab[:n], dtype=np.int64))
            speakers.append(int(spk[u]))
    return names, frames, phones, np.asarray(speakers, dtype=np.int64)


def score_outputs(names: Sequence[str], frames: Sequence[Sequence[np.ndarray]], items: ItemTable, *,
                  device: str = "cpu") -> dict[str, Any]:
    """ABX error (see :func:`abx_error`) of every output on ``items``, with the seconds it took."""
    out: dict[str, Any] = {}
    for name, per_utt in zip(names, frames):
        t0 = time.perf_counter()
        res = abx_error(item_features(per_utt, items), items.phone, items.context, items.speaker, device=device)
        res["seconds"] = round(time.perf_counter() - t0, 3)
        out[name] = res
    return out


def run_abx(source: Any, data_path: Any, out_dir: Any, *, modules: Optional[Sequence[int]] = None,
            split: str = "test", baselines: bool = True, max_per_cell: Optional[int] = 10, seed: int = 0,
            device: str = "cpu", cache_dir: Any = None) -> dict[str, Any]:
    """Within- and across-speaker ABX of ``source`` (a spec or a FeatureSource) and, with ``baselines``, of
    its random-init twin (our encoders) and log-mel; writes ``abx.json`` and ``abx.md`` in ``out_dir``."""
    src = resolve_source(source, device=device, name="encoder")
    parts = open_aligned(src, data_path, split)
    # (model, source, outputs, cache tag): the tags the probes use, so that a shared cache_dir is reused
    sources: list[tuple[str, Any, Optional[Sequence[int]], str]] = [("encoder", src, modules, "encoder")]
    if baselines:
        twin = getattr(src, "random_twin", None)
        if callable(twin):
            sources.append(("random-init", twin(), modules, "random"))
        sources.append(("log-mel", LogMelSource(int(src.sample_rate)), None, "logmel"))
    extracted = {model: label_frames(s, parts, outs, device=device, cache_dir=cache_dir, tag=tag)
                 for model, s, outs, tag in sources}
    # one item set for every model: the label frames that all of them reach
    n_keep = [min(len(p) for p in group) for group in zip(*(e[2] for e in extracted.values()))]
    phones = [p[:n] for p, n in zip(next(iter(extracted.values()))[2], n_keep)]
    speakers = next(iter(extracted.values()))[3]
    class_names = list((getattr(parts[0][0], "label_names", {}) or {}).get("phones", []))
    items = phone_items(phones, speakers, exclude=silence_ids(class_names))
    items = limit_cells(items, max_per_cell, seed=seed)
    if len(items) == 0:
        raise UserError(f"--data {data_path}: the phone alignments give no ABX item (a phone with labelled "
                        f"neighbours); check them with 'smooth-infomax data info {data_path}'")
    results: dict[str, Any] = {}
    for tag, (names, frames, _, _) in extracted.items():
        trimmed = [[f[:n] for f, n in zip(per, n_keep)] for per in frames]
        results[tag] = score_outputs(names, trimmed, items, device=device)
    speaker_names = list((getattr(parts[0][0], "label_names", {}) or {}).get("speaker", []))
    result = {
        "source": str(source) if isinstance(source, (str, Path)) else getattr(src, "name", "source"),
        "data": str(data_path), "split": split,
        "settings": {"max_per_cell": max_per_cell, "seed": seed, "distance": "angular, DTW path mean",
                     "context": "within", "aggregation": "contexts, then speakers, then phone pairs"},
        "n_utterances": int(len(phones)), "n_items": int(len(items)),
        "n_speakers": int(len(np.unique(speakers))),
        "phones": class_names, "speakers": speaker_names, "results": results,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "abx.json", result)
    atomic_write_text(out / "abx.md", markdown_table(result))
    return result


def pipeline_abx(run_dir: Any, data_path: Any, out_dir: Any, *, cache_dir: Any = None,
                 max_per_cell: Optional[int] = 10) -> dict[str, Any]:
    """The ABX stage of ``smooth-infomax run``: every utterance with phone labels (both splits), the encoder of
    ``run_dir`` with its random-init twin and log-mel. Returns the result without per-speaker detail, or
    ``{"skipped": reason}`` when the data has no phone alignments (or they give no item)."""
    try:
        res = run_abx(run_dir, data_path, out_dir, split="all", cache_dir=cache_dir, max_per_cell=max_per_cell)
    except UserError as exc:
        if "phone labels" in str(exc) or "ABX item" in str(exc):
            return {"skipped": str(exc)}
        raise
    for outs in res["results"].values():
        for r in outs.values():
            r.pop("within_by_speaker", None)
    return res


def abx_report_rows(abx: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the report's ABX table from ``{model name: pipeline_abx result}``: one row per
    (model, baseline) and output, within / across speaker error %."""
    headers = ["model", "output", "within speaker %", "across speaker %", "items", "speakers"]
    rows = []
    for model, res in abx.items():
        if not isinstance(res, dict) or "results" not in res:
            continue
        for kind, outs in res["results"].items():
            label = model if kind == "encoder" else f"random-init {model}" if kind == "random-init" else kind
            for name, r in outs.items():
                rows.append([label, name, _pct(r.get("within")), _pct(r.get("across")), str(res["n_items"]),
                             str(res["n_speakers"])])
    # log-mel is the same for every model: keep its first row per output
    seen, unique = set(), []
    for r in rows:
        key = (r[0], r[1]) if r[0] == "log-mel" else id(r)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return headers, unique


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100.0 * v:.2f}"


def markdown_table(result: dict[str, Any]) -> str:
    """The ABX table: error % within and across speakers per model and output (lower is better)."""
    lines = [f"### ABX error (triphone, within context; {result['n_items']} items from {result['n_utterances']} "
             f"utterances, {result['n_speakers']} speakers, split {result['split']}; chance 50 %)", "",
             "| model | output | within speaker % | across speaker % | triplets within | triplets across |",
             "|---|---|---|---|---|---|"]
    for model, outs in result["results"].items():
        for name, r in outs.items():
            lines.append(f"| {model} | {name} | {_pct(r.get('within'))} | {_pct(r.get('across'))} | "
                         f"{r.get('n_triplets_within', 0)} | {r.get('n_triplets_across', 0)} |")
    return "\n".join(lines) + "\n"


__all__ = ["run_abx", "markdown_table", "label_frames", "open_aligned", "score_outputs", "pipeline_abx",
           "abx_report_rows"]
