"""Feature sources: the protocol, our encoders and the log-mel baseline.

A **feature source** (:class:`FeatureSource`) maps a waveform batch to one (B, T_m, C_m) tensor per output:
our encoders (:class:`EncoderSource`), the log-mel baseline (:class:`LogMelSource`), exported models and
external models (``smooth_infomax.sources``). ``smooth_infomax.sources.resolve`` turns a spec (run dir, exported
folder, ``hf:...``, ``module:...``) into one and gives every verb ``--run RUN`` / ``--model SOURCE``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, Union, runtime_checkable

import torch
from torch import Tensor, nn

from ..config import RunConfig, conv_out_length
from ..errors import UserError
from ..mel import log_mel
from ..model import Encoder
from ..model.modules import ConvModule
from ..runs import data_config, load_encoder, run_config

LABEL_FRAME = 160  # 10 ms at 16 kHz
MODES = ("mean", "sample", "stats")


@runtime_checkable
class FeatureSource(Protocol):
    """What every analysis reads. ``hops``: samples per frame of each output; ``stochastic``: True only for
    Gaussian-posterior models (SIM), which accept ``mode="sample"`` and ``"stats"`` (dicts ``{"z", "mu",
    "logvar"}``); deterministic sources treat every mode as ``mean``. Optional extras: ``padding_exact`` (see the
    module docstring; then ``encode(..., lengths=, generators=)``), ``config`` (a RunConfig for opening data),
    ``to(device)``."""

    name: str
    sample_rate: int
    output_names: list[str]
    hops: list[int]
    dims: list[int]
    stochastic: bool
    receptive_fields: list[Optional[int]]

    def encode(self, wave: Tensor, mode: str = "mean") -> list[Any]:
        """(B, 1, T) float -> one (B, T_m, C_m) tensor per output."""

    def frame_counts(self, n_samples: int) -> list[int]:
        """Frames of every output for ``n_samples`` samples."""

    def fingerprint(self) -> str:
        """A stable hash of weights and config (cache key)."""


def _hash_module(module: nn.Module, *extra: Any) -> str:
    h = hashlib.sha256(json.dumps([str(e) for e in extra]).encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _mask(x: Tensor, lengths: Tensor, value: float) -> Tensor:
    """x (B, C, T) with frames t >= lengths[b] set to ``value``, in place (x is always a fresh activation here;
    only the padded tails are written)."""
    T = x.shape[-1]
    for b, n in enumerate(lengths.tolist()):
        if n < T:
            x[b, :, n:] = value
    return x


def _layer_lengths(layer: nn.Module, lengths: Tensor) -> Tensor:
    one = lambda v: int(v[0] if isinstance(v, (tuple, list)) else v)  # noqa: E731
    k, s, p = one(layer.kernel_size), one(layer.stride), one(layer.padding)
    return torch.tensor([conv_out_length(int(n), k, s, p) for n in lengths], dtype=torch.long)


_PLAIN = (nn.Conv1d, nn.MaxPool1d, nn.BatchNorm1d, nn.ReLU)


class EncoderSource:
    """Our :class:`~smooth_infomax.model.Encoder` as a feature source (``stochastic`` for SIM only).

    ``EncoderSource.from_run(run_dir)`` keeps the run's config (``config``) for :func:`runs.open_run_data`.
    """

    def __init__(self, encoder: Encoder, sample_rate: int = 16000, name: str = "encoder",
                 config: Optional[RunConfig] = None):
        self.encoder = encoder.eval()
        self.sample_rate = int(sample_rate)
        self.name = name
        self.config = config
        self.output_names = list(encoder.module_names)
        self.hops = list(encoder.hops)
        self.dims = list(encoder.output_dims)
        self.receptive_fields = list(encoder.receptive_fields)
        self.stochastic = encoder.kind == "sim"
        self.padding_exact = all(isinstance(layer, _PLAIN) for stage in encoder.stages
                                 if isinstance(stage, ConvModule) for layer in stage.body)

    @classmethod
    def from_run(cls, run_dir: Union[str, os.PathLike[str]], device: str = "cpu",
                 name: Optional[str] = None) -> EncoderSource:
        cfg = run_config(run_dir)
        return cls(load_encoder(run_dir, device=device), int(cfg.data.sample_rate),
                   name or Path(run_dir).name, config=cfg)

    def random_twin(self, seed: int = 12345) -> EncoderSource:
        """The same architecture with random weights (``torch.manual_seed(seed)`` then construction)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            twin = Encoder(self.encoder.config)
        device = next(self.encoder.parameters()).device
        return EncoderSource(twin.to(device), self.sample_rate, f"{self.name}-random-init", self.config)

    def to(self, device: Any) -> EncoderSource:
        self.encoder.to(device)
        return self

    def frame_counts(self, n_samples: int) -> list[int]:
        return self.encoder.frame_counts(n_samples)

    def fingerprint(self) -> str:
        return _hash_module(self.encoder, self.encoder.config)

    @torch.no_grad()
    def encode(self, wave: Tensor, mode: str = "mean", generator: Optional[torch.Generator] = None, *,
               lengths: Optional[Sequence[int]] = None,
               generators: Optional[Sequence[Optional[torch.Generator]]] = None) -> list[Any]:
        """wave (B, 1, T) -> one (B, T_m, C_m) tensor per output (``mode="stats"``: dicts z / mu / logvar).

        lengths: each item's own samples (zero-padded after); frames beyond an item's own count are zeros.
        generators: one per item for ``sample`` / ``stats`` (else ``generator`` for the whole batch)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        x = Encoder.as_batch(wave)
        if lengths is None and generators is None:
            if mode == "stats":
                return self.encoder.encode(x, mode="sample", return_stats=True, generator=generator)
            return self.encoder.encode(x, mode=mode, generator=generator)
        if not self.padding_exact:
            raise ValueError("this encoder's layers cannot be masked; encode equal-length items without lengths")
        return self._masked(x, lengths, mode, generator, generators)

    def _masked(self, x: Tensor, lengths: Optional[Sequence[int]], mode: str, generator: Any,
                generators: Any) -> list[Any]:
        enc = self.encoder
        B, T = x.shape[0], x.shape[-1]
        lens = torch.tensor([T] * B if lengths is None else [int(n) for n in lengths], dtype=torch.long)
        counts = enc.frame_counts(int(lens.min()))
        if min(counts) < 1:
            raise ValueError(f"an input of {int(lens.min())} samples is too short for this encoder "
                             f"(frames per output {counts})")
        x = torch.cat([_pad_to(enc.prepare(x[b:b + 1, :, :int(lens[b])]), T) for b in range(B)])
        sample = self.stochastic and mode in ("sample", "stats")
        outs: list[Any] = []
        for stage in enc.stages:
            if not isinstance(stage, ConvModule):
                x = _mask(stage(x.transpose(1, 2)).transpose(1, 2), lens, 0.0)  # the GRU runs on into the padding
                c = x.transpose(1, 2)
                outs.append({"z": c, "mu": None, "logvar": None} if mode == "stats" else c)
                continue
            h = x.clone() if isinstance(stage.body[0], nn.MaxPool1d) else x  # x may alias the output kept above
            for layer in stage.body:
                if isinstance(layer, (nn.Conv1d, nn.MaxPool1d)):
                    h = layer(_mask(h, lens, float("-inf") if isinstance(layer, nn.MaxPool1d) else 0.0))
                    lens = _layer_lengths(layer, lens)
                else:
                    h = layer(h)
            h = _mask(h, lens, 0.0)
            mu = stage.mu_head(h)
            lens = _layer_lengths(stage.mu_head, lens)
            logvar = None
            if stage.logvar_head is not None and (sample or mode == "stats"):
                logvar = stage.logvar_head(h).clamp(stage.logvar_min, stage.logvar_max)
            z = mu
            if sample:
                z = mu + torch.exp(0.5 * logvar) * _noise(mu, lens, generator, generators)
            x = _mask(z, lens, 0.0)
            zt = x.transpose(1, 2).contiguous()
            if mode == "stats":
                outs.append({"z": zt, "mu": mu.transpose(1, 2).contiguous(),
                             "logvar": None if logvar is None else logvar.transpose(1, 2).contiguous()})
            else:
                outs.append(zt)
        return outs


def _pad_to(x: Tensor, n: int) -> Tensor:
    return torch.nn.functional.pad(x, (0, n - x.shape[-1])) if x.shape[-1] < n else x


def _noise(mu: Tensor, lens: Tensor, generator: Any, generators: Any) -> Tensor:
    """eps ~ N(0, I) shaped like mu (B, C, T): item b draws (C, lens[b]) from its own generator, zeros after."""
    if generators is None:
        return torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    eps = torch.zeros_like(mu)
    for b, g in enumerate(generators):
        n = int(lens[b])
        eps[b, :, :n] = torch.randn((mu.shape[1], n), generator=g, device=mu.device, dtype=mu.dtype)
    return eps


class LogMelSource:
    """The non-learned baseline: 80 log-mel bands, 25 ms windows every 10 ms (``n // 160`` frames, at least 1)."""

    stochastic = False
    padding_exact = True
    config = None

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80):
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.name = "log-mel"
        self.output_names = ["log-mel"]
        self.hops = [LABEL_FRAME]
        self.dims = [self.n_mels]
        self.receptive_fields = [400]

    def frame_counts(self, n_samples: int) -> list[int]:
        return [max(1, int(n_samples) // LABEL_FRAME)]

    def fingerprint(self) -> str:
        return f"logmel-{self.sample_rate}-{self.n_mels}-400-{LABEL_FRAME}"

    @torch.no_grad()
    def encode(self, wave: Tensor, mode: str = "mean", generator: Any = None, *,
               lengths: Optional[Sequence[int]] = None, generators: Any = None) -> list[Tensor]:
        x = Encoder.as_batch(wave)
        B, T = x.shape[0], x.shape[-1]
        lens = [T] * B if lengths is None else [int(n) for n in lengths]
        n_out = max(self.frame_counts(n)[0] for n in lens)
        out = x.new_zeros(B, n_out, self.n_mels)
        for b in range(B):
            lm = log_mel(x[b, :, :lens[b]], n_fft=400, hop=LABEL_FRAME, n_mels=self.n_mels,
                         sample_rate=self.sample_rate)[0].T
            k = self.frame_counts(lens[b])[0]
            out[b, :k] = lm[:k]
        return [out]


def as_source(obj: Any, name: Optional[str] = None, sample_rate: int = 16000) -> FeatureSource:
    """A FeatureSource as is; an :class:`Encoder` wrapped in :class:`EncoderSource`."""
    if isinstance(obj, Encoder):
        return EncoderSource(obj, int(getattr(obj, "sample_rate", sample_rate)), name or "encoder")
    if isinstance(obj, FeatureSource):
        return obj
    raise UserError(f"{type(obj).__name__} is not a feature source (needs output_names, hops, dims and encode())")


def source_config(source: Any, data_path: Optional[Union[str, os.PathLike[str]]] = None) -> RunConfig:
    """The RunConfig to open data with for ``source``: the run's own, or data defaults at its sample rate."""
    cfg = getattr(source, "config", None)
    return cfg if isinstance(cfg, RunConfig) else data_config(int(source.sample_rate), data_path)


__all__ = ["FeatureSource", "EncoderSource", "LogMelSource", "as_source", "source_config", "LABEL_FRAME", "MODES"]
