"""What a training run has done, read from its ``metrics.csv``: epochs trained and the ``train.json`` summary."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..errors import UserError


def _rows(run: Path) -> list[dict[str, str]]:
    path = Path(run) / "metrics.csv"
    try:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return []
    except (OSError, csv.Error) as exc:
        raise UserError(f"{path} cannot be read ({exc}); delete the run folder to retrain it") from None


def done_epochs(run: Path) -> int:
    """Epochs the run has finished (its last ``train`` row in metrics.csv; 0 when it has none)."""
    epochs = [int(r["epoch"]) for r in _rows(run) if r.get("split") == "train" and r.get("epoch", "").isdigit()]
    return max(epochs, default=0)


def training_summary(run: Path) -> dict[str, Any] | None:
    """``{"epochs", "train_seconds", "final_val": {module: {infonce, kl, accuracy}}}`` or None without metrics.

    ``train_seconds`` sums one ``train`` row per epoch (every module's row carries the epoch's wall time);
    ``final_val`` holds the validation rows of the last epoch.
    """
    rows = _rows(run)
    if not rows:
        return None
    try:
        last_epoch = max(int(r["epoch"]) for r in rows)
        final = {r["module"]: {"infonce": float(r["infonce"]), "kl": float(r["kl"]), "accuracy": float(r["accuracy"])}
                 for r in rows if r["split"] == "val" and int(r["epoch"]) == last_epoch}
        per_epoch = {int(r["epoch"]): float(r["seconds"]) for r in rows if r["split"] == "train"}
    except (KeyError, ValueError) as exc:
        raise UserError(f"{Path(run) / 'metrics.csv'} has an unexpected row ({exc}); delete the run folder to "
                        f"retrain it") from None
    return {"epochs": last_epoch, "train_seconds": sum(per_epoch.values()), "final_val": final}


__all__ = ["done_epochs", "training_summary"]
