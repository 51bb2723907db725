"""ABX items from frame-level phone alignments: every phone occurrence with its neighbours and speaker.

An utterance's 10 ms label frames (-1 = no label) are cut into runs of equal labels. Every run whose phone
is not silence (names in :data:`SILENCE_NAMES`, or ids given in ``exclude``) and that has a labelled run on
both sides becomes an item: (utterance, first frame, end frame, phone, previous phone, next phone, speaker).
Silence counts as context (an utterance-initial phone after leading silence is an item). ``context`` numbers
the distinct (previous, next) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

SILENCE_NAMES = frozenset({"sil", "sp", "spn", "", "<eps>", "silence", "pau", "h#"})


@dataclass
class ItemTable:
    """N ABX items; every field is an (N,) int64 array (frames ``[start, end)`` of utterance row ``utt``)."""

    utt: np.ndarray
    start: np.ndarray
    end: np.ndarray
    phone: np.ndarray
    prev: np.ndarray
    next: np.ndarray
    speaker: np.ndarray
    context: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return int(len(self.phone))

    def subset(self, rows: np.ndarray) -> ItemTable:
        rows = np.asarray(rows, dtype=np.int64)
        return ItemTable(*(getattr(self, k)[rows] for k in ("utt", "start", "end", "phone", "prev", "next",
                                                              "speaker", "context")))


def silence_ids(names: Sequence[str]) -> set[int]:
    """Ids of the phone names that are silence or noise (never central phones)."""
    return {i for i, n in enumerate(names) if n.strip().lower() in SILENCE_NAMES}


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, label) of every run of equal labels."""
    if len(labels) == 0:
        return []
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(labels)]])
    return [(int(a), int(b), int(labels[a])) for a, b in zip(starts, ends)]


def phone_items(phones: Sequence[np.ndarray], speakers: Sequence[int], *, exclude: Iterable[int] = (),
                ) -> ItemTable:
    """The items of utterances with frame labels ``phones[u]`` (F_u,) spoken by ``speakers[u]``."""
    skip = set(int(e) for e in exclude)
    rows: list[tuple[int, ...]] = []
    for u, (lab, spk) in enumerate(zip(phones, speakers)):
        runs = _runs(np.asarray(lab, dtype=np.int64).reshape(-1))
        for k in range(1, len(runs) - 1):
            a, b, p = runs[k]
            prev, nxt = runs[k - 1][2], runs[k + 1][2]
            if p < 0 or p in skip or prev < 0 or nxt < 0:
                continue
            rows.append((u, a, b, p, prev, nxt, int(spk)))
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 7)
    table = ItemTable(*(arr[:, k].copy() for k in range(7)))
    table.context = context_ids(table.prev, table.next)
    return table


def context_ids(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """One id per distinct (previous, next) pair, numbered in sorted order of the pairs."""
    if len(prev) == 0:
        return np.zeros(0, dtype=np.int64)
    pairs = np.stack([prev, nxt], axis=1)
    _, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def limit_cells(items: ItemTable, max_per_cell: int | None, seed: int = 0) -> ItemTable:
    """At most ``max_per_cell`` items per (context, phone, speaker), drawn with ``numpy.random.default_rng(seed)``
    (like Libri-light's ``max_size_group``); None keeps every item. Item order is kept."""
    if max_per_cell is None or len(items) == 0:
        return items
    rng = np.random.default_rng(seed)
    keys = np.stack([items.context, items.phone, items.speaker], axis=1)
    _, cell = np.unique(keys, axis=0, return_inverse=True)
    cell = cell.reshape(-1)
    keep = []
    for c in range(int(cell.max()) + 1):
        members = np.flatnonzero(cell == c)
        if len(members) > max_per_cell:
            members = np.sort(rng.choice(members, size=max_per_cell, replace=False))
        keep.append(members)
    return items.subset(np.sort(np.concatenate(keep)))


def item_features(frames: Sequence[np.ndarray], items: ItemTable) -> list[np.ndarray]:
    """The (end - start, C) label-frame features of every item from each utterance's (F_u, C) frames."""
    return [np.asarray(frames[u][a:b], dtype=np.float32) for u, a, b in zip(items.utt, items.start, items.end)]


__all__ = ["ItemTable", "phone_items", "context_ids", "limit_cells", "item_features", "silence_ids",
           "SILENCE_NAMES"]
