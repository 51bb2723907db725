"""How concentrated information is in few latent dimensions: scalar metrics for probe weights and ICS curves.

The paper reads "SIM concentrates information in fewer dimensions" off a density plot of linear-probe weights
(METHOD.md section 12) and off interpolation-contribution-score curves (section 11), without a scalar. This module
provides the scalars:

* per weight vector w (one class row of a bias-free probe, D entries):
  :func:`participation_ratio` (Sigma w^2)^2 / Sigma w^4 - the "effective number of dimensions" (1 for a one-hot
  row, D for a uniform one); :func:`gini` of |w| (0 uniform, (D-1)/D one-hot); :func:`dims_for_energy` - the
  number of largest-|w| dimensions that hold a fraction of Sigma w^2; :func:`top_k_energy`;
* :func:`concentration_metrics` for a whole (classes, D) matrix, per class row and averaged;
* :func:`normalize_weights` - our per-row max-|w| scaling (keeps zero and sign) and the reference's affine
  per-row min-max rescale (which does not);
* :func:`ics_dims_to_reach` and :func:`ics_auc` - scalars of an ICS curve (relative error vs number of
  interpolated dimensions d).

All the weight metrics are invariant to scaling w by a positive constant. They are only comparable between models
whose probe inputs have comparable scales: standardise the latents before fitting the probe.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = ["participation_ratio", "gini", "dims_for_energy", "top_k_energy", "concentration_metrics",
           "normalize_weights", "ics_dims_to_reach", "ics_auc"]


def _weights(w, name: str = "w") -> np.ndarray:
    arr = np.asarray(w, dtype=np.float64)
    if arr.ndim not in (1, 2) or arr.shape[-1] < 1:
        raise ValueError(f"{name} must be a vector (D,) or a matrix (rows, D), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _out(values: np.ndarray, vector: bool):
    return float(values[0]) if vector else values


def participation_ratio(w):
    """(Sigma w^2)^2 / Sigma w^4: effective number of dimensions, in [1, D].

    A vector gives a float, a matrix gives one value per row (an array). An all-zero row gives NaN.
    """
    arr = _weights(w)
    rows = np.atleast_2d(arr)
    # Scale each row by its max |w| first: the ratio is scale-free and this avoids under/overflow of w^4.
    peak = np.abs(rows).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = rows / np.where(peak > 0, peak, 1.0)
        sq = r ** 2
        pr = sq.sum(axis=1) ** 2 / (sq ** 2).sum(axis=1)
    pr[peak[:, 0] == 0] = np.nan
    return _out(pr, arr.ndim == 1)


def gini(w):
    """Gini coefficient of |w|: 0 when all |w| are equal, (D-1)/D when a single entry is non-zero.

    G = Sigma_i (2i - D - 1) a_(i) / (D Sigma a) with a_(1) <= ... <= a_(D) the sorted |w|. A vector gives a float,
    a matrix one value per row; an all-zero row gives NaN.
    """
    arr = _weights(w)
    rows = np.sort(np.abs(np.atleast_2d(arr)), axis=1)
    d = rows.shape[1]
    coef = 2.0 * np.arange(1, d + 1) - d - 1
    total = rows.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (rows @ coef) / (d * total)
    g[total == 0] = np.nan
    return _out(g, arr.ndim == 1)


def _energy_cumsum(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sq = np.sort(rows ** 2, axis=1)[:, ::-1]
    total = sq.sum(axis=1)
    return np.cumsum(sq, axis=1), total


def dims_for_energy(w, fraction: float = 0.9):
    """Smallest number of dimensions (largest |w| first) whose Sigma w^2 is at least ``fraction`` of the total.

    An int for a vector, an int array for a matrix (one per row); an all-zero row gives 0.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    arr = _weights(w)
    cum, total = _energy_cumsum(np.atleast_2d(arr))
    # Relative tolerance so that e.g. exactly 90% of the energy in 9 of 10 equal dims counts as reached.
    reached = cum >= (fraction * total)[:, None] * (1.0 - 1e-12)
    counts = np.argmax(reached, axis=1) + 1
    counts[total == 0] = 0
    return int(counts[0]) if arr.ndim == 1 else counts.astype(np.int64)


def top_k_energy(w, k: int):
    """Fraction of Sigma w^2 held by the k largest |w| (k is clipped to D). NaN for an all-zero row."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    arr = _weights(w)
    cum, total = _energy_cumsum(np.atleast_2d(arr))
    kk = min(int(k), cum.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = cum[:, kk - 1] / total
    frac[total == 0] = np.nan
    return _out(frac, arr.ndim == 1)


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _list(values: np.ndarray) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]


def concentration_metrics(W, *, fraction: float = 0.9, ks: Iterable[int] = (1, 4, 16)) -> dict:
    """Concentration metrics of a (classes, D) weight matrix (a vector counts as one row), JSON-ready.

    Returns ``{"n_rows", "dim", "energy_fraction", "participation_ratio", "participation_ratio_fraction"
    (PR / D, comparable across D), "gini", "dims_for_energy", "top_k_energy": {"1": ..., "4": ..., "16": ...},
    "per_row": {same keys, lists over rows}}``; the top-level values are means over rows (all-zero rows, whose
    metrics are undefined, are left out of the means and reported as None per row).
    Accepts numpy arrays, nested lists and CPU torch tensors.
    """
    if hasattr(W, "detach"):
        W = W.detach().cpu().numpy()
    rows = np.atleast_2d(_weights(W, "W"))
    d = rows.shape[1]
    pr = participation_ratio(rows)
    g = gini(rows)
    dims = dims_for_energy(rows, fraction).astype(np.float64)
    dims[~np.any(rows != 0, axis=1)] = np.nan
    tops = {str(int(k)): top_k_energy(rows, int(k)) for k in ks}
    return {
        "n_rows": int(rows.shape[0]),
        "dim": int(d),
        "energy_fraction": float(fraction),
        "participation_ratio": _mean(pr),
        "participation_ratio_fraction": _mean(pr / d),
        "gini": _mean(g),
        "dims_for_energy": _mean(dims),
        "top_k_energy": {k: _mean(v) for k, v in tops.items()},
        "per_row": {
            "participation_ratio": _list(pr),
            "gini": _list(g),
            "dims_for_energy": [None if not np.isfinite(v) else int(v) for v in dims],
            "top_k_energy": {k: _list(v) for k, v in tops.items()},
        },
    }


def normalize_weights(W, mode: str = "maxabs") -> np.ndarray:
    """Rescale a weight matrix (rows = classes) for plotting or comparison; returns a new float array.

    ``"maxabs"`` (default): divide each row by its max |w|, so the row lies in [-1, 1] with zero and signs kept
    (all-zero rows stay zero). ``"reference"``: the paper code's transform, kept for parity - per-row min-max
    rescale w' = 2 (w - min) / (max - min) - 1 to [-1, 1], then divide everything by the global max |w'|. It is
    affine, so it does **not** preserve zero (a row's smallest weight always maps to -1, its largest to +1) and
    can flip signs; a constant row maps to zeros. A vector is treated as one row and returned as a vector.
    """
    arr = _weights(W, "W")
    rows = np.atleast_2d(arr).copy()
    if mode == "maxabs":
        peak = np.abs(rows).max(axis=1, keepdims=True)
        out = rows / np.where(peak > 0, peak, 1.0)
    elif mode == "reference":
        lo = rows.min(axis=1, keepdims=True)
        span = rows.max(axis=1, keepdims=True) - lo
        out = np.where(span > 0, 2.0 * (rows - lo) / np.where(span > 0, span, 1.0) - 1.0, 0.0)
        peak = np.abs(out).max()
        if peak > 0:
            out = out / peak
    else:
        raise ValueError(f"unknown weight normalisation {mode!r}; choose 'maxabs' or 'reference'")
    return out[0] if arr.ndim == 1 else out


def _ics_curve(ds, relative_errors) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(ds, dtype=np.float64).reshape(-1)
    r = np.asarray(relative_errors, dtype=np.float64).reshape(-1)
    if d.shape != r.shape or d.size < 1:
        raise ValueError(f"ds and relative_errors must be equally long, non-empty 1-D sequences "
                         f"(got {d.size} and {r.size} values)")
    if np.any(d < 0) or not np.all(np.isfinite(r)):
        raise ValueError("ds must be >= 0 and relative errors finite")
    order = np.argsort(d, kind="stable")
    d, r = d[order], r[order]
    if np.any(np.diff(d) == 0):
        raise ValueError("ds contains repeated values")
    return d, r


def ics_dims_to_reach(ds, relative_errors, level: float = 0.5) -> float:
    """Number of interpolated dimensions needed to bring the ICS relative error down to ``level``.

    The curve is interpolated linearly in log2(d) between measured points (and linearly in d between d = 0 and
    the first positive d when a d = 0 point, relative error 1 by definition, is given). Returns the first
    crossing (curves need not be monotone), ``ds[0]`` when the first point is already at or below ``level``, and
    ``inf`` when the level is never reached in the measured range. Lower = more concentrated.
    """
    d, r = _ics_curve(ds, relative_errors)
    below = np.flatnonzero(r <= level)
    if below.size == 0:
        return float("inf")
    i = int(below[0])
    if i == 0:
        return float(d[0])
    d0, d1, r0, r1 = d[i - 1], d[i], r[i - 1], r[i]
    t = (r0 - level) / (r0 - r1)  # r0 > level >= r1, so 0 < t <= 1
    if d0 == 0:
        return float(d1 * t)
    return float(2.0 ** (np.log2(d0) + t * (np.log2(d1) - np.log2(d0))))


def ics_auc(ds, relative_errors) -> float:
    """Area under the relative ICS curve over log2(d), divided by the log2 range: the curve's mean height.

    Points with d = 0 are ignored (no log). In [0, 1] when the relative errors are; lower = information in fewer
    dimensions. Needs at least two positive d.
    """
    d, r = _ics_curve(ds, relative_errors)
    keep = d > 0
    d, r = d[keep], r[keep]
    if d.size < 2:
        raise ValueError("ics_auc needs at least two points with d > 0")
    x = np.log2(d)
    area = float(np.sum(0.5 * (r[1:] + r[:-1]) * np.diff(x)))
    return area / float(x[-1] - x[0])
