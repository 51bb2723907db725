"""``smooth-infomax probe``: linear probes on a frozen feature source (``--run`` or ``--model``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..sources.resolve import add_source_arguments, parse_outputs, source_spec
from .protocol import markdown_table, run_probe
from .tasks import DEFAULT_EFFICIENCY, TASKS, ProbeSettings


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("probe", help="linear probes on a frozen encoder (phone, speaker, syllable, vowel, "
                                            "consonant)")
    add_source_arguments(p)
    p.add_argument("--data", required=True, help="dataset with the task's labels")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--module", default="all", help="output index or 'all' (default)")
    p.add_argument("--mode", choices=["mean", "sample"], default="mean")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                   help="linear head with or without bias (default: with)")
    p.add_argument("--pool", choices=["mean", "max", "flatten", "none"], default=None,
                   help="time pooling (default: none for phones, mean otherwise)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--standardize", action="store_true", help="z-score features with train statistics first")
    p.add_argument("--baselines", action="store_true", help="add random-init encoder and log-mel rows")
    p.add_argument("--label-efficiency", action="store_true",
                   help="also train on 1, 2, 4, ..., 128 labelled items per class")
    p.add_argument("--split-scheme", choices=["reference", "leakage_free"], default=None,
                   help="artificial speech split (default: the run config's data.split_scheme)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args: Any) -> int:
    pool = args.pool or ("none" if args.task == "phone" else "mean")
    settings = ProbeSettings(task=args.task, mode=args.mode, bias=args.bias, pool=pool, seeds=args.seeds,
                             epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, standardize=args.standardize)
    settings.check()
    modules = parse_outputs(args.module)
    source = source_spec(args)
    result = run_probe(source, args.data, args.out, settings, modules=modules, baselines=args.baselines,
                       label_efficiency=DEFAULT_EFFICIENCY if args.label_efficiency else (),
                       split_scheme=args.split_scheme, device=args.device)
    print(markdown_table(result), end="")
    print(f"-> {Path(args.out) / f'probe_{args.task}.json'}")
    return 0


__all__ = ["register"]
