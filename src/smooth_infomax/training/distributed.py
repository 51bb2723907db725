"""Data-parallel training (torch.distributed, launched by torchrun), module-parallel placement and bf16 autocast.

**Data parallel.** ``python -m torch.distributed.run --nproc_per_node N -m smooth_infomax train --config ...``
starts N processes; :func:`smooth_infomax.training.train` sees torchrun's ``WORLD_SIZE`` / ``RANK`` /
``LOCAL_RANK`` and joins a process group (``gloo`` on the CPU, ``nccl`` on GPUs, one GPU per process:
``cuda:LOCAL_RANK``). Then:

* ``train.batch_size`` is the **global** batch. Every process draws the same shuffled order (the per-epoch
  generator of single-process training) and takes its contiguous share of each global batch
  (:class:`ShardedBatchSampler`; shares differ by at most one item). A final global batch with fewer items than
  processes is dropped (a warning says so).
* Each process computes the losses of its share, weighted by (its items / global items); the gradients are
  summed over processes (:func:`allreduce_gradients`, flattened in buckets), so every process takes the same
  Adam step and the parameters stay identical (they are broadcast from rank 0 once at the start).
* Randomness per process: the global torch RNG is reseeded at every epoch from (seed, rank, epoch)
  (:func:`epoch_seed`), so SIM's sampling noise and InfoNCE's windows and negatives are drawn per process and a
  resumed run repeats them exactly.
* Only rank 0 writes (config.yaml, checkpoints, metrics.csv, TensorBoard, encoder.pt) and validates (on the
  whole test split, exactly as a single process does); the training metrics are summed over processes before
  they are logged. BatchNorm running statistics are averaged over processes at the end of each epoch.

**What "the same trajectory" means.** InfoNCE draws its negatives from the frames of the batch it is given.
With N processes each process sees B / N items, so its negatives come from its own share only, and its window
start is its own: the loss is *not* the single-process loss of the global batch, and no choice of seeds makes
it so. What is exactly equivalent is one process that splits every global batch into the same N shares, runs
each share with that rank's random stream, and steps on the item-weighted sum of the shares' losses (gradient
accumulation over shares). ``tests/test_distributed.py`` checks that 2 torchrun processes (gloo) follow that
trajectory (GIM, fixed crops; equal up to float summation order). With one process per shard the statistics of
the loss are those of batch B / N (fewer and less varied negatives per row, as in the reference's
``nn.DataParallel``, which also splits the batch before the loss).

**Module-parallel placement.** ``train.device_map: [cuda:0, cuda:0, cuda:1, cuda:1]`` (one device per trained
module, or ``auto`` to spread the modules over the visible GPUs in contiguous blocks) puts module i and its
InfoNCE predictor on its device; forward pre-hooks move each module's input there, and losses are summed on the
first device. Gradient isolation means no gradient crosses devices, only the detached activations. Only the
CPU fallback (every module on ``cpu``) can be tested on a machine without GPUs.

**bf16.** ``train.precision: bf16`` runs the training forward pass under ``torch.autocast`` with bfloat16 (CUDA,
or CPUs with AVX512-BF16 / AMX); the InfoNCE scores are computed in bf16 and the loss in float32; validation runs
in float32.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..errors import ConfigError, TrainingDiverged

BUCKET_BYTES = 32 * 2**20


@dataclass
class DistContext:
    """This process's place in the job. ``enabled`` only when more than one process takes part."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env(environ: Optional[dict[str, str]] = None) -> DistContext:
    """The context torchrun describes in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``)."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)") from None
    return DistContext(rank=rank, world_size=max(1, world), local_rank=local)


def setup(device: Any) -> tuple[DistContext, Any]:
    """Join the process group when launched by torchrun with more than one process.

    Returns ``(context, device)``: on CUDA each process gets ``cuda:LOCAL_RANK`` (NCCL); on the CPU gloo is used.
    Without torchrun (or with one process) nothing happens and ``device`` is returned unchanged.
    """
    ctx = from_env()
    if not ctx.enabled:
        return ctx, device
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {ctx.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                              f"start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
        ctx.backend = "nccl"
    else:
        ctx.backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(ctx.backend, rank=ctx.rank, world_size=ctx.world_size)
    return ctx, device


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The global RNG seed of process ``rank`` in ``epoch`` (distributed runs only)."""
    return (int(seed) * 1_000_003 + 7919 * (int(rank) + 1) + 104_729 * int(epoch)) % 2**63


class ShardedBatchSampler:
    """This process's share of each global batch of a shuffled epoch.

    The order is ``torch.randperm(n, generator=generator)`` -- what a ``DataLoader(shuffle=True,
    generator=generator)`` uses -- so the global batches are those of single-process training with the same
    generator. Global batch j (``batch_size`` items) is split into ``world_size`` contiguous shares
    (``torch.tensor_split``) and share ``rank`` is yielded. A last global batch with fewer items than processes is
    dropped, since some process would get no item.
    """
    def __init__(self, n: int, batch_size: int, generator: Any, rank: int, world_size: int, shuffle: bool = True):
        if batch_size < world_size:
            raise ConfigError(f"config key 'train.batch_size' is {batch_size}, fewer than the {world_size} processes; "
                              f"the batch size is global, so use at least one item per process")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.dropped = 0 < n % batch_size < world_size

    def global_batches(self) -> Iterator[Any]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for start in range(0, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            if len(batch) < self.world_size:
                return
            yield batch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield torch.tensor_split(batch, self.world_size)[self.rank].tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.world_size else 0)


def train_loader(dataset: Any, generator: Any, ctx: DistContext, **kwargs: Any) -> Any:
    """The training DataLoader: ``shuffle=True`` with ``generator`` in one process, this process's shares of the
    same global batches in a distributed run (``kwargs``: batch_size, collate_fn, num_workers, ...)."""
    if not ctx.enabled:
        return DataLoader(dataset, shuffle=True, drop_last=False, generator=generator, **kwargs)
    batch_size = kwargs.pop("batch_size")
    sampler = ShardedBatchSampler(len(dataset), batch_size, generator, ctx.rank, ctx.world_size)
    if sampler.dropped and ctx.is_main:
        warnings.warn(f"the last global batch ({len(dataset) % batch_size} items) has fewer items than the "
                      f"{ctx.world_size} processes and is skipped every epoch", stacklevel=2)
    return DataLoader(dataset, batch_sampler=sampler, generator=generator, **kwargs)


def loss_scale(bad: bool, n_local: int, ctx: DistContext, step: int) -> float:
    """The factor for this process's summed loss, n_local / n_global, so that the summed gradients are those
    of the item-weighted mean over processes. ``bad``: this process has a non-finite loss; every process stops
    when any of them has one (one small all-reduce carries both). 1.0 outside a distributed run."""
    if not ctx.enabled:
        return 1.0
    flags = torch.tensor([float(bad), float(n_local)], dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(flags)
    any_bad, n_global = flags.tolist()
    if any_bad > 0 and not bad:
        raise TrainingDiverged(f"non-finite loss at step {step} in another process; lower train.lr or loss.beta")
    return float(n_local) / n_global


def _comm_device(ctx: DistContext) -> Any:
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def _buckets(tensors: Iterable[Any], limit: int) -> Iterator[list[Any]]:
    bucket: list[Any] = []
    size = 0
    key = None
    for t in tensors:
        k = (t.device, t.dtype)
        if bucket and (k != key or size + t.numel() * t.element_size() > limit):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        key = k
        size += t.numel() * t.element_size()
    if bucket:
        yield bucket


def allreduce_gradients(params: Iterable[Any], ctx: DistContext, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Sum the gradients of ``params`` over processes (a missing gradient counts as zeros), in flat buckets."""
    if not ctx.enabled:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    for bucket in _buckets(grads, bucket_bytes):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def broadcast_module(module: Any, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every process."""
    if not ctx.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def average_buffers(module: Any, ctx: DistContext) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over processes."""
    if not ctx.enabled:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b.data)
            b.data /= ctx.world_size


def reduce_stats(stats: Any, ctx: DistContext) -> Any:
    """Sum a :class:`~smooth_infomax.training.logs.EpochStats` (per-module sums and item counts) over processes,
    in place (one all-reduce); returns it."""
    if not ctx.enabled:
        return stats
    names = sorted(stats.totals()[0])
    if not names:
        return stats
    device = _comm_device(ctx)
    sums = torch.stack([stats.sums[n].to(device, torch.float64) for n in names])  # (M, 4)
    counts = torch.tensor([float(stats.count[n]) for n in names], dtype=torch.float64, device=device)
    flat = torch.cat([sums.reshape(-1), counts])
    dist.all_reduce(flat)
    k = sums.numel()
    for i, n in enumerate(names):
        stats.sums[n] = flat[i * sums.shape[1]:(i + 1) * sums.shape[1]].clone()
        stats.count[n] = int(round(float(flat[k + i])))
    return stats


# --------------------------------------------------------------------------------------------------
# Module-parallel placement
# --------------------------------------------------------------------------------------------------


def resolve_device_map(spec: Any, n_modules: int) -> Optional[list[str]]:
    """A device name per trained module from ``train.device_map`` (None, ``auto`` or a list)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec != "auto":
            raise ConfigError(f"config key 'train.device_map': expected auto or a list of devices, got {spec!r}")
        n_gpu = torch.cuda.device_count()
        if n_gpu == 0:
            return ["cpu"] * n_modules
        per = -(-n_modules // n_gpu)
        return [f"cuda:{i // per}" for i in range(n_modules)]
    devices = [str(d) for d in spec]
    if len(devices) != n_modules:
        raise ConfigError(f"config key 'train.device_map' has {len(devices)} devices for {n_modules} trained modules")
    return devices


def _move_to(device: Any, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    return value


def apply_device_map(sim: Any, devices: list[str]) -> Any:
    """Put trained module i (its encoder stage and its InfoNCE predictor) on ``devices[i]``; returns the device
    that receives the waveforms. Forward pre-hooks move every stage's tensor inputs to the stage's device."""
    if len(devices) != sim.n_modules:
        raise ConfigError(f"config key 'train.device_map' has {len(devices)} devices for {sim.n_modules} modules")
    if sim.config.kind == "cpc" and len(set(devices)) > 1:
        raise ConfigError("config key 'train.device_map': a CPC encoder is one module; give one device")
    resolved = [torch.device(d) for d in devices]
    for i, dev in enumerate(resolved):
        stages = list(sim.encoder.stages) if sim.config.kind == "cpc" else [sim.encoder.stages[i]]
        for stage in stages:
            stage.to(dev)
            if not getattr(stage, "_sim_device_hook", False):
                stage.register_forward_pre_hook(_make_hook(dev))
                stage._sim_device_hook = True
        crit = sim.criteria[i]
        crit.to(dev)
        if not getattr(crit, "_sim_device_hook", False):
            crit.register_forward_pre_hook(_make_hook(dev))
            crit._sim_device_hook = True
    return resolved[0]


def _make_hook(device: Any) -> Any:
    def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(_move_to(device, a) for a in args)

    return hook


# --------------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------------


def autocast(device: Any, precision: str) -> Any:
    """``torch.autocast`` with bfloat16 for ``precision == "bf16"``; a no-op context for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ConfigError(f"config key 'train.precision' must be fp32 or bf16, got {precision!r}")

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


__all__ = ["DistContext", "from_env", "setup", "teardown", "barrier", "epoch_seed", "ShardedBatchSampler",
           "train_loader", "loss_scale", "allreduce_gradients", "broadcast_module", "average_buffers",
           "reduce_stats", "resolve_device_map", "apply_device_map", "autocast"]
