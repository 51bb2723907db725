"""Batch sources: what the one training loop (:mod:`.loop`) feeds its model, epoch by epoch.

A source has a ``plan`` (``(global epoch, trained modules or None for all)`` per epoch), opens its data
(:meth:`open`, after the seeds are set and before the model is built), is bound to the model
(:meth:`bind`), may prepare an epoch (:meth:`prepare`), yields ``(inputs, items)`` for training
(:meth:`train_batches`, this process's shares in a distributed run) and validation (:meth:`val_batches`), and
turns inputs into losses (:meth:`forward`). Everything else -- optimisers, resume, logging, checkpoints,
distributed gradients -- is the loop's.

* :class:`WaveBatches`: waveforms, ``joint`` (every module on every batch) or ``sequential`` (module by
  module, the frozen earlier modules re-run for every batch) as ``train.schedule`` says.
* :class:`CachedBatches`: module-wise on cached activations: module m trains on the stored outputs of module
  m - 1 (:class:`~.cache.ActivationCache`), in the order of the sequential schedule.

Semantics of the cached source, compared with ``train.schedule: sequential``:

* **GIM / CPC** (deterministic modules): the cached input is exactly what the frozen modules compute, so with
  the same seed the whole run is the same computation: same shuffles (the loaders use the same per-epoch
  generators), same InfoNCE windows and negatives (the cache is built without touching the global RNG), same
  Adam steps. When every batch has the same size the weights are bit-identical; otherwise they agree to float
  rounding (oneDNN picks convolution kernels by batch size, so an item's frozen output can differ in the last
  bit between the cache's batches and the sequential schedule's last, smaller batch).
* **SIM** (stochastic modules): sequential training feeds module m a fresh posterior sample of module m - 1 at
  every step. The cache stores module m - 1's posterior mean and log-variance and, with ``resample=True``
  (default), draws a fresh z = mu + sigma * eps for every item in every epoch (a generator seeded by (seed,
  module, epoch)): the last sampling step has exactly the distribution of sequential training, but the noise of
  the modules before m - 1 is frozen (mu and sigma were computed once). ``resample=False`` stores one fixed
  sample per item (half the memory), which freezes all noise.
* **Crops**: random crops change every epoch, so a cache would be stale; they are refused (ConfigError).
* **BatchNorm**: the cache is built in eval mode (running statistics), while sequential training runs frozen
  modules in train mode, so with ``model.batch_norm: true`` the two differ.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from torch.utils.data import DataLoader

from ..config import RunConfig, n_trained_modules
from ..data.records import collate
from ..errors import ConfigError
from ..model.modules import GRUModule
from ..runs import open_training_data
from . import distributed as D
from .cache import CACHE_MODES, ActivationCache, choose_storage

Plan = list[tuple[int, Optional[list[int]]]]


def module_plan(schedule: str, epochs: int, n_modules: int) -> Plan:
    """(global epoch, modules trained or None for all) for every epoch of a ``joint`` / ``sequential`` schedule."""
    if schedule == "joint":
        return [(i, None) for i in range(epochs)]
    return [(m * epochs + i, [m]) for m in range(n_modules) for i in range(epochs)]


def shuffle_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's shuffle order (also the one a distributed run shards)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class Batches:
    """A loader whose items are mapped by ``fn`` (to ``(inputs, items)``); keeps the loader's length."""

    def __init__(self, loader: Any, fn: Callable[[Any], tuple[Any, int]]):
        self.loader, self.fn = loader, fn

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        return (self.fn(b) for b in self.loader)


class WaveBatches:
    """Waveform batches for the ``joint`` or ``sequential`` schedule of ``cfg.train.schedule``."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.plan: Plan = module_plan(cfg.train.schedule, cfg.train.epochs, n_trained_modules(cfg.model))
        self.train_set: Any = None
        self.val_set: Any = None

    def open(self) -> None:
        self.train_set, self.val_set = open_training_data(self.cfg)

    def bind(self, sim: Any, device: Any, dist: D.DistContext) -> None:
        self.sim, self.device, self.dist = sim, device, dist

    def prepare(self, plan_index: int) -> None:
        return None

    def _wave_kw(self) -> dict[str, Any]:
        return dict(batch_size=self.cfg.train.batch_size, collate_fn=collate, num_workers=self.cfg.data.num_workers,
                    persistent_workers=False)

    def _waves(self, batch: dict[str, Any]) -> tuple[Any, int]:
        wave = batch["wave"].to(self.device)
        return wave, int(wave.shape[0])

    def train_batches(self, epoch: int, modules: Optional[list[int]]) -> Batches:
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        loader = D.train_loader(self.train_set, shuffle_generator(self.cfg.seed, epoch), self.dist, **self._wave_kw())
        return Batches(loader, self._waves)

    def val_batches(self, epoch: int, modules: Optional[list[int]]) -> Batches:
        return Batches(DataLoader(self.val_set, shuffle=False, drop_last=False, **self._wave_kw()), self._waves)

    def forward(self, x: Any, modules: Optional[list[int]]) -> list[Any]:
        """Losses of the trained modules for waves (B, 1, T) (frozen earlier modules re-run under no_grad)."""
        return self.sim(x, train_modules=modules)

    def summary(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return None


class _Indices:
    """A dataset of item indices: a DataLoader with the waveform loader's settings (same size, same generator)
    yields the same shuffled batches as the waveform loader."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _collate_indices(items: list[int]) -> torch.Tensor:
    return torch.tensor(items, dtype=torch.long)


def check_cached_config(cfg: RunConfig, cache: str) -> None:
    """Refuse settings under which cached activations would be wrong."""
    if cfg.data.random_crop:
        raise ConfigError("config key 'data.random_crop' is true, but module-wise cached training needs fixed crops "
                          "(the cache would be stale after one epoch); set data.random_crop=false or use "
                          "'smooth-infomax train' with train.schedule=sequential")
    if cache not in CACHE_MODES:
        raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")


def _cache_seed(seed: int, module: int, epoch: int, split: int) -> int:
    return (seed * 1_000_003 + module * 10_007 + epoch * 101 + split) % 2**63


class CachedBatches(WaveBatches):
    """Module-wise training on cached activations (see the module docstring).

    cache: ``memory``, ``disk`` or ``auto`` (``memory_limit`` bytes for auto). resample: SIM only: cache mu and
    log-variance and draw a fresh input sample every epoch (True), or one fixed sample per item (False).
    cache_dir: where disk caches go (default ``out_dir/activation-cache``, removed at the end unless
    ``keep_cache``). Only two caches exist at a time (the one being read and the one being built).
    """

    def __init__(self, cfg: RunConfig, out_dir: str | Path, cache: str = "auto", *, resample: bool = True,
                 memory_limit: Optional[int] = None, cache_dir: str | Path | None = None, keep_cache: bool = False):
        check_cached_config(cfg, cache)
        super().__init__(cfg)
        self.plan = module_plan("sequential", cfg.train.epochs, n_trained_modules(cfg.model))
        self.cache, self.resample, self.memory_limit, self.keep_cache = cache, resample, memory_limit, keep_cache
        self.own_root = cache_dir is None
        self.root = Path(cache_dir) if cache_dir is not None else Path(out_dir) / "activation-cache"
        self.sampled = cfg.model.kind == "sim"
        self.caches: dict[str, Optional[ActivationCache]] = {"train": None, "test": None}
        self.cache_module = -1  # the module whose outputs the caches hold
        self.storages: dict[int, dict[str, Any]] = {}

    def _index_kw(self) -> dict[str, Any]:
        return dict(batch_size=self.cfg.train.batch_size, collate_fn=_collate_indices, num_workers=0,
                    persistent_workers=False)

    # ---------------------------------------------------------------------------------------- the caches

    def _frozen_output(self, i: int, x: Any, gen: torch.Generator) -> tuple[Any, Any]:
        """(mu or sample, logvar or None) of frozen module i for input x, conv layout (B, C, T)."""
        sim = self.sim
        stage = sim.encoder.stages[i]
        if self.cfg.model.kind == "cpc" or isinstance(stage, GRUModule) or not self.sampled:
            return sim._propagate(i, x), None  # exactly what sequential training feeds the next module
        if i == 0:
            x = sim.encoder.prepare(x)  # (B, 1, T) with the configured input normalisation
        mu, logvar = stage(x, need_logvar=True)
        if self.resample:
            return mu, logvar
        eps = torch.randn(mu.shape, generator=gen, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps, None

    def _build(self, i: int) -> None:
        """Run frozen module i over both splits (reading the caches of module i - 1) and store its outputs."""
        sim, cfg = self.sim, self.cfg
        was_training = sim.training
        sim.eval()
        frames = sim.encoder.frame_counts(cfg.data.crop)[i]
        channels = sim.encoder.output_dims[i]
        with_lv = self.sampled and self.resample and not isinstance(sim.encoder.stages[i], GRUModule)
        splits = (("train", self.train_set), ("test", self.val_set))
        nbytes = sum(ActivationCache.nbytes_for(len(ds), channels, frames, with_lv) for _, ds in splits)
        storage = choose_storage(self.cache, nbytes, self.memory_limit)
        new: dict[str, ActivationCache] = {}
        for split_id, (name, ds) in enumerate(splits):
            c = ActivationCache(len(ds), channels, frames, with_lv, storage, self.root / f"module{i}", name)
            gen = torch.Generator().manual_seed(_cache_seed(cfg.seed, i, -1, split_id))
            with torch.no_grad():
                for start, x in self._frozen_inputs(i, name, ds, gen):
                    mu, lv = self._frozen_output(i, x, gen)
                    c.write(start, mu, lv)
            new[name] = c
        for old in self.caches.values():
            if old is not None:
                old.close(delete=not self.keep_cache)
        self.caches.update(new)
        self.cache_module = i
        self.storages[i] = {"storage": storage, "bytes": nbytes}
        sim.train(was_training)

    def _frozen_inputs(self, i: int, split: str, ds: Any, gen: torch.Generator) -> Iterable[tuple[int, Any]]:
        """(first item, input batch) of module i over a split, in item order."""
        if i == 0:
            # an explicit generator: a loader without one draws its base seed from the global RNG, which must
            # stay exactly as in sequential training (InfoNCE draws from it)
            kw = self._wave_kw()
            loader = DataLoader(ds, shuffle=False, generator=torch.Generator().manual_seed(0), **kw)
            start = 0
            for batch in loader:
                wave = batch["wave"].to(self.device)
                yield start, wave
                start += wave.shape[0]
            return
        prev = self.caches[split]
        assert prev is not None
        size = self.cfg.train.batch_size
        for start in range(0, len(ds), size):
            yield start, prev.inputs(torch.arange(start, min(start + size, len(ds))), self.device, gen)

    def prepare(self, plan_index: int) -> None:
        """Make the caches hold the outputs of the module before this epoch's (building earlier ones first)."""
        m = self.plan[plan_index][1][0]  # type: ignore[index]
        if m == 0 or self.cache_module == m - 1:
            return
        for i in range(self.cache_module + 1, m):
            self._build(i)

    # --------------------------------------------------------------------------------------- the batches

    def _cached(self, split: str, gen: torch.Generator) -> Callable[[Any], tuple[Any, int]]:
        c = self.caches[split]
        assert c is not None
        return lambda idx: (c.inputs(idx, self.device, gen), int(idx.numel()))

    def train_batches(self, epoch: int, modules: Optional[list[int]]) -> Batches:
        m = modules[0]  # type: ignore[index]
        if m == 0:
            return super().train_batches(epoch, modules)
        sample_gen = torch.Generator().manual_seed(_cache_seed(self.cfg.seed, m, epoch, 0))
        loader = D.train_loader(_Indices(len(self.train_set)), shuffle_generator(self.cfg.seed, epoch), self.dist,
                                **self._index_kw())
        return Batches(loader, self._cached("train", sample_gen))

    def val_batches(self, epoch: int, modules: Optional[list[int]]) -> Batches:
        m = modules[0]  # type: ignore[index]
        if m == 0:
            return super().val_batches(epoch, modules)
        gen = torch.Generator().manual_seed(_cache_seed(self.cfg.seed, m, epoch, 1))
        loader = DataLoader(_Indices(len(self.val_set)), shuffle=False, drop_last=False, **self._index_kw())
        return Batches(loader, self._cached("test", gen))

    def forward(self, x: Any, modules: Optional[list[int]]) -> list[Any]:
        """The loss of the one trained module for its (cached) input."""
        return [self.sim.module_forward(modules[0], x)[0]]  # type: ignore[index]

    def summary(self) -> dict[str, Any]:
        return {"caches": {f"module{i}": v for i, v in self.storages.items()}}

    def close(self) -> None:
        for c in self.caches.values():
            if c is not None:
                c.close(delete=not self.keep_cache)
        self.caches = {"train": None, "test": None}
        self.cache_module = -1
        if not self.keep_cache and self.own_root and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)


__all__ = ["Plan", "module_plan", "shuffle_generator", "WaveBatches", "CachedBatches", "check_cached_config", "Batches"]
