"""Module-wise training with cached activations: train module m on the stored outputs of module m - 1.

Because the modules are gradient-isolated (METHOD §5), module m never sends a gradient into module m - 1, so
the encoder can be trained one module at a time: module 0 on the waveforms, then module 1 on module 0's
outputs, and so on. :func:`train_modulewise` runs each module for ``train.epochs`` epochs (the order of
``train.schedule: sequential`` in :mod:`smooth_infomax.train`), but instead of running the frozen modules
0 .. m - 1 again for every batch it runs them once over the data and stores module m - 1's outputs:

* ``cache="memory"``: float32 tensors in RAM; ``"disk"``: ``.npy`` memory maps in ``cache_dir`` (default
  ``OUT/activation-cache``, deleted at the end); ``"auto"``: memory when the largest cache (train and test
  split together) fits in ``memory_limit`` bytes (default: a quarter of the physical memory, at most 8 GiB),
  else disk. Only two caches exist at a time (the one being read and the one being built).
* Peak memory is one module's training step plus its cache, so a CPU or one small GPU can train a deep stack;
  the frozen modules' forward passes cost one pass over the data per module instead of one per epoch.

The run directory has train.py's layout (``config.yaml``, ``encoder.pt`` written by
:func:`smooth_infomax.train.save_encoder`, ``metrics.csv`` with the same columns, ``checkpoints/last.pt`` with
the state after the last finished epoch), so :func:`smooth_infomax.load` and every later stage (probes,
decoders) work on it. Epochs are numbered as in the sequential schedule (module m, epoch i is epoch m E + i + 1).

Semantics, compared with ``train.schedule: sequential`` (which reruns the frozen modules for every batch):

* **GIM / CPC** (deterministic modules): the cached input is exactly what the frozen modules compute, so with
  the same seed the whole run is the same computation: same shuffles (the loaders use the same per-epoch
  generators), same InfoNCE windows and negatives (the global RNG is consumed identically: the cache is built
  without touching it), same Adam steps. When every batch has the same size the weights are bit-identical;
  otherwise they agree to float rounding (the cache is built in fixed batches, and oneDNN picks convolution
  kernels by batch size, so an item's frozen output can differ in the last bit between a batch of 4 and the
  last batch of 1). ``tests/test_modulewise.py`` checks both.
* **SIM** (stochastic modules): sequential training feeds module m a fresh posterior sample of module m - 1 at
  every step. The cache stores module m - 1's posterior mean and log-variance, and ``resample=True`` (the
  default) draws a fresh z = mu + sigma * eps for every item in every epoch (from a generator seeded by
  (seed, module, epoch), so a run is reproducible): the last sampling step has exactly the distribution of
  sequential training. The noise of the modules *before* m - 1 is frozen, though: mu and sigma of module
  m - 1 were computed once, from one sample of module m - 2. For module 1 (input: module 0's posterior on the
  waveform) the match in distribution is exact; deeper modules see less input variety than in sequential
  training. ``resample=False`` stores one fixed sample per item (half the memory), which freezes all noise.
  Use ``train.schedule: sequential`` in train.py when the exact sampling chain matters.
* **Crops**: with fixed crops (``data.random_crop: false``, the artificial speech words) the cached outputs
  are exactly the frozen modules' outputs. Random crops change every epoch, so a cache would be stale after one
  epoch; they are refused with a ConfigError (use train.py's sequential schedule for random crops).
* **BatchNorm**: the cache is built with the frozen module in eval mode (running statistics); sequential
  training runs frozen modules in train mode (batch statistics, and it keeps updating their running
  statistics). With ``model.batch_norm: true`` the two schedules therefore differ (the artificial speech
  configs have no BatchNorm).
* The random draws of the SIM cache do not touch the global RNG, so InfoNCE negatives are drawn as in
  sequential training; the values differ only because the module inputs do.

Command line (not registered in the main CLI yet): ``python -m smooth_infomax.modulewise --config FILE --out
RUN_DIR [--set key=value ...] [--cache auto|memory|disk]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .checkpoint import run_paths, torch_load
from .config import RunConfig, load_config, n_trained_modules, save_config
from .errors import ConfigError, TrainingDiverged, UserError

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
        import numpy as np
        import torch

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
        import numpy as np
        import torch

        if self.storage == "memory":
            return array.index_select(0, idx)
        return torch.from_numpy(np.ascontiguousarray(array[idx.numpy()]))

    def inputs(self, idx: Any, device: Any, generator: Any = None) -> Any:
        """The next module's input (B, C, T) for item indices ``idx`` (a LongTensor), on ``device``."""
        import torch

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


class _Indices:
    """A dataset of item indices, so that a DataLoader with the training loader's settings (same size, same
    generator) yields the same shuffled batches as train.py's waveform loader."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _collate_indices(items: list[int]) -> Any:
    import torch

    return torch.tensor(items, dtype=torch.long)


def choose_storage(cache: str, nbytes: int, memory_limit: Optional[int]) -> str:
    """``memory`` or ``disk`` for a cache of ``nbytes`` under the ``cache`` setting."""
    if cache not in CACHE_MODES:
        raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
    if cache != "auto":
        return cache
    limit = default_memory_limit() if memory_limit is None else memory_limit
    return "memory" if nbytes <= limit else "disk"


def check_config(cfg: RunConfig) -> None:
    """Refuse settings under which cached activations would be wrong."""
    if cfg.data.random_crop:
        raise ConfigError("config key 'data.random_crop' is true, but module-wise cached training needs fixed crops "
                          "(the cache would be stale after one epoch); set data.random_crop=false or use "
                          "'smooth-infomax train' with train.schedule=sequential")


def _cache_seed(seed: int, module: int, epoch: int, split: int) -> int:
    return (seed * 1_000_003 + module * 10_007 + epoch * 101 + split) % 2**63


def train_modulewise(cfg: RunConfig, out_dir: str | Path, cache: str = "auto", *, resample: bool = True,
                     memory_limit: Optional[int] = None, cache_dir: str | Path | None = None,
                     keep_cache: bool = False, resume: bool = False,
                     on_epoch: Optional[Callable[[int, dict[str, Any]], None]] = None) -> dict[str, Any]:
    """Train the encoder of ``cfg`` module by module on cached activations; write the run directory ``out_dir``.

    cache: ``memory``, ``disk`` or ``auto`` (see the module docstring; ``memory_limit`` in bytes for auto).
    resample: SIM only: cache mu and log-variance and draw a fresh input sample every epoch (True), or cache one
    fixed sample per item (False). cache_dir: where disk caches go (default ``out_dir/activation-cache``);
    deleted at the end unless ``keep_cache``. resume: continue after the last finished epoch of
    ``out_dir/checkpoints/last.pt`` (the caches of the current module are rebuilt from the saved weights).
    Returns a summary dict (epochs, steps, seconds, final validation metrics, cache storage and sizes).
    """
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from .data.records import collate
    from .model import SmoothInfoMax
    from .model.modules import GRUModule
    from .train import (EpochStats, _module_plan, _progress, _rows, _save_checkpoint, _write_metrics,
                        open_training_data, resolve_device, save_encoder, seed_everything)

    check_config(cfg)
    if cache not in CACHE_MODES:
        raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
    out = Path(out_dir)
    paths = run_paths(out)
    if paths["checkpoint"].exists() and not resume:
        raise UserError(f"{out} already holds a training run; pass resume=True (--resume) or choose a new out dir")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, paths["config"])
    cache_root = Path(cache_dir) if cache_dir is not None else out / "activation-cache"

    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    train_set, val_set = open_training_data(cfg)
    n_mod = n_trained_modules(cfg.model)
    sim = SmoothInfoMax(cfg.model, cfg.loss).to(device)
    lrs = cfg.train.module_lr or [cfg.train.lr] * n_mod
    optims = [torch.optim.Adam(sim.parameters_of(i), lr=lrs[i], weight_decay=cfg.train.weight_decay)
              for i in range(n_mod)]
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=cfg.train.lr_gamma) for o in optims]
    # the sequential plan of train.py: (global epoch, [module]); module m's epochs are contiguous
    seq_cfg = _with_schedule(cfg, "sequential")
    plan = _module_plan(seq_cfg, n_mod)

    history: list[dict[str, Any]] = []
    start_index, global_step = 0, 0
    if resume and paths["checkpoint"].exists():
        state = torch_load(paths["checkpoint"])
        sim.load_state_dict(state["model"])
        for o, s in zip(optims, state["optimizers"]):
            o.load_state_dict(s)
        for sch, s in zip(scheds, state["schedulers"]):
            sch.load_state_dict(s)
        history = state["history"]
        start_index = state["plan_index"] + 1
        global_step = state["step"]
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        np.random.set_state(state["rng"]["numpy"])
        import random

        random.setstate(state["rng"]["python"])

    sampled = cfg.model.kind == "sim"
    loader_kw = dict(batch_size=cfg.train.batch_size, num_workers=0, persistent_workers=False)
    wave_kw = dict(loader_kw, collate_fn=collate, num_workers=cfg.data.num_workers)
    caches: dict[str, Optional[ActivationCache]] = {"train": None, "test": None}
    cache_module = -1  # the module whose outputs the caches hold
    storages: dict[int, dict[str, Any]] = {}
    t_start = time.time()
    last_val: dict[str, dict[str, float]] = {}

    def frozen_output(i: int, x: Any, gen: Any) -> tuple[Any, Any]:
        """(mu or sample, logvar or None) of frozen module i for input x, conv layout (B, C, T)."""
        stage = sim.encoder.stages[i]
        if cfg.model.kind == "cpc" or isinstance(stage, GRUModule) or not sampled:
            return sim._propagate(i, x), None  # exactly what sequential training feeds the next module
        if i == 0:
            x = sim.encoder.prepare(x)  # (B, 1, T) with the configured input normalisation
        mu, logvar = stage(x, need_logvar=True)
        if resample:
            return mu, logvar
        eps = torch.randn(mu.shape, generator=gen, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps, None

    def build_cache(i: int) -> None:
        """Run frozen module i over both splits (reading the caches of module i - 1) and store its outputs."""
        nonlocal cache_module
        was_training = sim.training
        sim.eval()
        frames = sim.encoder.frame_counts(cfg.data.crop)[i]
        channels = sim.encoder.output_dims[i]
        with_lv = sampled and resample and not isinstance(sim.encoder.stages[i], GRUModule)
        sizes = {name: ActivationCache.nbytes_for(len(ds), channels, frames, with_lv)
                 for name, ds in (("train", train_set), ("test", val_set))}
        storage = choose_storage(cache, sum(sizes.values()), memory_limit)
        new: dict[str, ActivationCache] = {}
        for split_id, (name, ds) in enumerate((("train", train_set), ("test", val_set))):
            c = ActivationCache(len(ds), channels, frames, with_lv, storage, cache_root / f"module{i}", name)
            gen = torch.Generator().manual_seed(_cache_seed(cfg.seed, i, -1, split_id))
            prev = caches[name]
            with torch.no_grad():
                if i == 0:
                    # an explicit generator: a loader without one draws its base seed from the global RNG,
                    # which must stay exactly as in sequential training (InfoNCE draws from it)
                    loader = DataLoader(ds, shuffle=False, generator=torch.Generator().manual_seed(0), **wave_kw)
                    start = 0
                    for batch in loader:
                        mu, lv = frozen_output(0, batch["wave"].to(device), gen)
                        c.write(start, mu, lv)
                        start += mu.shape[0]
                else:
                    assert prev is not None
                    for start in range(0, len(ds), cfg.train.batch_size):
                        idx = torch.arange(start, min(start + cfg.train.batch_size, len(ds)))
                        mu, lv = frozen_output(i, prev.inputs(idx, device, gen), gen)
                        c.write(start, mu, lv)
            new[name] = c
        for old in caches.values():
            if old is not None:
                old.close(delete=not keep_cache)
        caches.update(new)
        cache_module = i
        storages[i] = {"storage": storage, "bytes": sum(sizes.values())}
        sim.train(was_training)

    def ensure_inputs(m: int) -> None:
        """Make the caches hold module m - 1's outputs (building those of every earlier module first)."""
        if m == 0 or cache_module == m - 1:
            return
        for i in range(cache_module + 1, m):
            build_cache(i)

    def validate(m: int, epoch: int) -> dict[str, dict[str, float]]:
        stats = EpochStats.empty()
        was_training = sim.training
        sim.eval()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed * 1_000_003 + epoch + 17)
            gen = torch.Generator().manual_seed(_cache_seed(cfg.seed, m, epoch, 1))
            with torch.no_grad():
                for x, n in _batches(m, "test", gen, None):
                    ml, _ = sim.module_forward(m, x)
                    stats.add([ml], n)
        sim.train(was_training)
        return stats.means()

    def _batches(m: int, split: str, gen: Any, shuffle_gen: Any) -> Any:
        """(module input, batch size) for module m over a split; shuffled with ``shuffle_gen`` when given."""
        ds = train_set if split == "train" else val_set
        shuffle = shuffle_gen is not None
        if m == 0:
            loader = DataLoader(ds, shuffle=shuffle, drop_last=False, generator=shuffle_gen, **wave_kw)
            for batch in loader:
                wave = batch["wave"].to(device)
                yield wave, wave.shape[0]
            return
        loader = DataLoader(_Indices(len(ds)), shuffle=shuffle, drop_last=False, generator=shuffle_gen,
                            collate_fn=_collate_indices, **loader_kw)
        c = caches[split]
        assert c is not None
        for idx in loader:
            yield c.inputs(idx, device, gen), int(idx.numel())

    try:
        for plan_index in range(start_index, len(plan)):
            epoch, modules = plan[plan_index]
            m = modules[0]
            ensure_inputs(m)
            t0 = time.time()
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            shuffle_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            sample_gen = torch.Generator().manual_seed(_cache_seed(cfg.seed, m, epoch, 0))
            sim.train()
            stats = EpochStats.empty()
            bar = _progress(_batches(m, "train", sample_gen, shuffle_gen), cfg, f"module {m} epoch {epoch + 1}")
            for step_in_epoch, (x, n) in enumerate(bar):
                if cfg.train.max_steps_per_epoch is not None and step_in_epoch >= cfg.train.max_steps_per_epoch:
                    break
                ml, _ = sim.module_forward(m, x)
                if not torch.isfinite(ml.loss):
                    raise TrainingDiverged(f"non-finite loss at step {global_step + 1} (epoch {epoch + 1}) in module "
                                           f"{ml.name}; lower train.lr or loss.beta")
                optims[m].zero_grad(set_to_none=True)
                ml.loss.backward()
                if cfg.train.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(sim.parameters_of(m), cfg.train.grad_clip)
                optims[m].step()
                global_step += 1
                stats.add([ml], n)
            scheds[m].step()
            seconds = time.time() - t0
            rows = _rows(epoch, "train", stats.means(), optims, sim, seconds)
            if (epoch + 1) % cfg.train.validate_every == 0 or plan_index == len(plan) - 1:
                last_val = validate(m, epoch)
                rows += _rows(epoch, "val", last_val, optims, sim, seconds)
            history.extend(rows)
            if (plan_index + 1) % cfg.train.checkpoint_every == 0 or plan_index == len(plan) - 1:
                _save_checkpoint(paths["checkpoint"], sim, optims, scheds, history, plan_index, global_step, device)
                _write_metrics(paths["metrics"], history)
            if on_epoch is not None:
                on_epoch(epoch, {r["module"]: r for r in rows})
    finally:
        for c in caches.values():
            if c is not None:
                c.close(delete=not keep_cache)
        if not keep_cache and cache_dir is None and cache_root.exists():
            shutil.rmtree(cache_root, ignore_errors=True)
    save_encoder(sim.encoder, cfg, paths["encoder"])
    _write_metrics(paths["metrics"], history)
    return {"epochs": len(plan), "steps": global_step, "seconds": time.time() - t_start, "val": last_val,
            "caches": {f"module{i}": v for i, v in storages.items()}}


def _with_schedule(cfg: RunConfig, schedule: str) -> RunConfig:
    import copy

    out = copy.deepcopy(cfg)
    out.train.schedule = schedule
    return out


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--cache", default="auto", choices=CACHE_MODES, help="where activations are kept (default auto)")
    p.add_argument("--cache-dir", help="folder for disk caches (default OUT/activation-cache)")
    p.add_argument("--no-resample", action="store_true",
                   help="SIM: cache one fixed sample per item instead of mu and log-variance")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last finished epoch")


def register(subparsers: Any) -> None:
    """``smooth-infomax train-modulewise`` (for smooth_infomax.cli's registry)."""
    p = subparsers.add_parser("train-modulewise", help="train an encoder module by module on cached activations",
                              description="Module-wise training on cached activations. Example: smooth-infomax "
                                          "train-modulewise --config configs/gim-artificial-speech.yaml --out runs/gim")
    _add_arguments(p)
    p.set_defaults(func=_cmd)


def _cmd(args: Any) -> int:
    saved = run_paths(args.out)["config"]
    if args.resume and saved.exists():
        cfg = load_config(saved, args.overrides)
    elif args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        raise UserError("pass --config FILE (or --resume with an existing --out run directory)")
    summary = train_modulewise(cfg, args.out, args.cache, resample=not args.no_resample, cache_dir=args.cache_dir,
                               resume=args.resume)
    caches = ", ".join(f"{k}: {v['storage']} {v['bytes'] / 2**20:.1f} MiB" for k, v in summary["caches"].items())
    print(f"trained {summary['epochs']} epochs ({summary['steps']} steps) in {summary['seconds']:.1f}s -> {args.out}"
          + (f" (caches {caches})" if caches else ""))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m smooth_infomax.modulewise", description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    args = p.parse_args(argv)
    try:
        return _cmd(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


__all__ = ["train_modulewise", "ActivationCache", "choose_storage", "check_config", "register", "main"]

if __name__ == "__main__":
    sys.exit(main())
