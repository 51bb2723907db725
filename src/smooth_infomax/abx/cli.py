"""``smooth-infomax abx --run RUN --data DATA [--module all]`` (or ``--model SOURCE``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..sources.resolve import add_source_arguments
from .evaluate import markdown_table, run_abx


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("abx", help="triphone ABX error rate (within / across speaker) of every output")
    add_source_arguments(p)
    p.add_argument("--data", required=True, help="dataset with phone alignments (CPC phone file or TextGrids)")
    p.add_argument("--module", default="all", help="output index or 'all' (default)")
    p.add_argument("--split", choices=["train", "test", "all"], default="test", help="utterances to use")
    p.add_argument("--max-per-cell", type=int, default=10,
                   help="at most this many items per (context, phone, speaker), drawn with --seed (default 10; "
                        "0 keeps all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="also score the random-init twin and log-mel (default: yes)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/abx with --run)")
    p.set_defaults(func=_cmd_abx)


def _cmd_abx(args: argparse.Namespace) -> int:
    if args.out is None and args.run is None:
        raise UserError("pass --out DIR for the ABX results (only --run has a default, RUN/abx)")
    out = Path(args.out) if args.out is not None else Path(args.run) / "abx"
    if args.module == "all":
        modules = None
    else:
        try:
            modules = [int(args.module)]
        except ValueError:
            raise UserError(f"--module {args.module!r}: pass an output index or 'all'") from None
    if args.max_per_cell < 0:
        raise UserError("--max-per-cell must be >= 0 (0 keeps every item)")
    result = run_abx(args.run or args.model, args.data, out, modules=modules, split=args.split,
                     baselines=args.baselines, max_per_cell=args.max_per_cell or None, seed=args.seed,
                     device=args.device)
    print(markdown_table(result), end="")
    print(f"-> {out / 'abx.json'}")
    return 0
