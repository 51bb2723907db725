"""Decoder architectures: latents of one encoder output back to the waveform.

Mirror decoder (METHOD §9, with its recommendation): :class:`Decoder` mirrors our encoder from the chosen
output back to the raw audio. Every encoder step (conv layer, max-pool, and the mean head) becomes one
``ConvTranspose1d`` with the same kernel, stride and padding, walked in reverse; a max-pool becomes a strided
transposed conv with the pool's kernel, stride and padding. ``output_padding`` is derived from the encoder's
lengths at every depth for the decoder's ``n_samples`` (asked of :func:`smooth_infomax.config.module_frame_counts`,
the one frame-length walk, for the encoder cut after each step), so every intermediate length equals the
encoder's length at that depth and the output has exactly ``n_samples`` samples (a final crop / zero-pad covers
anything the arithmetic cannot). Hidden layers have ``model.channels`` channels and ReLU between layers, the
last layer has one output channel and no activation; there is no batch norm. The GRU output (and CPC's ``gru``)
uses the mirror of the whole conv stack with ``gru_hidden`` input channels. Nothing is hard-coded: the same code
gives the paper's 64 -> 129 -> 256 -> 511 -> 2047 -> 10240 chain and the thesis encoder's max-pool mirror.

Generic decoder: :class:`GenericDecoder` serves feature sources whose architecture we cannot mirror (HF models,
any ``nn.Module``): from an output's hop (samples per frame) and dimension only, a stack of strided transposed
convolutions whose strides multiply to the hop (factors of at most 5 where the hop allows), ``channels`` hidden
channels, ReLU between layers, one output channel.

Both take latents (B, T, C) (the encoders' feature layout) or one (T, C) latent and return (B, 1, L): L is
``n_samples`` when T equals ``n_frames``, ``length`` when given, else the stack's natural length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LayerSpec, ModelConfig, ModuleSpec, model_config, module_frame_counts
from ..errors import ConfigError

# --------------------------------------------------------------------------------------------------
# Encoder description
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderStep:
    """One length-changing step of the encoder: a conv layer, a max-pool or a module's (mean) head."""

    kind: str  # "conv", "maxpool" or "head"
    kernel: int
    stride: int
    padding: int
    output: int  # index of the encoder output (module) the step belongs to


@dataclass(frozen=True)
class DecoderLayer:
    """One ConvTranspose1d of a decoder, with the lengths it maps between (in frames / samples)."""

    kernel: int
    stride: int
    padding: int
    output_padding: int
    in_channels: int
    out_channels: int
    in_length: int
    out_length: int
    mirrors: str  # the encoder step it undoes, e.g. "module1.conv0" ("upsample<k>" in a generic decoder)


def as_model_config(value: Union[ModelConfig, Mapping[str, Any]]) -> ModelConfig:
    """A :class:`ModelConfig` from an instance or a plain dict (as stored in checkpoints; no cross-section checks)."""
    if isinstance(value, ModelConfig):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a ModelConfig or a dict, got {type(value).__name__}")
    data = dict(value)
    if "preset" in data or not data.get("modules"):
        return model_config(data)
    modules = []
    for mod in data["modules"]:
        mod = dict(mod)
        layers = [layer if isinstance(layer, LayerSpec) else LayerSpec(**dict(layer)) for layer in mod.pop("layers")]
        modules.append(ModuleSpec(layers=layers, **mod))
    data["modules"] = modules
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown model config key 'model.{unknown[0]}' in a saved decoder or encoder")
    return ModelConfig(**data)


def output_names(model_cfg: ModelConfig) -> list[str]:
    """Names of the encoder outputs, in the order of ``Encoder.encode`` (``module0`` .. / ``cnn``, then ``gru``)."""
    names = ["cnn"] if model_cfg.kind == "cpc" else [f"module{i}" for i in range(len(model_cfg.modules))]
    if model_cfg.gru_hidden is not None:
        names.append("gru")
    return names


def resolve_name(names: list[str], module: Union[int, str]) -> int:
    """The index of ``module`` (an index, negative allowed, a digit string or a name) in ``names``.

    ValueError naming the valid outputs when there is none."""
    if isinstance(module, str):
        text = module.strip()
        if text in names:
            return names.index(text)
        try:
            module = int(text)
        except ValueError:
            raise ValueError(f"unknown module {text!r}; this encoder has {', '.join(names)} "
                             f"(or indices 0..{len(names) - 1})") from None
    idx = int(module)
    if not -len(names) <= idx < len(names):
        raise ValueError(f"module index {idx} out of range: this encoder has {len(names)} outputs ({', '.join(names)})")
    return idx % len(names)


def resolve_output(model_cfg: ModelConfig, module: Union[int, str]) -> int:
    """The output index of ``module`` for an encoder config (see :func:`resolve_name`)."""
    return resolve_name(output_names(model_cfg), module)


def _conv_specs(model_cfg: ModelConfig) -> list[ModuleSpec]:
    """The conv stack per conv output (CPC: one output with every layer and the last module's head)."""
    if model_cfg.kind == "cpc":
        last = model_cfg.modules[-1]
        return [ModuleSpec(layers=[layer for m in model_cfg.modules for layer in m.layers],
                           head_kernel=last.head_kernel, head_padding=last.head_padding)]
    return list(model_cfg.modules)


def encoder_steps(model_cfg: ModelConfig) -> list[list[EncoderStep]]:
    """The length-changing steps of every conv output, in forward order (CPC: one output with every layer)."""
    out = []
    for i, spec in enumerate(_conv_specs(model_cfg)):
        steps = [EncoderStep("maxpool" if layer.type == "maxpool" else "conv", layer.kernel, layer.stride,
                             layer.padding, i) for layer in spec.layers]
        steps.append(EncoderStep("head", spec.head_kernel, 1, spec.head_padding, i))
        out.append(steps)
    return out


def encoder_lengths(model_cfg: ModelConfig, n_outputs: int, n_samples: int) -> list[int]:
    """Lengths before the first step and after every step of the first ``n_outputs`` conv outputs.

    Each length is :func:`~smooth_infomax.config.module_frame_counts` of the encoder cut after that step (a cut
    inside a module gets an identity head, kernel 1), so the decoder and the encoder share one length walk.
    """
    specs = _conv_specs(model_cfg)[:n_outputs]
    lengths = [int(n_samples)]
    for i, spec in enumerate(specs):
        for j in range(len(spec.layers) + 1):
            part = (spec if j == len(spec.layers) else
                    ModuleSpec(layers=list(spec.layers[:j + 1]), head_kernel=1, head_padding=0))
            cut = dataclasses.replace(model_cfg, kind="gim", modules=[*specs[:i], part])
            lengths.append(module_frame_counts(cut, n_samples)[-1])
    return lengths


# --------------------------------------------------------------------------------------------------
# Mirror decoder
# --------------------------------------------------------------------------------------------------


def plan_decoder(model_cfg: Union[ModelConfig, Mapping[str, Any]], module_index: Union[int, str],
                 n_samples: int) -> list[DecoderLayer]:
    """The transposed-conv layers that mirror the encoder up to output ``module_index`` for ``n_samples`` samples."""
    cfg = as_model_config(model_cfg)
    idx = resolve_output(cfg, module_index)
    per_output = encoder_steps(cfg)
    names = output_names(cfg)
    is_gru = idx >= len(per_output)
    n_outputs = len(per_output) if is_gru else idx + 1
    steps = [s for out in per_output[:n_outputs] for s in out]
    lengths = encoder_lengths(cfg, n_outputs, n_samples)
    if min(lengths) < 1:
        raise ValueError(f"an input of {n_samples} samples is too short for this encoder: output {names[idx]} "
                         f"would have {lengths[-1]} frames (lengths per layer {lengths})")
    channels = cfg.channels
    in_ch = cfg.gru_hidden if is_gru else channels
    counters: dict[tuple[int, str], int] = {}
    labels = []
    for s in steps:
        key = (s.output, s.kind)
        labels.append(f"{names[s.output]}.{s.kind}{counters.get(key, 0) if s.kind != 'head' else ''}")
        counters[key] = counters.get(key, 0) + 1
    layers = []
    for pos in range(len(steps) - 1, -1, -1):
        s = steps[pos]
        l_in, l_out = lengths[pos + 1], lengths[pos]
        natural = (l_in - 1) * s.stride - 2 * s.padding + s.kernel
        op = l_out - natural
        if not 0 <= op < max(s.stride, 1):  # cannot happen for floor-mode convs; crop / pad at the end instead
            op = 0
        out_ch = 1 if pos == 0 else channels
        layers.append(DecoderLayer(s.kernel, s.stride, s.padding, op, in_ch, out_ch, l_in, natural + op, labels[pos]))
        in_ch = out_ch
    return layers


class _TransposedStack(nn.Module):
    """ConvTranspose1d layers (with ReLU between them) from a :class:`DecoderLayer` plan; shared forward."""

    def __init__(self, layers: list[DecoderLayer], n_samples: int, module_name: str):
        super().__init__()
        self.layers = layers
        self.n_samples = int(n_samples)
        self.module_name = module_name
        self.n_frames = layers[0].in_length
        self.in_channels = layers[0].in_channels
        self.info: dict[str, Any] = {}
        blocks: list[nn.Module] = []
        for i, spec in enumerate(layers):
            blocks.append(nn.ConvTranspose1d(spec.in_channels, spec.out_channels, spec.kernel, stride=spec.stride,
                                             padding=spec.padding, output_padding=spec.output_padding))
            if i < len(layers) - 1:
                blocks.append(nn.ReLU())
        self.net = nn.Sequential(*blocks)

    def output_length(self, n_frames: int) -> int:
        """Length the transposed stack produces for ``n_frames`` input frames (before any crop / pad)."""
        length = int(n_frames)
        for spec in self.layers:
            length = (length - 1) * spec.stride - 2 * spec.padding + spec.kernel + spec.output_padding
        return length

    def forward(self, z: Tensor, length: Optional[int] = None) -> Tensor:
        """(B, T, C) or (T, C) latents -> (B, 1, L) waveforms (L: see the module docstring)."""
        if z.dim() == 2:
            z = z.unsqueeze(0)
        if z.dim() != 3 or z.shape[-1] != self.in_channels:
            raise ValueError(f"decoder for {self.module_name} expects latents (B, T, {self.in_channels}), "
                             f"got shape {tuple(z.shape)}")
        if self.output_length(z.shape[1]) < 1:
            raise ValueError(f"{z.shape[1]} frames are too few for this decoder (it outputs "
                             f"{self.output_length(z.shape[1])} samples)")
        y = self.net(z.transpose(1, 2))
        if length is None and z.shape[1] == self.n_frames:
            length = self.n_samples
        if length is not None and y.shape[-1] != length:
            y = y[..., :length] if y.shape[-1] > length else F.pad(y, (0, length - y.shape[-1]))
        return y

    def extra_repr(self) -> str:
        return f"output={self.module_name!r}, frames={self.n_frames}, n_samples={self.n_samples}"


class Decoder(_TransposedStack):
    """Transposed-conv mirror of our encoder up to one output (see the module docstring).

    ``Decoder(model_cfg, module_index, n_samples)``. Attributes: ``model_config``, ``module_index``,
    ``module_name``, ``n_samples``, ``n_frames``, ``in_channels``, ``layers`` (:class:`DecoderLayer` list, input
    side first) and ``info`` (training metadata filled by ``load_decoder``: loss, mode, sample_rate, history, ...).
    """

    architecture = "mirror"

    def __init__(self, model_cfg: Union[ModelConfig, Mapping[str, Any]], module_index: Union[int, str], n_samples: int):
        cfg = as_model_config(model_cfg)
        idx = resolve_output(cfg, module_index)
        super().__init__(plan_decoder(cfg, idx, n_samples), n_samples, output_names(cfg)[idx])
        self.model_config = cfg
        self.module_index = idx

    def spec(self) -> dict[str, Any]:
        """What rebuilds this architecture (JSON-able): see ``smooth_infomax.decoding.store``."""
        return {"architecture": self.architecture, "model_config": dataclasses.asdict(self.model_config),
                "module": self.module_index, "module_name": self.module_name, "n_samples": self.n_samples}


def build_decoder(model_cfg: Union[ModelConfig, Mapping[str, Any]], module_index: Union[int, str],
                  n_samples: int) -> Decoder:
    """The mirror decoder for encoder output ``module_index`` of ``model_cfg``, producing ``n_samples`` samples."""
    return Decoder(model_cfg, module_index, n_samples)


# --------------------------------------------------------------------------------------------------
# Generic decoder (external feature sources)
# --------------------------------------------------------------------------------------------------


def upsampling_factors(hop: int, largest: int = 5) -> list[int]:
    """Strides whose product is ``hop``: its prime factors, merged while the product stays <= ``largest``
    (a prime above ``largest`` stays one stride), largest first. ``hop`` 1 gives [1]."""
    if hop < 1:
        raise ValueError(f"hop must be >= 1 sample per frame, got {hop}")
    primes, rest, p = [], int(hop), 2
    while rest > 1:
        while rest % p == 0:
            primes.append(p)
            rest //= p
        p += 1
    factors: list[int] = []
    for q in sorted(primes, reverse=True):
        for k, f in enumerate(factors):
            if f * q <= largest:
                factors[k] = f * q
                break
        else:
            factors.append(q)
    return sorted(factors, reverse=True) or [1]


def plan_generic(hop: int, dim: int, n_frames: int, channels: int = 64) -> list[DecoderLayer]:
    """Layers of a :class:`GenericDecoder`: one ConvTranspose1d per upsampling factor s (kernel s + 2 (s // 2),
    padding s // 2: exactly s times the frames; a factor 1 is a kernel-3 padding-1 layer), ``dim`` ->
    ``channels`` ... -> 1 channel. The stack outputs n_frames * hop samples."""
    factors = upsampling_factors(hop)
    layers, length, in_ch = [], int(n_frames), int(dim)
    for k, s in enumerate(factors):
        kernel, padding = (3, 1) if s == 1 else (s + 2 * (s // 2), s // 2)
        out_len = (length - 1) * s - 2 * padding + kernel
        out_ch = 1 if k == len(factors) - 1 else int(channels)
        layers.append(DecoderLayer(kernel, s, padding, 0, in_ch, out_ch, length, out_len, f"upsample{k}"))
        length, in_ch = out_len, out_ch
    return layers


class GenericDecoder(_TransposedStack):
    """Transposed-conv decoder for an output given only by its hop and dimension (any feature source).

    ``GenericDecoder(hop, dim, n_samples, n_frames, channels=64, module_name="output")``: latents (B, n_frames,
    dim) -> (B, 1, n_samples). Attributes as :class:`Decoder`, with ``model_config`` None and ``hop``.
    """

    architecture = "generic"

    def __init__(self, hop: int, dim: int, n_samples: int, n_frames: int, channels: int = 64,
                 module_name: str = "output", module_index: int = 0):
        if n_frames < 1:
            raise ValueError(f"an input of {n_samples} samples gives {n_frames} frames; use longer items")
        super().__init__(plan_generic(hop, dim, n_frames, channels), n_samples, module_name)
        self.model_config = None
        self.module_index = int(module_index)
        self.hop = int(hop)
        self.channels = int(channels)

    def spec(self) -> dict[str, Any]:
        """What rebuilds this architecture (JSON-able)."""
        return {"architecture": self.architecture, "hop": self.hop, "in_channels": self.in_channels,
                "n_samples": self.n_samples, "n_frames": self.n_frames, "channels": self.channels,
                "module": self.module_index, "module_name": self.module_name, "model_config": None}


__all__ = ["Decoder", "GenericDecoder", "DecoderLayer", "EncoderStep", "build_decoder", "plan_decoder",
           "plan_generic", "upsampling_factors", "encoder_steps", "encoder_lengths", "output_names",
           "resolve_output", "resolve_name", "as_model_config"]
