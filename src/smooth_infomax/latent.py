"""Latent-space tools on a trained decoder: traversal, interpolation, prior samples and the ICS.

* :func:`traverse` varies one latent dimension over a range (e.g. ``linspace(-2.68, 2.68, n)``, about 99 % of
  N(0, 1)) with the others fixed, around the zero latent or an utterance's latent (METHOD §10).
* :func:`interpolate` blends two latents: fully, z(λ) = λ·z2 + (1 − λ)·z1, or partially, only in the top-d
  dimensions ranked by the squared difference of the two latents' time means (:func:`top_dims`), the other
  dimensions staying at z1. With d = C and λ = 1 the result is z2 exactly.
* :func:`sample_prior` decodes N(0, I) latents.
* :func:`ics` is the interpolation contribution score of METHOD §11: for every ordered pair (i, j), i ≠ j, of a
  seeded subset of min(n_items, N) latents, the rows S_d of z_i (the d dimensions with the largest squared
  difference of time means) are replaced by z_j's; e_d = mean over samples of (D(z̃) − D(z_j))², E_d its mean
  over pairs, E_max the d = 0 case mean((D(z_i) − D(z_j))²); relative_d = E_d / E_max (0 at d = C). It decodes
  every z_j once and builds the z̃ of many pairs at once with index gathers, decoded in batches.
  :func:`ics_naive` computes the same numbers with a plain per-pair loop (for tests and the benchmark).

Each tool is also a CLI verb (``traverse``, ``interpolate``, ``sample``, ``ics``) writing 16 kHz WAV files and
PNG figures (waveform + spectrogram; ``ics.png``: the relative curve) to ``--out``.

Latent layout everywhere: (T, C) for one item and (N, T, C) for a set, as ``Encoder.encode`` returns them.
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .checkpoint import atomic_write_bytes, atomic_write_json
from .errors import UserError

TRAVERSAL_RANGE = 2.68  # about 99 % of the N(0, 1) mass (METHOD §10)


# --------------------------------------------------------------------------------------------------
# Files: WAVs and figures
# --------------------------------------------------------------------------------------------------


def write_wav(path: Union[str, Path], wave: Any, sample_rate: int = 16000) -> None:
    """Write a mono wave (any shape with one non-singleton axis) as 16-bit PCM, clipped to [-1, 1], atomically."""
    import soundfile as sf

    x = torch.as_tensor(wave).detach().cpu().reshape(-1).double().numpy()
    x = np.clip(np.nan_to_num(x, nan=0.0), -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), int(sample_rate), format="WAV", subtype="PCM_16")
    atomic_write_bytes(path, buf.getvalue())


def _save_figure(fig: Any, path: Union[str, Path]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def plot_waves(waves: Sequence[Any], path: Union[str, Path], sample_rate: int = 16000,
               titles: Optional[Sequence[str]] = None, suptitle: Optional[str] = None) -> None:
    """One row per wave: the waveform (left) and its log-power spectrogram in dB (right); written as PNG."""
    from matplotlib.figure import Figure

    from .mel import power_spectrogram

    waves = [torch.as_tensor(w).detach().cpu().reshape(-1).float() for w in waves]
    n = max(1, len(waves))
    fig = Figure(figsize=(11, 1.9 * n + (0.5 if suptitle else 0)))
    axes = fig.subplots(n, 2, squeeze=False)
    for r, w in enumerate(waves):
        t = np.arange(w.numel()) / sample_rate
        ax = axes[r][0]
        ax.plot(t, w.numpy(), linewidth=0.6)
        ax.set_xlim(0, max(t[-1] if len(t) else 0, 1e-9))
        ax.set_ylabel("amplitude")
        label = titles[r] if titles is not None and r < len(titles) else f"wave {r}"
        ax.set_title(label, fontsize=9)
        n_fft = 512 if w.numel() >= 512 else max(16, 2 ** int(math.log2(max(w.numel(), 16))))
        hop = max(1, n_fft // 4)
        spec = power_spectrogram(w, n_fft=n_fft, hop=hop)[0]
        db = 10 * torch.log10(spec.clamp(min=1e-10)).numpy()
        ax = axes[r][1]
        ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                  extent=(0, w.numel() / sample_rate, 0, sample_rate / 2000))
        ax.set_ylabel("kHz")
        ax.set_title(f"{label}: spectrogram (dB)", fontsize=9)
        if r == n - 1:
            axes[r][0].set_xlabel("seconds")
            axes[r][1].set_xlabel("seconds")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_ics(results: Union[Mapping[str, Any], Mapping[str, Mapping[str, Any]]], path: Union[str, Path],
             title: str = "Interpolation contribution score") -> None:
    """relative_d against d (log2 axis) for one ICS result or a {name: result} mapping; written as PNG."""
    from matplotlib.figure import Figure

    curves = {"ICS": results} if "relative" in results else dict(results)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, res in curves.items():
        ds = [max(d, 0.5) for d in res["ds"]]
        ax.plot(ds, res["relative"], marker="o", label=f"{name} (AUC {res.get('auc', float('nan')):.3f})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("d (dimensions replaced)")
    ax.set_ylabel("relative error E_d / E_max")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    _save_figure(fig, path)


# --------------------------------------------------------------------------------------------------
# Decoding helpers
# --------------------------------------------------------------------------------------------------


def _param(decoder: Any) -> Tensor:
    for p in decoder.parameters():
        return p
    return torch.zeros(())


def decode(decoder: Any, latents: Any, batch_size: int = 64) -> Tensor:
    """Decode (N, T, C) (or one (T, C)) latents in batches under no_grad -> (N, L) on the CPU."""
    z = torch.as_tensor(latents)
    if z.dim() == 2:
        z = z.unsqueeze(0)
    ref = _param(decoder)
    outs = []
    with torch.no_grad():
        for s in range(0, z.shape[0], max(1, batch_size)):
            chunk = z[s:s + batch_size].to(ref.device, ref.dtype)
            outs.append(decoder(chunk).reshape(chunk.shape[0], -1).cpu())
    return torch.cat(outs) if outs else torch.zeros(0, 0)


def _as_values(values: Any) -> Tensor:
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if v.numel() == 0:
        raise ValueError("need at least one value")
    return v


# --------------------------------------------------------------------------------------------------
# Traversal, interpolation, prior samples
# --------------------------------------------------------------------------------------------------


def traversal_latents(base_latent: Any, dim: int, values: Any) -> Tensor:
    """(len(values), T, C): copies of ``base_latent`` (T, C) with dimension ``dim`` set to each value in all frames."""
    base = torch.as_tensor(base_latent)
    if base.dim() != 2:
        raise ValueError(f"base_latent must be (T, C), got shape {tuple(base.shape)}")
    if not -base.shape[1] <= dim < base.shape[1]:
        raise ValueError(f"dimension {dim} out of range for {base.shape[1]} latent dimensions")
    v = _as_values(values).to(base.dtype)
    z = base.unsqueeze(0).repeat(v.numel(), 1, 1)
    z[:, :, dim] = v[:, None].to(z.device)
    return z


def traverse(decoder: Any, base_latent: Any, dim: int, values: Any, batch_size: int = 64) -> Tensor:
    """Decode ``base_latent`` (T, C) with dimension ``dim`` swept over ``values`` -> waves (len(values), L)."""
    return decode(decoder, traversal_latents(base_latent, dim, values), batch_size)


def time_means(z: Tensor) -> Tensor:
    """Mean over frames: (..., T, C) -> (..., C)."""
    return z.mean(dim=-2)


def rank_dims(z1: Tensor, z2: Tensor) -> Tensor:
    """All dimensions ordered by decreasing (time-mean(z1) − time-mean(z2))²; (..., T, C) -> (..., C).

    Ties keep the lower index first (stable sort), so every caller ranks identically.
    """
    diff2 = (time_means(z1) - time_means(z2)).square()
    return torch.argsort(diff2, dim=-1, descending=True, stable=True)


def top_dims(z1: Any, z2: Any, d: int) -> Tensor:
    """The ``d`` dimensions with the largest squared difference of time means, in descending order (LongTensor)."""
    z1, z2 = torch.as_tensor(z1), torch.as_tensor(z2)
    if z1.shape != z2.shape or z1.dim() < 2:
        raise ValueError(f"z1 and z2 must be equal-shape (..., T, C) latents, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not 0 <= d <= z1.shape[-1]:
        raise ValueError(f"d must be in [0, {z1.shape[-1]}], got {d}")
    return rank_dims(z1, z2)[..., :d]


def interpolate(z1: Any, z2: Any, lambdas: Any, dims: Union[int, Sequence[int], None] = None) -> Tensor:
    """Latents between z1 and z2 (each (T, C)) -> (len(lambdas), T, C).

    dims None: full interpolation λ·z2 + (1 − λ)·z1. dims = d (an int): partial, only the :func:`top_dims`
    (z1, z2, d) are interpolated and the others stay at z1. dims = a list of indices: those dimensions.
    """
    z1, z2 = torch.as_tensor(z1), torch.as_tensor(z2)
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must be (T, C) latents of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    lam = _as_values(lambdas).to(z1.dtype).to(z1.device)[:, None, None]
    full = lam * z2.unsqueeze(0) + (1 - lam) * z1.unsqueeze(0)
    if dims is None:
        return full
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        sel = top_dims(z1, z2, int(dims))
    else:
        sel = torch.as_tensor(list(dims), dtype=torch.long).reshape(-1)
        if sel.numel() and not (0 <= int(sel.min()) and int(sel.max()) < z1.shape[-1]):
            raise ValueError(f"dimension indices must lie in [0, {z1.shape[-1]}), got {sel.tolist()}")
    mask = torch.zeros(z1.shape[-1], dtype=torch.bool, device=z1.device)
    mask[sel.to(z1.device)] = True
    return torch.where(mask, full, z1.unsqueeze(0).expand_as(full))


def sample_prior(decoder: Any, n: int, n_frames: Optional[int] = None, C: Optional[int] = None, seed: int = 0,
                 batch_size: int = 64) -> Tensor:
    """Decode ``n`` latents drawn from N(0, I) of shape (n_frames, C) (default: the decoder's) -> (n, L)."""
    n_frames = int(n_frames if n_frames is not None else decoder.n_frames)
    C = int(C if C is not None else decoder.in_channels)
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n), n_frames, C, generator=gen)
    return decode(decoder, z, batch_size)


# --------------------------------------------------------------------------------------------------
# Interpolation contribution score
# --------------------------------------------------------------------------------------------------


def default_ds(C: int) -> list[int]:
    """2, 4, 8, ... up to C (C itself always included)."""
    ds, d = [], 2
    while d < C:
        ds.append(d)
        d *= 2
    ds.append(int(C))
    return ds


def ics_subset(n_available: int, n_items: int = 200, seed: int = 0) -> list[int]:
    """The seeded subset of min(n_items, n_available) item indices the ICS uses (sorted)."""
    n = min(int(n_items), int(n_available))
    gen = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(int(n_available), generator=gen)[:n].tolist())


def ics_pairs(n: int, max_pairs: Optional[int] = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """All ordered pairs (i, j), i ≠ j, of range(n) (i major), or a seeded subset of ``max_pairs`` of them."""
    ii = torch.arange(n).repeat_interleave(n)
    jj = torch.arange(n).repeat(n)
    keep = ii != jj
    ii, jj = ii[keep], jj[keep]
    if max_pairs is not None and max_pairs < ii.numel():
        gen = torch.Generator().manual_seed(int(seed) + 1)
        sel = torch.sort(torch.randperm(ii.numel(), generator=gen)[: int(max_pairs)]).values
        ii, jj = ii[sel], jj[sel]
    return ii, jj


def _ics_prepare(latents: Any, ds: Optional[Sequence[int]], n_items: int, seed: int,
                 max_pairs: Optional[int]) -> tuple[Tensor, list[int], list[int], Tensor, Tensor]:
    z = torch.as_tensor(latents)
    if z.dim() != 3:
        raise ValueError(f"latents must be (N, T, C), got shape {tuple(z.shape)}")
    N, _, C = z.shape
    if N < 2:
        raise ValueError(f"the ICS needs at least 2 items, got {N}")
    if n_items < 2:
        raise ValueError(f"n_items must be >= 2, got {n_items}")
    ds = default_ds(C) if ds is None else sorted({int(d) for d in ds})
    if not ds or ds[0] < 0 or ds[-1] > C:
        raise ValueError(f"every d must lie in [0, C={C}], got {ds}")
    items = ics_subset(N, n_items, seed)
    ii, jj = ics_pairs(len(items), max_pairs, seed)
    if ii.numel() == 0:
        raise ValueError("max_pairs must be >= 1")
    return z[items], ds, items, ii, jj


def _ics_result(ds: list[int], sums: Sequence[float], e_max_sum: float, n_pairs: int, C: int, items: list[int],
                n_available: int, seed: int, method: str) -> dict[str, Any]:
    absolute = [float(s) / n_pairs for s in sums]
    e_max = float(e_max_sum) / n_pairs
    relative = [a / e_max if e_max > 0 else float("nan") for a in absolute]
    # area under the relative curve over d / C in [0, 1], starting from (0, 1) (d = 0 is z_i itself)
    xs = [0.0] + [d / C for d in ds if d > 0]
    ys = [1.0] + [r for d, r in zip(ds, relative) if d > 0]
    auc = float(sum((xs[k + 1] - xs[k]) * (ys[k + 1] + ys[k]) / 2 for k in range(len(xs) - 1)))
    return {"ds": list(ds), "absolute": absolute, "relative": relative, "e_max": e_max, "n_pairs": int(n_pairs),
            "n_items": len(items), "n_available": int(n_available), "items": list(items), "seed": int(seed),
            "dims": int(C), "auc": auc, "method": method}


def ics(decoder: Any, latents: Any, ds: Optional[Sequence[int]] = None, n_items: int = 200, seed: int = 0,
        batch_size: int = 64, max_pairs: Optional[int] = None) -> dict[str, Any]:
    """Interpolation contribution score (METHOD §11), batched.

    latents: (N, T, C) (means or samples). Uses a seeded subset of min(n_items, N) items (all of them when
    N <= n_items) and all their ordered pairs (``max_pairs``: a seeded subset of the pairs, an estimate).
    ds: dimensions counts to replace (default 2, 4, ..., C). Returns ``{"ds", "absolute", "relative", "e_max",
    "n_pairs", "n_items", "n_available", "items", "seed", "dims", "auc", "method"}``; ``auc`` is the area under
    relative_d over d / C in [0, 1] with the point (0, 1) added (lower: more concentrated).

    Every item is decoded once; for a chunk of pairs the z̃ of every d are built at once (a per-pair rank of
    the dimensions, a mask rank < d, ``torch.where`` between the gathered z_i and z_j) and decoded as one batch of
    about ``batch_size``. d = 0 reuses D(z_i) and d = C gives 0 exactly (z̃ = z_j).
    """
    z, ds, items, ii, jj = _ics_prepare(latents, ds, n_items, seed, max_pairs)
    n_available = torch.as_tensor(latents).shape[0]
    n, _, C = z.shape
    ref = _param(decoder)
    z = z.to(ref.device, ref.dtype)
    was_training = getattr(decoder, "training", False)
    decoder.eval()
    P = ii.numel()
    sums = [0.0] * len(ds)
    e_max_sum = 0.0
    with torch.no_grad():
        # every item that takes part in a pair is decoded once: D(z_i) and D(z_j) are looked up, never recomputed
        used = torch.unique(torch.cat([ii, jj]))
        dec_used = decode(decoder, z[used.to(z.device)], batch_size).to(ref.device)
        dec = torch.zeros(n, dec_used.shape[1], dtype=dec_used.dtype, device=ref.device)
        dec[used.to(ref.device)] = dec_used
        L = dec.shape[1]
        mu = time_means(z)  # (n, C)
        # E_max (d = 0): z̃ = z_i
        chunk = max(1, (1 << 22) // max(1, L))
        for s in range(0, P, chunk):
            a, b = ii[s:s + chunk].to(ref.device), jj[s:s + chunk].to(ref.device)
            e0 = (dec[a] - dec[b]).square().mean(dim=1)
            e_max_sum += float(e0.double().sum())
            if 0 in ds:
                sums[ds.index(0)] += float(e0.double().sum())
        todo = [k for k, d in enumerate(ds) if 0 < d < C]  # d = C: z̃ = z_j, error exactly 0
        if todo:
            per = max(1, batch_size // len(todo))
            thresholds = torch.tensor([ds[k] for k in todo], device=ref.device)[:, None, None]  # (nd, 1, 1)
            arange_c = torch.arange(C, device=ref.device)
            for s in range(0, P, per):
                a, b = ii[s:s + per].to(ref.device), jj[s:s + per].to(ref.device)
                p = a.numel()
                order = torch.argsort((mu[a] - mu[b]).square(), dim=1, descending=True, stable=True)  # (p, C)
                rank = torch.empty_like(order).scatter_(1, order, arange_c.expand(p, C))  # rank of every dim
                mask = rank.unsqueeze(0) < thresholds  # (nd, p, C)
                z_tilde = torch.where(mask[:, :, None, :], z[b].unsqueeze(0), z[a].unsqueeze(0))  # (nd, p, T, C)
                out = decoder(z_tilde.reshape(-1, *z.shape[1:])).reshape(len(todo), p, -1)
                err = (out - dec[b].unsqueeze(0)).square().mean(dim=2).double().sum(dim=1)  # (nd,)
                for slot, k in enumerate(todo):
                    sums[k] += float(err[slot])
    decoder.train(was_training)
    return _ics_result(ds, sums, e_max_sum, P, C, items, n_available, seed, "batched")


def ics_naive(decoder: Any, latents: Any, ds: Optional[Sequence[int]] = None, n_items: int = 200, seed: int = 0,
              batch_size: int = 64, max_pairs: Optional[int] = None) -> dict[str, Any]:
    """The ICS with a plain per-pair, per-d loop of single-item decodes (same subset, pairs and math as :func:`ics`).

    D(z_i) and D(z_j) are decoded again for every pair, as the reference does. ``batch_size`` is ignored.
    """
    z, ds, items, ii, jj = _ics_prepare(latents, ds, n_items, seed, max_pairs)
    n_available = torch.as_tensor(latents).shape[0]
    C = z.shape[2]
    ref = _param(decoder)
    z = z.to(ref.device, ref.dtype)
    was_training = getattr(decoder, "training", False)
    decoder.eval()
    sums = [0.0] * len(ds)
    e_max_sum = 0.0
    with torch.no_grad():
        for a, b in zip(ii.tolist(), jj.tolist()):
            zi, zj = z[a], z[b]
            d_i = decoder(zi.unsqueeze(0)).reshape(-1)
            d_j = decoder(zj.unsqueeze(0)).reshape(-1)
            e_max_sum += float((d_i - d_j).square().mean().double())
            for k, d in enumerate(ds):
                sel = top_dims(zi, zj, d)
                z_tilde = zi.clone()
                z_tilde[:, sel] = zj[:, sel]
                out = decoder(z_tilde.unsqueeze(0)).reshape(-1)
                sums[k] += float((out - d_j).square().mean().double())
    decoder.train(was_training)
    return _ics_result(ds, sums, e_max_sum, ii.numel(), C, items, n_available, seed, "naive")


# --------------------------------------------------------------------------------------------------
# Latents of dataset items (for the CLI)
# --------------------------------------------------------------------------------------------------


def encode_items(encoder: Any, dataset: Any, indices: Sequence[int], output: int, mode: str = "mean", seed: int = 0,
                 batch_size: int = 32, device: Union[str, torch.device] = "cpu") -> Tensor:
    """Latents (N, T, C) of ``dataset`` items ``indices`` at encoder output ``output`` (eval, no_grad; on the CPU).

    ``mode="sample"`` draws the posterior samples with a generator seeded by ``seed``.
    """
    device = torch.device(device)
    outs = []
    gen = torch.Generator(device=device).manual_seed(int(seed)) if mode == "sample" else None
    encoder.eval()
    with torch.no_grad():
        for s in range(0, len(indices), batch_size):
            wave = torch.stack([dataset[i].wave.reshape(1, -1) for i in indices[s:s + batch_size]]).float().to(device)
            outs.append(encoder.encode(wave, mode=mode, upto=output, generator=gen)[output].cpu())
    if not outs:
        raise UserError("no items to encode")
    return torch.cat(outs)


def find_item(dataset: Any, key: Union[int, str]) -> int:
    """A dataset index from an index or a file name (stem or name) of one of its items."""
    text = str(key).strip()
    try:
        idx = int(text)
    except ValueError:
        idx = None
    n = len(dataset)
    if idx is not None:
        if not -n <= idx < n:
            raise UserError(f"item {idx} out of range: the split has {n} items")
        return idx % n
    paths = [getattr(it, "path", None) for it in getattr(dataset, "items", [])]
    if len(paths) != n or any(p is None for p in paths):
        paths = [dataset[i].path for i in range(n)]
    for i, p in enumerate(paths):
        if Path(str(p)).stem == text or Path(str(p)).name == text:
            return i
    raise UserError(f"no item named {text!r} in the split ({n} items); pass an index or a file stem")


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, data: bool) -> None:
    p.add_argument("--run", required=True, help="run directory of the trained encoder")
    p.add_argument("--decoder", default=None, help="decoder.pt (default RUN/decoders/module<M>/decoder.pt with --module)")
    p.add_argument("--module", default=None, help="encoder output whose default decoder to use (index or name)")
    if data:
        p.add_argument("--data", required=True, help="dataset whose items give the latents")
        p.add_argument("--split", choices=["train", "test"], default="test")
    else:
        p.add_argument("--data", default=None, help="dataset (only with --base item)")
        p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--mode", choices=["mean", "sample"], default=None,
                   help="latents as posterior means or samples (default: the decoder's training mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", required=True, help="output folder")


def register(subparsers: Any) -> None:
    t = subparsers.add_parser("traverse", help="decode a latent while sweeping one dimension",
                              description="Latent traversal (METHOD §10). Example: smooth-infomax traverse --run runs/sim "
                                          "--module 1 --dim 3 --out out/traverse")
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

    s = subparsers.add_parser("sample", help="decode latents drawn from N(0, I)",
                              description="Decode prior samples N(0, I) of the decoder's latent shape.")
    s.add_argument("--run", required=True)
    s.add_argument("--decoder", default=None)
    s.add_argument("--module", default=None)
    s.add_argument("--n", type=int, default=5)
    s.add_argument("--frames", type=int, default=None, help="frames per latent (default: the decoder's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_cmd_sample)

    c = subparsers.add_parser("ics", help="interpolation contribution score of a decoder",
                              description="The ICS (METHOD §11) on a seeded subset of a split's items; writes ics.json "
                                          "and ics.png.")
    _common(c, data=True)
    c.add_argument("--n-items", type=int, default=200, help="items (all when the split has fewer)")
    c.add_argument("--ds", default=None,
                   help="comma-separated d values (default the powers of two 2, 4, 8, ... below C, then C)")
    c.add_argument("--max-pairs", type=int, default=None, help="estimate on a seeded subset of the ordered pairs")
    c.add_argument("--naive", action="store_true", help="use the per-pair loop (slow; for checking)")
    c.set_defaults(func=_cmd_ics)


def _load_tools(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(decoder, encoder or None, run config) for a CLI call, checking that they belong together."""
    import dataclasses

    from .decoder import load_decoder, resolve_device, resolve_output
    from .train import load, run_config

    cfg = run_config(args.run)
    device = resolve_device(getattr(args, "device", "cpu"))
    if args.decoder:
        path = Path(args.decoder)
    elif args.module is not None:
        try:
            idx = resolve_output(cfg.model, args.module)
        except ValueError as exc:
            raise UserError(f"--module: {exc}") from None
        path = Path(args.run) / "decoders" / f"module{idx}" / "decoder.pt"
        if not path.exists():
            raise UserError(f"{path} does not exist; train it with 'smooth-infomax decoder train --run {args.run} "
                            f"--data DATA --module {idx}' or pass --decoder")
    else:
        raise UserError("pass --decoder PATH or --module M (to use RUN/decoders/module<M>/decoder.pt)")
    decoder = load_decoder(path, device=str(device))
    if dataclasses.asdict(decoder.model_config) != dataclasses.asdict(cfg.model):
        raise UserError(f"{path} was trained for another encoder architecture than {args.run}/config.yaml; "
                        f"pass the matching --run")
    return decoder, cfg, device


def _latents(args: argparse.Namespace, decoder: Any, cfg: Any, device: Any, keys: Sequence[Union[int, str]] = (),
             n_items: Optional[int] = None) -> tuple[Tensor, list[int], Any]:
    """Latents of the named items (keys) or of the ICS subset (n_items) of --data's split."""
    from .data import detect_layout, open_dataset
    from .train import data_view, load

    if not args.data:
        raise UserError("this command needs --data DATASET for the items' latents")
    layout = cfg.data.layout if cfg.data.layout != "auto" else detect_layout(args.data)
    dataset = open_dataset(args.data, split=args.split, layout=layout, view=decoder.info.get("view") or data_view(cfg, layout),
                           sample_rate=cfg.data.sample_rate, crop=decoder.n_samples, random_crop=False,
                           split_scheme=cfg.data.split_scheme)
    if len(dataset) == 0:
        raise UserError(f"{args.data}: the {args.split} split is empty")
    indices = [find_item(dataset, k) for k in keys] if n_items is None else ics_subset(len(dataset), n_items, args.seed)
    encoder = load(args.run, device=str(device))
    mode = args.mode or decoder.info.get("mode", "mean")
    z = encode_items(encoder, dataset, indices, decoder.module_index, mode, args.seed, batch_size=min(args.batch_size, 32),
                     device=device)
    return z, indices, dataset


def _sr(decoder: Any, cfg: Any) -> int:
    return int(decoder.info.get("sample_rate") or cfg.data.sample_rate)


def _cmd_traverse(args: argparse.Namespace) -> int:
    decoder, cfg, device = _load_tools(args)
    sr = _sr(decoder, cfg)
    out = Path(args.out)
    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    values = torch.linspace(args.min, args.max, args.steps)
    if args.base == "item":
        z, idx, _ = _latents(args, decoder, cfg, device, keys=[args.item])
        base, label = z[0], f"item {idx[0]}"
    else:
        base, label = torch.zeros(args.frames or decoder.n_frames, decoder.in_channels), "zero latent"
    summary: dict[str, Any] = {"base": label, "values": values.tolist(), "files": {}}
    for dim in args.dim:
        if not 0 <= dim < decoder.in_channels:
            raise UserError(f"--dim {dim} out of range: the latent has {decoder.in_channels} dimensions")
        waves = traverse(decoder, base, dim, values, args.batch_size)
        files = []
        for k in range(waves.shape[0]):
            path = out / f"traverse_dim{dim}_{k}.wav"
            write_wav(path, waves[k], sr)
            files.append(str(path))
        plot_waves(list(waves), out / f"traverse_dim{dim}.png", sr, titles=[f"dim {dim} = {v:.2f}" for v in values.tolist()],
                   suptitle=f"traversal of dimension {dim} around the {label}")
        summary["files"][str(dim)] = files
    atomic_write_json(out / "traverse.json", summary)
    print(f"traversal of {len(args.dim)} dimension(s) x {args.steps} values written to {out}")
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    decoder, cfg, device = _load_tools(args)
    sr = _sr(decoder, cfg)
    out = Path(args.out)
    if args.steps < 2:
        raise UserError("--steps must be >= 2")
    if args.dims is not None and not 0 <= args.dims <= decoder.in_channels:
        raise UserError(f"--dims must be in [0, {decoder.in_channels}], got {args.dims}")
    z, idx, _ = _latents(args, decoder, cfg, device, keys=[args.item_a, args.item_b])
    lambdas = torch.linspace(0, 1, args.steps)
    zs = interpolate(z[0], z[1], lambdas, dims=args.dims)
    waves = decode(decoder, zs, args.batch_size)
    tag = "interp" if args.dims is None else f"interp_d{args.dims}"
    files = []
    for k in range(waves.shape[0]):
        path = out / f"{tag}_{k}.wav"
        write_wav(path, waves[k], sr)
        files.append(str(path))
    what = "full" if args.dims is None else f"top-{args.dims} dimensions"
    plot_waves(list(waves), out / f"{tag}.png", sr, titles=[f"lambda = {v:.2f}" for v in lambdas.tolist()],
               suptitle=f"interpolation ({what}) from item {idx[0]} to item {idx[1]}")
    summary = {"items": idx, "lambdas": lambdas.tolist(), "dims": args.dims, "files": files,
               "top_dims": None if args.dims is None else top_dims(z[0], z[1], args.dims).tolist()}
    atomic_write_json(out / f"{tag}.json", summary)
    print(f"{len(files)} interpolated waves ({what}) written to {out}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    decoder, cfg, _ = _load_tools(args)
    sr = _sr(decoder, cfg)
    out = Path(args.out)
    if args.n < 1:
        raise UserError("--n must be >= 1")
    waves = sample_prior(decoder, args.n, args.frames, decoder.in_channels, seed=args.seed)
    files = []
    for k in range(waves.shape[0]):
        path = out / f"prior_{k}.wav"
        write_wav(path, waves[k], sr)
        files.append(str(path))
    plot_waves(list(waves), out / "sample.png", sr, titles=[f"N(0, I) sample {k}" for k in range(len(files))])
    atomic_write_json(out / "sample.json", {"n": args.n, "seed": args.seed, "files": files})
    print(f"{len(files)} prior samples written to {out}")
    return 0


def _cmd_ics(args: argparse.Namespace) -> int:
    decoder, cfg, device = _load_tools(args)
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
    z, indices, _ = _latents(args, decoder, cfg, device, n_items=args.n_items)
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


__all__ = ["traverse", "traversal_latents", "interpolate", "top_dims", "rank_dims", "time_means", "sample_prior",
           "ics", "ics_naive", "ics_subset", "ics_pairs", "default_ds", "decode", "encode_items", "find_item",
           "write_wav", "plot_waves", "plot_ics", "TRAVERSAL_RANGE"]
