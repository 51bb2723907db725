"""The encoder: SIM / GIM conv modules (+ GRU), or the end-to-end CPC network, built from a ModelConfig.

``Encoder`` is the inference-side object (probes, decoders, ``smooth-infomax encode``): it maps a waveform to
one (B, T_m, C_m) feature tensor per output. Training losses live in :mod:`smooth_infomax.model.sim`.

Outputs (``module_names``):

* ``sim`` / ``gim``: ``module0 .. module{M-1}`` (the conv modules, code numbering of METHOD §2.1), then ``gru``
  when ``gru_hidden`` is set.
* ``cpc``: ``cnn`` (the mean-head latent z after all conv layers) and ``gru`` (the context c).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..config import ModelConfig, ModuleSpec, RunConfig, load_config, model_config, read_config_dict
from .modules import ConvModule, GRUModule, reparameterize

MODES = ("mean", "sample")
_RUN_KEYS = {f.name for f in dataclasses.fields(RunConfig)}


def _as_model_config(cfg: Union[ModelConfig, Mapping[str, Any]]) -> ModelConfig:
    if isinstance(cfg, ModelConfig):
        return copy.deepcopy(cfg)
    if isinstance(cfg, Mapping):
        return model_config(cfg)
    raise TypeError(f"expected a ModelConfig or a dict, got {type(cfg).__name__}")


class Encoder(nn.Module):
    """SIM / GIM / CPC encoder.

    ``Encoder(cfg)`` with a :class:`~smooth_infomax.config.ModelConfig` (or a model-section dict);
    ``Encoder.from_config(path | dict | ModelConfig | RunConfig)`` also reads YAML run configs.

    Submodules: ``stages`` (nn.ModuleList), one per output: :class:`ConvModule` for every conv module (CPC:
    a single ConvModule holding every conv layer and only a mean head) and :class:`GRUModule` last.
    """

    def __init__(self, cfg: Union[ModelConfig, Mapping[str, Any]]):
        super().__init__()
        cfg = _as_model_config(cfg)
        if cfg.kind not in ("sim", "gim", "cpc"):
            raise ValueError(f"model kind must be sim, gim or cpc, got {cfg.kind!r}")
        if not cfg.modules:
            raise ValueError("the model config has no conv modules")
        self._config = cfg
        C = cfg.channels
        stages: list[nn.Module] = []
        if cfg.kind == "cpc":
            if cfg.gru_hidden is None:
                raise ValueError("a CPC encoder needs a GRU (gru_hidden)")
            last = cfg.modules[-1]
            spec = ModuleSpec(layers=[layer for mod in cfg.modules for layer in mod.layers],
                              head_kernel=last.head_kernel, head_padding=last.head_padding)
            stages.append(ConvModule(spec, 1, C, cfg.batch_norm, logvar_head=False))
            names = ["cnn"]
        else:
            for i, spec in enumerate(cfg.modules):
                stages.append(ConvModule(spec, 1 if i == 0 else C, C, cfg.batch_norm, logvar_head=True,
                                         logvar_min=cfg.logvar_min, logvar_max=cfg.logvar_max,
                                         logvar_bias_init=cfg.logvar_bias_init))
            names = [f"module{i}" for i in range(len(cfg.modules))]
        if cfg.gru_hidden is not None:
            stages.append(GRUModule(C, cfg.gru_hidden))
            names.append("gru")
        self.stages = nn.ModuleList(stages)
        self._names = names

    # ------------------------------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, source: Union[str, Path, Mapping[str, Any], ModelConfig, RunConfig]) -> Encoder:
        """A fresh (untrained) encoder from a YAML path, a dict, a ModelConfig or a RunConfig.

        A YAML file or dict may hold a full run config (with a ``model:`` section) or just the model section
        (``preset:``, ``kind:``, ``channels:`` ...).
        """
        if isinstance(source, ModelConfig):
            return cls(source)
        if isinstance(source, RunConfig):
            return cls(source.model)
        data = dict(source) if isinstance(source, Mapping) else read_config_dict(source)
        if data and set(data) <= _RUN_KEYS:
            return cls(load_config(data).model)
        return cls(model_config(data))

    # ------------------------------------------------------------------------------------------ description

    @property
    def config(self) -> ModelConfig:
        return self._config

    @property
    def kind(self) -> str:
        return self._config.kind

    @property
    def module_names(self) -> list[str]:
        return list(self._names)

    @property
    def output_dims(self) -> list[int]:
        """Channels of every output."""
        return [s.hidden if isinstance(s, GRUModule) else s.channels for s in self.stages]

    def frame_counts(self, n_samples: int) -> list[int]:
        """Frames of every output for an input of ``n_samples`` samples (0 where the input is too short)."""
        counts, length = [], int(n_samples)
        for stage in self.stages:
            if isinstance(stage, ConvModule):
                length = stage.out_length(length)
            counts.append(length)
        return counts

    @property
    def hops(self) -> list[int]:
        """Samples between consecutive frames of every output."""
        return [h for h, _ in self._hops_fields()]

    @property
    def receptive_fields(self) -> list[Optional[int]]:
        """Samples seen by one frame of every output (None for the GRU: causal, unbounded)."""
        return [f for _, f in self._hops_fields()]

    def _hops_fields(self) -> list[tuple[int, Optional[int]]]:
        out: list[tuple[int, Optional[int]]] = []
        hop, field = 1, 1
        for stage in self.stages:
            if isinstance(stage, ConvModule):
                hop, field = stage.hop_and_field(hop, field)
                out.append((hop, field))
            else:
                out.append((hop, None))
        return out

    def index_of(self, module: Union[int, str]) -> int:
        """Output index of a module given by index (negative allowed) or name."""
        n = len(self._names)
        if isinstance(module, str):
            if module not in self._names:
                raise ValueError(f"unknown module {module!r}; this encoder has {', '.join(self._names)}")
            return self._names.index(module)
        idx = int(module)
        if not -n <= idx < n:
            raise ValueError(f"module index {module} out of range for {n} outputs ({', '.join(self._names)})")
        return idx % n

    # ------------------------------------------------------------------------------------------ inference

    def _modes(self, mode: Union[str, Sequence[str]]) -> list[str]:
        modes = [mode] * len(self.stages) if isinstance(mode, str) else list(mode)
        if len(modes) != len(self.stages) or any(m not in MODES for m in modes):
            raise ValueError(f"mode must be 'mean' or 'sample' (or one of them per output, {len(self.stages)} "
                             f"values), got {mode!r}")
        return modes

    @staticmethod
    def as_batch(wave: Tensor) -> Tensor:
        """(B, T) or (B, 1, T) -> (B, 1, T)."""
        if wave.dim() == 2:
            return wave.unsqueeze(1)
        if wave.dim() == 3 and wave.shape[1] == 1:
            return wave
        raise ValueError(f"expected a waveform batch (B, T) or (B, 1, T), got shape {tuple(wave.shape)}")

    def prepare(self, wave: Tensor) -> Tensor:
        """(B, T) or (B, 1, T) -> (B, 1, T), with the configured input normalisation (``model.input_norm``)."""
        x = self.as_batch(wave)
        if getattr(self.config, "input_norm", "none") == "rms":
            x = x / x.pow(2).mean(dim=-1, keepdim=True).add(1e-10).sqrt().clamp_min(1e-4)
        return x

    def encode(self, wave: Tensor, mode: Union[str, Sequence[str]] = "mean", return_stats: bool = False,
               upto: Union[int, str, None] = None,
               generator: Optional[torch.Generator] = None) -> list[Any]:
        """Features of every output: a list of (B, T_m, C_m) tensors (``module_names`` order).

        wave: (B, 1, T) or (B, T). mode: ``mean`` passes the posterior mean mu through every module, ``sample``
        draws z = mu + sigma * eps at every module and feeds that sample on (METHOD §3.1, inference); a list
        gives the mode per output (e.g. sample at one module only). GIM and CPC ignore the mode (always mu); the
        GRU is deterministic. return_stats: return dicts ``{"z", "mu", "logvar"}`` (each (B, T_m, C_m); mu and
        logvar None for the GRU, logvar None for CPC) instead of tensors. upto: stop after this output (index or
        name). generator: the RNG for ``sample``. No gradient isolation here: gradients flow end to end.
        """
        modes = self._modes(mode)
        x = self.prepare(wave)
        last = len(self.stages) - 1 if upto is None else self.index_of(upto)
        counts = self.frame_counts(x.shape[-1])
        if min(counts[:last + 1]) < 1:
            raise ValueError(f"an input of {x.shape[-1]} samples is too short for this encoder "
                             f"(frames per output {counts})")
        outs: list[Any] = []
        for i, stage in enumerate(self.stages[:last + 1]):
            if isinstance(stage, ConvModule):
                sample = self.kind == "sim" and modes[i] == "sample"
                mu, logvar = stage(x, need_logvar=sample or return_stats)
                x = reparameterize(mu, logvar, generator) if sample else mu
                z = x.transpose(1, 2).contiguous()
                if return_stats:
                    outs.append({"z": z, "mu": mu.transpose(1, 2).contiguous(),
                                 "logvar": None if logvar is None else logvar.transpose(1, 2).contiguous()})
                else:
                    outs.append(z)
            else:
                c = stage(x.transpose(1, 2))
                x = c.transpose(1, 2)
                outs.append({"z": c, "mu": None, "logvar": None} if return_stats else c)
        return outs

    def forward(self, wave: Tensor, mode: Union[str, Sequence[str]] = "mean", return_stats: bool = False,
                upto: Union[int, str, None] = None, generator: Optional[torch.Generator] = None) -> list[Any]:
        """Same as :meth:`encode`."""
        return self.encode(wave, mode=mode, return_stats=return_stats, upto=upto, generator=generator)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, outputs={self._names}"


__all__ = ["Encoder", "MODES"]
