"""Encoders (SIM, GIM, CPC), their losses (InfoNCE, KL) and the training wrapper.

* :class:`Encoder`: waveform -> one (B, T_m, C_m) feature tensor per module (inference; ``mode`` per call).
* :class:`SmoothInfoMax`: encoder + one InfoNCE criterion per trained module; ``forward`` returns
  :class:`ModuleLoss` objects.
* :func:`info_nce` / :class:`InfoNCE`: the reference InfoNCE, vectorised over prediction steps.
* :func:`kl_divergence`: KL to N(0, I) with the reference (sum over time) or per-element reduction.
"""

from .encoder import Encoder
from .infonce import InfoNCE, InfoNCEOutput, info_nce
from .kl import convert_beta, kl_divergence
from .sim import ModuleLoss, SmoothInfoMax

__all__ = ["Encoder", "SmoothInfoMax", "ModuleLoss", "InfoNCE", "InfoNCEOutput", "info_nce", "kl_divergence",
           "convert_beta"]
