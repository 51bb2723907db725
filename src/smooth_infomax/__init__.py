"""smooth-infomax: Smooth InfoMax (SIM), Greedy InfoMax and CPC for interpretable speech representations.

Quick API::

    import smooth_infomax as sim
    encoder = sim.load("runs/quick/sim")                 # a trained encoder, eval mode
    feats = encoder.encode(wave, mode="mean")            # one (B, T_m, C_m) tensor per module
    enc = sim.Encoder.from_config("configs/quick.yaml")  # a fresh encoder from a config
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Encoder", "load", "load_config", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: importing the package must not import torch
    if name == "Encoder":
        from .model import Encoder

        return Encoder
    if name == "load":
        from .train import load

        return load
    if name == "load_config":
        from .config import load_config

        return load_config
    raise AttributeError(name)
