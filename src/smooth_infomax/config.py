"""Typed, validated run configuration: YAML files plus dotted ``key=value`` overrides.

A run config has five sections::

    seed: 0
    data:  {path, layout, sample_rate, crop, random_crop, split_scheme, ...}
    model: {kind, channels, modules: [{layers: [...], head_kernel, head_padding}], batch_norm, gru_hidden, ...}
    loss:  {beta, kl_reduction, prediction_steps, negatives, window, ...}
    train: {epochs, batch_size, lr, ...}

Every key is checked before any work starts; an unknown key, a wrong type or an impossible shape raises
:class:`~smooth_infomax.errors.ConfigError` naming the dotted key. ``load_config`` resolves ``base:``
includes (a path relative to the including file) so that presets can share a common file. The shipped configs are
package data (``smooth_infomax/configs/*.yaml``, read with :mod:`importlib.resources`): ``--config quick`` (with or
without ``.yaml``) names one, any other value is a path (see :mod:`smooth_infomax.config_files`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import yaml

from .checkpoint import atomic_write_text
from .config_files import (  # noqa: F401
    Traversable,
    apply_overrides,
    deep_merge,
    parse_override,
    read_config_dict,
    resolve_config,
    shipped_config,
)
from .errors import ConfigError

# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


@dataclass
class LayerSpec:
    """One layer of a conv module: ``type`` is ``conv`` (Conv1d [+BN] + ReLU) or ``maxpool``."""

    kernel: int
    stride: int = 1
    padding: int = 0
    type: str = "conv"


@dataclass
class ModuleSpec:
    """A gradient-isolated conv module: its layers, then parallel mean / log-variance heads."""

    layers: list[LayerSpec]
    head_kernel: int = 1
    head_padding: int = 0


@dataclass
class ModelConfig:
    """Encoder architecture.

    kind: ``sim`` (probabilistic modules, samples), ``gim`` (same network, passes the mean, beta 0) or
        ``cpc`` (one end-to-end module: all conv layers, a mean head, then the GRU; loss on the GRU only).
    modules: the conv modules, in order. ``gru_hidden`` adds a GRU module after them (None: no GRU).
    two_samples: SIM training draws two independent samples (predictor input and target), as the
        reference code does; False uses a single sample for both.
    input_norm: ``none`` (the reference: raw waveform) or ``rms`` (each input scaled to unit RMS inside the
        encoder, so every downstream use sees the same normalisation).
    logvar_bias_init: initial bias of the log-variance heads (None: PyTorch's default init, as the reference);
        a negative value starts SIM with small posterior noise, which lets short CPU runs learn.
    """

    kind: str = "sim"
    channels: int = 512
    modules: list[ModuleSpec] = field(default_factory=list)
    batch_norm: bool = False
    gru_hidden: Union[int, None] = 256
    two_samples: bool = True
    logvar_min: float = -15.0
    logvar_max: float = 10.0
    input_norm: str = "none"
    logvar_bias_init: Union[float, None] = None


@dataclass
class LossConfig:
    """InfoNCE + beta * KL per module.

    beta: one value for every CNN module or a list with one value per CNN module (ignored for gim / cpc).
    kl_reduction: ``reference`` (sum over time, mean over batch and channels, as the paper's code) or
        ``mean`` (mean over every element) or ``vae`` (sum over time and channels, mean over batch).
        See :func:`smooth_infomax.model.kl.kl_divergence`.
    window: InfoNCE sub-sampling window in frames (None: whole sequence).
    negative_sampling: ``reference`` (bank from all frames of the batch, as the paper's code) or ``batch``
        (a fresh uniform draw over the batch's frames for every row).
    """

    beta: Union[float, list[float]] = 0.01
    kl_reduction: str = "reference"
    prediction_steps: int = 12
    negatives: int = 10
    window: Union[int, None] = 128
    negative_sampling: str = "reference"


@dataclass
class DataConfig:
    """Where the pre-training audio comes from and how it is cut.

    layout: ``auto`` (detect), ``librispeech``, ``artificial``, ``folder`` or ``synthetic``.
    crop: samples per training item at ``sample_rate``; random_crop picks the offset at random (on a
        ``crop_grid`` sample grid), otherwise the first ``crop`` samples are used.
    split_scheme: for the artificial speech dataset, ``reference`` or ``leakage_free``.
    """

    path: Union[str, None] = None
    layout: str = "auto"
    sample_rate: int = 16000
    crop: int = 20480
    random_crop: bool = True
    crop_grid: int = 160
    split_scheme: str = "reference"
    cache_dir: Union[str, None] = None
    num_workers: int = 0


@dataclass
class TrainConfig:
    """Optimisation. ``schedule``: ``joint`` (all modules at once, one backward) or ``sequential``
    (module by module, each for ``epochs`` epochs). ``lr_gamma``: ExponentialLR factor per epoch.
    ``module_lr``: optional per-module learning rates (one per module, GRU included).
    ``device_map``: module-parallel placement, one device per trained module (e.g. [cuda:0, cuda:0, cuda:1,
    cuda:1]) or ``auto`` (spread over the visible GPUs); None keeps everything on ``device``.
    ``precision``: ``fp32`` or ``bf16`` (autocast for the training forward pass). See
    :mod:`smooth_infomax.distributed` (also for data-parallel training with torchrun)."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 2e-4
    lr_gamma: float = 1.0
    module_lr: Union[list[float], None] = None
    weight_decay: float = 0.0
    schedule: str = "joint"
    validate_every: int = 1
    checkpoint_every: int = 1
    max_steps_per_epoch: Union[int, None] = None
    grad_clip: Union[float, None] = None
    device: str = "auto"
    log_tensorboard: bool = True
    progress: bool = True
    device_map: Union[list[str], str, None] = None
    precision: str = "fp32"


@dataclass
class RunConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# Presets for the encoder architectures (also used by the shipped configs through `model.preset`)
# --------------------------------------------------------------------------------------------------


def paper_modules() -> list[dict[str, Any]]:
    """The CPC/GIM 5-layer stack split 2+2+1 (METHOD §2.1), as module dicts."""
    ks, ss, ps = [10, 8, 4, 4, 4], [5, 4, 2, 2, 2], [2, 2, 2, 2, 1]
    layers = [{"kernel": k, "stride": s, "padding": p} for k, s, p in zip(ks, ss, ps)]
    return [{"layers": layers[0:2]}, {"layers": layers[2:4]}, {"layers": layers[4:5]}]


def thesis_modules(head_padding: int = 1) -> list[dict[str, Any]]:
    """The 32-channel thesis encoder (METHOD §2.3): two modules with max-pooling and k3 heads."""
    return [
        {
            "layers": [
                {"kernel": 10, "stride": 4, "padding": 2},
                {"type": "maxpool", "kernel": 8, "stride": 4},
                {"kernel": 8, "stride": 3, "padding": 2},
                {"type": "maxpool", "kernel": 8, "stride": 4},
            ],
            "head_kernel": 3,
            "head_padding": head_padding,
        },
        {
            "layers": [{"kernel": 6, "stride": 2, "padding": 2}, {"kernel": 6, "stride": 2, "padding": 2}],
            "head_kernel": 3,
            "head_padding": 1,
        },
    ]


MODEL_PRESETS = {
    "paper": lambda: {"channels": 512, "modules": paper_modules(), "gru_hidden": 256},
    "thesis": lambda: {"channels": 32, "modules": thesis_modules(), "gru_hidden": None},
}


# --------------------------------------------------------------------------------------------------
# Building dataclasses from plain dicts, with key-naming errors
# --------------------------------------------------------------------------------------------------


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _number(value: Any) -> Any:
    """``value`` as a float when it is a string spelling a plain number (YAML 1.1 leaves "1e-3" a string)."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{key}': expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if tp is int:
        value = _number(value)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        value = _number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover


def _build(cls: type, value: Any, prefix: str) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, got {value!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key '{where}' (valid keys here: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in value:
            kwargs[f.name] = _convert(value[f.name], hints[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"config key '{key}' is required")
    return cls(**kwargs)


def _expand_model_preset(model: dict[str, Any]) -> dict[str, Any]:
    model = dict(model)
    preset = model.pop("preset", None)
    if preset is None:
        return model
    if preset not in MODEL_PRESETS:
        raise ConfigError(f"config key 'model.preset': unknown preset {preset!r} "
                          f"(choose from {', '.join(MODEL_PRESETS)})")
    merged = MODEL_PRESETS[preset]()
    merged.update(model)
    return merged


def build_config(raw: Mapping[str, Any] | None) -> RunConfig:
    """Validate a plain dict (as read from YAML) into a :class:`RunConfig`."""
    raw = copy.deepcopy(dict(raw or {}))
    if isinstance(raw.get("model"), Mapping):
        raw["model"] = _expand_model_preset(raw["model"])
    cfg = _build(RunConfig, raw, "")
    if not cfg.model.modules:
        cfg.model.modules = [_build(ModuleSpec, m, f"model.modules[{i}]") for i, m in enumerate(paper_modules())]
    validate(cfg)
    return cfg


def model_config(value: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    """A validated :class:`ModelConfig` from a dict (``preset`` allowed) or an existing instance."""
    if isinstance(value, ModelConfig):
        return value
    return build_config({"model": dict(value)}).model


# --------------------------------------------------------------------------------------------------
# Semantic validation
# --------------------------------------------------------------------------------------------------


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


def conv_out_length(length: int, kernel: int, stride: int, padding: int) -> int:
    """floor((L + 2p - k) / s) + 1, the length after a Conv1d / MaxPool1d (0 if the input is too short).

    An empty input stays empty (torch cannot run a layer on it, whatever its padding)."""
    if length < 1:
        return 0
    return max(0, (length + 2 * padding - kernel) // stride + 1)


def module_frame_counts(model: ModelConfig, n_samples: int) -> list[int]:
    """Frames output by each conv module for an input of ``n_samples`` (the GRU keeps the last count).

    CPC is one end-to-end stack with a single head after the last module, so its other modules' heads are
    skipped: the last count is the length of CPC's ``cnn`` output."""
    counts, length = [], n_samples
    for i, mod in enumerate(model.modules):
        for layer in mod.layers:
            length = conv_out_length(length, layer.kernel, layer.stride, layer.padding)
        if model.kind != "cpc" or i == len(model.modules) - 1:
            length = conv_out_length(length, mod.head_kernel, 1, mod.head_padding)
        counts.append(length)
    return counts


def validate(cfg: RunConfig) -> None:
    """Semantic checks that a schema cannot express; raises ConfigError naming the key."""
    m, lo, d, t = cfg.model, cfg.loss, cfg.data, cfg.train
    _check(m.kind in ("sim", "gim", "cpc"), "model.kind", f"must be sim, gim or cpc, got {m.kind!r}")
    _check(m.channels > 0, "model.channels", "must be positive")
    _check(len(m.modules) > 0, "model.modules", "needs at least one module")
    _check(m.gru_hidden is None or m.gru_hidden > 0, "model.gru_hidden", "must be positive or null")
    _check(math.isfinite(m.logvar_min) and math.isfinite(m.logvar_max), "model.logvar_min",
           "model.logvar_min and model.logvar_max must be finite numbers")
    _check(m.logvar_min < m.logvar_max, "model.logvar_min", "must be below model.logvar_max")
    _check(m.logvar_bias_init is None or math.isfinite(m.logvar_bias_init), "model.logvar_bias_init",
           "must be a finite number or null")
    _check(m.input_norm in ("none", "rms"), "model.input_norm", f"must be none or rms, got {m.input_norm!r}")
    if m.kind == "cpc":
        _check(m.gru_hidden is not None, "model.gru_hidden", "CPC needs a GRU (set gru_hidden, e.g. 256)")
    for i, mod in enumerate(m.modules):
        _check(len(mod.layers) > 0, f"model.modules[{i}].layers", "needs at least one layer")
        _check(mod.head_kernel >= 1, f"model.modules[{i}].head_kernel", "must be >= 1")
        _check(mod.head_padding >= 0, f"model.modules[{i}].head_padding", "must be >= 0")
        for j, layer in enumerate(mod.layers):
            key = f"model.modules[{i}].layers[{j}]"
            _check(layer.type in ("conv", "maxpool"), f"{key}.type", f"must be conv or maxpool, got {layer.type!r}")
            _check(layer.kernel >= 1, f"{key}.kernel", "must be >= 1")
            _check(layer.stride >= 1, f"{key}.stride", "must be >= 1")
            _check(layer.padding >= 0, f"{key}.padding", "must be >= 0")
            _check(layer.type != "maxpool" or layer.padding <= layer.kernel // 2, f"{key}.padding",
                   f"a maxpool layer's padding must be at most half its kernel ({layer.kernel // 2})")
        _check(any(layer.type == "conv" for layer in mod.layers) or i > 0, f"model.modules[{i}].layers",
               "the first module needs a conv layer")
    n_cnn = len(m.modules)
    betas = lo.beta if isinstance(lo.beta, list) else [lo.beta]
    _check(len(betas) in (1, n_cnn), "loss.beta", f"give one value or one per CNN module ({n_cnn})")
    for b in betas:
        _check(math.isfinite(b) and b >= 0, "loss.beta", f"must be a finite number >= 0, got {b}")
    _check(lo.kl_reduction in ("reference", "mean", "vae"), "loss.kl_reduction", "must be reference, mean or vae")
    _check(lo.prediction_steps >= 1, "loss.prediction_steps", "must be >= 1")
    _check(lo.negatives >= 1, "loss.negatives", "must be >= 1")
    _check(lo.window is None or lo.window > lo.prediction_steps, "loss.window",
           "must exceed loss.prediction_steps (or be null)")
    _check(lo.negative_sampling in ("reference", "batch"), "loss.negative_sampling", "must be reference or batch")
    _check(d.layout in ("auto", "librispeech", "artificial", "folder", "synthetic"), "data.layout",
           "must be auto, librispeech, artificial, folder or synthetic")
    _check(d.sample_rate > 0, "data.sample_rate", "must be positive")
    _check(d.crop > 0, "data.crop", "must be positive")
    _check(d.crop_grid >= 1, "data.crop_grid", "must be >= 1")
    _check(d.split_scheme in ("reference", "leakage_free"), "data.split_scheme", "must be reference or leakage_free")
    _check(d.num_workers >= 0, "data.num_workers", "must be >= 0")
    frames = module_frame_counts(m, d.crop)
    for i, n in enumerate(frames):
        _check(n >= lo.prediction_steps + 1, f"model.modules[{i}]",
               f"outputs {n} frames for a data.crop of {d.crop} samples, fewer than loss.prediction_steps + 1 = "
               f"{lo.prediction_steps + 1}; use a longer crop or fewer prediction steps")
    _check(t.epochs >= 0, "train.epochs", "must be >= 0")
    _check(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    _check(0 <= cfg.seed < 2**32, "seed", f"must be an integer from 0 to 2**32 - 1, got {cfg.seed}")
    _check(math.isfinite(t.lr) and t.lr > 0, "train.lr", "must be a finite positive number")
    _check(math.isfinite(t.weight_decay) and t.weight_decay >= 0, "train.weight_decay", "must be a finite number >= 0")
    _check(t.max_steps_per_epoch is None or t.max_steps_per_epoch >= 1, "train.max_steps_per_epoch",
           "must be >= 1 or null")
    _check(0 < t.lr_gamma <= 1, "train.lr_gamma", "must be in (0, 1]")
    n_mod = n_cnn + (1 if m.gru_hidden is not None and m.kind != "cpc" else 0)
    if m.kind == "cpc":
        n_mod = 1
    if t.module_lr is not None:
        _check(len(t.module_lr) == n_mod, "train.module_lr", f"needs one value per trained module ({n_mod})")
        for v in t.module_lr:
            _check(math.isfinite(v) and v > 0, "train.module_lr",
                   f"learning rates must be finite and positive, got {v}")
    _check(t.schedule in ("joint", "sequential"), "train.schedule", "must be joint or sequential")
    _check(t.validate_every >= 1, "train.validate_every", "must be >= 1")
    _check(t.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    _check(t.grad_clip is None or (math.isfinite(t.grad_clip) and t.grad_clip > 0), "train.grad_clip",
           "must be a finite positive number or null")
    _check(t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"), "train.device",
           "must be auto, cpu, cuda or cuda:N")
    _check(t.precision in ("fp32", "bf16"), "train.precision", f"must be fp32 or bf16, got {t.precision!r}")
    if isinstance(t.device_map, str):
        _check(t.device_map == "auto", "train.device_map", f"must be auto or a list of devices, got {t.device_map!r}")
    elif t.device_map is not None:
        _check(len(t.device_map) == n_mod, "train.device_map", f"needs one device per trained module ({n_mod})")
        for d in t.device_map:
            _check(d in ("cpu", "cuda") or d.startswith("cuda:"), "train.device_map",
                   f"devices must be cpu, cuda or cuda:N, got {d!r}")


def load_config(source: str | Path | Mapping[str, Any] | RunConfig | None = None,
                overrides: Sequence[str] = ()) -> RunConfig:
    """Load and validate a run config from a YAML path, a dict or a RunConfig, then apply overrides."""
    if isinstance(source, RunConfig):
        data = source.to_dict()
    elif isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    elif source is None:
        data = {}
    else:
        data = read_config_dict(source)
    if overrides:
        # a preset must expand before overrides of its pieces (e.g. model.channels) apply; an override of the
        # preset itself replaces the file's preset first, as if the file had said it
        presets = [o for o in overrides if parse_override(o)[0] == ["model", "preset"]]
        if isinstance(data.get("model"), Mapping):
            model = dict(data["model"])
            for o in presets:
                model["preset"] = parse_override(o)[1]
            data["model"] = _expand_model_preset(model)
            overrides = [o for o in overrides if o not in presets]
        data = apply_overrides(data, overrides)
    return build_config(data)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML, atomically: a kill mid-write never leaves a truncated config that would load
    with defaults in place of the lost keys."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def n_trained_modules(model: ModelConfig) -> int:
    """Modules with their own loss: the CNN modules plus the GRU for sim/gim; 1 for cpc."""
    if model.kind == "cpc":
        return 1
    return len(model.modules) + (1 if model.gru_hidden is not None else 0)


def betas(cfg: RunConfig) -> list[float]:
    """Per-CNN-module KL weights: ``loss.beta`` as one value for every CNN module (a number or a one-element
    list) or one value per CNN module; all 0 for gim and cpc. The one definition (the training wrapper,
    :class:`~smooth_infomax.model.SmoothInfoMax`, uses it)."""
    n = len(cfg.model.modules)
    if cfg.model.kind != "sim":
        return [0.0] * n
    b = cfg.loss.beta
    values = [float(v) for v in b] if isinstance(b, (list, tuple)) else [float(b)]
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise ConfigError(f"config key 'loss.beta' has {len(values)} values for {n} CNN modules; "
                          f"give one value or one per CNN module")
    return values

