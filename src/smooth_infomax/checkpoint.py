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

import contextlib
import io
import json
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
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
    """``torch.save`` to a temporary file, then rename: the previous file survives any failure.

    ``obj`` must hold only what :func:`torch_load` reads back (tensors, plain Python data, numpy arrays): anything
    else raises TypeError before a file is written, so every file the package writes loads safely."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    unsafe = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(buf)) - _safe_names())
    if unsafe:
        raise TypeError(f"refusing to write {path}: it would hold {', '.join(unsafe)}, which torch_load does not "
                        f"read back; store plain data (dicts, lists, numbers, strings) and tensors")
    atomic_write_bytes(path, buf.getvalue())


class UnsafeFileError(UserError):
    """A file that holds Python objects other than tensors and plain data: it was refused, never executed."""


def _numpy_globals() -> list[Any]:
    """The numpy pieces of ``np.random.get_state()`` (saved in training checkpoints): an array and its dtype.

    Each entry pairs the object with the name a pickle refers to it by, under numpy 2 (``numpy._core``) and
    numpy 1 (``numpy.core``), so checkpoints written under either load under either."""
    reconstruct = np.core.multiarray._reconstruct if not hasattr(np, "_core") else np._core.multiarray._reconstruct
    out: list[Any] = [np.ndarray, np.dtype, (reconstruct, "numpy.core.multiarray._reconstruct"),
                      (reconstruct, "numpy._core.multiarray._reconstruct")]
    dtype_class = type(np.dtype(np.uint32))  # numpy >= 1.25 pickles a dtype through its class
    if dtype_class is not np.dtype:
        out.append(dtype_class)
    return out


#: everything :func:`torch_load` accepts beyond tensors and plain Python data (dict, list, tuple, str, numbers,
#: None): the numpy RNG state of training checkpoints. Nothing here can run code when unpickled.
SAFE_GLOBALS: list[Any] = _numpy_globals()

def _safe_names() -> set[str]:
    return {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}


_REFUSAL_DETAILS = (
    (re.compile(r"GLOBAL ([\w.]+) was not an allowed global"), "{}"),
    (re.compile(r"but got <class '([\w.]+)'>"), "{}"),
    (re.compile(r"Unsupported operand (\d+)"), "pickle opcode {}"),
)


def _refused(path: Path, exc: BaseException) -> UnsafeFileError:
    """The one-line error for a file the weights-only unpickler refused, naming what it refused."""
    text = str(exc)
    what = ""
    for pattern, form in _REFUSAL_DETAILS:
        match = pattern.search(text)
        if match:
            what = f" ({form.format(match.group(1))})"
            break
    return UnsafeFileError(f"{path} holds Python objects other than tensors and plain data{what}, which could run "
                           f"code when loaded; it was not loaded. Use files written by smooth-infomax, or a "
                           f"model folder exported with 'smooth-infomax export' (safetensors)")


def torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load a checkpoint written by this package, safely: only tensors, plain Python data and the allow-listed
    :data:`SAFE_GLOBALS` are unpickled (``weights_only=True``), so a planted file can never run code.

    A missing or damaged file, or one that holds anything else, raises a one-line UserError naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; check the run directory (train first, or pass the right --run)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise UserError(f"{path} cannot be read: {exc.strerror}") from None
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch's zip format, or a bare pickle
        raise UserError(f"{path} is not a readable checkpoint (not a torch file); delete it and re-run the stage")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc).lower() or "WeightsUnpickler" in str(exc):
            raise _refused(path, exc) from None
        raise UserError(f"{path} is not a readable checkpoint (UnpicklingError); delete it and re-run the "
                        f"stage") from None
    except Exception as exc:  # noqa: BLE001 - any other unpickling failure means a damaged file
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__}); delete it and re-run the "
                        f"stage") from None


@contextlib.contextmanager
def open_npz(path: str | Path) -> Iterator[Any]:
    """``with open_npz(path) as z:`` -- ``np.load(path, allow_pickle=False)`` (an NpzFile, or the array of a
    ``.npy``) for feature caches and encoded features: pickled objects are never loaded.

    Reading an object array (a pickle inside) anywhere in the block raises :class:`UnsafeFileError` naming
    ``path``; a missing or damaged file a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass an existing .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise _npz_error(path, exc) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a readable .npz file ({type(exc).__name__}); delete it and re-run") from None
    try:
        yield loaded
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise _npz_error(path, exc) from None
    except (zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz file ({type(exc).__name__}); delete it and re-run") from None
    finally:
        if hasattr(loaded, "close"):
            loaded.close()


def _npz_error(path: Path, exc: ValueError) -> UserError:
    if "allow_pickle" in str(exc):
        return UnsafeFileError(f"{path} is not plain numeric arrays (loading it would unpickle Python objects, which "
                               f"could run code); it was not loaded; delete it and re-run the step that wrote it")
    return UserError(f"{path} is not a readable .npz file ({' '.join(str(exc).split())[:120]}); delete it and re-run")


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (``{"arr_0": array}`` for a ``.npy``), read as :func:`open_npz` does."""
    with open_npz(path) as data:
        if isinstance(data, np.ndarray):
            return {"arr_0": data}
        return {key: data[key] for key in data.files}


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
