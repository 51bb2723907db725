"""How close latents are to the N(0, I) prior, and which dimensions collapsed.

* :func:`aggregate_kl_to_standard_normal` - KL(q(z) || N(0, I)) of the aggregate posterior q(z) = mean_x q(z|x),
  estimated with the moment-matched Gaussian; :func:`aggregate_kl_per_dim` - the same per dimension (marginals).
* :func:`active_dimensions` - Burda et al. (2016) activity: a dimension is active when the posterior mean varies
  across the data, Var_x(E_q[z_d | x]) > threshold (0.01 in the paper). Collapsed dimensions (posterior equal to
  the prior for every input) are inactive.
* :func:`per_dim_moments` - mean, std, skewness and excess kurtosis per dimension (0, 1, 0, 0 under N(0, 1)).
* :func:`gaussianity_report` - all of the above in one JSON-ready dict.

Inputs are (N, D) arrays: rows are frames or items. Accepts numpy arrays and CPU torch tensors.
"""

from __future__ import annotations

import numpy as np

__all__ = ["aggregate_kl_to_standard_normal", "aggregate_kl_per_dim", "active_dimensions", "per_dim_moments",
           "gaussianity_report"]


def _matrix(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D) with N >= 2, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _aggregate_moments(mu, logvar) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of the aggregate posterior (or of the samples when logvar is None).

    With posteriors N(mu_n, diag exp(logvar_n)), the mixture mean_n q(z | x_n) has mean mean_n mu_n and, by the law
    of total covariance, covariance Cov_n(mu_n) + diag(mean_n exp(logvar_n)). Population (1/N) moments.
    """
    m = _matrix(mu, "mu")
    mean = m.mean(axis=0)
    centred = m - mean
    cov = centred.T @ centred / m.shape[0]
    if logvar is not None:
        lv = _matrix(logvar, "logvar")
        if lv.shape != m.shape:
            raise ValueError(f"logvar has shape {lv.shape} but mu has {m.shape}")
        cov = cov + np.diag(np.exp(lv).mean(axis=0))
    return mean, cov


def aggregate_kl_to_standard_normal(mu, logvar=None) -> float:
    """KL(N(m, S) || N(0, I)) = 1/2 (tr S + m'm - D - log det S), in nats, for the moment-matched Gaussian.

    ``mu`` (N, D) are posterior means and ``logvar`` (N, D) the posterior log-variances; the aggregate posterior's
    moments then include the average posterior variance. Without ``logvar``, ``mu`` is treated as samples of the
    aggregate posterior (e.g. sampled latents). 0 exactly when the moments match the prior; ``inf`` when the
    covariance is singular (e.g. a dimension with zero variance). Note that the full KL equals the sum of the
    per-dimension KLs (:func:`aggregate_kl_per_dim`) plus the Gaussian total correlation of S.
    """
    mean, cov = _aggregate_moments(mu, logvar)
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0 or not np.isfinite(logdet):
        return float("inf")
    return float(0.5 * (np.trace(cov) + mean @ mean - cov.shape[0] - logdet))


def aggregate_kl_per_dim(mu, logvar=None) -> np.ndarray:
    """Per-dimension KL of the moment-matched marginal to N(0, 1): 1/2 (s^2 + m^2 - 1 - log s^2), shape (D,).

    ``inf`` for a dimension with zero aggregate variance.
    """
    mean, cov = _aggregate_moments(mu, logvar)
    var = np.diag(cov).copy()
    out = np.full(var.shape, np.inf)
    ok = var > 0
    out[ok] = 0.5 * (var[ok] + mean[ok] ** 2 - 1.0 - np.log(var[ok]))
    return out


def active_dimensions(mu, threshold: float = 0.01) -> tuple[int, np.ndarray]:
    """Burda et al. activity: (number of dims with Var_x(mu_d) > threshold, the per-dim variances (D,)).

    ``mu`` (N, D) are the posterior means E_q[z | x] of N inputs (not samples: sampling noise would make a
    collapsed dimension look active). Population variance (1/N).
    """
    m = _matrix(mu, "mu")
    var = m.var(axis=0)
    return int(np.sum(var > threshold)), var


def per_dim_moments(z) -> dict[str, np.ndarray]:
    """Per-dimension mean, std, skewness and excess kurtosis (population moments), arrays of shape (D,).

    Skewness and kurtosis are NaN for a constant dimension.
    """
    x = _matrix(z, "z")
    mean = x.mean(axis=0)
    c = x - mean
    m2 = np.mean(c ** 2, axis=0)
    std = np.sqrt(m2)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(m2 > 0, np.mean(c ** 3, axis=0) / np.where(m2 > 0, m2, 1.0) ** 1.5, np.nan)
        kurt = np.where(m2 > 0, np.mean(c ** 4, axis=0) / np.where(m2 > 0, m2, 1.0) ** 2 - 3.0, np.nan)
    return {"mean": mean, "std": std, "skew": skew, "excess_kurtosis": kurt}


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _nums(values) -> list:
    return [_num(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def _summary(values: np.ndarray) -> float | None:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.mean()) if finite.size else None


def gaussianity_report(z, mu=None, logvar=None, *, threshold: float = 0.01) -> dict:
    """All Gaussianity and collapse statistics of latents ``z`` (N, D) in one JSON-ready dict.

    Keys: ``n``, ``dim``, ``moments`` (per-dim lists), ``moments_summary`` (means of |mean|, std, |skew|,
    |excess kurtosis| over dimensions), ``kl_samples`` / ``kl_samples_per_dim`` (moment-matched KL of ``z`` itself
    to N(0, I)). With the posterior means ``mu`` (N, D) also ``active_dimensions`` (count), ``active_threshold``,
    ``posterior_mean_variance`` (per dim), ``kl_aggregate_posterior`` / ``kl_aggregate_posterior_per_dim`` (using
    ``logvar`` when given), and with ``logvar`` ``mean_posterior_variance`` (per dim; about 1 for a collapsed
    dimension whose posterior equals the prior). Non-finite values (an infinite KL for a zero-variance dimension,
    the skewness of a constant one) are reported as None.
    """
    x = _matrix(z, "z")
    moments = per_dim_moments(x)
    report: dict = {
        "n": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "moments": {k: _nums(v) for k, v in moments.items()},
        "moments_summary": {
            "mean_abs_mean": _summary(moments["mean"]),
            "mean_std": float(np.mean(moments["std"])),
            "mean_abs_skew": _summary(moments["skew"]),
            "mean_abs_excess_kurtosis": _summary(moments["excess_kurtosis"]),
        },
        "kl_samples": _num(aggregate_kl_to_standard_normal(x)),
        "kl_samples_per_dim": _nums(aggregate_kl_per_dim(x)),
    }
    if mu is not None:
        m = _matrix(mu, "mu")
        if m.shape[1] != x.shape[1]:
            raise ValueError(f"mu has {m.shape[1]} dimensions but z has {x.shape[1]}")
        count, var = active_dimensions(m, threshold)
        report.update({
            "active_dimensions": count,
            "active_threshold": float(threshold),
            "posterior_mean_variance": _nums(var),
            "kl_aggregate_posterior": _num(aggregate_kl_to_standard_normal(m, logvar)),
            "kl_aggregate_posterior_per_dim": _nums(aggregate_kl_per_dim(m, logvar)),
        })
        if logvar is not None:
            report["mean_posterior_variance"] = _nums(np.exp(_matrix(logvar, "logvar")).mean(axis=0))
    elif logvar is not None:
        raise ValueError("logvar was given without mu; pass the posterior means as well")
    return report
