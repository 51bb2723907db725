"""From a spec to a feature source, and the ``--run RUN`` / ``--model SOURCE`` arguments of every verb.

A spec is a run directory (:class:`~smooth_infomax.features.EncoderSource`), an exported model folder
(``config.json`` + ``model.safetensors``, :func:`smooth_infomax.hub.from_pretrained`), ``hf:<folder or repo id>``
(:mod:`.hf`), ``module:package.path:factory`` (:mod:`.module`) or a source object. This module sits above
``features``, ``hub`` and the adapters, so none of them needs to know the others.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError
from ..features.sources import EncoderSource, FeatureSource, as_source
from ..hub import from_pretrained
from ..runs import is_run_dir
from .hf import load_hf_source
from .module import load_module_source


def resolve_source(spec: Any, device: str = "cpu", *, name: Optional[str] = None) -> FeatureSource:
    """A feature source from a spec: a run directory, an exported model folder (``config.json`` +
    ``model.safetensors``), ``hf:<folder or repo id>``, ``module:package.path:factory``, or a source object."""
    if not isinstance(spec, (str, os.PathLike)):
        return as_source(spec, name)
    text = str(spec)
    if text.startswith("hf:"):
        return load_hf_source(text[3:], device=device)
    if text.startswith("module:"):
        return load_module_source(text[len("module:"):], device=device)
    path = Path(text)
    if not path.exists():
        raise UserError(f"--model {text}: no such folder; pass a run directory, an exported model folder, "
                        f"hf:<folder or repo id> or module:package.path:factory")
    if is_run_dir(path):
        return EncoderSource.from_run(path, device=device, name=name)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return as_source(from_pretrained(path, device=device), name or path.name).to(device)  # type: ignore[attr-defined]
    raise UserError(f"--model {text}: not a run directory (config.yaml + encoder.pt) nor an exported model "
                    f"(config.json + model.safetensors); pass one of those, hf:... or module:...")


def add_source_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--run RUN`` or ``--model SOURCE`` (one of them) and ``--device``."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--run", default=None, help="run directory of a trained encoder")
    group.add_argument("--model", default=None, metavar="SOURCE",
                       help="a feature source: run dir, exported model folder, hf:<folder or repo id>, "
                            "module:package.path:factory")
    if not any("--device" in a.option_strings for a in parser._actions):
        parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")


def parse_outputs(value: str) -> Optional[list[int]]:
    """``--module``: ``all`` -> None (every output), else one output index."""
    if value == "all":
        return None
    try:
        return [int(value)]
    except ValueError:
        raise UserError(f"--module {value!r}: pass an output index or 'all'") from None


def source_spec(args: argparse.Namespace) -> str:
    """The spec given with ``--run`` (checked to be a run directory) or ``--model``."""
    spec = getattr(args, "run", None) or getattr(args, "model", None)
    if spec is None:
        raise UserError("pass --run RUN_DIR or --model SOURCE")
    if getattr(args, "run", None) and not is_run_dir(spec):
        raise UserError(f"--run {spec} is not a run directory (no config.yaml with encoder.pt or a checkpoint); "
                        f"pass the --out of a training run, or --model for other sources")
    return str(spec)


def source_from_args(args: argparse.Namespace) -> FeatureSource:
    """The feature source named by ``--run`` or ``--model``."""
    return resolve_source(source_spec(args), device=getattr(args, "device", "cpu") or "cpu")


__all__ = ["resolve_source", "add_source_arguments", "parse_outputs", "source_spec", "source_from_args"]
