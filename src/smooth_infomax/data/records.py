"""The record every dataset yields, and the batch collation used by all loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Utterance:
    """One audio item.

    wave: float32 tensor of shape (1, T) at ``sample_rate`` (mono, in [-1, 1]).
    labels: task name -> label. Scalar class labels are ints (e.g. ``speaker``, ``syllable``, ``vowel``,
        ``consonant``, ``position``); frame-level phone labels are a LongTensor ``phones`` of shape (F,)
        with one id per 10 ms frame of ``wave``; strings (e.g. ``word``) are allowed for metadata.
    path: the audio file it came from; ``offset`` is the first sample taken from that file.
    """

    wave: torch.Tensor
    sample_rate: int
    path: str
    labels: dict[str, Any] = field(default_factory=dict)
    offset: int = 0


def collate(items: list[Utterance]) -> dict[str, Any]:
    """Stack equal-length utterances into a batch.

    Returns ``{"wave": (B, 1, T) float32, "path": [str], "offset": LongTensor (B,), <label>: ...}``;
    int labels become LongTensor (B,), tensor labels of equal shape are stacked, anything else stays a list.
    """
    if not items:
        raise ValueError("collate needs at least one utterance")
    lengths = {u.wave.shape[-1] for u in items}
    if len(lengths) != 1:
        raise ValueError(f"collate needs equal-length waves (use a crop); got lengths {sorted(lengths)[:5]}")
    batch: dict[str, Any] = {
        "wave": torch.stack([u.wave for u in items]),
        "path": [u.path for u in items],
        "offset": torch.tensor([u.offset for u in items], dtype=torch.long),
        "sample_rate": items[0].sample_rate,
    }
    keys = set().union(*(u.labels.keys() for u in items))
    for key in sorted(keys):
        values = [u.labels.get(key) for u in items]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.long)
        elif all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
