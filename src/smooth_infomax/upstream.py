"""An s3prl-style upstream (the interface SUPERB evaluates): ``UpstreamExpert(path)``.

``path`` is an exported model folder (``smooth-infomax export``), a HuggingFace hub repo id of one, or a run
directory. ``forward(wavs)`` takes a list of 1-D waveforms (T_i,) at the model's sample rate (16 kHz for the
shipped configs), pads them into one batch and returns::

    {"hidden_states": [(B, T_m, C_m) per output],   # module0 .. module{M-1}, then gru (CPC: cnn, gru)
     "last_hidden_state": (B, T_last, C_last),
     "module0": ..., "gru": ...}                     # every output under its own name too

Every item's features equal encoding it alone: item i has ``frame_counts(T_i)`` valid frames per output and
zeros after them (the padding never leaks into an item's frames; see
:meth:`smooth_infomax.features.sources.EncoderSource.encode`). The outputs run at different frame rates
(``get_downsample_rates(key)``: samples per frame), so s3prl's weighted sum over ``hidden_states`` does not apply
when they differ: select one output (``-s module2``, ``-s last_hidden_state``). Features are posterior means
(``mode="mean"``), computed without gradients: a frozen upstream, as in SUPERB's constrained track.
See ``docs/interop.md``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .errors import UserError
from .features.sources import EncoderSource
from .hub import from_pretrained
from .runs import is_run_dir

SHARED_KEYS = ("hidden_states", "last_hidden_state")


def load_source(path: Union[str, os.PathLike[str]], device: str = "cpu") -> EncoderSource:
    """A run directory, an exported model folder or a hub repo id -> an :class:`EncoderSource`."""
    if is_run_dir(path):
        return EncoderSource.from_run(path, device=device)
    model = from_pretrained(path, device=device)
    return model.source()


class UpstreamExpert(nn.Module):
    """s3prl upstream over a smooth-infomax encoder.

    ckpt: exported model folder, hub repo id or run directory (s3prl passes ``-k`` here, as ``ckpt=``).
    model_config: s3prl's ``-g`` (unused: everything is in the model folder). mode: ``mean`` (default) or
    ``sample`` (SIM only). Other s3prl keywords (``refresh``, ...) are accepted and ignored.
    """

    def __init__(self, ckpt: Union[str, os.PathLike[str]], model_config: Optional[str] = None,
                 mode: str = "mean", **kwargs: Any):
        super().__init__()
        if mode not in ("mean", "sample"):
            raise UserError(f"UpstreamExpert mode must be 'mean' or 'sample', got {mode!r}")
        self.source = load_source(ckpt)
        self.model = self.source.encoder  # a submodule: .to(device) / state_dict reach the weights
        self.mode = mode
        self.name = f"[smooth-infomax {self.source.name}]"
        self.sample_rate = self.source.sample_rate
        self.output_names = list(self.source.output_names)

    def get_downsample_rates(self, key: str) -> int:
        """Input samples per output frame for the features under ``key`` (s3prl calls this once per key)."""
        hops = dict(zip(self.output_names, self.source.hops))
        if key in hops:
            return int(hops[key])
        if key == "last_hidden_state":
            return int(self.source.hops[-1])
        if key == "hidden_states":
            if len(set(self.source.hops)) == 1:
                return int(self.source.hops[0])
            rates = ", ".join(f"{n}={h}" for n, h in hops.items())
            raise ValueError(f"the outputs of this encoder run at different rates ({rates} samples per frame), so "
                             f"'hidden_states' has no single downsample rate; select one output, e.g. "
                             f"-s {self.output_names[-1]} or -s last_hidden_state")
        raise ValueError(f"unknown feature key {key!r}; choose from {', '.join([*SHARED_KEYS, *self.output_names])}")

    def frame_counts(self, n_samples: int) -> list[int]:
        """Valid frames of every output for an input of ``n_samples`` samples."""
        return self.source.frame_counts(n_samples)

    def forward(self, wavs: Sequence[Tensor]) -> dict[str, Any]:
        """wavs: list of (T_i,) waveforms -> ``{"hidden_states": [(B, T_m, C_m) ...], "last_hidden_state",
        one key per output}``; frames past an item's own count are zeros."""
        if len(wavs) == 0:
            raise ValueError("UpstreamExpert.forward needs at least one waveform")
        for i, w in enumerate(wavs):
            if w.dim() != 1:
                raise ValueError(f"waveform {i} has shape {tuple(w.shape)}; pass 1-D waveforms (T,)")
        device = next(self.model.parameters()).device
        lengths = [int(w.shape[0]) for w in wavs]
        batch = torch.zeros(len(wavs), 1, max(lengths), device=device)
        for i, w in enumerate(wavs):
            batch[i, 0, :lengths[i]] = w.to(device=device, dtype=batch.dtype)
        hidden = self.source.encode(batch, self.mode, lengths=lengths)
        out: dict[str, Any] = {"hidden_states": hidden, "last_hidden_state": hidden[-1]}
        out.update(zip(self.output_names, hidden))
        return out


def customized_upstream(ckpt: Union[str, os.PathLike[str]], model_config: Optional[str] = None,
                        **kwargs: Any) -> UpstreamExpert:
    """The factory s3prl's ``hubconf.py`` entries return (``run_downstream.py -u customized_upstream -k PATH``)."""
    return UpstreamExpert(ckpt, model_config, **kwargs)


__all__ = ["UpstreamExpert", "customized_upstream", "load_source"]
