"""What training reports: per-epoch statistics, ``metrics.csv``, TensorBoard, the progress bar, chance warnings.

Statistics are accumulated on the device without a host sync per step (:class:`EpochStats`); they reach Python
once per epoch. Sums are kept in float64 and each value is weighted by its batch's item count, which gives the
same numbers as summing ``float(value) * items`` in Python.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tqdm import tqdm

from ..checkpoint import atomic_write_text
from ..progress import track

METRIC_FIELDS = ["epoch", "split", "module", "loss", "infonce", "kl", "accuracy", "lr", "seconds"]
STAT_FIELDS = ("loss", "infonce", "kl", "accuracy")


class EpochStats:
    """Item-weighted sums of every module's loss, InfoNCE, KL and mean accuracy over an epoch.

    ``sums[name]``: a (4,) tensor on the losses' device (float64; float32 where the device has no float64),
    ``count[name]``: items seen. :meth:`add` queues a few device operations (no host sync); :meth:`means` syncs.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count: dict[str, int] = {}
        self._group: tuple[str, ...] = ()
        self._group_sum: torch.Tensor | None = None  # (M, 4) for the modules of the last batches

    def add(self, losses: Sequence[Any], weight: int) -> None:
        """Add one batch of :class:`~smooth_infomax.model.ModuleLoss` values, weighted by its ``weight`` items."""
        if not losses:
            return
        names = tuple(ml.name for ml in losses)
        if names != self._group:
            self._flush()
            self._group = names
        device = losses[0].loss.device
        with torch.no_grad():
            values = torch.stack([t.float().to(device) for ml in losses
                                  for t in (ml.loss, ml.infonce, ml.kl, ml.accuracy.float().mean())])
            values = values.to(torch.float32 if device.type == "mps" else torch.float64).view(len(losses), 4)
            values = values * weight  # then a separate add: the rounding of float(value) * weight summed in Python
            self._group_sum = values if self._group_sum is None else self._group_sum + values
        for name in names:
            self.count[name] = self.count.get(name, 0) + weight

    def _flush(self) -> None:
        if self._group_sum is not None:
            for name, row in zip(self._group, self._group_sum):
                previous = self.sums.get(name)
                self.sums[name] = row if previous is None else previous + row
        self._group, self._group_sum = (), None

    def totals(self) -> tuple[list[str], dict[str, torch.Tensor], dict[str, int]]:
        """(module names, {name: (4,) sums}, {name: items}) of everything added so far."""
        self._flush()
        return list(self.sums), self.sums, self.count

    def means(self) -> dict[str, dict[str, float]]:
        """{module: {loss, infonce, kl, accuracy}} averaged over items (Python floats)."""
        self._flush()
        out = {}
        for name, total in self.sums.items():
            n = max(1, self.count[name])
            out[name] = {k: v / n for k, v in zip(STAT_FIELDS, total.tolist())}
        return out


def epoch_rows(epoch: int, split: str, means: dict[str, dict[str, float]], lrs: dict[str, float],
               seconds: float) -> list[dict[str, Any]]:
    """``metrics.csv`` rows for one epoch (``epoch`` counted from 0; the rows count from 1)."""
    return [{"epoch": epoch + 1, "split": split, "module": name, "loss": round(m["loss"], 6),
             "infonce": round(m["infonce"], 6), "kl": round(m["kl"], 6), "accuracy": round(m["accuracy"], 6),
             "lr": lrs[name], "seconds": round(seconds, 3)} for name, m in means.items()]


def write_metrics(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write ``metrics.csv`` (atomically) with the columns of :data:`METRIC_FIELDS`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})
    atomic_write_text(path, buf.getvalue())


class TensorBoard:
    """Scalars ``{split}/{module}/{loss,infonce,kl,accuracy}`` per epoch; a no-op when disabled or when the
    optional ``tensorboard`` package is missing."""

    def __init__(self, path: Path, enabled: bool):
        self.writer = None
        if enabled:
            try:  # an optional extra (pip install smooth-infomax[tensorboard])
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # noqa: BLE001 - tensorboard missing or broken: log to CSV only
                return
            self.writer = SummaryWriter(str(path))

    def log(self, rows: list[dict[str, Any]]) -> None:
        if self.writer is None:
            return
        for row in rows:
            for key in STAT_FIELDS:
                self.writer.add_scalar(f"{row['split']}/{row['module']}/{key}", row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def progress(batches: Iterable[Any], enabled: bool, desc: str, total: int | None = None) -> Any:
    """Progress over ``batches``: on a terminal a tqdm bar (elapsed time, ETA, the losses as its postfix),
    otherwise :func:`smooth_infomax.progress.track`'s plain line every 30 s; ``batches`` itself when disabled."""
    if not enabled:
        return batches
    if sys.stderr.isatty():
        return tqdm(batches, desc=desc, total=total, leave=False, file=sys.stderr, dynamic_ncols=True)
    return track(batches, desc, total)


def chance_warnings(val: dict[str, dict[str, float]], negatives: int, betas: dict[str, float], epochs_done: int,
                    total_epochs: int, tolerance: float = 0.01) -> dict[str, str]:
    """Warnings for modules whose held-out InfoNCE is not below chance, ``log(negatives + 1)``.

    Checked once ``epochs_done >= max(10, total_epochs // 10)``; a module within ``tolerance`` (relative) of chance
    has learnt nothing. For a module with a KL term (beta > 0) a KL near 0 means its posterior collapsed onto the
    prior (seen at thesis scale with beta 0.0035 on the small leakage-free split). Returns {module: message};
    pure function, the caller prints.
    """
    if epochs_done < max(10, total_epochs // 10):
        return {}
    chance = math.log(negatives + 1)
    out = {}
    for name, m in val.items():
        if m["infonce"] < (1 - tolerance) * chance:
            continue
        msg = (f"warning: module {name}: held-out InfoNCE {m['infonce']:.3f} is not below chance "
               f"(log({negatives} + 1) = {chance:.3f}) after {epochs_done} epochs")
        if betas.get(name, 0.0) > 0:
            kl = m.get("kl", float("nan"))
            msg += (f"; its KL is {kl:.3g}" + (", so its posterior has collapsed onto the prior" if kl < 0.05 else "")
                    + "; lower loss.beta or set model.logvar_bias_init (e.g. -4) and train again")
        else:
            msg += "; check the data and train.lr"
        out[name] = msg
    return out


class ChanceMonitor:
    """Prints each module's chance warning once per run (to stderr)."""

    def __init__(self, negatives: int, betas: dict[str, float]):
        self.negatives, self.betas = negatives, betas
        self.warned: set[str] = set()

    def check(self, val: dict[str, dict[str, float]], epochs_done: int, total_epochs: int) -> list[str]:
        """Print and return the new warnings for ``val`` (modules trained ``epochs_done`` of ``total_epochs``)."""
        new = []
        for name, msg in chance_warnings(val, self.negatives, self.betas, epochs_done, total_epochs).items():
            if name not in self.warned:
                self.warned.add(name)
                print(msg, file=sys.stderr)
                new.append(msg)
        return new


__all__ = ["METRIC_FIELDS", "EpochStats", "epoch_rows", "write_metrics", "TensorBoard", "progress",
           "chance_warnings", "ChanceMonitor"]
