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

from . import runtime
from .errors import UserError

COMMAND_MODULES = (
    "smooth_infomax.config_files",
    "smooth_infomax.data.cli",
    "smooth_infomax.training.cli",
    "smooth_infomax.encode",
    "smooth_infomax.probe",
    "smooth_infomax.decoding.cli",
    "smooth_infomax.analysis.cli",
    "smooth_infomax.abx.cli",
    "smooth_infomax.pipeline",
    "smooth_infomax.compare",
    "smooth_infomax.hub",
    "smooth_infomax.reproduce.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smooth-infomax",
        description="Smooth InfoMax (SIM), Greedy InfoMax and CPC for speech: data, training, probes, decoders, "
                    "analysis.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("--threads", default=None, metavar="auto|all|off|N",
                        help="torch threads: auto (default: the usable cores other jobs leave free, re-checked "
                             "between pipeline stages and training epochs), all (every usable core), off (leave "
                             "threading alone) or N; also the SMOOTH_INFOMAX_THREADS variable")
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


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # threading defaults before any command module imports torch (runtime.py)
        settings = runtime.configure(runtime.threads_option(argv), log=_to_stderr)
        note = runtime.allocator_defaults()  # freed memory kept for reuse (glibc; runtime.py)
        if note:
            settings.notes.append(note)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.runtime = settings  # commands that run long call args.runtime.rebalance() between pieces of work
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
