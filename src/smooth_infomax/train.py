"""Pre-training SIM, GIM and CPC encoders.

``train(cfg, out_dir)`` runs the whole loop: datasets, the :class:`~smooth_infomax.model.SmoothInfoMax`
wrapper, one Adam per trained module (mathematically the same as the reference's single Adam, because the
modules are gradient-isolated and Adam is element-wise), optional ExponentialLR, validation in eval mode
under ``no_grad`` on the test split, CSV and TensorBoard logs, and an atomic checkpoint after every epoch.

Reproducibility and resume: everything random is a function of ``seed`` and the epoch: the shuffle order
(a generator seeded with ``(seed, epoch)``), the crop offsets (the datasets seed on ``(seed, epoch, index)``)
and the sampling noise / negatives (the global torch RNG, whose state is saved in every checkpoint).
Validation runs inside ``torch.random.fork_rng`` with its own seed, so it never perturbs training. A run
killed at any point and resumed with ``--resume`` restarts after the last finished epoch and ends with
exactly the weights of an uninterrupted run (on CPU).
"""

from __future__ import annotations

import csv
import io
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .checkpoint import atomic_torch_save, atomic_write_text, load_state, run_paths, torch_load
from .config import RunConfig, load_config, n_trained_modules, save_config
from .errors import ConfigError, TrainingDiverged, UserError

METRIC_FIELDS = ["epoch", "split", "module", "loss", "infonce", "kl", "accuracy", "lr", "seconds"]


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> "Any":
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'train.device' is {name!r} but no CUDA device is available; use cpu or auto")
    return torch.device(name)


def data_view(cfg: RunConfig, layout: str) -> str | None:
    """Pre-training view of a dataset: whole words for the artificial speech dataset, utterances otherwise."""
    return "words" if layout == "artificial" else None


def data_path(cfg: RunConfig) -> Path:
    """``data.path``, checked to exist (ConfigError naming the key otherwise)."""
    if not cfg.data.path:
        raise ConfigError("config key 'data.path' is not set; pass --set data.path=DIR (or use a config that sets it)")
    path = Path(cfg.data.path)
    if not path.exists():
        raise ConfigError(f"config key 'data.path': {path} does not exist; generate data with "
                          f"'smooth-infomax data synth --out {path}' or point it at a dataset")
    return path


def open_training_data(cfg: RunConfig) -> tuple[Any, Any]:
    """(train, validation) datasets for pre-training, as the config describes."""
    from .data import detect_layout, open_dataset

    path = data_path(cfg)
    layout = cfg.data.layout if cfg.data.layout != "auto" else detect_layout(path)
    common = dict(layout=layout, view=data_view(cfg, layout), sample_rate=cfg.data.sample_rate, crop=cfg.data.crop,
                  crop_grid=cfg.data.crop_grid, seed=cfg.seed, split_scheme=cfg.data.split_scheme,
                  cache_dir=cfg.data.cache_dir)
    train_set = open_dataset(path, split="train", random_crop=cfg.data.random_crop, **common)
    val_set = open_dataset(path, split="test", random_crop=False, **common)
    if len(train_set) == 0:
        raise UserError(f"{path}: the training split is empty; check the dataset layout with 'smooth-infomax data info {path}'")
    return train_set, val_set


@dataclass
class EpochStats:
    sums: dict[str, dict[str, float]]
    count: dict[str, int]

    @classmethod
    def empty(cls) -> "EpochStats":
        return cls({}, {})

    def add(self, losses: Sequence[Any], weight: int) -> None:
        for ml in losses:
            s = self.sums.setdefault(ml.name, {"loss": 0.0, "infonce": 0.0, "kl": 0.0, "accuracy": 0.0})
            s["loss"] += float(ml.loss.detach()) * weight
            s["infonce"] += float(ml.infonce.detach()) * weight
            s["kl"] += float(ml.kl.detach() if hasattr(ml.kl, "detach") else ml.kl) * weight
            s["accuracy"] += float(ml.accuracy.detach().float().mean()) * weight
            self.count[ml.name] = self.count.get(ml.name, 0) + weight

    def means(self) -> dict[str, dict[str, float]]:
        return {name: {k: v / max(1, self.count[name]) for k, v in s.items()} for name, s in self.sums.items()}


def _module_plan(cfg: RunConfig, n_modules: int) -> list[tuple[int, list[int] | None]]:
    """(global epoch, modules trained) for every epoch of the schedule."""
    e = cfg.train.epochs
    if cfg.train.schedule == "joint":
        return [(i, None) for i in range(e)]
    return [(m * e + i, [m]) for m in range(n_modules) for i in range(e)]


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})
    atomic_write_text(path, buf.getvalue())


class _TensorBoard:
    def __init__(self, path: Path, enabled: bool):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # noqa: BLE001 - tensorboard is optional
                return
            self.writer = SummaryWriter(str(path))

    def log(self, rows: list[dict[str, Any]]) -> None:
        if self.writer is None:
            return
        for row in rows:
            for key in ("loss", "infonce", "kl", "accuracy"):
                self.writer.add_scalar(f"{row['split']}/{row['module']}/{key}", row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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


def _validate(sim: Any, loader: Any, device: Any, seed: int, epoch: int, train_modules: list[int] | None) -> EpochStats:
    import torch

    stats = EpochStats.empty()
    was_training = sim.training
    sim.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed * 1_000_003 + epoch + 17)
        with torch.no_grad():
            for batch in loader:
                wave = batch["wave"].to(device)
                stats.add(sim(wave, train_modules=train_modules), wave.shape[0])
    sim.train(was_training)
    return stats


def train(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False,
          on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
          stop_after_steps: int | None = None) -> dict[str, Any]:
    """Pre-train an encoder as ``cfg`` says and write the run directory ``out_dir``.

    resume: continue from ``out_dir/checkpoints/last.pt`` (after its last finished epoch).
    stop_after_steps: stop (without a checkpoint) after this many optimiser steps, simulating a crash; for tests.
    Returns a summary dict (final validation metrics per module, epochs run, wall-clock seconds).
    """
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from . import distributed as D
    from .data.records import collate
    from .model import SmoothInfoMax

    out = Path(out_dir)
    paths = run_paths(out)
    if paths["checkpoint"].exists() and not resume:
        raise UserError(f"{out} already holds a training run; pass --resume to continue it or choose a new --out")
    data_path(cfg)  # a missing dataset fails before the run directory is created
    dist, device = D.setup(resolve_device(cfg.train.device))  # torchrun: join the process group (else a no-op)
    main = dist.is_main  # only rank 0 writes files and validates
    if main:
        out.mkdir(parents=True, exist_ok=True)

    seed_everything(cfg.seed)
    train_set, val_set = open_training_data(cfg)
    n_mod = n_trained_modules(cfg.model)

    sim = SmoothInfoMax(cfg.model, cfg.loss).to(device)
    device_map = D.resolve_device_map(cfg.train.device_map, n_mod)
    if device_map is not None:
        device = D.apply_device_map(sim, device_map)  # module i on device_map[i]; waves go to module 0's device
    D.broadcast_module(sim, dist)
    lrs = cfg.train.module_lr or [cfg.train.lr] * n_mod
    optims = [torch.optim.Adam(sim.parameters_of(i), lr=lrs[i], weight_decay=cfg.train.weight_decay)
              for i in range(n_mod)]
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=cfg.train.lr_gamma) for o in optims]

    history: list[dict[str, Any]] = []
    start_index = 0
    global_step = 0
    if resume and paths["checkpoint"].exists():
        state = torch_load(paths["checkpoint"])
        load_state(sim, state["model"], paths["checkpoint"])
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
        random.setstate(state["rng"]["python"])
    if main:  # only once a resumed checkpoint is known to fit: a refused resume leaves config.yaml as it was
        save_config(cfg, paths["config"])

    plan = _module_plan(cfg, n_mod)
    tb = _TensorBoard(paths["tensorboard"], cfg.train.log_tensorboard and main)
    loader_kw = dict(batch_size=cfg.train.batch_size, collate_fn=collate, num_workers=cfg.data.num_workers,
                     persistent_workers=False)
    val_loader = DataLoader(val_set, shuffle=False, drop_last=False, **loader_kw)
    t_start = time.time()
    last_val: dict[str, dict[str, float]] = {}
    betas = dict(zip(sim.module_names, sim.betas)) if hasattr(sim, "betas") else {}
    warned: set[str] = set()
    try:
        for plan_index in range(start_index, len(plan)):
            epoch, train_modules = plan[plan_index]
            t0 = time.time()
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            loader = D.train_loader(train_set, gen, dist, **loader_kw)  # distributed: this rank's shares
            if dist.enabled:  # per-process sampling noise and negatives, a function of (seed, rank, epoch)
                torch.manual_seed(D.epoch_seed(cfg.seed, dist.rank, epoch))
            sim.train()
            stats = EpochStats.empty()
            active = range(n_mod) if train_modules is None else train_modules
            bar = _progress(loader, cfg, f"epoch {epoch + 1}/{plan[-1][0] + 1}") if main else loader
            for step_in_epoch, batch in enumerate(bar):
                if cfg.train.max_steps_per_epoch is not None and step_in_epoch >= cfg.train.max_steps_per_epoch:
                    break
                wave = batch["wave"].to(device)
                with D.autocast(device, cfg.train.precision):
                    losses = sim(wave, train_modules=train_modules)
                scale = D.loss_scale(losses, wave.shape[0], dist, global_step + 1)  # 1.0 unless distributed
                for ml in losses:
                    if not torch.isfinite(ml.loss):
                        raise TrainingDiverged(
                            f"non-finite loss at step {global_step + 1} (epoch {epoch + 1}) in module {ml.name}; "
                            f"the last good checkpoint is kept in {paths['checkpoint']}; lower train.lr or loss.beta")
                total = sum(ml.loss.to(device) for ml in losses)
                for i in active:
                    optims[i].zero_grad(set_to_none=True)
                (total * scale if scale != 1.0 else total).backward()
                D.allreduce_gradients([p for i in active for p in sim.parameters_of(i)], dist)
                if cfg.train.grad_clip is not None:
                    for i in active:
                        torch.nn.utils.clip_grad_norm_(sim.parameters_of(i), cfg.train.grad_clip)
                for i in active:
                    optims[i].step()
                global_step += 1
                stats.add(losses, wave.shape[0])
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix({ml.name: f"{float(ml.infonce):.3f}" for ml in losses})
                if stop_after_steps is not None and global_step >= stop_after_steps:
                    raise _SimulatedCrash(global_step)
            for i in active:
                scheds[i].step()
            D.reduce_stats(stats, dist)
            D.average_buffers(sim, dist)
            seconds = time.time() - t0
            rows = _rows(epoch, "train", stats.means(), optims, sim, seconds)
            if main and ((epoch + 1) % cfg.train.validate_every == 0 or plan_index == len(plan) - 1):
                last_val = _validate(sim, val_loader, device, cfg.seed, epoch, train_modules).means()
                for name, msg in chance_warnings(last_val, cfg.loss.negatives, betas, epoch + 1,
                                                 plan[-1][0] + 1).items():
                    if name not in warned:  # once per module and run
                        warned.add(name)
                        print(msg, file=sys.stderr)
                rows += _rows(epoch, "val", last_val, optims, sim, seconds)
            history.extend(rows)
            tb.log(rows)
            is_last = plan_index == len(plan) - 1
            if main and ((plan_index + 1) % cfg.train.checkpoint_every == 0 or is_last):
                _save_checkpoint(paths["checkpoint"], sim, optims, scheds, history, plan_index, global_step, device)
                _write_metrics(paths["metrics"], history)
            if on_epoch is not None:
                on_epoch(epoch, {r["module"]: r for r in rows})
    except _SimulatedCrash:
        tb.close()
        return {"crashed_at_step": global_step}
    tb.close()
    if main:
        save_encoder(sim.encoder, cfg, paths["encoder"])
        _write_metrics(paths["metrics"], history)
    D.barrier(dist)
    D.teardown(dist)
    summary = {"epochs": len(plan), "steps": global_step, "seconds": time.time() - t_start, "val": last_val}
    return summary


class _SimulatedCrash(Exception):
    pass


def _rows(epoch: int, split: str, means: dict[str, dict[str, float]], optims: list[Any], sim: Any,
          seconds: float) -> list[dict[str, Any]]:
    names = sim.module_names if hasattr(sim, "module_names") else list(means)
    rows = []
    for name, m in means.items():
        idx = names.index(name) if name in names else 0
        rows.append({"epoch": epoch + 1, "split": split, "module": name, "loss": round(m["loss"], 6),
                     "infonce": round(m["infonce"], 6), "kl": round(m["kl"], 6),
                     "accuracy": round(m["accuracy"], 6), "lr": optims[min(idx, len(optims) - 1)].param_groups[0]["lr"],
                     "seconds": round(seconds, 3)})
    return rows


def _progress(loader: Any, cfg: RunConfig, desc: str) -> Any:
    if not cfg.train.progress:
        return loader
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return loader
    return tqdm(loader, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True, disable=None)


def _save_checkpoint(path: Path, sim: Any, optims: list[Any], scheds: list[Any], history: list[dict[str, Any]],
                     plan_index: int, step: int, device: Any) -> None:
    import numpy as np
    import torch

    state = {
        "model": sim.state_dict(),
        "optimizers": [o.state_dict() for o in optims],
        "schedulers": [s.state_dict() for s in scheds],
        "history": history,
        "plan_index": plan_index,
        "step": step,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
    }
    atomic_torch_save(state, path)


def save_encoder(encoder: Any, cfg: RunConfig, path: Path) -> None:
    import dataclasses

    atomic_torch_save({"model_config": dataclasses.asdict(cfg.model), "run_config": cfg.to_dict(),
                       "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}, path)


def load(run_dir: str | Path, device: str = "cpu") -> Any:
    """The trained encoder of a run directory, in eval mode (falls back to the last checkpoint while training)."""
    from .model import Encoder, SmoothInfoMax

    paths = run_paths(run_dir)
    if paths["encoder"].exists():
        state = torch_load(paths["encoder"])
        encoder = Encoder(load_config({"model": state["model_config"]}).model)
        encoder.load_state_dict(state["state_dict"])
    elif paths["checkpoint"].exists():
        cfg = load_config(paths["config"])
        sim = SmoothInfoMax(cfg.model, cfg.loss)
        load_state(sim, torch_load(paths["checkpoint"])["model"], paths["checkpoint"])
        encoder = sim.encoder
    else:
        raise UserError(f"{run_dir} holds no trained encoder (no encoder.pt or checkpoints/last.pt); "
                        f"train one with 'smooth-infomax train --out {run_dir}'")
    return encoder.to(device).eval()


def run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config saved with a run."""
    path = run_paths(run_dir)["config"]
    if not path.exists():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass the --out of a training run")
    return load_config(path)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="pre-train a SIM / GIM / CPC encoder",
                              description="Pre-train an encoder. Example: smooth-infomax train --config configs/quick.yaml "
                                          "--set data.path=data/synth --out runs/sim")
    p.add_argument("--config", help="YAML config (see configs/); optional with --resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last finished epoch")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: Any) -> int:
    out = Path(args.out)
    saved = run_paths(out)["config"]
    if args.resume and saved.exists():
        cfg = load_config(saved, args.overrides)
    elif args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        raise UserError("pass --config FILE (or --resume with an existing --out run directory)")
    summary = train(cfg, out, resume=args.resume)
    val = summary.get("val", {})
    parts = [f"{name}: infonce {m['infonce']:.3f} acc {m['accuracy']:.3f}" for name, m in val.items()]
    print(f"trained {summary['epochs']} epochs ({summary['steps']} steps) in {summary['seconds']:.1f}s -> {out}")
    if parts:
        print("validation: " + "; ".join(parts))
    return 0


__all__ = ["train", "load", "run_config", "save_encoder", "seed_everything", "open_training_data", "register"]
