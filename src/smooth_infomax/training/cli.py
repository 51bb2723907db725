"""``smooth-infomax train`` and ``smooth-infomax train-modulewise``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..checkpoint import run_paths
from ..config import RunConfig, load_config
from ..errors import UserError
from .cache import CACHE_MODES
from .loop import train, train_modulewise


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a shipped config name (smooth-infomax configs lists them) or a YAML file; "
                                    "optional with --resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last finished epoch")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="pre-train a SIM / GIM / CPC encoder",
                              description="Pre-train an encoder. Example: smooth-infomax train --config "
                                          "quick --set data.path=data/synth --out runs/sim")
    _add_common(p)
    p.set_defaults(func=_cmd_train)
    p = subparsers.add_parser("train-modulewise", help="train an encoder module by module on cached activations",
                              description="Module-wise training on cached activations. Example: smooth-infomax "
                                          "train-modulewise --config gim-artificial-speech --out runs/gim")
    _add_common(p)
    p.add_argument("--cache", default="auto", choices=CACHE_MODES, help="where activations are kept (default auto)")
    p.add_argument("--cache-dir", help="folder for disk caches (default OUT/activation-cache)")
    p.add_argument("--no-resample", action="store_true",
                   help="SIM: cache one fixed sample per item instead of mu and log-variance")
    p.set_defaults(func=_cmd_modulewise)


def command_config(args: Any) -> RunConfig:
    """The config of a training command: the run's saved config.yaml on --resume, else --config (with --set)."""
    saved = run_paths(args.out)["config"]
    if args.resume and saved.exists():
        return load_config(saved, args.overrides)
    if args.config:
        return load_config(args.config, args.overrides)
    raise UserError("pass --config FILE (or --resume with an existing --out run directory)")


def _report(summary: dict[str, Any], out: str | Path) -> None:
    caches = ", ".join(f"{k}: {v['storage']} {v['bytes'] / 2**20:.1f} MiB"
                       for k, v in summary.get("caches", {}).items())
    print(f"trained {summary['epochs']} epochs ({summary['steps']} steps) in {summary['seconds']:.1f}s -> {out}"
          + (f" (caches {caches})" if caches else ""))
    parts = [f"{name}: infonce {m['infonce']:.3f} acc {m['accuracy']:.3f}" for name, m in summary["val"].items()]
    if parts:
        print("validation: " + "; ".join(parts))


def _cmd_train(args: Any) -> int:
    settings = getattr(args, "runtime", None)  # threads follow the free cores, re-checked after every epoch
    summary = train(command_config(args), args.out, resume=args.resume,
                    on_epoch=settings.rebalance if settings is not None else None)
    _report(summary, args.out)
    return 0


def _cmd_modulewise(args: Any) -> int:
    summary = train_modulewise(command_config(args), args.out, args.cache, resample=not args.no_resample,
                               cache_dir=args.cache_dir, resume=args.resume)
    _report(summary, args.out)
    return 0


__all__ = ["register", "command_config"]
