"""Building blocks of the encoders: a probabilistic conv module and the autoregressive GRU module.

Shapes: convolutions take and return (B, C, T); the GRU takes and returns (B, T, C) (batch-first).

Speed: the waveform layer (one input channel) is a :class:`WaveConv1d`, computed on the CPU as one batched
matmul of its frames, about 2x faster than oneDNN's convolution for that shape (forward + backward, batch >= 2,
64 and 512 channels; ``benchmarks/run.py --sections conv`` measures every layer). The ReLUs run in place (no
layer before them needs its own output for the backward pass). Both give the same results to float rounding.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LayerSpec, ModuleSpec, conv_out_length


def frame_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, padding: int) -> Tensor:
    """``F.conv1d`` for one input channel as a batched matmul of the input's frames (same result to rounding).

    x (B, 1, T), weight (C, 1, k), bias (C,) or None -> (B, C, T') with T' = (T + 2 padding - k) // stride + 1.
    The frames are a strided view of the padded input, copied once into (B, k, T') (k / stride times the
    input's size), so the matmul writes the output straight in the conv layout.
    """
    C, _, k = weight.shape
    xp = F.pad(x, (padding, padding)) if padding else x
    frames = xp.unfold(2, k, stride)[:, 0].transpose(1, 2).contiguous()  # (B, k, T')
    w = weight.reshape(1, C, k).expand(x.shape[0], C, k)
    if bias is None:
        return torch.bmm(w, frames)
    return torch.baddbmm(bias.reshape(1, C, 1), w, frames)


class WaveConv1d(nn.Conv1d):
    """An ``nn.Conv1d`` with one input channel (same parameters and state dict) that runs as
    :func:`frame_conv1d` on the CPU for batches of 2 or more; elsewhere (GPU, batch 1, groups, dilation,
    non-zero padding modes) it is the plain convolution. (B, 1, T) -> (B, C, T')."""

    def forward(self, x: Tensor) -> Tensor:
        if (x.dim() == 3 and x.shape[0] >= 2 and x.device.type == "cpu" and self.in_channels == 1
                and self.groups == 1 and self.dilation == (1,) and self.padding_mode == "zeros"
                and isinstance(self.padding, tuple)):
            return frame_conv1d(x, self.weight, self.bias, self.stride[0], self.padding[0])
        return super().forward(x)


class ConvModule(nn.Module):
    """One gradient-isolated conv module (METHOD §2.1, §2.3).

    Body: for every ``conv`` layer of ``spec`` a block Conv1d -> [BatchNorm1d] -> ReLU, for every ``maxpool``
    layer a MaxPool1d. Heads (parallel, on the body's output, no activation): a mean head and, unless
    ``logvar_head`` is False (CPC), a log-variance head, both ``Conv1d(channels, channels, head_kernel,
    padding=head_padding)``. The log-variance is clamped to ``[logvar_min, logvar_max]`` so that
    ``exp(logvar)`` can never overflow.

    Input (B, C_in, T) -> ``(mu, logvar)``, each (B, channels, T'); ``logvar`` is None without its head (or
    when ``forward(x, need_logvar=False)``).
    """

    def __init__(self, spec: ModuleSpec, in_channels: int, channels: int, batch_norm: bool, *,
                 logvar_head: bool = True, logvar_min: float = -15.0, logvar_max: float = 10.0,
                 logvar_bias_init: Optional[float] = None):
        super().__init__()
        self.spec = spec
        self.in_channels = in_channels
        self.channels = channels
        self.logvar_min = float(logvar_min)
        self.logvar_max = float(logvar_max)
        layers: list[nn.Module] = []
        ch = in_channels
        for layer in spec.layers:
            if layer.type == "maxpool":
                layers.append(nn.MaxPool1d(layer.kernel, stride=layer.stride, padding=layer.padding))
                continue
            conv = WaveConv1d if ch == 1 else nn.Conv1d
            layers.append(conv(ch, channels, layer.kernel, stride=layer.stride, padding=layer.padding))
            if batch_norm:
                layers.append(nn.BatchNorm1d(channels))
            layers.append(nn.ReLU(inplace=True))  # after Conv1d / BatchNorm1d, whose backward needs only inputs
            ch = channels
        if ch != channels:
            raise ValueError(f"module has no conv layer to map {ch} input channels to {channels}")
        self.body = nn.Sequential(*layers)
        self.mu_head = nn.Conv1d(channels, channels, spec.head_kernel, padding=spec.head_padding)
        self.logvar_head: Optional[nn.Conv1d] = (
            nn.Conv1d(channels, channels, spec.head_kernel, padding=spec.head_padding) if logvar_head else None)
        if self.logvar_head is not None and logvar_bias_init is not None:
            nn.init.constant_(self.logvar_head.bias, float(logvar_bias_init))

    def forward(self, x: Tensor, need_logvar: bool = True) -> tuple[Tensor, Optional[Tensor]]:
        """(B, C_in, T) -> mu (B, C, T'), logvar (B, C, T') or None."""
        h = self.body(x)
        mu = self.mu_head(h)
        if self.logvar_head is None or not need_logvar:
            return mu, None
        logvar = self.logvar_head(h).clamp(self.logvar_min, self.logvar_max)
        return mu, logvar

    def out_length(self, length: int) -> int:
        """Frames output for an input of ``length`` frames (0 when the input is too short)."""
        for layer in self.spec.layers:
            length = conv_out_length(length, layer.kernel, layer.stride, layer.padding)
        return conv_out_length(length, self.spec.head_kernel, 1, self.spec.head_padding)

    def hop_and_field(self, hop: int, field: int) -> tuple[int, int]:
        """(hop, receptive field) in input samples after this module, given those of its input frames."""
        layers = list(self.spec.layers) + [LayerSpec(kernel=self.spec.head_kernel, stride=1)]
        for layer in layers:
            field += (layer.kernel - 1) * hop
            hop *= layer.stride
        return hop, field


class GRUModule(nn.Module):
    """The autoregressive module: a 1-layer, unidirectional, batch-first GRU with a zero initial state.

    Input (B, T, in_dim) -> output (B, T, hidden) (the hidden state at every frame; deterministic).
    """

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.in_dim = in_dim
        self.hidden = hidden
        self.gru = nn.GRU(in_dim, hidden, num_layers=1, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, in_dim) -> (B, T, hidden)."""
        out, _ = self.gru(x)
        return out


def reparameterize(mu: Tensor, logvar: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """A sample ``mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` elementwise (any shape; differentiable)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


__all__ = ["ConvModule", "GRUModule", "WaveConv1d", "frame_conv1d", "reparameterize"]
