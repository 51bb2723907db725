"""Training a decoder on the cached latents of a frozen feature source (METHOD §9.1, with §16 item 4 fixed).

:func:`train_decoder` reads the train and test items of a dataset, encodes them once with the frozen source
(:mod:`smooth_infomax.decoding.cache`) and trains only the decoder: the encoder is never part of the optimiser
or of the decoder file and never runs per epoch. For one of our runs (``--run``) the decoder mirrors the encoder
(:class:`~smooth_infomax.decoding.model.Decoder`); for any other feature source (``--model hf:...``) it is the
:class:`~smooth_infomax.decoding.model.GenericDecoder` of the output's hop and dimension. Validation uses the test
split under ``no_grad``. Outputs in ``out_dir``::

    decoder.pt        plain data + weights (see smooth_infomax.decoding.store; loads with weights_only=True)
    history.csv       epoch, train_loss, val_loss, val_mse, seconds
    checkpoint.pt     decoder + optimiser after the last finished epoch (a re-run with the same out resumes)
    recon_<i>.wav     reconstructions of test items, with orig_<i>.wav and recon.png beside them

:class:`DecoderSettings` are the keys of ``decoder train --set KEY=VALUE``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..checkpoint import atomic_torch_save, atomic_write_text, torch_load
from ..config import _build, apply_overrides
from ..errors import ConfigError, TrainingDiverged, UserError
from ..features.sources import EncoderSource, source_config
from ..runs import open_run_data
from ..sources.resolve import resolve_source
from .cache import LatentCache, cache_latents, subset_indices
from .losses import LOSSES, decoder_loss
from .media import plot_waves, write_wav
from .model import Decoder, GenericDecoder, resolve_name, resolve_output
from .store import AnyDecoder, jsonable, save_decoder

MODES = ("mean", "sample")
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_mse", "seconds")
#: samples per item for sources without a run config (no ``data.crop`` to read)
DEFAULT_CROP = 10240


@dataclass
class DecoderSettings:
    """What ``decoder train`` reads; ``--set KEY=VALUE`` overrides any key (e.g. ``--set lr=1e-3``).

    epochs, batch_size, lr (Adam), seed: the training schedule. loss: ``mse``, ``mel`` or ``mse+mel``.
    mode: decode posterior ``mean``s or ``sample``s (Gaussian-posterior sources only; others give the mean).
    max_items: a seeded subset of at most this many items per split (null: all). n_recon: test items written
    as reconstructions. view: the dataset view (null: the run's pre-training view). crop: samples per item
    (null: the run's ``data.crop``, 10240 for other sources). channels: hidden channels of the generic decoder
    (sources we cannot mirror). device: cpu, cuda, cuda:N or auto. cache_gb: memory the cached waves and
    latents may take (GiB); more items stop with an error that says how many fit (``--max-items``).
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-4
    loss: str = "mse"
    mode: str = "mean"
    seed: int = 0
    max_items: Optional[int] = None
    n_recon: int = 4
    view: Optional[str] = None
    crop: Optional[int] = None
    channels: int = 64
    device: str = "cpu"
    cache_gb: float = 4.0

    def check(self) -> DecoderSettings:
        """Self, or a ConfigError naming the first invalid key."""
        if self.loss not in LOSSES:
            raise ConfigError(f"decoder setting 'loss': {self.loss!r} is not a decoder loss; "
                              f"choose {', '.join(LOSSES)}")
        if self.mode not in MODES:
            raise ConfigError(f"decoder setting 'mode': {self.mode!r}; choose mean or sample")
        for key, low in (("epochs", 0), ("batch_size", 1), ("n_recon", 0), ("channels", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"decoder setting '{key}' must be >= {low}, got {getattr(self, key)}")
        if self.max_items is not None and self.max_items < 1:
            raise ConfigError(f"decoder setting 'max_items' must be >= 1 or null, got {self.max_items}")
        if self.crop is not None and self.crop < 1:
            raise ConfigError(f"decoder setting 'crop' must be a positive number of samples or null, got {self.crop}")
        if not (self.cache_gb > 0 and math.isfinite(self.cache_gb)):
            raise ConfigError(f"decoder setting 'cache_gb' must be a positive number of GiB, got {self.cache_gb}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"decoder setting 'lr' must be a positive number, got {self.lr}")
        return self


def settings_with(base: DecoderSettings, overrides: Sequence[str]) -> DecoderSettings:
    """``base`` with ``KEY=VALUE`` overrides applied (values parsed as YAML), type-checked and validated."""
    data = apply_overrides(dataclasses.asdict(base), overrides)
    try:
        settings = _build(DecoderSettings, data, "")
    except ConfigError as exc:
        raise ConfigError(f"decoder train --set: {exc}") from None
    return settings.check()


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


def output_index(source: Any, module: Union[int, str]) -> int:
    """The output index of ``module`` (index or name) in ``source``; UserError naming --module otherwise."""
    try:
        if isinstance(source, EncoderSource):
            return resolve_output(source.encoder.config, module)
        return resolve_name(list(source.output_names), module)
    except ValueError as exc:
        raise UserError(f"--module: {exc}") from None


def make_decoder(source: Any, output: int, n_samples: int, channels: int = 64) -> AnyDecoder:
    """The mirror decoder of one of our encoders, or the generic decoder of any other source's output."""
    try:
        if isinstance(source, EncoderSource):
            return Decoder(source.encoder.config, output, n_samples)
        return GenericDecoder(int(source.hops[output]), int(source.dims[output]), n_samples,
                              int(source.frame_counts(n_samples)[output]), channels,
                              str(source.output_names[output]), output)
    except ValueError as exc:
        raise UserError(f"decoder for output {output}: {exc}") from None


def cache_bytes(n_items: int, n_samples: int, n_frames: int, dim: int, stochastic: bool) -> int:
    """Bytes the cached float32 waves and latents of ``n_items`` take (mu and logvar for posterior samples)."""
    return 4 * int(n_items) * (int(n_samples) + int(n_frames) * int(dim) * (2 if stochastic else 1))


def _check_cache_size(n_items: int, decoder: AnyDecoder, stochastic: bool, settings: DecoderSettings) -> None:
    per_item = cache_bytes(1, decoder.n_samples, decoder.n_frames, decoder.in_channels, stochastic)
    limit = settings.cache_gb * 2 ** 30
    if n_items * per_item > limit:
        fit = max(1, int(limit // per_item) // 2)  # --max-items caps each split
        raise UserError(f"{n_items} items would keep {n_items * per_item / 2 ** 30:.1f} GiB of waves and latents in "
                        f"memory (cache_gb={settings.cache_gb:g}); pass --max-items {fit} "
                        f"or --set cache_gb=... if the memory is there")


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_FIELDS})
    atomic_write_text(path, buf.getvalue())


def _evaluate(decoder: AnyDecoder, cache: LatentCache, settings: DecoderSettings, sr: int,
              device: torch.device) -> dict[str, Optional[float]]:
    if len(cache) == 0:
        return {"val_loss": None, "val_mse": None}
    was = decoder.training
    decoder.eval()
    tot_loss = tot_mse = 0.0
    with torch.no_grad():
        for wave, feat in cache.batches(settings.batch_size, epoch=0, salt=999, device=device):
            pred = decoder(feat)
            b = wave.shape[0]
            tot_loss += float(decoder_loss(pred, wave, settings.loss, sr)) * b
            tot_mse += float(F.mse_loss(pred, wave)) * b
    decoder.train(was)
    return {"val_loss": tot_loss / len(cache), "val_mse": tot_mse / len(cache)}


def _write_reconstructions(decoder: AnyDecoder, cache: LatentCache, out: Path, n: int, sr: int, batch_size: int,
                           device: torch.device) -> list[str]:
    if n <= 0 or len(cache) == 0:
        return []
    origs, recons = [], []
    with torch.no_grad():
        for wave, feat in cache.batches(batch_size, epoch=0, salt=555, device=device):
            origs.append(wave.cpu())
            recons.append(decoder(feat).cpu())
            if sum(len(o) for o in origs) >= n:
                break
    orig, recon = torch.cat(origs)[:n, 0], torch.cat(recons)[:n, 0]
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


def _source_identity(spec: Any, source: Any) -> str:
    if isinstance(spec, (str, Path)) and isinstance(source, EncoderSource) and source.config is not None:
        return str(Path(spec).resolve())
    return f"{source.name}@{source.fingerprint()}"


def train_decoder(source: Any, data_path: Union[str, Path], module: Union[int, str], *,
                  settings: Optional[DecoderSettings] = None, out_dir: Union[str, Path, None] = None,
                  progress: bool = False, **keys: Any) -> dict[str, Any]:
    """Train a decoder for output ``module`` of the frozen ``source`` on the audio at ``data_path``.

    source: a run directory, any spec :func:`~smooth_infomax.features.sources.resolve_source` reads (exported
    model, ``hf:...``, ``module:...``) or a feature-source object. settings: a :class:`DecoderSettings`; ``keys``
    override single fields (``epochs=3, lr=1e-3``). Items are the dataset's train split cut to ``crop`` samples
    (from the start); validation and the reconstructions use the test split; ``max_items`` caps both (seeded).
    A re-run with the same ``out_dir`` and settings resumes after the last finished epoch (and only rewrites
    the outputs when already complete); other settings in an existing ``out_dir`` raise UserError. Default
    ``out_dir``: RUN/decoders/module<M> for a run. Returns a summary (paths, sizes, final losses, history).
    """
    unknown = sorted(set(keys) - {f.name for f in dataclasses.fields(DecoderSettings)})
    if unknown:
        raise TypeError(f"train_decoder() got an unknown setting {unknown[0]!r}")
    settings = dataclasses.replace(settings or DecoderSettings(), **keys).check()
    dev = resolve_device(settings.device)
    src = resolve_source(source, device=str(dev))
    idx = output_index(src, module)
    is_run = isinstance(source, (str, Path)) and isinstance(src, EncoderSource) and src.config is not None
    if out_dir is None:
        if not is_run:
            raise UserError("pass --out: only a run directory has a default decoder folder (RUN/decoders/module<M>)")
        out_dir = Path(source) / "decoders" / f"module{idx}"
    out = Path(out_dir)
    cfg = source_config(src, data_path)
    n_samples = int(settings.crop or (cfg.data.crop if is_run else DEFAULT_CROP))
    sr = int(cfg.data.sample_rate)
    data_path = Path(data_path)
    common = dict(data_path=data_path, view=settings.view, crop=n_samples, random_crop=False, seed=settings.seed)
    train_set = open_run_data(cfg, "train", **common)
    test_set = open_run_data(cfg, "test", **common)
    if len(train_set) == 0:
        raise UserError(f"{data_path}: the train split is empty; check it with 'smooth-infomax data info {data_path}'")

    torch.manual_seed(settings.seed)
    decoder = make_decoder(src, idx, n_samples, settings.channels).to(dev)
    train_items = subset_indices(len(train_set), settings.max_items, settings.seed)
    test_items = subset_indices(len(test_set), settings.max_items, settings.seed + 1)
    sampled = settings.mode == "sample" and bool(getattr(src, "stochastic", False))
    _check_cache_size(len(train_items) + len(test_items), decoder, sampled, settings)
    train_cache = cache_latents(src, train_set, train_items, idx, settings.mode, seed=settings.seed, device=dev)
    test_cache = cache_latents(src, test_set, test_items, idx, settings.mode, seed=settings.seed + 1, device=dev)
    opt = torch.optim.Adam(decoder.parameters(), lr=settings.lr)

    identity = {"run": _source_identity(source, src), "data": str(data_path.resolve()), "module": idx,
                "loss": settings.loss, "mode": settings.mode, "n_samples": n_samples,
                "batch_size": settings.batch_size, "lr": settings.lr, "seed": settings.seed,
                "view": settings.view, "max_items": settings.max_items}
    if decoder.architecture != "mirror":
        identity["channels"] = settings.channels
    ckpt_path = out / "checkpoint.pt"
    history: list[dict[str, Any]] = []
    start = 0
    if ckpt_path.exists():
        state = torch_load(ckpt_path)
        if state.get("settings") != identity:
            diff = sorted(k for k in identity if state.get("settings", {}).get(k) != identity[k])
            raise UserError(f"{out} holds a decoder trained with other settings ({', '.join(diff)}); "
                            f"pass a new --out or delete {ckpt_path}")
        decoder.load_state_dict(state["decoder"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        history = list(state["history"])
    out.mkdir(parents=True, exist_ok=True)

    for epoch in range(start, settings.epochs):
        t0 = time.time()
        decoder.train()
        total = 0.0
        for step, (wave, feat) in enumerate(train_cache.batches(settings.batch_size, epoch, shuffle=True, device=dev)):
            value = decoder_loss(decoder(feat), wave, settings.loss, sr)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            loss = float(value.detach())
            if not math.isfinite(loss):
                raise TrainingDiverged(f"decoder loss became {loss} at epoch {epoch + 1}, step {step}; "
                                       f"lower the learning rate (--set lr=...)")
            total += loss * wave.shape[0]
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(1, len(train_cache))}
        row.update(_evaluate(decoder, test_cache, settings, sr, dev))
        row["seconds"] = round(time.time() - t0, 3)
        history.append(row)
        atomic_torch_save({"epoch": epoch + 1, "settings": identity,
                           "decoder": {k: v.detach().cpu() for k, v in decoder.state_dict().items()},
                           "optimizer": opt.state_dict(), "history": history}, ckpt_path)
        _write_history(out / "history.csv", history)
        if progress:
            val = "" if row["val_loss"] is None else f"  val {row['val_loss']:.6g} (mse {row['val_mse']:.6g})"
            print(f"decoder epoch {epoch + 1}/{settings.epochs}: train {row['train_loss']:.6g}{val}  "
                  f"[{row['seconds']:.1f}s]", file=sys.stderr, flush=True)

    decoder.eval()
    info = {"loss": settings.loss, "mode": settings.mode, "sample_rate": sr, "history": history,
            "run": identity["run"], "source": src.name, "data": str(data_path.resolve()), "view": settings.view,
            "epochs": len(history), "seed": settings.seed, "stochastic": bool(getattr(src, "stochastic", False))}
    save_decoder(decoder, out / "decoder.pt", **info)
    _write_history(out / "history.csv", history)
    recon = _write_reconstructions(decoder, test_cache, out, settings.n_recon, sr, settings.batch_size, dev)
    last = history[-1] if history else {}
    return jsonable({
        "out_dir": str(out), "decoder": str(out / "decoder.pt"), "module": idx, "module_name": decoder.module_name,
        "architecture": decoder.architecture, "n_samples": n_samples, "n_frames": decoder.n_frames,
        "channels": decoder.in_channels, "loss": settings.loss, "mode": settings.mode, "epochs": len(history),
        "n_train": len(train_cache), "n_test": len(test_cache), "train_loss": last.get("train_loss"),
        "val_loss": last.get("val_loss"), "val_mse": last.get("val_mse"), "history": history,
        "reconstructions": recon})


__all__ = ["DecoderSettings", "settings_with", "train_decoder", "make_decoder", "output_index", "resolve_device",
           "MODES", "HISTORY_FIELDS", "DEFAULT_CROP"]
