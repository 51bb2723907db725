"""Exported model folders: safetensors weights, a JSON config and a model card, loadable from the hub.

``smooth-infomax export --run RUN --out DIR`` writes::

    DIR/model.safetensors   the encoder's weights (safetensors: no code can ride along)
    DIR/config.json         the model config and what encoding needs: sample_rate, output_names, hops, dims,
                            receptive_fields, plus the training record (``training``) and the format version
    DIR/README.md           the model card: architecture, data, epochs, final losses, probe results, licences

:func:`from_pretrained` loads such a folder, or a HuggingFace hub repo id through ``huggingface_hub`` (its cache,
``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, tokens). The model (:class:`PretrainedEncoder`) is an
:class:`~smooth_infomax.model.Encoder` (same weights, same ``encode``) with huggingface_hub's
``PyTorchModelHubMixin``: ``save_pretrained(dir)`` and ``push_to_hub(repo_id)`` write the same three files.
``extract_features(wave)`` is the torchaudio-bundle-style entry point.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import huggingface_hub
import safetensors.torch
import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
from torch import Tensor

from . import __version__
from .config import model_config
from .errors import ConfigError, UserError
from .features.sources import EncoderSource
from .model import Encoder
from .modelcard import model_card, run_summary
from .runs import load_encoder, run_config

FORMAT = "smooth-infomax"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class PretrainedEncoder(Encoder, PyTorchModelHubMixin, library_name="smooth-infomax",
                        tags=["audio", "speech", "self-supervised-learning", "smooth-infomax"],
                        repo_url="https://github.com/fdenoodt/smooth-infomax"):
    """An :class:`Encoder` built from an exported ``config.json`` (its arguments are that file's keys).

    model: the model section of the run config (a dict). sample_rate: Hz of the input. output_names / hops /
    dims / receptive_fields: what the architecture gives (checked against it when passed, so a config.json
    that disagrees with its weights is refused). training: the training record of the run (model card).
    """

    def __init__(self, model: dict, sample_rate: int = 16000, name: str = "smooth-infomax",
                 output_names: Optional[list] = None, hops: Optional[list] = None, dims: Optional[list] = None,
                 receptive_fields: Optional[list] = None, training: Optional[dict] = None,
                 format: str = FORMAT, format_version: int = FORMAT_VERSION, stochastic: Optional[bool] = None):
        if format != FORMAT or not isinstance(format_version, int) or format_version > FORMAT_VERSION:
            raise UserError(f"{CONFIG}: format {format!r} version {format_version!r} is not a smooth-infomax model "
                            f"this version reads (format {FORMAT!r} <= {FORMAT_VERSION}); upgrade smooth-infomax")
        try:
            cfg = model_config(model)
        except ConfigError as exc:
            raise UserError(f"{CONFIG}: {exc}") from None
        except (TypeError, AttributeError):
            raise UserError(f"{CONFIG}: key 'model' must be the model section of a run config (a mapping)") from None
        super().__init__(cfg)
        self.sample_rate = int(sample_rate)
        self.name = str(name)
        self.training_record = training or {}
        for key, given, actual in (("output_names", output_names, self.module_names), ("hops", hops, self.hops),
                                   ("dims", dims, self.output_dims),
                                   ("receptive_fields", receptive_fields, self.receptive_fields)):
            if given is not None and list(given) != list(actual):
                raise UserError(f"{CONFIG}: key {key!r} is {list(given)} but the model it describes gives "
                                f"{list(actual)}; re-export the model with 'smooth-infomax export'")

    # ---------------------------------------------------------------------------------------- feature source

    @property
    def output_names(self) -> list[str]:
        return self.module_names

    @property
    def dims(self) -> list[int]:
        return self.output_dims

    @property
    def stochastic(self) -> bool:
        return self.kind == "sim"

    def source(self) -> EncoderSource:
        """This model as a :class:`~smooth_infomax.features.sources.EncoderSource` (padding-exact encoding)."""
        return EncoderSource(self, self.sample_rate, self.name)

    def fingerprint(self) -> str:
        return self.source().fingerprint()

    @torch.no_grad()
    def extract_features(self, wave: Tensor, lengths: Optional[Sequence[int]] = None) -> list[Tensor]:
        """Features of every output (posterior means), like a torchaudio pipeline bundle's model.

        wave: (T,), (B, T) or (B, 1, T) at ``sample_rate``. lengths: each item's own samples when the batch is
        zero-padded; frames past an item's own count are then zeros. Returns one (B, T_m, C_m) tensor per
        output (``output_names`` order)."""
        x = wave.unsqueeze(0) if wave.dim() == 1 else wave
        x = Encoder.as_batch(x).to(next(self.parameters()).device)
        if lengths is None:
            return self.encode(x, "mean")
        return self.source().encode(x, "mean", lengths=lengths)

    # ---------------------------------------------------------------------------------------- hub mixin

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The card ``save_pretrained`` / ``push_to_hub`` write (the same as ``smooth-infomax export``)."""
        return model_card(self.export_config(), __version__)

    def export_config(self) -> dict[str, Any]:
        """The content of ``config.json``."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
                "model": dataclasses.asdict(self.config), "sample_rate": self.sample_rate,
                "output_names": self.module_names, "hops": self.hops, "dims": self.output_dims,
                "receptive_fields": self.receptive_fields, "stochastic": self.stochastic,
                "training": self.training_record}

    def save_pretrained(self, save_directory: Union[str, Path], **kwargs: Any) -> Optional[str]:
        """Write model.safetensors, config.json and README.md to ``save_directory`` (huggingface_hub's
        ``save_pretrained``; ``push_to_hub=True, repo_id=...`` uploads too)."""
        if kwargs.get("config") is None:  # push_to_hub passes config=None explicitly
            kwargs["config"] = self.export_config()
        card = Path(save_directory) / "README.md"
        if card.exists():  # the mixin keeps an existing card: replace it with this model's
            card.unlink()
        return super().save_pretrained(save_directory, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: Optional[str], cache_dir: Any, force_download: bool,
                         local_files_only: bool, token: Any, map_location: str = "cpu", strict: bool = True,
                         **model_kwargs: Any) -> PretrainedEncoder:
        """Weights from ``model.safetensors`` only (never a pickle), every tensor required (strict)."""
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, WEIGHTS)
            if not os.path.isfile(weights):
                raise UserError(f"{model_id} has no {WEIGHTS}; export the model with 'smooth-infomax export'")
        else:
            weights = huggingface_hub.hf_hub_download(repo_id=model_id, filename=WEIGHTS, revision=revision,
                                                      cache_dir=cache_dir, force_download=force_download,
                                                      token=token, local_files_only=local_files_only)
        try:
            missing, unexpected = safetensors.torch.load_model(model, weights, strict=False, device="cpu")
        except Exception as exc:  # noqa: BLE001 - a damaged file or tensors of the wrong shape
            first = " ".join(str(exc).split())[:160]
            raise UserError(f"{weights} cannot be loaded into the model config.json describes ({first}); "
                            f"re-export the model") from None
        if strict and (missing or unexpected):
            raise UserError(f"{weights} does not match config.json (missing {sorted(missing)[:3]}, unexpected "
                            f"{sorted(unexpected)[:3]}); re-export the model")
        return model.to(map_location).eval()


def _is_local(source: str) -> bool:
    return os.path.isdir(source) or not _REPO_ID.match(source) or source.startswith((".", "~"))


def from_pretrained(source: Union[str, os.PathLike[str]], device: str = "cpu", *, revision: Optional[str] = None,
                    cache_dir: Union[str, Path, None] = None, local_files_only: bool = False,
                    token: Union[str, bool, None] = None) -> PretrainedEncoder:
    """An exported model, in eval mode on ``device``: a local folder (config.json + model.safetensors) or a hub
    repo id (``owner/name``), resolved through huggingface_hub and its cache (``HF_HUB_OFFLINE=1``: the cache
    only). Features equal those of ``smooth_infomax.load(run)`` of the run it was exported from."""
    text = str(source)
    if _is_local(text):
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise UserError(f"{text} is not a folder nor a hub repo id (owner/name); pass a folder written by "
                            f"'smooth-infomax export' or a repo id")
        if not (folder / CONFIG).is_file():
            raise UserError(f"{folder} has no {CONFIG}; pass a folder written by 'smooth-infomax export'")
        _check_config_json(folder / CONFIG)
        text = str(folder)
    try:
        return PretrainedEncoder.from_pretrained(text, map_location=device, revision=revision, cache_dir=cache_dir,
                                                 local_files_only=local_files_only, token=token)
    except (LocalEntryNotFoundError, EntryNotFoundError) as exc:
        offline = " (offline: HF_HUB_OFFLINE is set, only the local cache is searched)" if _offline() else ""
        raise UserError(f"{text}: no such local folder, and the hub repo or its {CONFIG} / {WEIGHTS} was not "
                        f"found{offline} ({type(exc).__name__}); check the path or repo id, or download it while "
                        f"online") from None
    except HfHubHTTPError as exc:
        raise UserError(f"{text}: the hub refused the download ({' '.join(str(exc).split())[:120]}); check the "
                        f"repo id and your token (hf auth login)") from None
    except TypeError as exc:  # the hub repo had no config.json: the mixin built the model without arguments
        if "required positional argument" not in str(exc):
            raise
        raise UserError(f"{text}: no {CONFIG} with a 'model' key; it is not a model exported by "
                        f"'smooth-infomax export'") from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _check_config_json(path: Path) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path} is not valid JSON ({type(exc).__name__}); re-export the model") from None
    if not isinstance(data, dict) or "model" not in data:
        raise UserError(f"{path} is not a smooth-infomax model config (no 'model' key); re-export the model")


def export_run(run_dir: Union[str, os.PathLike[str]], out_dir: Union[str, os.PathLike[str]], *,
               name: Optional[str] = None, licence: Optional[str] = None,
               probes: Sequence[Union[str, os.PathLike[str]]] = ()) -> PretrainedEncoder:
    """Export the trained encoder of ``run_dir`` to ``out_dir`` (model.safetensors, config.json, README.md)."""
    run = Path(run_dir)
    cfg = run_config(run)
    encoder = load_encoder(run)
    summary = run_summary(run, cfg, licence=licence, probes=[Path(p) for p in probes])
    model = PretrainedEncoder(model=dataclasses.asdict(encoder.config), sample_rate=int(cfg.data.sample_rate),
                              name=name or run.resolve().name, training=summary)
    model.load_state_dict(encoder.state_dict())
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder for the exported model")
    try:
        out.mkdir(parents=True, exist_ok=True)
        # written beside the target, then renamed file by file: an interrupted export leaves no half-written file
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
            model.eval().save_pretrained(tmp)  # weights, config.json and the model card (generate_model_card)
            for name in (WEIGHTS, CONFIG, "README.md"):
                os.replace(Path(tmp) / name, out / name)
    except OSError as exc:
        raise UserError(f"cannot write the model to {out}: {exc.strerror or type(exc).__name__}; free disk space "
                        f"or fix the permissions and export again") from None
    return model


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _export_command(args: argparse.Namespace) -> int:
    model = export_run(args.run, args.out, name=args.name, licence=args.license, probes=args.probes or ())
    print(f"exported {args.run} -> {args.out} ({WEIGHTS}, {CONFIG}, README.md; outputs "
          f"{', '.join(model.module_names)})")
    if args.push_to_hub:
        url = model.push_to_hub(args.push_to_hub, private=args.private)
        print(f"pushed to {args.push_to_hub}: {url}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="export a trained encoder as a safetensors model folder (hub-ready)",
                              description="Write model.safetensors, config.json and a README.md model card; load "
                                          "it with smooth_infomax.from_pretrained(DIR) or --model DIR. Example: "
                                          "smooth-infomax export --run runs/sim --out models/sim")
    p.add_argument("--run", required=True, help="run directory of a trained encoder")
    p.add_argument("--out", required=True, help="folder to write the model to")
    p.add_argument("--name", default=None, help="model name in the card (default: the run folder's name)")
    p.add_argument("--license", default=None,
                   help="licence id of the weights (default: from the training data's licence)")
    p.add_argument("--probes", nargs="*", default=None, metavar="PATH",
                   help="probe_*.json results (files or folders) for the card (default: the run's own)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="also upload to this HuggingFace hub repo (needs a token: hf auth login)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    p.set_defaults(func=_export_command)


__all__ = ["PretrainedEncoder", "from_pretrained", "export_run", "register", "WEIGHTS",
           "CONFIG"]
