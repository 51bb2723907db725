"""Activation caches for module-wise training: one frozen module's outputs for every item of a split.

``memory``: float32 tensors in RAM; ``disk``: ``.npy`` memory maps (``np.lib.format.open_memmap``) in a
folder; ``auto`` (:func:`choose_storage`): memory when the cache fits in a memory limit (default: a quarter
of the physical memory, at most 8 GiB), else disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import ConfigError

CACHE_MODES = ("auto", "memory", "disk")


def default_memory_limit() -> int:
    """A quarter of the physical memory, at most 8 GiB (2 GiB when it cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30
    return int(min(total // 4, 8 * 2**30))


class ActivationCache:
    """The output of one frozen module for every item of a split, in item order.

    Holds ``mu`` (N, C, T) float32 and, for SIM with resampling, ``logvar`` (N, C, T); in memory (torch
    tensors) or on disk (``.npy`` memory maps under ``directory``). :meth:`inputs` returns the next module's
    input for a batch of item indices: mu, or a sample mu + exp(logvar / 2) * eps drawn from ``generator``.
    """

    def __init__(self, n: int, channels: int, frames: int, with_logvar: bool, storage: str,
                 directory: Optional[Path] = None, name: str = "cache"):
        if storage not in ("memory", "disk"):
            raise ValueError(f"storage must be memory or disk, got {storage!r}")
        self.n, self.channels, self.frames = n, channels, frames
        self.storage = storage
        self.files: list[Path] = []
        shape = (n, channels, frames)
        if storage == "memory":
            self.mu: Any = torch.empty(shape, dtype=torch.float32)
            self.logvar: Any = torch.empty(shape, dtype=torch.float32) if with_logvar else None
        else:
            if directory is None:
                raise ValueError("a disk cache needs a directory")
            directory.mkdir(parents=True, exist_ok=True)

            def open_map(suffix: str) -> Any:
                path = directory / f"{name}-{suffix}.npy"
                self.files.append(path)
                return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)

            self.mu = open_map("mu")
            self.logvar = open_map("logvar") if with_logvar else None

    @staticmethod
    def nbytes_for(n: int, channels: int, frames: int, with_logvar: bool) -> int:
        return n * channels * frames * 4 * (2 if with_logvar else 1)

    @property
    def nbytes(self) -> int:
        return self.nbytes_for(self.n, self.channels, self.frames, self.logvar is not None)

    def write(self, start: int, mu: Any, logvar: Any = None) -> None:
        """Store a batch (B, C, T) of outputs for items ``start .. start + B - 1``."""
        stop = start + mu.shape[0]
        if self.storage == "memory":
            self.mu[start:stop] = mu.detach().float().cpu()
            if self.logvar is not None:
                self.logvar[start:stop] = logvar.detach().float().cpu()
        else:
            self.mu[start:stop] = mu.detach().float().cpu().numpy()
            if self.logvar is not None:
                self.logvar[start:stop] = logvar.detach().float().cpu().numpy()

    def _read(self, array: Any, idx: Any) -> Any:
        if self.storage == "memory":
            return array.index_select(0, idx)
        return torch.from_numpy(np.ascontiguousarray(array[idx.numpy()]))

    def inputs(self, idx: Any, device: Any, generator: Any = None) -> Any:
        """The next module's input (B, C, T) for item indices ``idx`` (a LongTensor), on ``device``."""
        mu = self._read(self.mu, idx).to(device)
        if self.logvar is None:
            return mu
        logvar = self._read(self.logvar, idx).to(device)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(device)
        return mu + torch.exp(0.5 * logvar) * eps

    def close(self, delete: bool = True) -> None:
        """Release the arrays and (unless ``delete`` is False) delete the memory-map files."""
        self.mu = self.logvar = None
        if not delete:
            return
        for path in self.files:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.files = []


def choose_storage(cache: str, nbytes: int, memory_limit: Optional[int]) -> str:
    """``memory`` or ``disk`` for a cache of ``nbytes`` under the ``cache`` setting."""
    if cache not in CACHE_MODES:
        raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
    if cache != "auto":
        return cache
    limit = default_memory_limit() if memory_limit is None else memory_limit
    return "memory" if nbytes <= limit else "disk"


__all__ = ["CACHE_MODES", "ActivationCache", "choose_storage", "default_memory_limit"]
