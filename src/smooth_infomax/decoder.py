"""Decoders: latents of one encoder output back to the waveform, trained on a frozen encoder.

Architecture (METHOD §9, with its recommendation): :func:`build_decoder` mirrors the encoder from the chosen
output back to the raw audio. Every encoder step (conv layer, max-pool, and the mean head) becomes one
``ConvTranspose1d`` with the same kernel, stride and padding, walked in reverse; a max-pool becomes a strided
transposed conv with the pool's kernel, stride and padding. ``output_padding`` is derived from the encoder's
forward lengths for the decoder's ``n_samples``, so every intermediate length equals the encoder's length at
that depth and the output has exactly ``n_samples`` samples (a final crop / zero-pad covers anything the
arithmetic cannot). Hidden layers have ``model.channels`` channels and ReLU between layers, the last layer has
one output channel and no activation; there is no batch norm. The GRU output (and CPC's ``gru``) uses the mirror
of the whole conv stack with ``gru_hidden`` input channels. Nothing is hard-coded: the same code gives the
paper's 64 -> 129 -> 256 -> 511 -> 2047 -> 10240 chain and the thesis encoder's max-pool mirror.

Training (:func:`train_decoder`, METHOD §9.1 with §16 item 4 fixed): the encoder is loaded in eval mode, its
parameters frozen, and it stays outside the trainable module: it is run under ``no_grad`` to produce the
features and is never part of the optimiser or the decoder checkpoint. With ``mode="mean"`` (or any
deterministic encoder output) the features are computed once and kept in memory. Validation uses the test
split under ``no_grad``. Outputs in ``out_dir``::

    decoder.pt        {"model_config", "module", "n_samples", "loss", "mode", "state_dict", "history", ...}
    history.csv       epoch, train_loss, val_loss, val_mse, seconds
    checkpoint.pt     decoder + optimiser after the last finished epoch (a re-run with the same out resumes)
    recon_<i>.wav     reconstructions of test items, with orig_<i>.wav and recon.png beside them

Losses (:func:`decoder_loss`): ``mse`` (waveform), ``mel`` (MSE between log10 mel spectrograms, n_fft 1024,
hop 256, 80 mels; smaller windows for clips under 1024 samples) and ``mse+mel`` (their sum).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import atomic_torch_save, atomic_write_text, torch_load
from .config import LayerSpec, ModelConfig, ModuleSpec, conv_out_length
from .errors import ConfigError, TrainingDiverged, UserError

LOSSES = ("mse", "mel", "mse+mel")
MODES = ("mean", "sample")
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_mse", "seconds")
#: features / waves larger than this are not kept in memory but recomputed / re-read per batch
CACHE_LIMIT_BYTES = 1 << 30


# --------------------------------------------------------------------------------------------------
# Architecture
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
    mirrors: str  # the encoder step it undoes, e.g. "module1.conv0"


def as_model_config(value: Union[ModelConfig, Mapping[str, Any]]) -> ModelConfig:
    """A :class:`ModelConfig` from an instance or a plain dict (as stored in checkpoints; no cross-section checks)."""
    if isinstance(value, ModelConfig):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a ModelConfig or a dict, got {type(value).__name__}")
    data = dict(value)
    if "preset" in data or not data.get("modules"):
        from .config import model_config

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


def resolve_output(model_cfg: ModelConfig, module: Union[int, str]) -> int:
    """The output index of ``module`` (an index, negative allowed, a digit string or a name); ValueError if none."""
    names = output_names(model_cfg)
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


def encoder_steps(model_cfg: ModelConfig) -> list[list[EncoderStep]]:
    """The length-changing steps of every conv output, in forward order (CPC: one output with every layer)."""
    specs: list[ModuleSpec]
    if model_cfg.kind == "cpc":
        last = model_cfg.modules[-1]
        specs = [ModuleSpec(layers=[layer for m in model_cfg.modules for layer in m.layers],
                            head_kernel=last.head_kernel, head_padding=last.head_padding)]
    else:
        specs = list(model_cfg.modules)
    out = []
    for i, spec in enumerate(specs):
        steps = [EncoderStep("maxpool" if layer.type == "maxpool" else "conv", layer.kernel, layer.stride,
                             layer.padding, i) for layer in spec.layers]
        steps.append(EncoderStep("head", spec.head_kernel, 1, spec.head_padding, i))
        out.append(steps)
    return out


def forward_lengths(steps: Sequence[EncoderStep], n_samples: int) -> list[int]:
    """Lengths before the first step and after every step (len(steps) + 1 values) for ``n_samples`` input samples."""
    lengths = [int(n_samples)]
    for step in steps:
        lengths.append(conv_out_length(lengths[-1], step.kernel, step.stride, step.padding))
    return lengths


def plan_decoder(model_cfg: Union[ModelConfig, Mapping[str, Any]], module_index: Union[int, str],
                 n_samples: int) -> list[DecoderLayer]:
    """The transposed-conv layers that mirror the encoder up to output ``module_index`` for ``n_samples`` samples."""
    cfg = as_model_config(model_cfg)
    idx = resolve_output(cfg, module_index)
    per_output = encoder_steps(cfg)
    names = output_names(cfg)
    is_gru = idx >= len(per_output)
    steps = [s for out in per_output[: len(per_output) if is_gru else idx + 1] for s in out]
    lengths = forward_lengths(steps, n_samples)
    if min(lengths) < 1:
        raise ValueError(f"an input of {n_samples} samples is too short for this encoder: output {names[idx]} "
                         f"would have {lengths[-1]} frames (lengths per layer {lengths})")
    channels = cfg.channels
    in_ch = cfg.gru_hidden if is_gru else channels
    layers = []
    counters: dict[tuple[int, str], int] = {}
    labels = []
    for s in steps:
        key = (s.output, s.kind)
        labels.append(f"{names[s.output]}.{s.kind}{counters.get(key, 0) if s.kind != 'head' else ''}")
        counters[key] = counters.get(key, 0) + 1
    for pos in range(len(steps) - 1, -1, -1):
        s = steps[pos]
        l_in, l_out = lengths[pos + 1], lengths[pos]
        natural = (l_in - 1) * s.stride - 2 * s.padding + s.kernel
        op = l_out - natural
        if not 0 <= op < max(s.stride, 1):  # cannot happen for floor-mode convs; crop / pad at the end instead
            op = 0
        out_ch = 1 if pos == 0 else channels
        layers.append(DecoderLayer(s.kernel, s.stride, s.padding, op, in_ch, out_ch, l_in, natural + op,
                                   labels[pos]))
        in_ch = out_ch
    return layers


class Decoder(nn.Module):
    """Transposed-conv mirror of an encoder up to one output (see the module docstring).

    ``Decoder(model_cfg, module_index, n_samples)``; input latents (B, T, C) (the encoder's feature layout) or a
    single (T, C) latent; output (B, 1, n_samples) when T equals ``n_frames``. Other frame counts give the
    natural length of the transposed stack (about T times the hop), or exactly ``length`` when given.

    Attributes: ``model_config``, ``module_index``, ``module_name``, ``n_samples``, ``n_frames``,
    ``in_channels``, ``layers`` (:class:`DecoderLayer` list, input side first) and ``info`` (training metadata
    filled by :func:`load_decoder`: loss, mode, sample_rate, history, ...).
    """

    def __init__(self, model_cfg: Union[ModelConfig, Mapping[str, Any]], module_index: Union[int, str], n_samples: int):
        super().__init__()
        cfg = as_model_config(model_cfg)
        self.model_config = cfg
        self.module_index = resolve_output(cfg, module_index)
        self.module_name = output_names(cfg)[self.module_index]
        self.n_samples = int(n_samples)
        self.layers = plan_decoder(cfg, self.module_index, self.n_samples)
        self.n_frames = self.layers[0].in_length
        self.in_channels = self.layers[0].in_channels
        self.info: dict[str, Any] = {}
        blocks: list[nn.Module] = []
        for i, spec in enumerate(self.layers):
            blocks.append(nn.ConvTranspose1d(spec.in_channels, spec.out_channels, spec.kernel, stride=spec.stride,
                                             padding=spec.padding, output_padding=spec.output_padding))
            if i < len(self.layers) - 1:
                blocks.append(nn.ReLU())
        self.net = nn.Sequential(*blocks)

    def output_length(self, n_frames: int) -> int:
        """Length the transposed stack produces for ``n_frames`` input frames (before any crop / pad)."""
        length = int(n_frames)
        for spec in self.layers:
            length = (length - 1) * spec.stride - 2 * spec.padding + spec.kernel + spec.output_padding
        return length

    def forward(self, z: Tensor, length: Optional[int] = None) -> Tensor:
        """(B, T, C) or (T, C) latents -> (B, 1, L) waveforms (L: see the class docstring)."""
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


def build_decoder(model_cfg: Union[ModelConfig, Mapping[str, Any]], module_index: Union[int, str],
                  n_samples: int) -> Decoder:
    """The decoder for encoder output ``module_index`` of ``model_cfg``, producing ``n_samples`` samples."""
    return Decoder(model_cfg, module_index, n_samples)


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------


def mel_settings(n_samples: int) -> dict[str, int]:
    """STFT settings of the ``mel`` loss: n_fft 1024 / hop 256 / 80 mels, halved windows for shorter clips."""
    n_fft = 1024
    while n_fft > 16 and n_fft > n_samples:
        n_fft //= 2
    return {"n_fft": n_fft, "hop": max(1, n_fft // 4), "n_mels": min(80, n_fft // 4)}


def mel_loss(pred: Tensor, target: Tensor, sample_rate: int = 16000) -> Tensor:
    """MSE between log10 mel spectrograms (:func:`smooth_infomax.mel.log_mel`) of two equal-shape waves."""
    from .mel import log_mel

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


# --------------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------------


def decoder_state(decoder: Decoder, **info: Any) -> dict[str, Any]:
    """The checkpoint dict of ``decoder`` (state on the CPU) plus ``info`` (loss, mode, history, ...)."""
    state = {
        "model_config": dataclasses.asdict(decoder.model_config),
        "module": decoder.module_index,
        "module_name": decoder.module_name,
        "n_samples": decoder.n_samples,
        "state_dict": {k: v.detach().cpu() for k, v in decoder.state_dict().items()},
    }
    state.update(info)
    return state


def save_decoder(decoder: Decoder, path: Union[str, Path], **info: Any) -> None:
    """Write ``decoder`` atomically (``loss``, ``mode``, ``history`` ... go in ``info``)."""
    atomic_torch_save(decoder_state(decoder, **info), path)


def load_decoder(path: Union[str, Path], device: str = "cpu") -> Decoder:
    """A decoder written by :func:`train_decoder` / :func:`save_decoder`, in eval mode; ``decoder.info`` holds
    the rest of the checkpoint (loss, mode, sample_rate, history, run, ...)."""
    path = Path(path)
    state = torch_load(path)
    if not isinstance(state, dict) or "state_dict" not in state or "model_config" not in state:
        raise UserError(f"{path} is not a decoder checkpoint (no model_config / state_dict); "
                        f"pass the decoder.pt written by 'smooth-infomax decoder train'")
    decoder = Decoder(state["model_config"], state["module"], state["n_samples"])
    try:
        decoder.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{path}: the weights do not fit the stored architecture ({str(exc).splitlines()[0]})") from None
    decoder.info = {k: v for k, v in state.items() if k not in ("state_dict", "model_config")}
    return decoder.to(device).eval()


# --------------------------------------------------------------------------------------------------
# Features of the frozen encoder
# --------------------------------------------------------------------------------------------------


def subset_indices(n: int, max_items: Optional[int], seed: int) -> list[int]:
    """All of range(n), or a seeded random ``max_items`` of them (sorted)."""
    if max_items is None or max_items >= n:
        return list(range(n))
    gen = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=gen)[: int(max_items)].tolist())


def _generator(device: torch.device, *parts: int) -> torch.Generator:
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2 ** 62)
    return torch.Generator(device=device).manual_seed(seed)


class FeatureSource:
    """(wave, feature) batches of a dataset for one output of a frozen encoder.

    Waves are read once and kept in memory when they fit in :data:`CACHE_LIMIT_BYTES`; features too, when the
    output is deterministic (``mode="mean"``, or a GIM / CPC encoder). Otherwise they are re-read / re-encoded
    per batch; sampled features use a generator seeded with ``(seed, epoch, batch)``, so runs and resumes repeat.
    Batches are on ``device``; the encoder runs in eval mode under ``no_grad`` and is never modified.
    """

    def __init__(self, dataset: Any, indices: Sequence[int], encoder: Any, output: int, mode: str,
                 device: torch.device, batch_size: int, seed: int, cache: Union[bool, str] = "auto"):
        self.dataset = dataset
        self.indices = list(indices)
        self.encoder = encoder
        self.output = output
        self.mode = mode
        self.device = device
        self.batch_size = batch_size
        self.seed = seed
        self.deterministic = mode == "mean" or encoder.kind != "sim"
        self._waves: Optional[Tensor] = None
        self._feats: Optional[Tensor] = None
        if not self.indices:
            return
        first = dataset[self.indices[0]].wave
        n_samples = first.shape[-1]
        frames = encoder.frame_counts(n_samples)[output]
        dims = encoder.output_dims[output]
        n = len(self.indices)
        keep_waves = cache is True or (cache == "auto" and n * n_samples * 4 <= CACHE_LIMIT_BYTES)
        keep_feats = self.deterministic and (cache is True or (cache == "auto" and n * frames * dims * 4 <= CACHE_LIMIT_BYTES))
        if keep_waves:
            self._waves = torch.stack([dataset[i].wave.reshape(1, -1) for i in self.indices]).float()
        if keep_feats:
            feats = []
            for start in range(0, n, batch_size):
                wave = self._read(range(start, min(n, start + batch_size)))
                feats.append(self._encode(wave, 0, 0).cpu())
            self._feats = torch.cat(feats)

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, positions: Sequence[int]) -> Tensor:
        if self._waves is not None:
            return self._waves[list(positions)]
        return torch.stack([self.dataset[self.indices[p]].wave.reshape(1, -1) for p in positions]).float()

    @torch.no_grad()
    def _encode(self, wave: Tensor, epoch: int, batch: int) -> Tensor:
        wave = wave.to(self.device)
        if self.deterministic:
            return self.encoder.encode(wave, mode="mean", upto=self.output)[self.output]
        gen = _generator(self.device, self.seed, epoch, batch)
        return self.encoder.encode(wave, mode="sample", upto=self.output, generator=gen)[self.output]

    def batches(self, epoch: int = 0, shuffle: bool = False, salt: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (wave (b, 1, T), feature (b, T_m, C_m)) on the device; shuffled with a seed of (seed, epoch)."""
        n = len(self.indices)
        order = (torch.randperm(n, generator=_generator(torch.device("cpu"), self.seed, epoch, 7)).tolist()
                 if shuffle else list(range(n)))
        for b, start in enumerate(range(0, n, self.batch_size)):
            pos = order[start:start + self.batch_size]
            wave = self._read(pos)
            if self._feats is not None:
                feat = self._feats[pos].to(self.device)
            else:
                feat = self._encode(wave, epoch * 1000 + salt, b)
            yield wave.to(self.device), feat


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_FIELDS})
    atomic_write_text(path, buf.getvalue())


def _evaluate(decoder: Decoder, source: FeatureSource, loss: str, sample_rate: int) -> dict[str, Optional[float]]:
    if len(source) == 0:
        return {"val_loss": None, "val_mse": None}
    was = decoder.training
    decoder.eval()
    tot_loss = tot_mse = 0.0
    count = 0
    with torch.no_grad():
        for wave, feat in source.batches(epoch=0, shuffle=False, salt=999):
            pred = decoder(feat)
            b = wave.shape[0]
            tot_loss += float(decoder_loss(pred, wave, loss, sample_rate)) * b
            tot_mse += float(F.mse_loss(pred, wave)) * b
            count += b
    decoder.train(was)
    return {"val_loss": tot_loss / count, "val_mse": tot_mse / count}


def resolve_device(name: Union[str, torch.device]) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available) as a torch.device; UserError without CUDA."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name!r}: no CUDA device is available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or auto") from None


def _check_settings(loss: str, mode: str, epochs: int, batch_size: int, lr: float) -> None:
    if loss not in LOSSES:
        raise UserError(f"--loss {loss!r} is not a decoder loss; choose {', '.join(LOSSES)}")
    if mode not in MODES:
        raise UserError(f"--mode {mode!r}: choose mean or sample")
    if epochs < 0:
        raise UserError(f"--epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if not (lr > 0 and math.isfinite(lr)):
        raise UserError(f"the decoder learning rate must be a positive number, got {lr}")


def train_decoder(run_dir: Union[str, Path], data_path: Union[str, Path], module: Union[int, str], *,
                  loss: str = "mse", mode: str = "mean", epochs: int = 10, batch_size: int = 16, lr: float = 2e-4,
                  seed: int = 0, out_dir: Union[str, Path, None] = None, device: str = "cpu",
                  view: Optional[str] = None, max_items: Optional[int] = None, n_recon: int = 4,
                  cache: Union[bool, str] = "auto", progress: bool = False) -> dict[str, Any]:
    """Train a decoder for output ``module`` of the frozen encoder in ``run_dir`` on the audio at ``data_path``.

    Items are the dataset's train split cut to the run's training crop (``data.crop`` samples, from the start);
    validation and the reconstructions use the test split. ``max_items`` caps both splits (a seeded subset).
    ``mode``: decode posterior means or samples (SIM; GIM / CPC always give the mean). A re-run with the same
    ``out_dir`` and settings resumes after the last finished epoch (and only rewrites the outputs when it is
    already complete); different settings in an existing ``out_dir`` raise UserError.
    Returns a summary (paths, sizes, final losses, history).
    """
    from .data import detect_layout, open_dataset
    from .train import data_view, load, run_config

    _check_settings(loss, mode, epochs, batch_size, lr)
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    dev = resolve_device(device)
    encoder = load(run_dir, device=str(dev))
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    try:
        idx = resolve_output(encoder.config, module)
    except ValueError as exc:
        raise UserError(f"--module: {exc}") from None
    out = Path(out_dir) if out_dir is not None else run_dir / "decoders" / f"module{idx}"
    n_samples = int(cfg.data.crop)
    sr = int(cfg.data.sample_rate)
    data_path = Path(data_path)
    layout = cfg.data.layout if cfg.data.layout != "auto" else detect_layout(data_path)
    view = view or data_view(cfg, layout)
    common = dict(layout=layout, view=view, sample_rate=sr, crop=n_samples, random_crop=False, seed=seed,
                  split_scheme=cfg.data.split_scheme)
    train_set = open_dataset(data_path, split="train", **common)
    test_set = open_dataset(data_path, split="test", **common)
    if len(train_set) == 0:
        raise UserError(f"{data_path}: the train split is empty; check it with 'smooth-infomax data info {data_path}'")

    torch.manual_seed(seed)
    decoder = build_decoder(encoder.config, idx, n_samples).to(dev)
    train_src = FeatureSource(train_set, subset_indices(len(train_set), max_items, seed), encoder, idx, mode, dev,
                              batch_size, seed, cache)
    test_src = FeatureSource(test_set, subset_indices(len(test_set), max_items, seed + 1), encoder, idx, mode, dev,
                             batch_size, seed + 1, cache)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)

    settings = {"run": str(run_dir.resolve()), "data": str(data_path.resolve()), "module": idx, "loss": loss,
                "mode": mode, "n_samples": n_samples, "batch_size": batch_size, "lr": lr, "seed": seed,
                "view": view, "max_items": max_items}
    ckpt_path = out / "checkpoint.pt"
    history: list[dict[str, Any]] = []
    start = 0
    if ckpt_path.exists():
        state = torch_load(ckpt_path)
        if state.get("settings") != settings:
            diff = sorted(k for k in settings if state.get("settings", {}).get(k) != settings[k])
            raise UserError(f"{out} holds a decoder trained with other settings ({', '.join(diff)}); "
                            f"pass a new --out or delete {ckpt_path}")
        decoder.load_state_dict(state["decoder"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        history = list(state["history"])
    out.mkdir(parents=True, exist_ok=True)

    for epoch in range(start, epochs):
        t0 = time.time()
        decoder.train()
        total, count = 0.0, 0
        for step, (wave, feat) in enumerate(train_src.batches(epoch, shuffle=True)):
            pred = decoder(feat)
            value = decoder_loss(pred, wave, loss, sr)
            if not torch.isfinite(value):
                raise TrainingDiverged(f"decoder loss became {float(value)} at epoch {epoch + 1}, step {step}; "
                                       f"lower the learning rate (--set lr=...)")
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            total += float(value.detach()) * wave.shape[0]
            count += wave.shape[0]
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(1, count)}
        row.update(_evaluate(decoder, test_src, loss, sr))
        row["seconds"] = round(time.time() - t0, 3)
        history.append(row)
        atomic_torch_save({"epoch": epoch + 1, "settings": settings,
                           "decoder": {k: v.detach().cpu() for k, v in decoder.state_dict().items()},
                           "optimizer": opt.state_dict(), "history": history}, ckpt_path)
        _write_history(out / "history.csv", history)
        if progress:
            val = "" if row["val_loss"] is None else f"  val {row['val_loss']:.6g} (mse {row['val_mse']:.6g})"
            print(f"decoder epoch {epoch + 1}/{epochs}: train {row['train_loss']:.6g}{val}  [{row['seconds']:.1f}s]",
                  file=sys.stderr, flush=True)

    decoder.eval()
    info = {"loss": loss, "mode": mode, "sample_rate": sr, "history": history, "run": str(run_dir.resolve()),
            "data": str(data_path.resolve()), "view": view, "epochs": len(history), "seed": seed}
    save_decoder(decoder, out / "decoder.pt", **info)
    _write_history(out / "history.csv", history)
    recon = _write_reconstructions(decoder, test_src, out, n_recon, sr)
    last = history[-1] if history else {}
    return {"out_dir": str(out), "decoder": str(out / "decoder.pt"), "module": idx, "module_name": decoder.module_name,
            "n_samples": n_samples, "n_frames": decoder.n_frames, "channels": decoder.in_channels, "loss": loss,
            "mode": mode, "epochs": len(history), "n_train": len(train_src), "n_test": len(test_src),
            "train_loss": last.get("train_loss"), "val_loss": last.get("val_loss"), "val_mse": last.get("val_mse"),
            "history": history, "reconstructions": recon}


def _write_reconstructions(decoder: Decoder, source: FeatureSource, out: Path, n: int, sr: int) -> list[str]:
    if n <= 0 or len(source) == 0:
        return []
    from .latent import plot_waves, write_wav

    origs, recons = [], []
    with torch.no_grad():
        for wave, feat in source.batches(epoch=0, shuffle=False, salt=555):
            origs.append(wave.cpu())
            recons.append(decoder(feat).cpu())
            if sum(len(o) for o in origs) >= n:
                break
    orig = torch.cat(origs)[:n, 0]
    recon = torch.cat(recons)[:n, 0]
    files = []
    for i in range(orig.shape[0]):
        write_wav(out / f"orig_{i}.wav", orig[i], sr)
        write_wav(out / f"recon_{i}.wav", recon[i], sr)
        files.append(str(out / f"recon_{i}.wav"))
    waves, titles = [], []
    for i in range(min(2, orig.shape[0])):
        waves += [orig[i], recon[i]]
        titles += [f"original {i}", f"reconstruction {i}"]
    plot_waves(waves, out / "recon.png", sr, titles=titles)
    return files


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

#: keys accepted by ``decoder train --set KEY=VALUE`` (with their types)
SETTING_TYPES: dict[str, Any] = {"lr": float, "seed": int, "device": str, "view": str, "max_items": int,
                                 "n_recon": int, "cache": str, "epochs": int, "batch_size": int, "loss": str,
                                 "mode": str}


def _apply_sets(settings: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    from .config import parse_override

    out = dict(settings)
    for text in overrides:
        parts, value = parse_override(text)
        key = ".".join(parts)
        if key not in SETTING_TYPES:
            raise ConfigError(f"decoder setting '{key}' is unknown (valid: {', '.join(sorted(SETTING_TYPES))})")
        tp = SETTING_TYPES[key]
        if value is None and key in ("view", "max_items"):
            out[key] = None
            continue
        try:
            if tp is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
                raise ValueError
            out[key] = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"decoder setting '{key}': expected {tp.__name__}, got {value!r}") from None
    if out.get("cache") in ("true", "True"):
        out["cache"] = True
    elif out.get("cache") in ("false", "False"):
        out["cache"] = False
    return out


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("decoder", help="train decoders from a frozen encoder's latents back to audio",
                              description="Decoders from one encoder output back to the waveform.")
    sub = p.add_subparsers(dest="decoder_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    t = sub.add_parser("train", help="train a decoder on a frozen encoder's latents",
                       description="Train a transposed-conv decoder for one encoder output. Example: smooth-infomax "
                                   "decoder train --run runs/sim --data data/synth --module 2 --epochs 20")
    t.add_argument("--run", required=True, help="run directory of a trained encoder")
    t.add_argument("--data", required=True, help="dataset (its train split trains, its test split validates)")
    t.add_argument("--module", required=True, help="encoder output: index (0-based, the GRU last) or name")
    t.add_argument("--loss", choices=LOSSES, default="mse")
    t.add_argument("--mode", choices=MODES, default="mean", help="decode posterior means or samples (SIM)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    t.add_argument("--max-items", type=int, default=None, help="use a seeded subset of at most this many items per split")
    t.add_argument("--out", default=None, help="output folder (default RUN/decoders/module<M>)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a setting ({', '.join(sorted(SETTING_TYPES))}), e.g. --set lr=1e-3")
    t.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    settings = {"loss": args.loss, "mode": args.mode, "epochs": args.epochs, "batch_size": args.batch_size,
                "lr": args.lr, "seed": args.seed, "device": args.device, "view": None, "max_items": args.max_items,
                "n_recon": 4, "cache": "auto"}
    settings = _apply_sets(settings, args.overrides)
    if settings["cache"] not in (True, False, "auto"):
        raise ConfigError("decoder setting 'cache': expected auto, true or false")
    summary = train_decoder(args.run, args.data, args.module, out_dir=args.out, progress=True, **settings)
    def fmt(x: Any) -> str:
        return "n/a" if x is None else f"{x:.6g}"

    print(f"decoder for {summary['module_name']} ({summary['n_frames']} x {summary['channels']} -> "
          f"{summary['n_samples']} samples) written to {summary['decoder']}; {summary['epochs']} epochs, "
          f"train loss {fmt(summary['train_loss'])}, val loss {fmt(summary['val_loss'])}")
    return 0


__all__ = ["Decoder", "DecoderLayer", "EncoderStep", "build_decoder", "plan_decoder", "encoder_steps",
           "forward_lengths", "output_names", "resolve_output", "decoder_loss", "mel_loss", "mel_settings",
           "train_decoder", "save_decoder", "load_decoder", "decoder_state", "FeatureSource", "subset_indices",
           "LOSSES", "MODES"]
