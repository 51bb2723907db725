"""The ``smooth-infomax`` command line.

Each area of the package owns its sub-commands: a module listed in :data:`COMMAND_MODULES` exposes
``register(subparsers)`` that adds its parsers and sets ``func`` (a callable taking the parsed
``argparse.Namespace`` and returning an exit code or ``None``). Heavy imports (torch) happen inside the
command functions, so ``smooth-infomax --help`` stays fast. Nothing here runs at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .errors import UserError

COMMAND_MODULES = (
    "smooth_infomax.data.cli",
    "smooth_infomax.train",
    "smooth_infomax.modulewise",
    "smooth_infomax.encode",
    "smooth_infomax.probe",
    "smooth_infomax.decoder",
    "smooth_infomax.latent",
    "smooth_infomax.analysis.cli",
    "smooth_infomax.pipeline",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smooth-infomax",
        description="Smooth InfoMax (SIM), Greedy InfoMax and CPC for speech: data, training, probes, decoders, analysis.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an area not built yet
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
