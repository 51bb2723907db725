"""Building blocks of the encoders: a probabilistic conv module and the autoregressive GRU module.

Shapes: convolutions take and return (B, C, T); the GRU takes and returns (B, T, C) (batch-first).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..config import LayerSpec, ModuleSpec, conv_out_length


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
            layers.append(nn.Conv1d(ch, channels, layer.kernel, stride=layer.stride, padding=layer.padding))
            if batch_norm:
                layers.append(nn.BatchNorm1d(channels))
            layers.append(nn.ReLU())
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


__all__ = ["ConvModule", "GRUModule", "reparameterize"]
