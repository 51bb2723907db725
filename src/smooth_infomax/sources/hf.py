"""HuggingFace transformers audio encoders as feature sources: ``hf:<local folder or repo id>[#options]``.

Works for the models with a convolutional waveform encoder followed by a transformer - wav2vec 2.0, HuBERT,
WavLM and data2vec-audio (tested), and the others built the same way (``conv_kernel`` / ``conv_stride`` in
their config.json). The folder is what ``save_pretrained`` writes and what a hub download holds: config.json,
model weights and, usually, preprocessor_config.json (the feature extractor). A repo id that is not a local
folder is fetched by transformers into its usual cache.

Outputs (``output_names``): ``conv`` - the convolutional encoder's raw output (before the feature
projection's norm, C = ``conv_dim[-1]``), then ``layer0`` .. ``layerN`` - every hidden state (``layer0`` is the
input to the first transformer block, ``layerN`` the last block's output). Options after ``#``:

* ``layers=0,3,6`` (or ``layers=conv,12``): the outputs to keep, in that order; default: all hidden states
  (``conv`` only when asked for).
* ``normalize=true|false``: override the feature extractor's per-utterance zero-mean unit-variance scaling
  (default: what preprocessor_config.json says; without that file, on for layer-norm models and off for
  group-norm ones, the convention of the released checkpoints).

Every output has the conv encoder's hop (the product of its strides: 320 samples at 16 kHz for the released
models). Receptive fields: the conv encoder's (400 samples for the released models); None for the transformer
layers (attention sees the whole input). The models are deterministic (``stochastic=False``).

Batches: ``encode`` normalises each row of the batch on its own. Padding a shorter item changes its
transformer features (there is no attention mask here), so feature extraction batches equal lengths only or
encodes item by item.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError
from . import as_wave_batch, check_mode, parse_value, split_options, weights_fingerprint

PREFIX = "hf:"
INSTALL_HINT = "the hf: model sources need transformers: pip install 'smooth-infomax[hf]'"
NORM_EPS = 1e-7  # the feature extractor's variance floor


def _transformers() -> Any:
    try:
        import transformers  # optional extra [hf]
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc
    return transformers


def conv_hop_and_field(kernels: Sequence[int], strides: Sequence[int]) -> tuple[int, int]:
    """(hop, receptive field) in samples of a stack of unpadded 1-D convolutions."""
    hop, field = 1, 1
    for k, s in zip(kernels, strides):
        field += (int(k) - 1) * hop
        hop *= int(s)
    return hop, field


def conv_frame_count(n_samples: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Frames out of the conv stack for ``n_samples`` input samples (0 when too short)."""
    length = int(n_samples)
    for k, s in zip(kernels, strides):
        if length < int(k):
            return 0
        length = (length - int(k)) // int(s) + 1
    return length


def normalize_rows(wave: Tensor) -> Tensor:
    """Per-row zero mean, unit variance: (x - mean) / sqrt(var + 1e-7), population variance (B, T) -> (B, T)."""
    mean = wave.mean(dim=-1, keepdim=True)
    var = wave.var(dim=-1, unbiased=False, keepdim=True)
    return (wave - mean) / torch.sqrt(var + NORM_EPS)


class HFSource:
    """A transformers audio encoder (``AutoModel``) as a feature source; see the module docstring.

    ``model``: a loaded model (eval mode is forced). ``layers``: output names to keep (``"conv"``,
    ``"layer0"`` .. or plain indices); None = every hidden state. ``normalize``: per-utterance scaling of
    the waveform before the model. ``sample_rate``: the rate the model was trained at.
    """

    stochastic = False

    def __init__(self, model: nn.Module, *, name: str, sample_rate: int = 16000, normalize: bool = False,
                 layers: Optional[Sequence[Any]] = None, origin: str = "") -> None:
        cfg = model.config
        kernels, strides = getattr(cfg, "conv_kernel", None), getattr(cfg, "conv_stride", None)
        if not kernels or not strides or not hasattr(cfg, "num_hidden_layers"):
            raise UserError(f"{PREFIX}{origin or name}: a {getattr(cfg, 'model_type', type(model).__name__)} model "
                            f"has no convolutional waveform encoder (config conv_kernel / conv_stride); supported: "
                            f"wav2vec2, hubert, wavlm, data2vec-audio")
        self.model = model.eval()
        self.name = name
        self.origin = origin or name
        self.sample_rate = int(sample_rate)
        self.normalize = bool(normalize)
        self._kernels = [int(k) for k in kernels]
        self._strides = [int(s) for s in strides]
        hop, field = conv_hop_and_field(self._kernels, self._strides)
        n_layers = int(cfg.num_hidden_layers)
        available = ["conv"] + [f"layer{i}" for i in range(n_layers + 1)]
        wanted = available[1:] if layers is None else [self._output_name(x, n_layers) for x in layers]
        if not wanted:
            raise UserError(f"{PREFIX}{self.origin}: #layers= selects no output; choose from {', '.join(available)}")
        self.output_names = list(dict.fromkeys(wanted))
        conv_dim = int(list(cfg.conv_dim)[-1])
        hidden = int(cfg.hidden_size)
        self.dims = [conv_dim if o == "conv" else hidden for o in self.output_names]
        self.hops = [hop] * len(self.output_names)
        self.receptive_fields = [field if o == "conv" else None for o in self.output_names]
        self._fingerprint: Optional[str] = None

    def _output_name(self, item: Any, n_layers: int) -> str:
        text = str(item).strip()
        if text == "conv":
            return text
        index = text[5:] if text.startswith("layer") else text
        try:
            i = int(index)
        except ValueError:
            i = -10 ** 9
        if i < 0:
            i += n_layers + 1
        if not 0 <= i <= n_layers:
            raise UserError(f"{PREFIX}{self.origin}: #layers= has {text!r}; this model has conv and hidden states "
                            f"0..{n_layers} (layer0 = input to the first transformer block)")
        return f"layer{i}"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: Any) -> HFSource:
        self.model.to(device)
        return self

    def frame_counts(self, n_samples: int) -> list[int]:
        """Frames of every output for ``n_samples`` input samples (all equal; 0 when too short)."""
        return [conv_frame_count(n_samples, self._kernels, self._strides)] * len(self.output_names)

    def encode(self, wave: Tensor, mode: str = "mean", generator: Optional[torch.Generator] = None) -> list[Tensor]:
        """Features of every selected output, each (B, T', C) on the model's device; wave (B, 1, T) or (B, T).

        ``mode``: any of mean, sample, stats - all the same for this deterministic model. ``generator`` is unused.
        No gradients (the model is frozen).
        """
        check_mode(f"{PREFIX}{self.origin}", mode)
        x = as_wave_batch(wave).to(self.device)
        if min(self.frame_counts(x.shape[-1])) < 1:
            raise ValueError(f"an input of {x.shape[-1]} samples is too short for {self.name} (needs at least "
                             f"{conv_hop_and_field(self._kernels, self._strides)[1]} samples)")
        if self.normalize:
            x = normalize_rows(x)
        captured: list[Tensor] = []
        hook = None
        if "conv" in self.output_names:  # the conv encoder's raw output (B, C, T'), before any norm / projection
            hook = self._conv_encoder().register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with torch.no_grad():
                out = self.model(input_values=x, output_hidden_states=True, return_dict=True)
        finally:
            if hook is not None:
                hook.remove()
        hidden = out.hidden_states
        feats = []
        for o in self.output_names:
            t = captured[0].transpose(1, 2) if o == "conv" else hidden[int(o[5:])]
            feats.append(t.contiguous())
        return feats

    def _conv_encoder(self) -> nn.Module:
        conv = getattr(self.model, "feature_extractor", None)
        if not isinstance(conv, nn.Module):
            raise UserError(f"{PREFIX}{self.origin}: this {self.model.config.model_type} model has no "
                            f"feature_extractor module, so the 'conv' output is not available; drop it from #layers=")
        return conv

    def fingerprint(self) -> str:
        """Hash of the weights, the model config, the outputs and the input scaling (cached)."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model, kind="hf", config=self.model.config.to_dict(),
                                                    outputs=self.output_names, normalize=self.normalize,
                                                    sample_rate=self.sample_rate)
        return self._fingerprint

    def __repr__(self) -> str:
        return (f"HFSource({self.name!r}, outputs={self.output_names}, hop={self.hops[0]}, "
                f"normalize={self.normalize})")


def _default_normalize(folder: Optional[Path], config: Any) -> bool:
    """do_normalize from preprocessor_config.json; without one, on for layer-norm conv encoders."""
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        try:
            return bool(json.loads((folder / "preprocessor_config.json").read_text()).get("do_normalize", True))
        except (OSError, ValueError) as exc:
            raise UserError(f"{folder / 'preprocessor_config.json'} is not valid JSON ({exc}); re-save it with "
                            f"the feature extractor's save_pretrained") from exc
    return getattr(config, "feat_extract_norm", "group") == "layer"


def load_hf_source(spec: str, device: Any = "cpu") -> HFSource:
    """``spec`` is what follows ``hf:`` - a local folder (save_pretrained layout) or a hub repo id, with options."""
    target, options = split_options(spec, PREFIX)
    unknown = sorted(set(options) - {"layers", "normalize"})
    if unknown:
        raise UserError(f"{PREFIX}{spec}: unknown option {unknown[0]!r}; the options are layers= and normalize=")
    tf = _transformers()
    folder = Path(target).expanduser()
    local = folder.is_dir()
    if local and not (folder / "config.json").is_file():
        raise UserError(f"{PREFIX}{target}: the folder has no config.json; point at a folder written by "
                        f"save_pretrained (config.json + model.safetensors) or at a hub repo id")
    if not local and (folder.exists() or target.startswith((".", "/", "~")) or target.count("/") > 1):
        raise UserError(f"{PREFIX}{target}: not a model folder; give a folder with config.json or a hub repo id "
                        f"such as facebook/wav2vec2-base")
    try:
        model = tf.AutoModel.from_pretrained(str(folder) if local else target)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{PREFIX}{target}: transformers cannot load this model ({first}); check the folder or "
                        f"repo id, and the network for a download") from exc
    sample_rate = 16000
    if local and (folder / "preprocessor_config.json").is_file():
        try:
            extractor = tf.AutoFeatureExtractor.from_pretrained(str(folder))
            sample_rate = int(getattr(extractor, "sampling_rate", sample_rate))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{folder / 'preprocessor_config.json'}: transformers cannot read the feature "
                            f"extractor ({exc}); re-save it with save_pretrained") from exc
        normalize = bool(getattr(extractor, "do_normalize", _default_normalize(folder, model.config)))
    elif not local:
        try:
            extractor = tf.AutoFeatureExtractor.from_pretrained(target)
            sample_rate = int(getattr(extractor, "sampling_rate", sample_rate))
            normalize = bool(getattr(extractor, "do_normalize", True))
        except (OSError, ValueError, KeyError):
            normalize = _default_normalize(None, model.config)
    else:
        normalize = _default_normalize(None, model.config)
    if "normalize" in options:
        value = parse_value(options["normalize"])
        if not isinstance(value, bool):
            raise UserError(f"{PREFIX}{spec}: normalize= must be true or false, got {options['normalize']!r}")
        normalize = value
    layers = [p for p in options["layers"].split(",") if p.strip()] if "layers" in options else None
    name = f"{model.config.model_type}:{folder.name if local else target}"
    source = HFSource(model, name=name, sample_rate=sample_rate, normalize=normalize, layers=layers, origin=target)
    return source.to(device)


TINY_KINDS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")


def save_tiny_model(folder: str | Path, kind: str = "wav2vec2", *, seed: int = 0, layers: int = 2,
                    hidden: int = 16, normalize: bool = True, sample_rate: int = 16000) -> Path:
    """A randomly initialised, tiny ``kind`` model saved as a hub download looks (tests, demos; no network).

    Conv encoder: 3 layers, kernels (10, 3, 3), strides (5, 2, 2) - hop 20 samples, receptive field 40 samples;
    ``layers`` transformer blocks of width ``hidden``. Writes config.json,
    model.safetensors and preprocessor_config.json (``do_normalize=normalize``) into ``folder``.
    """
    tf = _transformers()
    classes = {"wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"), "hubert": ("HubertConfig", "HubertModel"),
               "wavlm": ("WavLMConfig", "WavLMModel"), "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel")}
    if kind not in classes:
        raise ValueError(f"kind must be one of {TINY_KINDS}, got {kind!r}")
    config_cls, model_cls = (getattr(tf, n) for n in classes[kind])
    config = config_cls(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, conv_dim=(8, 8, 8), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
                        num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = model_cls(config).eval()
    folder = Path(folder)
    model.save_pretrained(str(folder))
    tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sample_rate, padding_value=0.0, do_normalize=normalize,
                                return_attention_mask=False).save_pretrained(str(folder))
    return folder


__all__ = ["HFSource", "load_hf_source", "save_tiny_model", "TINY_KINDS", "conv_hop_and_field", "conv_frame_count",
           "normalize_rows", "INSTALL_HINT"]
