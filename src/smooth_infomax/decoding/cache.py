"""Latents of dataset items, encoded once: the decoder trains and validates on them without the encoder.

:func:`cache_latents` reads the items' waves and encodes them once with a frozen feature source, keeping
waves (N, 1, L) and latents (N, T, C) in memory (:class:`LatentCache`). Posterior means (``mode="mean"``, or any
deterministic source) are the latents themselves. For posterior samples of a Gaussian-posterior source
(``mode="sample"``, ``source.stochastic``) the cache holds the decoded output's posterior statistics (mu,
logvar; the source's ``stats`` mode: upstream modules sampled once, item i seeded by (seed, i)) and every
batch draws a fresh z = mu + exp(logvar / 2) * eps with a generator seeded by (seed, epoch, batch): a run,
its resume and a re-run draw the same samples, and the encoder never runs per epoch. (Before, the encoder
re-ran per batch and re-sampled every module; for module 0 the two are the same distribution.)

:func:`encode_items` gives the latents the latent tools (traverse, interpolate, ICS) read; :func:`find_item`
finds an item by index or file stem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..features import extract_features


def subset_indices(n: int, max_items: Optional[int], seed: int) -> list[int]:
    """All of range(n), or a seeded random ``max_items`` of them (sorted)."""
    if max_items is None or max_items >= n:
        return list(range(n))
    gen = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=gen)[: int(max_items)].tolist())


def seeded_generator(*parts: int, device: Union[str, torch.device] = "cpu") -> torch.Generator:
    """A generator seeded from a tuple of integers (e.g. seed, epoch, batch); the same tuple, the same draws."""
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2 ** 62)
    return torch.Generator(device=device).manual_seed(seed)


def read_waves(dataset: Any, indices: Sequence[int]) -> Tensor:
    """The waves of ``indices`` as one (N, 1, L) float32 tensor (items of one length: a fixed crop)."""
    waves = [dataset[i].wave.reshape(1, -1).float() for i in indices]
    lengths = {w.shape[-1] for w in waves}
    if len(lengths) > 1:
        raise UserError(f"items of different lengths ({sorted(lengths)[:3]}...); decoders need a fixed crop")
    return torch.stack(waves) if waves else torch.zeros(0, 1, 0)


def encoded_latents(source: Any, dataset: Any, indices: Sequence[int], output: int, mode: str = "mean", *,
                    seed: int = 0, batch_size: int = 32,
                    device: Union[str, torch.device] = "cpu") -> tuple[Tensor, Optional[Tensor]]:
    """Encode items once with :func:`smooth_infomax.features.extract_features` -> (N, T, C) latents and logvar.

    mode ``mean``: posterior means (logvar None). ``stats``: the posterior mean and log-variance of ``output``
    for a stochastic source (upstream modules sampled, item i seeded by (seed, i)); ``sample``: one posterior
    sample per item. Deterministic sources give their latents for every mode, with logvar None.
    """
    fs = extract_features(source, dataset, outputs=[output], mode=mode, pool="none", seed=seed,
                          batch_size=batch_size, device=str(device), indices=list(indices))
    if mode == "stats" and fs.mu is not None and fs.mu[0] is not None and fs.logvar is not None \
            and fs.logvar[0] is not None:
        return torch.from_numpy(np.stack(fs.mu[0])), torch.from_numpy(np.stack(fs.logvar[0]))
    return torch.from_numpy(np.stack(fs.features[0])), None


@dataclass
class LatentCache:
    """Waves (N, 1, L) and the latents of one output, (N, T, C) means or (mu, logvar) posterior statistics."""

    waves: Tensor
    latents: Tensor
    logvar: Optional[Tensor] = None
    seed: int = 0

    def __len__(self) -> int:
        return int(self.waves.shape[0])

    @property
    def stochastic(self) -> bool:
        """True when batches draw posterior samples (the cache holds mu and logvar)."""
        return self.logvar is not None

    def draw(self, positions: Sequence[int], generator: Optional[torch.Generator]) -> Tensor:
        """Latents (b, T, C) of the given positions: the means, or fresh samples from ``generator``."""
        mu = self.latents[list(positions)]
        if self.logvar is None:
            return mu
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        return mu + torch.exp(0.5 * self.logvar[list(positions)]) * eps

    def batches(self, batch_size: int, epoch: int = 0, shuffle: bool = False, salt: int = 0,
                device: Union[str, torch.device] = "cpu") -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (wave (b, 1, L), latent (b, T, C)) on ``device``; shuffled with a generator of (seed, epoch)."""
        n = len(self)
        order = (torch.randperm(n, generator=seeded_generator(self.seed, epoch, 7)).tolist()
                 if shuffle else list(range(n)))
        for b, start in enumerate(range(0, n, max(1, batch_size))):
            pos = order[start:start + batch_size]
            gen = seeded_generator(self.seed, epoch * 1000 + salt, b) if self.stochastic else None
            yield self.waves[pos].to(device), self.draw(pos, gen).to(device)


def cache_latents(source: Any, dataset: Any, indices: Sequence[int], output: int, mode: str = "mean", *,
                  seed: int = 0, batch_size: int = 32, device: Union[str, torch.device] = "cpu") -> LatentCache:
    """Read and encode ``dataset`` items ``indices`` once (see the module docstring) -> :class:`LatentCache`."""
    waves = read_waves(dataset, indices)
    if waves.shape[0] == 0:
        return LatentCache(waves, torch.zeros(0, 0, 0), None, seed)
    latents, logvar = encoded_latents(source, dataset, indices, output, "stats" if mode == "sample" else "mean",
                                      seed=seed, batch_size=batch_size, device=device)
    return LatentCache(waves, latents, logvar, seed)


def encode_items(source: Any, dataset: Any, indices: Sequence[int], output: int, mode: str = "mean", seed: int = 0,
                 batch_size: int = 32, device: Union[str, torch.device] = "cpu") -> Tensor:
    """Latents (N, T, C) of ``dataset`` items ``indices`` at ``output`` (no_grad; on the CPU).

    ``mode="sample"`` draws one posterior sample per item (the source's ``sample`` mode, every module sampled;
    item i seeded by (seed, i), whatever the batch); deterministic sources give their latents.
    """
    if not indices:
        raise UserError("no items to encode")
    z, _ = encoded_latents(source, dataset, indices, output, "sample" if mode == "sample" else "mean", seed=seed,
                           batch_size=batch_size, device=device)
    return z


def find_item(dataset: Any, key: Union[int, str]) -> int:
    """A dataset index from an index or a file name (stem or name) of one of its items."""
    text = str(key).strip()
    try:
        idx: Optional[int] = int(text)
    except ValueError:
        idx = None
    n = len(dataset)
    if idx is not None:
        if not -n <= idx < n:
            raise UserError(f"item {idx} out of range: the split has {n} items")
        return idx % n
    paths = [getattr(it, "path", None) for it in getattr(dataset, "items", [])]
    if len(paths) != n or any(p is None for p in paths):
        paths = [dataset[i].path for i in range(n)]
    for i, p in enumerate(paths):
        if Path(str(p)).stem == text or Path(str(p)).name == text:
            return i
    raise UserError(f"no item named {text!r} in the split ({n} items); pass an index or a file stem")


__all__ = ["LatentCache", "cache_latents", "encode_items", "encoded_latents", "read_waves", "find_item",
           "subset_indices", "seeded_generator"]
