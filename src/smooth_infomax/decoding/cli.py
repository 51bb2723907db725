"""The decoder verbs: ``decoder train``, ``traverse``, ``interpolate``, ``sample`` and ``ics``.

Each takes ``--run RUN`` or ``--model SOURCE`` (:func:`smooth_infomax.features.sources.add_source_arguments`),
writes 16 kHz WAV files and PNG figures (waveform + spectrogram; traversals also a strip of log-mel
spectrograms along the traversed values; ``ics.png``: the relative curve) and a JSON summary to ``--out``.
``decoder train --set KEY=VALUE`` overrides a key of :class:`~smooth_infomax.decoding.train.DecoderSettings`.
Prior samples assume a Gaussian posterior: for a deterministic source ``sample`` says so and writes nothing
but a note.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from ..checkpoint import atomic_write_json
from ..errors import UserError
from ..features.sources import source_config
from ..runs import is_run_dir, open_run_data, run_config
from ..sources.resolve import add_source_arguments, source_from_args
from .cache import encode_items, find_item
from .latent import TRAVERSAL_RANGE, decode, ics, ics_naive, ics_subset, interpolate, sample_prior, top_dims, traverse
from .losses import LOSSES
from .media import plot_ics, plot_mel_strip, plot_waves, write_wavs
from .model import resolve_output
from .store import AnyDecoder, load_decoder
from .train import MODES, DecoderSettings, resolve_device, settings_with, train_decoder

SETTING_KEYS = ", ".join(f.name for f in dataclasses.fields(DecoderSettings))


# --------------------------------------------------------------------------------------------------
# decoder train
# --------------------------------------------------------------------------------------------------


def _register_train(subparsers: Any) -> None:
    p = subparsers.add_parser("decoder", help="train decoders from a frozen encoder's latents back to audio",
                              description="Decoders from one encoder output back to the waveform.")
    sub = p.add_subparsers(dest="decoder_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    t = sub.add_parser("train", help="train a decoder on a frozen encoder's latents",
                       description="Train a transposed-conv decoder for one output of a frozen feature source, on "
                                   "its latents encoded once. Our runs get the mirror of their encoder, other "
                                   "sources (--model hf:...) a generic decoder from the output's hop and dimension. "
                                   "Example: smooth-infomax decoder train --run runs/sim --data data/synth "
                                   "--module 2 --epochs 20 --set lr=1e-3")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    add_source_arguments(t)
    t.add_argument("--data", required=True, help="dataset (its train split trains, its test split validates)")
    t.add_argument("--module", required=True, help="output: index (0-based, the GRU last) or name")
    t.add_argument("--loss", choices=LOSSES, default="mse")
    t.add_argument("--mode", choices=MODES, default="mean", help="decode posterior means or samples (SIM)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-items", type=int, default=None, help="a seeded subset of at most this many items per split")
    t.add_argument("--out", default=None, help="output folder (default RUN/decoders/module<M>; required with --model)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a decoder setting, applied after the flags; keys: {SETTING_KEYS} "
                        f"(e.g. --set lr=1e-3 --set crop=8000 --set max_items=null)")
    t.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    base = DecoderSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss, mode=args.mode,
                           seed=args.seed, max_items=args.max_items, device=args.device)
    settings = settings_with(base, args.overrides)
    spec = args.run or args.model
    if args.run and not is_run_dir(args.run):
        source_from_args(args)  # the one-line error for a --run that is not a run directory
    summary = train_decoder(spec, args.data, args.module, settings=settings, out_dir=args.out, progress=True)

    def fmt(x: Any) -> str:
        return "n/a" if x is None else f"{x:.6g}"

    print(f"{summary['architecture']} decoder for {summary['module_name']} ({summary['n_frames']} x "
          f"{summary['channels']} -> {summary['n_samples']} samples) written to {summary['decoder']}; "
          f"{summary['epochs']} epochs, train loss {fmt(summary['train_loss'])}, val loss {fmt(summary['val_loss'])}")
    return 0


# --------------------------------------------------------------------------------------------------
# Latent tools
# --------------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, data: bool) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    add_source_arguments(p)
    p.add_argument("--decoder", default=None,
                   help="decoder.pt (default RUN/decoders/module<M>/decoder.pt with --module)")
    p.add_argument("--module", default=None, help="output whose default decoder to use (index or name; with --run)")
    if data:
        p.add_argument("--data", required=True, help="dataset whose items give the latents")
    else:
        p.add_argument("--data", default=None, help="dataset (only with --base item)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--mode", choices=list(MODES), default=None,
                   help="latents as posterior means or samples (default: the decoder's training mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", required=True, help="output folder")


def _register_latent(subparsers: Any) -> None:
    t = subparsers.add_parser("traverse", help="decode a latent while sweeping one dimension",
                              description="Latent traversal (METHOD §10). Example: smooth-infomax traverse --run "
                                          "runs/sim --module 1 --dim 3 --out out/traverse")
    _common(t, data=False)
    t.add_argument("--dim", type=int, nargs="+", required=True, help="dimension(s) to sweep")
    t.add_argument("--min", type=float, default=-TRAVERSAL_RANGE)
    t.add_argument("--max", type=float, default=TRAVERSAL_RANGE)
    t.add_argument("--steps", type=int, default=9)
    t.add_argument("--base", choices=["zero", "item"], default="zero", help="zero latent or an item's latent")
    t.add_argument("--item", default="0", help="item index or file stem (with --base item)")
    t.add_argument("--frames", type=int, default=None, help="frames of the zero latent (default: the decoder's)")
    t.set_defaults(func=_cmd_traverse)

    i = subparsers.add_parser("interpolate", help="decode interpolations between two items' latents",
                              description="Full or partial (top-d dimensions) interpolation (METHOD §10).")
    _common(i, data=True)
    i.add_argument("--item-a", default="0", help="first item: index or file stem (z1)")
    i.add_argument("--item-b", default="1", help="second item: index or file stem (z2)")
    i.add_argument("--steps", type=int, default=10, help="lambdas: linspace(0, 1, steps)")
    i.add_argument("--dims", type=int, default=None, help="partial: interpolate only the top-d dimensions")
    i.set_defaults(func=_cmd_interpolate)

    s = subparsers.add_parser("sample", help="decode latents drawn from N(0, I) (Gaussian-posterior models)",
                              description="Decode prior samples N(0, I) of the decoder's latent shape. Only "
                                          "meaningful for a model with Gaussian posteriors (SIM); for any other "
                                          "source it says so and is skipped.")
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    add_source_arguments(s)
    s.add_argument("--decoder", default=None)
    s.add_argument("--module", default=None)
    s.add_argument("--n", type=int, default=5)
    s.add_argument("--frames", type=int, default=None, help="frames per latent (default: the decoder's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_cmd_sample)

    c = subparsers.add_parser("ics", help="interpolation contribution score of a decoder",
                              description="The ICS (METHOD §11) on a seeded subset of a split's items; writes "
                                          "ics.json and ics.png.")
    _common(c, data=True)
    c.add_argument("--n-items", type=int, default=200, help="items (all when the split has fewer)")
    c.add_argument("--ds", default=None,
                   help="comma-separated d values (default the powers of two 2, 4, 8, ... below C, then C)")
    c.add_argument("--max-pairs", type=int, default=None, help="estimate on a seeded subset of the ordered pairs")
    c.add_argument("--naive", action="store_true", help="use the per-pair loop (slow; for checking)")
    c.set_defaults(func=_cmd_ics)


def register(subparsers: Any) -> None:
    """Add ``decoder``, ``traverse``, ``interpolate``, ``sample`` and ``ics``."""
    _register_train(subparsers)
    _register_latent(subparsers)


def _spec(args: argparse.Namespace) -> str:
    return str(args.run or args.model)


def _load_decoder(args: argparse.Namespace) -> tuple[AnyDecoder, Any, torch.device]:
    """(decoder, run config or None, device) for a CLI call, checking that decoder and run belong together."""
    device = resolve_device(getattr(args, "device", "cpu"))
    spec = _spec(args)
    if args.run and not is_run_dir(args.run):
        source_from_args(args)  # the one-line error for a --run that is not a run directory
    cfg = run_config(spec) if is_run_dir(spec) else None
    if args.decoder:
        path = Path(args.decoder)
    elif args.module is not None and cfg is not None:
        try:
            idx = resolve_output(cfg.model, args.module)
        except ValueError as exc:
            raise UserError(f"--module: {exc}") from None
        path = Path(spec) / "decoders" / f"module{idx}" / "decoder.pt"
        if not path.exists():
            raise UserError(f"{path} does not exist; train it with 'smooth-infomax decoder train --run {spec} "
                            f"--data DATA --module {idx}' or pass --decoder")
    elif cfg is None:
        raise UserError(f"--model {spec}: pass --decoder PATH (the decoder.pt that 'decoder train --model' wrote)")
    else:
        raise UserError("pass --decoder PATH or --module M (to use RUN/decoders/module<M>/decoder.pt)")
    decoder = load_decoder(path, device=str(device))
    if cfg is not None and decoder.model_config is not None and \
            dataclasses.asdict(decoder.model_config) != dataclasses.asdict(cfg.model):
        raise UserError(f"{path} was trained for another encoder architecture than {spec}/config.yaml; "
                        f"pass the matching --run")
    return decoder, cfg, device


def _latents(args: argparse.Namespace, decoder: AnyDecoder, device: torch.device,
             keys: Sequence[Union[int, str]] = (), n_items: Optional[int] = None) -> tuple[Tensor, list[int]]:
    """Latents of the named items (keys) or of the ICS subset (n_items) of --data's split."""
    if not args.data:
        raise UserError("this command needs --data DATASET for the items' latents")
    source = source_from_args(args)
    cfg = source_config(source, args.data)
    dataset = open_run_data(cfg, args.split, data_path=args.data, view=decoder.info.get("view"),
                            crop=decoder.n_samples)
    if len(dataset) == 0:
        raise UserError(f"{args.data}: the {args.split} split is empty")
    indices = [find_item(dataset, k) for k in keys] if n_items is None else ics_subset(len(dataset), n_items, args.seed)
    mode = args.mode or decoder.info.get("mode", "mean")
    z = encode_items(source, dataset, indices, decoder.module_index, mode, args.seed,
                     batch_size=min(args.batch_size, 32), device=device)
    if z.shape[1:] != (decoder.n_frames, decoder.in_channels):
        raise UserError(f"{_spec(args)} gives latents (T, C) = {tuple(z.shape[1:])} at output {decoder.module_index}, "
                        f"the decoder expects {(decoder.n_frames, decoder.in_channels)}; pass the matching --decoder")
    return z, indices


def _sr(decoder: AnyDecoder, cfg: Any) -> int:
    return int(decoder.info.get("sample_rate") or (cfg.data.sample_rate if cfg is not None else 16000))


def _cmd_traverse(args: argparse.Namespace) -> int:
    decoder, cfg, device = _load_decoder(args)
    sr, out = _sr(decoder, cfg), Path(args.out)
    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    values = torch.linspace(args.min, args.max, args.steps)
    for dim in args.dim:
        if not 0 <= dim < decoder.in_channels:
            raise UserError(f"--dim {dim} out of range: the latent has {decoder.in_channels} dimensions")
    if args.base == "item":
        z, idx = _latents(args, decoder, device, keys=[args.item])
        base, label = z[0], f"item {idx[0]}"
    else:
        base, label = torch.zeros(args.frames or decoder.n_frames, decoder.in_channels), "zero latent"
    summary: dict[str, Any] = {"base": label, "values": values.tolist(), "files": {}, "spectrograms": {}}
    for dim in args.dim:
        waves = traverse(decoder, base, dim, values, args.batch_size)
        summary["files"][str(dim)] = write_wavs(out, f"traverse_dim{dim}", waves, sr)
        titles = [f"dim {dim} = {v:.2f}" for v in values.tolist()]
        plot_waves(list(waves), out / f"traverse_dim{dim}.png", sr, titles=titles,
                   suptitle=f"traversal of dimension {dim} around the {label}")
        strip = out / f"traverse_dim{dim}_mel.png"
        plot_mel_strip(list(waves), strip, sr, labels=[f"{v:.2f}" for v in values.tolist()],
                       title=f"log-mel spectrograms along dimension {dim} ({label})")
        summary["spectrograms"][str(dim)] = str(strip)
    atomic_write_json(out / "traverse.json", summary)
    print(f"traversal of {len(args.dim)} dimension(s) x {args.steps} values written to {out}")
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    decoder, cfg, device = _load_decoder(args)
    sr, out = _sr(decoder, cfg), Path(args.out)
    if args.steps < 2:
        raise UserError("--steps must be >= 2")
    if args.dims is not None and not 0 <= args.dims <= decoder.in_channels:
        raise UserError(f"--dims must be in [0, {decoder.in_channels}], got {args.dims}")
    z, idx = _latents(args, decoder, device, keys=[args.item_a, args.item_b])
    lambdas = torch.linspace(0, 1, args.steps)
    waves = decode(decoder, interpolate(z[0], z[1], lambdas, dims=args.dims), args.batch_size)
    tag = "interp" if args.dims is None else f"interp_d{args.dims}"
    files = write_wavs(out, tag, waves, sr)
    what = "full" if args.dims is None else f"top-{args.dims} dimensions"
    plot_waves(list(waves), out / f"{tag}.png", sr, titles=[f"lambda = {v:.2f}" for v in lambdas.tolist()],
               suptitle=f"interpolation ({what}) from item {idx[0]} to item {idx[1]}")
    summary = {"items": idx, "lambdas": lambdas.tolist(), "dims": args.dims, "files": files,
               "top_dims": None if args.dims is None else top_dims(z[0], z[1], args.dims).tolist()}
    atomic_write_json(out / f"{tag}.json", summary)
    print(f"{len(files)} interpolated waves ({what}) written to {out}")
    return 0


def _stochastic(args: argparse.Namespace, decoder: AnyDecoder, cfg: Any) -> bool:
    """Whether the source has Gaussian posteriors (a run's config, else the decoder file, else the source)."""
    if cfg is not None:
        return cfg.model.kind == "sim"
    if "stochastic" in decoder.info:
        return bool(decoder.info["stochastic"])
    return bool(getattr(source_from_args(args), "stochastic", False))


def _cmd_sample(args: argparse.Namespace) -> int:
    decoder, cfg, _ = _load_decoder(args)
    sr, out = _sr(decoder, cfg), Path(args.out)
    if args.n < 1:
        raise UserError("--n must be >= 1")
    if not _stochastic(args, decoder, cfg):
        note = (f"{_spec(args)} is deterministic (no Gaussian posterior): prior samples N(0, I) are not its latents; "
                f"skipped")
        atomic_write_json(out / "sample.json", {"skipped": note, "files": []})
        print(f"sample: {note}")
        return 0
    waves = sample_prior(decoder, args.n, args.frames, decoder.in_channels, seed=args.seed)
    files = write_wavs(out, "prior", waves, sr)
    plot_waves(list(waves), out / "sample.png", sr, titles=[f"N(0, I) sample {k}" for k in range(len(files))])
    atomic_write_json(out / "sample.json", {"n": args.n, "seed": args.seed, "files": files})
    print(f"{len(files)} prior samples written to {out}")
    return 0


def _cmd_ics(args: argparse.Namespace) -> int:
    decoder, _, device = _load_decoder(args)
    out = Path(args.out)
    ds = None
    if args.ds:
        try:
            ds = [int(x) for x in args.ds.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--ds {args.ds!r}: give comma-separated integers, e.g. 2,4,8,16") from None
        if any(not 0 <= d <= decoder.in_channels for d in ds):
            raise UserError(f"--ds values must lie in [0, {decoder.in_channels}], got {args.ds}")
    if args.n_items < 2:
        raise UserError("--n-items must be >= 2")
    z, indices = _latents(args, decoder, device, n_items=args.n_items)
    if z.shape[0] < 2:
        raise UserError(f"{args.data}: the {args.split} split has fewer than 2 items; the ICS needs pairs")
    fn = ics_naive if args.naive else ics
    result = fn(decoder, z, ds=ds, n_items=z.shape[0], seed=args.seed, batch_size=args.batch_size,
                max_pairs=args.max_pairs)
    result["items"] = indices
    result["mode"] = args.mode or decoder.info.get("mode", "mean")
    result["module"] = decoder.module_name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "ics.json", result)
    plot_ics(result, out / "ics.png", title=f"ICS, {decoder.module_name} ({result['mode']} latents)")
    print(f"ICS over {result['n_pairs']} pairs of {result['n_items']} items: relative "
          + ", ".join(f"d={d}: {r:.3f}" for d, r in zip(result["ds"], result["relative"])) + f"; written to {out}")
    return 0


__all__ = ["register"]
