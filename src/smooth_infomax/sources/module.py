"""Any ``torch.nn.Module`` as a feature source: ``module:package.path:factory[#key=value,...]``.

The contract for the factory and the module it returns:

* ``package.path`` is importable (installed, or on ``PYTHONPATH``) and ``factory`` is a callable in it
  (``a.b`` attribute paths allowed) that returns an ``nn.Module``. Options after ``#`` other than the
  reserved ones below are passed to the factory as keyword arguments (values read as int / float / bool
  where they parse, else strings): ``module:mypkg.models:build#size=small,hop=160``.
* ``module(wave)`` takes a float waveform (B, T) at ``sample_rate`` and returns one feature tensor
  (B, T', C) or a list / tuple of them (one per output; frames along dim 1). It is called in eval mode
  under ``torch.no_grad()``.
* Optional attributes of the module, each overridden by the same-named option: ``sample_rate`` (int,
  default 16000), ``hops`` (list, samples per frame of each output) or ``hop`` (one for all),
  ``output_names`` (default ``out0``, ``out1``, ...), ``receptive_fields`` (default None = unknown),
  ``dims`` (default: measured), ``frame_counts(n_samples) -> list[int]`` (default: measured on silence).
  Without a hop, it is measured from the frame counts of 1 s and 2 s of silence and must come out a whole
  number of samples.
* Reserved options: ``hop``, ``sample_rate``, ``name``, ``outputs`` (names, ``a,b``).

The module is assumed deterministic (``stochastic=False``); its features are used as they come.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError
from . import as_wave_batch, check_mode, parse_value, split_options, weights_fingerprint

PREFIX = "module:"
RESERVED = ("hop", "sample_rate", "name", "outputs")


def _as_list(out: Any, where: str) -> list[Tensor]:
    feats = list(out) if isinstance(out, (list, tuple)) else [out]
    if not feats or not all(isinstance(f, Tensor) and f.dim() == 3 for f in feats):
        shapes = [tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__ for f in feats]
        raise UserError(f"{where}: forward(wave (B, T)) must return a (B, T', C) tensor or a list of them, got "
                        f"{shapes}")
    return feats


class ModuleSource:
    """An ``nn.Module`` with the contract of the module docstring as a feature source."""

    stochastic = False

    def __init__(self, module: nn.Module, *, name: str, sample_rate: Optional[int] = None,
                 hops: Optional[Sequence[int]] = None, output_names: Optional[Sequence[str]] = None,
                 origin: str = "") -> None:
        self.module = module.eval()
        self.name = name
        self.origin = origin or name
        self.sample_rate = int(sample_rate or getattr(module, "sample_rate", 16000))
        self._counts: dict[int, list[int]] = {}
        self._fingerprint: Optional[str] = None
        probe = self._run(torch.zeros(1, self.sample_rate))
        n_out = len(probe)
        self.dims = [int(f.shape[-1]) for f in probe]
        names = output_names or getattr(module, "output_names", None) or [f"out{i}" for i in range(n_out)]
        if len(names) != n_out:
            raise UserError(f"{self.where}: {len(names)} output names for {n_out} outputs; give one name per output")
        self.output_names = [str(n) for n in names]
        if hops is None:
            hops = getattr(module, "hops", None)
            if hops is None and getattr(module, "hop", None) is not None:
                hops = [int(module.hop)] * n_out
        self.hops = self._measure_hops() if hops is None else [int(h) for h in hops]
        if len(self.hops) == 1 and n_out > 1:
            self.hops = self.hops * n_out
        if len(self.hops) != n_out or min(self.hops) < 1:
            raise UserError(f"{self.where}: hops {self.hops} must be one positive number per output ({n_out})")
        fields = getattr(module, "receptive_fields", None)
        self.receptive_fields = list(fields) if fields is not None else [None] * n_out

    @property
    def where(self) -> str:
        return f"{PREFIX}{self.origin}"

    @property
    def device(self) -> torch.device:
        for t in self.module.parameters():
            return t.device
        for t in self.module.buffers():
            return t.device
        return torch.device("cpu")

    def to(self, device: Any) -> ModuleSource:
        self.module.to(device)
        return self

    def _run(self, x: Tensor) -> list[Tensor]:
        with torch.no_grad():
            return _as_list(self.module(x.to(self.device)), self.where)

    def _measure_hops(self) -> list[int]:
        one, two = self.frame_counts(self.sample_rate), self.frame_counts(2 * self.sample_rate)
        hops = []
        for a, b in zip(one, two):
            ratio = self.sample_rate / max(b - a, 1e-9)
            if b <= a or abs(ratio - round(ratio)) > 1e-6:
                raise UserError(f"{self.where}: cannot measure the hop (frames for 1 s and 2 s of input: {a}, {b}); "
                                f"give it as a module attribute `hop` or as {PREFIX}{self.origin}#hop=SAMPLES")
            hops.append(int(round(ratio)))
        return hops

    def frame_counts(self, n_samples: int) -> list[int]:
        """Frames of every output for ``n_samples`` samples: the module's own ``frame_counts`` or measured."""
        own = getattr(self.module, "frame_counts", None)
        if callable(own):
            return [int(c) for c in own(int(n_samples))]
        n = int(n_samples)
        if n not in self._counts:
            try:
                self._counts[n] = [int(f.shape[1]) for f in self._run(torch.zeros(1, n))]
            except RuntimeError:  # too short for the module's kernels
                self._counts[n] = [0] * len(self.dims)
        return list(self._counts[n])

    def encode(self, wave: Tensor, mode: str = "mean", generator: Optional[torch.Generator] = None) -> list[Tensor]:
        """Features of every output, each (B, T', C); wave (B, 1, T) or (B, T). ``generator`` is unused."""
        check_mode(self.where, mode)
        feats = self._run(as_wave_batch(wave))
        if len(feats) != len(self.output_names):
            raise UserError(f"{self.where}: forward returned {len(feats)} outputs, earlier {len(self.output_names)}")
        return [f.float().contiguous() for f in feats]

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.module, kind="module", origin=self.origin,
                                                    cls=type(self.module).__qualname__, hops=self.hops,
                                                    sample_rate=self.sample_rate)
        return self._fingerprint

    def __repr__(self) -> str:
        return f"ModuleSource({self.name!r}, outputs={getattr(self, 'output_names', '?')})"


def load_factory(target: str) -> Any:
    """``package.path:factory`` -> the callable (a clear one-line error when it is not there)."""
    mod_name, colon, attr = target.partition(":")
    if not colon or not mod_name or not attr:
        raise UserError(f"{PREFIX}{target}: write module:package.path:factory (a module path, a colon, the "
                        f"function that returns the nn.Module)")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise UserError(f"{PREFIX}{target}: cannot import {mod_name} ({exc}); install it or add its folder to "
                        f"PYTHONPATH") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{PREFIX}{target}: {mod_name} has no {attr!r}; name a function that returns an nn.Module")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{PREFIX}{target}: {attr} is not callable; name a function that returns an nn.Module")
    return obj


def load_module_source(spec: str, device: Any = "cpu") -> ModuleSource:
    """``spec`` is what follows ``module:``: ``package.path:factory[#options]`` (see the module docstring)."""
    target, options = split_options(spec, PREFIX)
    factory = load_factory(target)
    kwargs = {k: parse_value(v) for k, v in options.items() if k not in RESERVED}
    try:
        module = factory(**kwargs)
    except TypeError as exc:
        raise UserError(f"{PREFIX}{spec}: the factory rejected its arguments {sorted(kwargs)} ({exc})") from exc
    if not isinstance(module, nn.Module):
        raise UserError(f"{PREFIX}{target}: the factory returned a {type(module).__name__}, not a torch.nn.Module")
    module.to(device)
    hop = parse_value(options["hop"]) if "hop" in options else None
    if hop is not None and (not isinstance(hop, int) or hop < 1):
        raise UserError(f"{PREFIX}{spec}: hop= must be a positive whole number of samples, got {options['hop']!r}")
    rate = parse_value(options["sample_rate"]) if "sample_rate" in options else None
    if rate is not None and (not isinstance(rate, int) or rate < 1):
        raise UserError(f"{PREFIX}{spec}: sample_rate= must be a positive integer, got {options['sample_rate']!r}")
    names = [n for n in options["outputs"].split(",") if n] if options.get("outputs") else None
    return ModuleSource(module, name=options.get("name") or target.rpartition(":")[2], sample_rate=rate,
                        hops=None if hop is None else [hop], output_names=names, origin=spec)


__all__ = ["ModuleSource", "load_module_source", "load_factory", "RESERVED"]
