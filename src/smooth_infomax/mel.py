"""Log-mel spectrograms in plain torch (no torchaudio): mel filterbanks, power spectrograms, log / dB scaling.

* :func:`mel_filterbank` builds triangular filters on the ``htk`` or ``slaney`` mel scale, optionally
  area-normalised (``norm="slaney"``: each filter is scaled by 2 / (its bandwidth in Hz)).
* :func:`power_spectrogram` is |STFT|^2 with a periodic Hann window, ``center=True`` and reflect padding.
* :func:`log_mel` chains both and applies ``log10(max(x, floor))`` (``scale="log10"``) or
  ``10 * log10(max(x, floor))`` (``scale="db"``, reference power 1, no top-dB clipping).

Everything is differentiable, so the functions double as decoder losses. Filterbanks are cached per
parameter set (on the CPU) and moved to the input's device and dtype.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
from torch import Tensor

MEL_SCALES = ("htk", "slaney")
NORMS = (None, "slaney")
SCALES = ("log10", "db", "power")

# Slaney scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4)
_SLANEY_F_SP = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freq: Tensor, mel_scale: str = "htk") -> Tensor:
    """Frequencies in Hz (any shape, float) to mels on the ``htk`` or ``slaney`` scale."""
    freq = torch.as_tensor(freq, dtype=torch.float64)
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    if mel_scale == "slaney":
        linear = freq / _SLANEY_F_SP
        logpart = _SLANEY_MIN_LOG_MEL + torch.log(torch.clamp(freq, min=1e-12) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
        return torch.where(freq >= _SLANEY_MIN_LOG_HZ, logpart, linear)
    raise ValueError(f"mel_scale must be one of {MEL_SCALES}, got {mel_scale!r}")


def mel_to_hz(mel: Tensor, mel_scale: str = "htk") -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    mel = torch.as_tensor(mel, dtype=torch.float64)
    if mel_scale == "htk":
        return 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)
    if mel_scale == "slaney":
        linear = mel * _SLANEY_F_SP
        logpart = _SLANEY_MIN_LOG_HZ * torch.exp(_SLANEY_LOGSTEP * (mel - _SLANEY_MIN_LOG_MEL))
        return torch.where(mel >= _SLANEY_MIN_LOG_MEL, logpart, linear)
    raise ValueError(f"mel_scale must be one of {MEL_SCALES}, got {mel_scale!r}")


@functools.lru_cache(maxsize=32)
def _filterbank_cpu(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float, mel_scale: str,
                    norm: Optional[str]) -> Tensor:
    n_freqs = n_fft // 2 + 1
    bin_hz = torch.linspace(0.0, sample_rate / 2.0, n_freqs, dtype=torch.float64)  # (F,)
    edges_mel = torch.linspace(float(hz_to_mel(torch.tensor(f_min), mel_scale)),
                               float(hz_to_mel(torch.tensor(f_max), mel_scale)), n_mels + 2, dtype=torch.float64)
    edges_hz = mel_to_hz(edges_mel, mel_scale)  # (M + 2,)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]  # (M, 1) each
    rising = (bin_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bin_hz[None, :]) / (upper - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (M, F)
    if norm == "slaney":
        weights = weights * (2.0 / (upper - lower))
    return weights.to(torch.float32)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: Optional[float] = None,
                   mel_scale: str = "htk", norm: Optional[str] = "slaney") -> Tensor:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1), float32 on the CPU.

    Filter m rises linearly from mel edge m to m + 1 and falls to m + 2 (edges evenly spaced on the mel scale
    between ``f_min`` and ``f_max``, default ``sample_rate / 2``), evaluated at the FFT bin frequencies
    ``k * sample_rate / n_fft``. ``norm="slaney"`` divides each filter by half its bandwidth in Hz (equal area);
    ``None`` keeps peak 1. Apply as ``fb @ power`` on a (..., n_fft // 2 + 1, frames) power spectrogram.
    """
    if n_fft < 2 or n_mels < 1 or sample_rate <= 0:
        raise ValueError(f"need n_fft >= 2, n_mels >= 1 and a positive sample_rate, "
                         f"got {n_fft}, {n_mels}, {sample_rate}")
    if mel_scale not in MEL_SCALES:
        raise ValueError(f"mel_scale must be one of {MEL_SCALES}, got {mel_scale!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max:
        raise ValueError(f"need 0 <= f_min < f_max, got f_min={f_min}, f_max={f_max}")
    return _filterbank_cpu(int(n_fft), int(n_mels), int(sample_rate), float(f_min), f_max, mel_scale, norm).clone()


def _as_batch(wave: Tensor) -> Tensor:
    """(T,), (B, T) or (B, 1, T) -> (B, T)."""
    wave = torch.as_tensor(wave)
    if wave.dim() == 1:
        return wave.unsqueeze(0)
    if wave.dim() == 2:
        return wave
    if wave.dim() == 3 and wave.shape[1] == 1:
        return wave[:, 0]
    raise ValueError(f"expected a waveform of shape (T,), (B, T) or (B, 1, T), got {tuple(wave.shape)}")


def power_spectrogram(wave: Tensor, n_fft: int = 1024, hop: int = 256, win_length: Optional[int] = None) -> Tensor:
    """|STFT|^2 of ``wave`` ((T,), (B, T) or (B, 1, T)) -> (B, n_fft // 2 + 1, 1 + T // hop).

    Periodic Hann window of ``win_length`` (default ``n_fft``, zero-padded to ``n_fft`` in the middle), frames
    centred on ``t * hop`` (the signal is reflect-padded by ``n_fft // 2`` on both sides; zero-padded instead
    when it is too short to reflect).
    """
    x = _as_batch(wave)
    if not torch.is_floating_point(x):
        x = x.float()
    win_length = n_fft if win_length is None else int(win_length)
    if not 1 <= win_length <= n_fft:
        raise ValueError(f"win_length must be in [1, n_fft={n_fft}], got {win_length}")
    if hop < 1:
        raise ValueError(f"hop must be >= 1, got {hop}")
    window = torch.hann_window(win_length, periodic=True, dtype=x.dtype, device=x.device)
    pad_mode = "reflect" if x.shape[-1] > n_fft // 2 else "constant"
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop, win_length=win_length, window=window, center=True,
                      pad_mode=pad_mode, return_complex=True)
    return spec.real.square() + spec.imag.square()


def log_mel(wave: Tensor, n_fft: int = 1024, hop: int = 256, n_mels: int = 80, sample_rate: int = 16000,
            f_min: float = 0.0, f_max: Optional[float] = None, win_length: Optional[int] = None,
            scale: str = "log10", floor: float = 1e-10, mel_scale: str = "htk",
            norm: Optional[str] = "slaney") -> Tensor:
    """Log-mel spectrogram: (T,), (B, T) or (B, 1, T) -> (B, n_mels, 1 + T // hop).

    Power spectrogram (:func:`power_spectrogram`) -> mel filterbank (:func:`mel_filterbank`) -> ``scale``:
    ``log10`` gives log10(max(x, floor)), ``db`` gives 10 * log10(max(x, floor)), ``power`` the mel power itself.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    power = power_spectrogram(wave, n_fft=n_fft, hop=hop, win_length=win_length)  # (B, F, frames)
    fb = mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max, mel_scale, norm).to(power.device, power.dtype)
    mel = torch.matmul(fb, power)  # (B, M, frames)
    if scale == "power":
        return mel
    logged = torch.log10(torch.clamp(mel, min=floor))
    return 10.0 * logged if scale == "db" else logged


def mel_bin_centres(n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: Optional[float] = None,
                    mel_scale: str = "htk") -> Tensor:
    """Centre frequency in Hz of every mel filter, shape (n_mels,)."""
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    edges = torch.linspace(float(hz_to_mel(torch.tensor(f_min), mel_scale)),
                           float(hz_to_mel(torch.tensor(f_max), mel_scale)),
                           n_mels + 2, dtype=torch.float64)
    return mel_to_hz(edges[1:-1], mel_scale)


__all__ = ["mel_filterbank", "power_spectrogram", "log_mel", "hz_to_mel", "mel_to_hz", "mel_bin_centres"]
