"""Feature sources for models that are not ours: the only model-specific code the analysis suite has.

Each adapter implements the ``FeatureSource`` protocol of :mod:`smooth_infomax.features` (``name``,
``sample_rate``, ``output_names``, ``hops``, ``dims``, ``stochastic``, ``receptive_fields``,
``encode(wave (B, 1, T), mode) -> list[(B, T_m, C_m)]``, ``frame_counts(n_samples)``, ``fingerprint()``):

* :mod:`.hf` - HuggingFace transformers audio encoders, ``hf:<local folder or repo id>[#layers=0,3,6]``
  (wav2vec 2.0, HuBERT, WavLM, data2vec-audio; needs the optional extra ``pip install smooth-infomax[hf]``).
* :mod:`.module` - any ``torch.nn.Module`` built by a factory, ``module:package.path:factory[#hop=160,...]``.

``features.resolve_source`` dispatches on the prefix; the helpers here (option parsing, weight hashing) are
shared by both adapters.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from ..errors import UserError

__all__ = ["split_options", "parse_value", "weights_fingerprint", "as_wave_batch"]


def split_options(spec: str, prefix: str) -> tuple[str, dict[str, str]]:
    """``"DIR#layers=0,3;x=1"`` -> ``("DIR", {"layers": "0,3", "x": "1"})``.

    Options follow the first ``#``; ``;`` separates them, and so may ``,`` before a ``key=`` (so
    ``#hop=160,dim=8`` works while ``layers=0,3,6`` keeps its commas). ``prefix`` names the source kind in errors.
    """
    target, _, tail = spec.partition("#")
    options: dict[str, str] = {}
    if tail:
        pieces: list[str] = []
        for chunk in tail.split(";"):
            for part in chunk.split(","):
                if "=" in part or not pieces:
                    pieces.append(part)
                else:
                    pieces[-1] += "," + part
        for piece in pieces:
            key, eq, value = piece.partition("=")
            if not eq or not key.strip():
                raise UserError(f"{prefix}{spec}: option {piece!r} is not KEY=VALUE; write e.g. "
                                f"{prefix}{target}#layers=0,3,6")
            options[key.strip()] = value.strip()
    if not target.strip():
        raise UserError(f"{prefix}{spec}: nothing after {prefix!r}; give a folder, repo id or package.path:factory")
    return target.strip(), options


def parse_value(text: str) -> Any:
    """An option value as int, float, bool or None where it reads as one, else the string."""
    low = text.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def weights_fingerprint(module: nn.Module, **extra: Any) -> str:
    """sha256 (first 16 hex digits) of every parameter and buffer (name, dtype, shape, bytes) and ``extra``."""
    h = hashlib.sha256()
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def as_wave_batch(wave: torch.Tensor) -> torch.Tensor:
    """(B, 1, T), (B, T) or (T,) float -> (B, T) float32."""
    wave = torch.as_tensor(wave)
    if wave.dim() == 3 and wave.shape[1] == 1:
        wave = wave[:, 0]
    elif wave.dim() == 1:
        wave = wave.unsqueeze(0)
    if wave.dim() != 2:
        raise ValueError(f"expected a waveform batch (B, 1, T) or (B, T), got shape {tuple(wave.shape)}")
    return wave.float()


def check_mode(name: str, mode: str) -> None:
    """Deterministic sources treat every mode ('mean', 'sample', 'stats') as 'mean' (plain tensors)."""
    if mode not in ("mean", "sample", "stats"):
        raise ValueError(f"{name}: mode must be 'mean', 'sample' or 'stats' (all the same for this deterministic "
                         f"model), got {mode!r}")
