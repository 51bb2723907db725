"""``smooth-infomax data {info,fetch,synth}``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import UserError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="inspect, download or generate datasets")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: _help(p))

    info = sub.add_parser("info", help="describe a dataset folder (layout, splits, hours, label classes)")
    info.add_argument("path", metavar="PATH", help="dataset folder (or a CSV manifest)")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.add_argument("--skip-bad", action="store_true", help="skip unreadable audio files with a warning")
    info.set_defaults(func=_cmd_info)

    fetch = sub.add_parser("fetch", help="download, verify and unpack a public dataset")
    fetch.add_argument("name", metavar="NAME", help="artificial-speech or librispeech")
    fetch.add_argument("--to", required=True, metavar="DIR", help="folder to unpack into")
    fetch.add_argument("--from", dest="from_file", metavar="FILE", help="use an archive downloaded by hand")
    fetch.add_argument("--base-url", help="download from this mirror instead")
    fetch.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    fetch.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after unpacking")
    fetch.set_defaults(func=_cmd_fetch)

    synth = sub.add_parser("synth", help="generate the synthetic speech dataset (needs the 'synth' extra)")
    synth.add_argument("--out", required=True, metavar="DIR")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--words", type=int, default=None, help="number of words (default: the generator's)")
    synth.add_argument("--voices", type=int, default=None, help="number of voices (default: the generator's)")
    synth.set_defaults(func=_cmd_synth)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import describe, format_description

    d = describe(args.path, skip_bad=args.skip_bad)
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .fetch import fetch

    fetch(args.name, args.to, base_url=args.base_url, timeout=args.timeout, from_file=args.from_file,
          keep_archive=args.keep_archive, log=print)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    try:
        from .synth import generate
    except ModuleNotFoundError as exc:
        if exc.name in ("smooth_infomax.data.synth", None):
            raise UserError("the synthetic data generator is not part of this installation "
                            "(smooth_infomax.data.synth is missing)") from None
        raise UserError(f"the synthetic data generator needs the module {exc.name!r}; install it with "
                        f"pip install 'smooth-infomax[synth]'") from None
    kwargs: dict[str, Any] = {"seed": args.seed}
    if args.words is not None:
        kwargs["n_words"] = args.words
    if args.voices is not None:
        kwargs["n_voices"] = args.voices
    result = generate(args.out, **kwargs)
    print(f"synthetic dataset -> {args.out}" if result is None else f"synthetic dataset -> {result}")
    return 0
