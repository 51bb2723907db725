"""The one training loop, for every schedule: joint, sequential, module-wise on cached activations, distributed.

:func:`run` takes a batch source (:mod:`.batches`) and does everything else: the run directory, the
:class:`~smooth_infomax.model.SmoothInfoMax` wrapper, one Adam per trained module (the same as the reference's
single Adam, because the modules are gradient-isolated and Adam is element-wise), optional ExponentialLR,
validation in eval mode under ``no_grad`` on the test split, chance warnings, CSV and TensorBoard logs, the
progress bar, and an atomic checkpoint after every epoch. :func:`train` (waveforms) and
:func:`train_modulewise` (cached activations) only choose the source.

Reproducibility and resume: everything random is a function of ``seed`` and the epoch: the shuffle order
(a generator seeded with ``(seed, epoch)``), the crop offsets (the datasets seed on ``(seed, epoch, index)``)
and the sampling noise / negatives (the global torch RNG, whose state is saved in every checkpoint).
Validation runs inside ``torch.random.fork_rng`` with its own seed, so it never perturbs training. A run
killed at any point and resumed restarts after the last finished epoch and ends with exactly the weights of
an uninterrupted run (on CPU). There is one resume path: the checkpoint is loaded into the freshly built
model and optimisers (a checkpoint that does not fit is refused with a one-line error), and only then is
``config.yaml`` written, so a refused resume leaves the run directory as it was.

Under torchrun (:mod:`.distributed`) every process runs this loop on its shares of each global batch; only
rank 0 writes files and validates.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..checkpoint import atomic_torch_save, load_state, run_paths, torch_load
from ..config import RunConfig, n_trained_modules, save_config
from ..errors import ConfigError, TrainingDiverged, UserError
from ..model import SmoothInfoMax
from ..runs import config_data_path, save_encoder
from . import distributed as D
from .batches import CachedBatches, Plan, WaveBatches
from .logs import ChanceMonitor, EpochStats, TensorBoard, epoch_rows, progress, write_metrics


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``train.device``: ``auto`` (CUDA when available), ``cpu``, ``cuda[:i]``, ..."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'train.device' is {name!r} but no CUDA device is available; use cpu or auto")
    return torch.device(name)


# ------------------------------------------------------------------------------------------------ state


@dataclass
class Progress:
    """Where a run stands: the rows logged so far, the next plan index and the optimiser steps taken."""

    history: list[dict[str, Any]] = field(default_factory=list)
    next_index: int = 0
    step: int = 0


def make_optimisers(sim: SmoothInfoMax, cfg: RunConfig) -> tuple[list[Any], list[Any]]:
    """One Adam (and one ExponentialLR) per trained module."""
    n = sim.n_modules
    lrs = cfg.train.module_lr or [cfg.train.lr] * n
    optims = [torch.optim.Adam(sim.parameters_of(i), lr=lrs[i], weight_decay=cfg.train.weight_decay)
              for i in range(n)]
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=cfg.train.lr_gamma) for o in optims]
    return optims, scheds


def save_checkpoint(path: Path, sim: Any, optims: Sequence[Any], scheds: Sequence[Any], state: Progress,
                    plan_index: int, device: torch.device) -> None:
    """The state after plan entry ``plan_index``: weights, optimisers, schedulers, history, every RNG."""
    atomic_torch_save({
        "model": sim.state_dict(),
        "optimizers": [o.state_dict() for o in optims],
        "schedulers": [s.state_dict() for s in scheds],
        "history": state.history,
        "plan_index": plan_index,
        "step": state.step,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
    }, path)


def load_checkpoint(path: Path, sim: Any, optims: Sequence[Any], scheds: Sequence[Any],
                    device: torch.device) -> Progress:
    """Restore what :func:`save_checkpoint` wrote into a freshly built model and optimisers; returns the
    progress to continue from (the plan entry after the saved one)."""
    state = torch_load(path)
    load_state(sim, state["model"], path)
    if len(state["optimizers"]) != len(optims):
        raise UserError(f"{path} holds {len(state['optimizers'])} optimisers for {len(optims)} trained modules; "
                        f"resume with the config the run was trained with (its config.yaml), or start a new --out")
    for o, s in zip(optims, state["optimizers"]):
        o.load_state_dict(s)
    for sch, s in zip(scheds, state["schedulers"]):
        sch.load_state_dict(s)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    return Progress(history=list(state["history"]), next_index=state["plan_index"] + 1, step=state["step"])


def module_epochs(plan: Plan, upto: int, modules: Optional[list[int]]) -> tuple[int, int]:
    """(epochs trained so far, epochs in the whole plan) of the modules of plan entry ``upto``."""
    key = None if modules is None else tuple(modules)
    same = [i for i, (_, m) in enumerate(plan) if (None if m is None else tuple(m)) == key]
    return sum(1 for i in same if i <= upto), len(same)


# ------------------------------------------------------------------------------------------------ the loop


class _SimulatedCrash(Exception):
    pass


def _validate(sim: Any, source: Any, device: torch.device, seed: int, epoch: int,
              modules: Optional[list[int]]) -> dict[str, dict[str, float]]:
    stats = EpochStats()
    was_training = sim.training
    sim.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed * 1_000_003 + epoch + 17)
        with torch.no_grad():
            for x, n in source.val_batches(epoch, modules):
                stats.add(source.forward(x, modules), n)
    sim.train(was_training)
    return stats.means()


def _check_finite(losses: Sequence[Any], device: torch.device) -> Optional[str]:
    """The name of the first module whose loss is not finite, else None (one host sync for all modules)."""
    values = torch.stack([ml.loss.detach().float().to(device) for ml in losses]).tolist()
    for ml, v in zip(losses, values):
        if not np.isfinite(v):
            return ml.name
    return None


def run(cfg: RunConfig, out_dir: str | Path, source: Any, *, resume: bool = False,
        on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
        stop_after_steps: int | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says on the batches of ``source`` and write the run directory ``out_dir``.

    resume: continue from ``out_dir/checkpoints/last.pt`` (after its last finished epoch).
    on_epoch(epoch, {module: row}): called after every epoch (after its checkpoint).
    stop_after_steps: stop (without a checkpoint) after this many optimiser steps, simulating a crash; for tests.
    Returns a summary dict (epochs, steps, seconds, final validation metrics per module, and the source's extras).
    """
    out = Path(out_dir)
    paths = run_paths(out)
    if paths["checkpoint"].exists() and not resume:
        raise UserError(f"{out} already holds a training run; pass --resume to continue it or choose a new --out")
    config_data_path(cfg)  # a missing dataset fails before the run directory is created
    dist, device = D.setup(resolve_device(cfg.train.device))  # torchrun: join the process group (else a no-op)
    main = dist.is_main  # only rank 0 writes files and validates
    if main:
        out.mkdir(parents=True, exist_ok=True)

    seed_everything(cfg.seed)
    source.open()
    sim = SmoothInfoMax(cfg.model, cfg.loss).to(device)
    n_mod = n_trained_modules(cfg.model)
    device_map = D.resolve_device_map(cfg.train.device_map, n_mod)
    if device_map is not None:
        device = D.apply_device_map(sim, device_map)  # module i on device_map[i]; inputs go to module 0's device
    D.broadcast_module(sim, dist)
    optims, scheds = make_optimisers(sim, cfg)
    state = Progress()
    if resume and paths["checkpoint"].exists():
        state = load_checkpoint(paths["checkpoint"], sim, optims, scheds, device)
    if main:  # only once a resumed checkpoint is known to fit: a refused resume leaves config.yaml as it was
        save_config(cfg, paths["config"])
    source.bind(sim, device, dist)

    plan = source.plan
    total_epochs = plan[-1][0] + 1
    tb = TensorBoard(paths["tensorboard"], cfg.train.log_tensorboard and main)
    chance = ChanceMonitor(cfg.loss.negatives, dict(zip(sim.module_names, sim.betas)))
    names = sim.module_names
    t_start = time.time()
    last_val: dict[str, dict[str, float]] = {}
    try:
        for plan_index in range(state.next_index, len(plan)):
            epoch, modules = plan[plan_index]
            source.prepare(plan_index)
            t0 = time.time()
            batches = source.train_batches(epoch, modules)
            if dist.enabled:  # per-process sampling noise and negatives, a function of (seed, rank, epoch)
                torch.manual_seed(D.epoch_seed(cfg.seed, dist.rank, epoch))
            sim.train()
            active = list(range(n_mod)) if modules is None else modules
            stats = _train_epoch(cfg, sim, source, batches, modules, active, optims, dist, device, state, main,
                                 (epoch, total_epochs), stop_after_steps, paths["checkpoint"])
            for i in active:
                scheds[i].step()
            D.reduce_stats(stats, dist)
            D.average_buffers(sim, dist)
            seconds = time.time() - t0
            lrs = {name: optims[min(i, len(optims) - 1)].param_groups[0]["lr"] for i, name in enumerate(names)}
            rows = epoch_rows(epoch, "train", stats.means(), lrs, seconds)
            is_last = plan_index == len(plan) - 1
            if main and ((epoch + 1) % cfg.train.validate_every == 0 or is_last):
                last_val = _validate(sim, source, device, cfg.seed, epoch, modules)
                chance.check(last_val, *module_epochs(plan, plan_index, modules))
                rows += epoch_rows(epoch, "val", last_val, lrs, seconds)
            state.history.extend(rows)
            tb.log(rows)
            if main and ((plan_index + 1) % cfg.train.checkpoint_every == 0 or is_last):
                save_checkpoint(paths["checkpoint"], sim, optims, scheds, state, plan_index, device)
                write_metrics(paths["metrics"], state.history)
            if on_epoch is not None:
                on_epoch(epoch, {r["module"]: r for r in rows})
    except _SimulatedCrash:
        return {"crashed_at_step": state.step}
    finally:
        tb.close()
        source.close()
    if main:
        save_encoder(sim.encoder, cfg, paths["encoder"])
        write_metrics(paths["metrics"], state.history)
    D.barrier(dist)
    D.teardown(dist)
    return {"epochs": len(plan), "steps": state.step, "seconds": time.time() - t_start, "val": last_val,
            **source.summary()}


def _train_epoch(cfg: RunConfig, sim: Any, source: Any, batches: Any, modules: Optional[list[int]],
                 active: list[int], optims: Sequence[Any], dist: D.DistContext, device: torch.device,
                 state: Progress, main: bool, epochs: tuple[int, int], stop_after_steps: Optional[int],
                 checkpoint: Path) -> EpochStats:
    """One epoch of optimiser steps; returns its statistics (this process's items only)."""
    stats = EpochStats()
    params = {i: sim.parameters_of(i) for i in active}
    epoch, total_epochs = epochs
    bar = progress(batches, cfg.train.progress and main, f"epoch {epoch + 1}/{total_epochs}")
    max_steps = cfg.train.max_steps_per_epoch
    last_postfix = 0.0
    for step_in_epoch, (x, n) in enumerate(bar):
        if max_steps is not None and step_in_epoch >= max_steps:
            break
        with D.autocast(device, cfg.train.precision):
            losses = source.forward(x, modules)
        bad = _check_finite(losses, device)
        scale = D.loss_scale(bad is not None, n, dist, state.step + 1)  # 1.0 unless distributed
        if bad is not None:
            raise TrainingDiverged(f"non-finite loss at step {state.step + 1} (epoch {epoch + 1}) in module {bad}; "
                                   f"the last good checkpoint is kept in {checkpoint}; lower train.lr or loss.beta")
        total = losses[0].loss if len(losses) == 1 else sum(ml.loss.to(device) for ml in losses)
        for i in active:
            optims[i].zero_grad(set_to_none=True)
        (total * scale if scale != 1.0 else total).backward()
        D.allreduce_gradients([p for i in active for p in params[i]], dist)
        if cfg.train.grad_clip is not None:
            for i in active:
                torch.nn.utils.clip_grad_norm_(params[i], cfg.train.grad_clip)
        for i in active:
            optims[i].step()
        state.step += 1
        stats.add(losses, n)
        # a tqdm bar (on a terminal): its postfix refreshed twice a second
        if hasattr(bar, "set_postfix") and time.monotonic() - last_postfix > 0.5:
            last_postfix = time.monotonic()
            values = torch.stack([ml.infonce.detach().float().to(device) for ml in losses]).tolist()
            bar.set_postfix({ml.name: f"{v:.3f}" for ml, v in zip(losses, values)}, refresh=False)
        if stop_after_steps is not None and state.step >= stop_after_steps:
            raise _SimulatedCrash(state.step)
    return stats


def train(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False,
          on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
          stop_after_steps: int | None = None) -> dict[str, Any]:
    """Pre-train an encoder on waveforms (``train.schedule``: joint or sequential) and write ``out_dir``.

    See :func:`run` for the arguments and the summary it returns.
    """
    return run(cfg, out_dir, WaveBatches(cfg), resume=resume, on_epoch=on_epoch, stop_after_steps=stop_after_steps)


def train_modulewise(cfg: RunConfig, out_dir: str | Path, cache: str = "auto", *, resample: bool = True,
                     memory_limit: Optional[int] = None, cache_dir: str | Path | None = None,
                     keep_cache: bool = False, resume: bool = False,
                     on_epoch: Optional[Callable[[int, dict[str, Any]], None]] = None,
                     stop_after_steps: int | None = None) -> dict[str, Any]:
    """Train the encoder module by module on cached activations (:class:`~.batches.CachedBatches`), in the order
    of the sequential schedule, and write ``out_dir``. On resume the caches of the current module are rebuilt
    from the saved weights. The summary adds ``caches`` (storage and bytes per cached module)."""
    source = CachedBatches(cfg, out_dir, cache, resample=resample, memory_limit=memory_limit, cache_dir=cache_dir,
                           keep_cache=keep_cache)
    return run(cfg, out_dir, source, resume=resume, on_epoch=on_epoch, stop_after_steps=stop_after_steps)


__all__ = ["run", "train", "train_modulewise", "seed_everything", "resolve_device", "make_optimisers",
           "save_checkpoint", "load_checkpoint", "module_epochs", "Progress"]
