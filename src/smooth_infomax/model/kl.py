"""KL divergence of a diagonal Gaussian posterior from the standard normal prior, with explicit reductions.

Per element, with s = log sigma^2::

    kl(mu, s) = 1/2 * (mu^2 + exp(s) - 1 - s)

Reductions of a (B, T, C) tensor of these elements (METHOD §3.3):

* ``reference``: summed over time, averaged over batch and channels, exactly as the paper's code::

      KL_ref = (1 / (B * C)) * sum_{b,t,c} kl = T * mean_{b,t,c} kl

* ``mean``: the mean over every element, ``KL_mean = mean_{b,t,c} kl``.
* ``vae``: summed over time and channels, averaged over the batch (VAE convention),
  ``KL_vae = C * KL_ref = T * C * KL_mean``.
* ``none``: the elementwise (B, T, C) tensor.

beta conversion. The loss ``beta_ref * KL_ref`` equals ``beta_mean * KL_mean`` when ``beta_mean = beta_ref * T``
(and ``beta_vae * KL_vae`` when ``beta_vae = beta_ref / C``). Under the reference reduction the effective
per-element weight therefore grows with the number of frames T, so a beta value does not transfer between
modules, crop lengths or datasets; :func:`convert_beta` translates one.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

REDUCTIONS = ("reference", "mean", "vae", "none")


def kl_elements(mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise KL(N(mu, exp(logvar)) || N(0, 1)); same shape as the inputs."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def kl_divergence(mu: Tensor, logvar: Tensor, reduction: str = "reference") -> Tensor:
    """KL(q || N(0, I)) of a diagonal Gaussian q = N(mu, diag exp(logvar)).

    mu, logvar: (B, T, C) (features layout: time is dim 1). reduction: ``reference`` (sum over time, mean over
    batch and channels = T * ``mean``; the paper's code), ``mean`` (mean over all elements), ``vae`` (sum over
    time and channels, mean over batch) or ``none`` ((B, T, C) elementwise). Returns a scalar tensor unless
    ``none``. See the module docstring for converting beta between reductions.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must have the same shape")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown KL reduction {reduction!r}; choose from {', '.join(REDUCTIONS)}")
    kl = kl_elements(mu, logvar)
    if reduction == "none":
        return kl
    if reduction == "mean":
        return kl.mean()
    if kl.dim() != 3:
        raise ValueError(f"the {reduction!r} KL reduction needs (B, T, C) inputs, got shape {tuple(kl.shape)}")
    if reduction == "reference":
        return kl.sum(dim=1).mean()
    return kl.sum(dim=(1, 2)).mean()  # vae


def _per_element_factor(reduction: str, n_frames: int, n_channels: Optional[int]) -> float:
    """KL_<reduction> = factor * KL_mean."""
    if reduction == "mean":
        return 1.0
    if reduction == "reference":
        return float(n_frames)
    if reduction == "vae":
        if n_channels is None:
            raise ValueError("converting beta to or from the 'vae' reduction needs n_channels")
        return float(n_frames) * float(n_channels)
    raise ValueError(f"cannot convert beta for KL reduction {reduction!r}; choose reference, mean or vae")


def convert_beta(beta: float, from_: str, to: str, n_frames: int, n_channels: Optional[int] = None) -> float:
    """The beta under reduction ``to`` that gives the same loss as ``beta`` under reduction ``from_``.

    ``n_frames`` is T of the module the KL is computed on (all frames, not the InfoNCE window); ``n_channels``
    (C) is needed only for ``vae``. Example: ``convert_beta(0.01, "reference", "mean", 511) == 5.11``.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    factor_from = _per_element_factor(from_, n_frames, n_channels)
    return float(beta) * factor_from / _per_element_factor(to, n_frames, n_channels)


__all__ = ["kl_divergence", "kl_elements", "convert_beta", "REDUCTIONS"]
