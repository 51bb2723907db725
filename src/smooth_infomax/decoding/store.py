"""The decoder file format: ``decoder.pt`` holds plain data only, so it loads with ``torch.load(weights_only=True)``.

A decoder file is one dict::

    architecture  "mirror" (our encoder, mirrored) or "generic" (any feature source, from hop and dim);
                  absent in files written before the generic decoder existed (= "mirror")
    model_config  the encoder's ModelConfig as a dict (mirror) or None (generic)
    module        output index; module_name its name; n_samples the decoder's output length
    hop, in_channels, n_frames, channels   (generic only) what rebuilds the generic stack
    state_dict    the decoder's weights (CPU tensors, keys ``net.*``)
    ...           training info: loss, mode, sample_rate, history, run / source, data, view, epochs, seed

Everything but ``state_dict`` is JSON-able (tuples become lists, tensors lists): no pickled objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

from ..checkpoint import atomic_torch_save, torch_load
from ..errors import UserError
from .model import Decoder, GenericDecoder

AnyDecoder = Union[Decoder, GenericDecoder]


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON data (dicts, lists, str, numbers, None); arrays / tensors become lists."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def decoder_state(decoder: AnyDecoder, **info: Any) -> dict[str, Any]:
    """The file dict of ``decoder`` (weights on the CPU) plus ``info`` (loss, mode, history, ...), JSON-able info."""
    state = jsonable(info)
    state.update(decoder.spec())
    state["state_dict"] = {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
    return state


def save_decoder(decoder: AnyDecoder, path: Union[str, Path], **info: Any) -> None:
    """Write ``decoder`` atomically (``loss``, ``mode``, ``history`` ... go in ``info``)."""
    atomic_torch_save(decoder_state(decoder, **info), path)


def decoder_from_state(state: Any, path: Union[str, Path] = "<decoder>") -> AnyDecoder:
    """Rebuild the decoder of a file dict (see the module docstring), weights loaded, in eval mode on the CPU."""
    if not isinstance(state, dict) or "state_dict" not in state or "model_config" not in state:
        raise UserError(f"{path} is not a decoder file (no model_config / state_dict); "
                        f"pass the decoder.pt written by 'smooth-infomax decoder train'")
    kind = state.get("architecture", "mirror")
    try:
        if kind == "mirror":
            decoder: AnyDecoder = Decoder(state["model_config"], state["module"], state["n_samples"])
        elif kind == "generic":
            decoder = GenericDecoder(state["hop"], state["in_channels"], state["n_samples"], state["n_frames"],
                                     state["channels"], state.get("module_name", "output"), state.get("module", 0))
        else:
            raise UserError(f"{path}: unknown decoder architecture {kind!r} (this version reads mirror and generic)")
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: the stored decoder architecture is incomplete or invalid ({exc})") from None
    try:
        decoder.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path}: the weights do not fit the stored architecture ({first})") from None
    decoder.info = {k: v for k, v in state.items() if k not in ("state_dict", "model_config")}
    return decoder.eval()


def load_decoder(path: Union[str, Path], device: str = "cpu") -> AnyDecoder:
    """A decoder written by ``train_decoder`` / :func:`save_decoder`, in eval mode on ``device``; ``decoder.info``
    holds the rest of the file (loss, mode, sample_rate, history, run, ...)."""
    path = Path(path)
    return decoder_from_state(torch_load(path), path).to(device)


__all__ = ["AnyDecoder", "decoder_state", "save_decoder", "load_decoder", "decoder_from_state", "jsonable"]
