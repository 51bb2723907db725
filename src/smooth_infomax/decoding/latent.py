"""Latent-space maths on a decoder: traversal, interpolation, prior samples and the ICS (no files, no data).

* :func:`traverse` varies one latent dimension over a range (e.g. ``linspace(-2.68, 2.68, n)``, about 99 % of
  N(0, 1)) with the others fixed, around the zero latent or an utterance's latent (METHOD §10).
* :func:`interpolate` blends two latents: fully, z(λ) = λ·z2 + (1 − λ)·z1, or partially, only in the top-d
  dimensions ranked by the squared difference of the two latents' time means (:func:`top_dims`), the other
  dimensions staying at z1. With d = C and λ = 1 the result is z2 exactly.
* :func:`sample_prior` decodes N(0, I) latents (meaningful for Gaussian-posterior models only).
* :func:`ics` is the interpolation contribution score of METHOD §11: for every ordered pair (i, j), i ≠ j, of a
  seeded subset of min(n_items, N) latents, the rows S_d of z_i (the d dimensions with the largest squared
  difference of time means) are replaced by z_j's; e_d = mean over samples of (D(z̃) − D(z_j))², E_d its mean
  over pairs, E_max the d = 0 case mean((D(z_i) − D(z_j))²); relative_d = E_d / E_max (0 at d = C). It decodes
  every z_j once and builds the z̃ of many pairs at once with index gathers, decoded in batches.
  :func:`ics_naive` computes the same numbers with a plain per-pair loop (for tests and the benchmark).

Latent layout everywhere: (T, C) for one item and (N, T, C) for a set, as the feature sources return them.
A decoder is any module mapping (B, T, C) to (B, 1, L) (see :mod:`smooth_infomax.decoding.model`).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

TRAVERSAL_RANGE = 2.68  # about 99 % of the N(0, 1) mass (METHOD §10)

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
        raise ValueError(f"z1 and z2 must be equal-shape (..., T, C) latents, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
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
        raise ValueError(f"z1 and z2 must be (T, C) latents of equal shape, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
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


__all__ = ["traverse", "traversal_latents", "interpolate", "top_dims", "rank_dims", "time_means", "sample_prior",
           "ics", "ics_naive", "ics_subset", "ics_pairs", "default_ds", "decode", "TRAVERSAL_RANGE"]
