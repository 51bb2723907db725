"""The configs shipped with the package, and ``--config`` values: a shipped name or a path.

The shipped configs are package data (``smooth_infomax/configs/*.yaml``), read with :mod:`importlib.resources`
so that they are there in an installed wheel as in a checkout. ``--config quick`` (with or without ``.yaml``)
names one; any other value is the path of a YAML file. ``smooth-infomax configs`` lists them and
``smooth-infomax configs --show NAME`` prints one (to copy and edit).
"""

from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .errors import ConfigError

try:  # Python >= 3.11
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable

__all__ = ["Traversable", "resolve_config", "shipped_config", "shipped_configs", "register"]

SHIPPED_PACKAGE = "smooth_infomax"
SHIPPED_FOLDER = "configs"


def _shipped_root() -> Traversable:
    """The folder of shipped configs inside the installed package (package data)."""
    return importlib.resources.files(SHIPPED_PACKAGE) / SHIPPED_FOLDER


def shipped_configs() -> list[str]:
    """Names (without ``.yaml``) of the configs shipped with the package, sorted."""
    return sorted(entry.name[: -len(".yaml")] for entry in _shipped_root().iterdir()
                  if entry.is_file() and entry.name.endswith(".yaml"))


def shipped_config(name: str) -> Traversable | None:
    """The shipped config called ``name`` (with or without ``.yaml``), or None when there is none."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    file_name = name if name.endswith(".yaml") else f"{name}.yaml"
    entry = _shipped_root() / file_name
    return entry if entry.is_file() else None


def resolve_config(spec: str | Path) -> Path | Traversable:
    """A ``--config`` value -> the file to read: an existing path wins, else a shipped config name.

    Raises :class:`ConfigError` naming the value and listing the shipped names when it is neither."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = shipped_config(str(spec)) if not isinstance(spec, Path) or len(path.parts) == 1 else None
    if shipped is not None:
        return shipped
    if path.exists():
        raise ConfigError(f"config file {path} is not a file; pass a YAML file or a shipped config name")
    if shipped_config(path.name) is not None:
        raise ConfigError(f"config file {spec} does not exist; the shipped config of that name is "
                          f"--config {path.stem} (smooth-infomax configs lists them)")
    names = ", ".join(shipped_configs())
    raise ConfigError(f"config file {spec} does not exist; pass an existing YAML file or a shipped config name "
                      f"(smooth-infomax configs lists them: {names})")


# --------------------------------------------------------------------------------------------------
# CLI: smooth-infomax configs
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# YAML files and overrides
# --------------------------------------------------------------------------------------------------


def _read_yaml(path: Path | Traversable) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file or a shipped config "
                          "name (smooth-infomax configs lists them)") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; pass a YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _identity(source: Path | Traversable) -> str:
    return str(source.resolve()) if isinstance(source, Path) else f"<shipped>/{source.name}"


def _resolve_base(base: str, including: Path | Traversable) -> Path | Traversable:
    """``base:`` of a file: a path relative to the including file; a shipped config includes its sibling."""
    if isinstance(including, Path):
        candidate = (including.parent / base).resolve()
        if candidate.exists() or Path(base).is_absolute():
            return candidate
        shipped = shipped_config(base)
        return shipped if shipped is not None else candidate
    shipped = shipped_config(base)
    if shipped is None:
        raise ConfigError(f"config key 'base' in shipped config {including.name}: {base!r} is not a shipped config")
    return shipped


def read_config_dict(path: str | Path | Traversable, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a YAML config (a path or a shipped config name, see :func:`resolve_config`), resolving
    ``base: other.yaml`` (relative to the file; shipped configs include shipped ones) recursively."""
    source = resolve_config(path) if isinstance(path, (str, Path)) else path
    ident = _identity(source)
    if ident in _seen:
        chain = " -> ".join((*_seen, ident))
        raise ConfigError(f"config key 'base': the configs include each other in a loop ({chain}); remove one base")
    data = _read_yaml(source)
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"config key 'base' in {source}: expected the path of another YAML file, got {base!r}")
        data = deep_merge(read_config_dict(_resolve_base(base, source), (*_seen, ident)), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.epochs=5'`` -> (['train', 'epochs'], 5). The value is parsed as YAML (so ``null``, lists, floats
    work); only the first ``=`` splits, so values may contain ``=``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. train.epochs=5)")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def _summary(entry: Traversable) -> str:
    """The first comment line of a shipped config (its one-line description), or ''."""
    for line in entry.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            return ""
    return ""


def _configs_command(args: Any) -> int:
    if args.show:
        entry = shipped_config(args.show)
        if entry is None:
            raise ConfigError(f"{args.show!r} is not a shipped config; smooth-infomax configs lists them")
        print(entry.read_text(), end="")
        return 0
    names = shipped_configs()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {_summary(shipped_config(name))}".rstrip())
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("configs", help="list the shipped configs (use one with --config NAME)",
                              description="List the configs shipped with the package; 'train --config NAME' "
                                          "uses one, '--show NAME > my.yaml' copies one to edit.")
    p.add_argument("--show", metavar="NAME", help="print the YAML of one shipped config")
    p.set_defaults(func=_configs_command)
