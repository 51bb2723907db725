"""smooth-infomax: Smooth InfoMax (SIM), Greedy InfoMax and CPC for interpretable speech representations.

Quick API::

    import smooth_infomax as sim
    encoder = sim.load("runs/quick/sim")                 # a trained encoder, eval mode
    feats = encoder.encode(wave, mode="mean")            # one (B, T_m, C_m) tensor per module
    enc = sim.Encoder.from_config("quick")  # a fresh encoder from a config
"""

from __future__ import annotations

from typing import Any

from . import runtime as _runtime

# OpenMP reads its wait policy once, when torch loads it: choose it (PASSIVE on a busy CPU, a bounded spin on a
# quiet one; nothing if the user set it or SMOOTH_INFOMAX_THREADS=off) before the package imports torch.
_runtime.apply_env_defaults()

__version__ = "0.1.0"

__all__ = ["Encoder", "load", "load_config", "from_pretrained", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: importing the package must not import torch
    if name == "Encoder":
        from .model import Encoder

        return Encoder
    if name == "load":
        from .runs import load_encoder

        return load_encoder
    if name == "from_pretrained":
        from .hub import from_pretrained

        return from_pretrained
    if name == "load_config":
        from .config import load_config

        return load_config
    raise AttributeError(name)
