"""Probe tasks: what each one reads (dataset view, labels, pooling) and the settings of a probe run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..config import RunConfig
from ..errors import UserError
from ..runs import SYLLABLE_TASKS as _ITEM_TASKS
from ..runs import data_config, open_run_data

TASKS = ("phone", "speaker", "syllable", "vowel", "consonant")
SYLLABLE_TASKS = tuple(t for t in _ITEM_TASKS if t in TASKS)
PROBE_POOLS = ("mean", "max", "flatten", "none")
DEFAULT_EFFICIENCY = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class ProbeSettings:
    """One probe task's protocol: features (mode, pool), the heads (bias, epochs, lr, batch, weight decay,
    standardised inputs) and the number of seeds."""

    task: str = "vowel"
    mode: str = "mean"
    bias: bool = True
    pool: str = "mean"
    seeds: int = 3
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    standardize: bool = False

    def check(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"--task {self.task!r} is not a probe task; choose from {', '.join(TASKS)}")
        if self.pool not in PROBE_POOLS:
            raise UserError(f"--pool {self.pool!r}: choose mean, max, flatten or none")
        if self.task == "phone" and self.pool != "none":
            raise UserError("--task phone is a per-frame probe: use --pool none")
        if self.task != "phone" and self.pool == "none":
            raise UserError(f"--task {self.task} needs one vector per item: use --pool mean, max or flatten")
        if self.mode not in ("mean", "sample"):
            raise UserError(f"--mode {self.mode!r}: choose mean or sample")
        if self.seeds < 1:
            raise UserError("--seeds must be >= 1")
        if self.epochs < 0 or self.batch_size < 1:
            raise UserError("--epochs must be >= 0 and --batch-size >= 1")


def label_key(task: str) -> str:
    """The label an item carries for ``task`` (``phones`` per 10 ms frame for the phone task)."""
    return "phones" if task == "phone" else task


def feature_pool(task: str, pool: str) -> str:
    """The :func:`~smooth_infomax.features.extract_features` pool of a task: label frames for phones."""
    return "label-frames" if task == "phone" else pool


def dataset_group(task: str) -> str:
    """Tasks of one group read the same items, so one encoding serves them all."""
    return "syllables" if task in SYLLABLE_TASKS else "utterances"


def open_task_data(data_path: Union[str, os.PathLike[str], None], task: str, split: str, *,
                   cfg: Optional[RunConfig] = None, sample_rate: int = 16000,
                   split_scheme: Optional[str] = None) -> Any:
    """The dataset a probe task reads (syllable items for syllable/vowel/consonant, whole utterances otherwise),
    opened through :func:`smooth_infomax.runs.open_run_data` with the run's config (``cfg``) when given."""
    if cfg is None:
        cfg = data_config(sample_rate, data_path, split_scheme or "reference")
    return open_run_data(cfg, split, task=task, data_path=data_path, split_scheme=split_scheme)


def class_names(dataset: Any, task: str) -> Optional[list[str]]:
    names = getattr(dataset, "label_names", {}) or {}
    if task == "phone":
        return names.get("phones") or names.get("phone")
    return names.get(label_key(task))


def n_classes(names: Optional[Sequence[str]], *labels: np.ndarray) -> int:
    """Classes of a task: the named classes, or one more than the largest label seen."""
    seen = [int(lab.max()) for lab in labels if len(lab)]
    top = max(seen) + 1 if seen else 1
    return max(top, len(names)) if names else top


__all__ = ["TASKS", "SYLLABLE_TASKS", "DEFAULT_EFFICIENCY", "ProbeSettings", "label_key", "feature_pool",
           "dataset_group", "open_task_data", "class_names", "n_classes"]
