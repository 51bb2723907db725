"""Atomic file writes and the run-directory layout shared by every stage.

A run directory (``smooth-infomax train --out RUN_DIR``) holds::

    config.yaml              the resolved, validated config
    checkpoints/last.pt      training state (model, optimisers, schedulers, epoch, RNG states)
    encoder.pt               the trained encoder: {"model_config": dict, "state_dict": ...}
    metrics.csv              per-epoch, per-module losses and accuracies
    tb/                      TensorBoard events (when tensorboard is installed)

Every file is written to a temporary file in the same folder, flushed and fsync'ed, then renamed over the
target, so a crash or a full disk never leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import UserError


def _write_error(path: Path, exc: OSError) -> UserError:
    reason = exc.strerror or type(exc).__name__
    return UserError(f"cannot write {path}: {reason}; free disk space or fix the permissions and re-run "
                     f"(any previous version of the file is unchanged)")


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    """Write through ``write(fh)`` to a temporary file beside ``path``, fsync, then rename it over ``path``.

    On any failure the temporary file is removed and ``path`` keeps its previous content; an OSError (a full
    disk, a read-only folder) becomes a one-line UserError naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; results are ordinary files
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write(Path(path), lambda fh: fh.write(data), "wb")


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic_write(Path(path), lambda fh: fh.write(text), "w")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, then rename: the previous file survives any failure."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load a checkpoint written by this package, with a one-line error when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; check the run directory (train first, or pass the right --run)")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__}); delete it and re-run the stage") from None


def load_state(module: Any, state_dict: Any, path: str | Path) -> None:
    """``module.load_state_dict(state_dict)`` with a one-line UserError naming ``path`` when the shapes or names
    do not match (a config edited after the checkpoint was written, e.g. ``--set model.channels=...``)."""
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, KeyError, ValueError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise UserError(f"{path} does not match the model the config describes ({first}); resume with the "
                        f"config the run was trained with (its config.yaml), or start a new --out") from None


def run_paths(run_dir: str | Path) -> dict[str, Path]:
    run = Path(run_dir)
    return {
        "config": run / "config.yaml",
        "checkpoint": run / "checkpoints" / "last.pt",
        "encoder": run / "encoder.pt",
        "metrics": run / "metrics.csv",
        "tensorboard": run / "tb",
    }
