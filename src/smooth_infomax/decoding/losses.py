"""Decoder losses: waveform MSE, log-mel MSE and their sum.

``mse`` compares waveforms; ``mel`` is the MSE between log10 mel spectrograms (n_fft 1024, hop 256, 80 mels;
halved windows for clips under 1024 samples); ``mse+mel`` is their sum. Waves (B, 1, T) or (B, T).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..mel import log_mel

LOSSES = ("mse", "mel", "mse+mel")


def mel_settings(n_samples: int) -> dict[str, int]:
    """STFT settings of the ``mel`` loss: n_fft 1024 / hop 256 / 80 mels, halved windows for shorter clips."""
    n_fft = 1024
    while n_fft > 16 and n_fft > n_samples:
        n_fft //= 2
    return {"n_fft": n_fft, "hop": max(1, n_fft // 4), "n_mels": min(80, n_fft // 4)}


def mel_loss(pred: Tensor, target: Tensor, sample_rate: int = 16000) -> Tensor:
    """MSE between log10 mel spectrograms (:func:`smooth_infomax.mel.log_mel`) of two equal-shape waves."""
    settings = mel_settings(pred.shape[-1])
    return F.mse_loss(log_mel(pred, sample_rate=sample_rate, **settings),
                      log_mel(target, sample_rate=sample_rate, **settings))


def decoder_loss(pred: Tensor, target: Tensor, kind: str = "mse", sample_rate: int = 16000) -> Tensor:
    """``mse`` (waveform MSE), ``mel`` (log-mel MSE) or ``mse+mel`` (their sum); pred and target (B, 1, T) or (B, T)."""
    if kind not in LOSSES:
        raise ValueError(f"decoder loss must be one of {', '.join(LOSSES)}, got {kind!r}")
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "mel":
        return mel_loss(pred, target, sample_rate)
    return F.mse_loss(pred, target) + mel_loss(pred, target, sample_rate)


__all__ = ["LOSSES", "decoder_loss", "mel_loss", "mel_settings"]
