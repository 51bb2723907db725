"""Files a person listens to or looks at: 16-bit WAVs, waveform + spectrogram PNGs, the ICS curve.

WAVs are written with the standard library (no audio library needed), clipped to [-1, 1]. Every figure is
written atomically as PNG through matplotlib's Agg canvas (no display, no global pyplot state).
"""

from __future__ import annotations

import io
import math
import wave as wavefile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from ..checkpoint import atomic_write_bytes
from ..mel import log_mel, power_spectrogram


def _mono(wave: Any) -> Tensor:
    """Any array / tensor with one non-singleton axis -> a float32 (T,) CPU tensor."""
    return torch.as_tensor(wave).detach().cpu().reshape(-1).float()


def wav_bytes(wave: Any, sample_rate: int = 16000) -> bytes:
    """A mono wave as the bytes of a 16-bit PCM WAV file (NaN -> 0, clipped to [-1, 1], scaled by 32767)."""
    x = np.clip(np.nan_to_num(_mono(wave).double().numpy(), nan=0.0), -1.0, 1.0)
    pcm = np.round(x * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wavefile.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(path: Union[str, Path], wave: Any, sample_rate: int = 16000) -> None:
    """Write a mono wave (any shape with one non-singleton axis) as 16-bit PCM, clipped to [-1, 1], atomically."""
    atomic_write_bytes(path, wav_bytes(wave, sample_rate))


def write_wavs(out: Union[str, Path], stem: str, waves: Any, sample_rate: int = 16000) -> list[str]:
    """Write the rows of ``waves`` (N, L) as ``out/<stem>_<k>.wav``; returns the paths."""
    files = []
    for k, w in enumerate(waves):
        path = Path(out) / f"{stem}_{k}.wav"
        write_wav(path, w, sample_rate)
        files.append(str(path))
    return files


def save_figure(fig: Figure, path: Union[str, Path]) -> None:
    """Render ``fig`` to PNG (100 dpi) and write it atomically."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def _spectrogram_db(w: Tensor) -> np.ndarray:
    """(F, frames) log-power spectrogram in dB; n_fft 512 (smaller for short waves), hop n_fft / 4."""
    n_fft = 512 if w.numel() >= 512 else max(16, 2 ** int(math.log2(max(w.numel(), 16))))
    spec = power_spectrogram(w, n_fft=n_fft, hop=max(1, n_fft // 4))[0]
    return 10 * torch.log10(spec.clamp(min=1e-10)).numpy()


def plot_waves(waves: Sequence[Any], path: Union[str, Path], sample_rate: int = 16000,
               titles: Optional[Sequence[str]] = None, suptitle: Optional[str] = None) -> None:
    """One row per wave: the waveform (left) and its log-power spectrogram in dB (right); written as PNG."""
    rows = [_mono(w) for w in waves]
    n = max(1, len(rows))
    fig = Figure(figsize=(11, 1.9 * n + (0.5 if suptitle else 0)))
    axes = fig.subplots(n, 2, squeeze=False)
    for r, w in enumerate(rows):
        t = np.arange(w.numel()) / sample_rate
        ax = axes[r][0]
        ax.plot(t, w.numpy(), linewidth=0.6)
        ax.set_xlim(0, max(t[-1] if len(t) else 0, 1e-9))
        ax.set_ylabel("amplitude")
        label = titles[r] if titles is not None and r < len(titles) else f"wave {r}"
        ax.set_title(label, fontsize=9)
        db = _spectrogram_db(w)
        ax = axes[r][1]
        ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                  extent=(0, w.numel() / sample_rate, 0, sample_rate / 2000))
        ax.set_ylabel("kHz")
        ax.set_title(f"{label}: spectrogram (dB)", fontsize=9)
        if r == n - 1:
            axes[r][0].set_xlabel("seconds")
            axes[r][1].set_xlabel("seconds")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    save_figure(fig, path)


def plot_mel_strip(waves: Sequence[Any], path: Union[str, Path], sample_rate: int = 16000,
                   labels: Optional[Sequence[str]] = None, title: Optional[str] = None) -> None:
    """Log-mel spectrograms of ``waves`` side by side on one colour scale (e.g. along a traversal); PNG.

    n_fft 512 / hop 128 / 64 mels (smaller windows for short waves); ``labels`` go under each panel.
    """
    rows = [_mono(w) for w in waves]
    n = max(1, len(rows))
    fig = Figure(figsize=(max(4.0, 1.6 * n), 2.6))
    axes = fig.subplots(1, n, squeeze=False)[0]
    mels = []
    for w in rows:
        n_fft = 512 if w.numel() >= 512 else max(16, 2 ** int(math.log2(max(w.numel(), 16))))
        mels.append(log_mel(w.reshape(1, -1), n_fft=n_fft, hop=max(1, n_fft // 4), n_mels=min(64, n_fft // 4),
                            sample_rate=sample_rate)[0].numpy())
    top = max((float(m.max()) for m in mels), default=0.0)
    for k, ax in enumerate(axes):
        if k < len(mels):
            ax.imshow(mels[k], origin="lower", aspect="auto", cmap="magma", vmin=top - 8, vmax=top)
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None and k < len(labels):
            ax.set_xlabel(labels[k], fontsize=8)
    axes[0].set_ylabel("mel bin")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_ics(results: Union[Mapping[str, Any], Mapping[str, Mapping[str, Any]]], path: Union[str, Path],
             title: str = "Interpolation contribution score") -> None:
    """relative_d against d (log2 axis) for one ICS result or a {name: result} mapping; written as PNG."""
    curves = {"ICS": results} if "relative" in results else dict(results)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, res in curves.items():
        ds = [max(d, 0.5) for d in res["ds"]]
        ax.plot(ds, res["relative"], marker="o", label=f"{name} (AUC {res.get('auc', float('nan')):.3f})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("d (dimensions replaced)")
    ax.set_ylabel("relative error E_d / E_max")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["write_wav", "write_wavs", "wav_bytes", "save_figure", "plot_waves", "plot_mel_strip", "plot_ics"]
