"""Total correlation (multi-information) of a set of latent dimensions, in nats.

For a random vector z = (z_1, ..., z_D) the total correlation is

    TC(z) = KL(p(z) || prod_i p(z_i)) = sum_i H(z_i) - H(z) >= 0,

zero exactly when the dimensions are independent. Three estimators are offered by :func:`total_correlation`:

``"gaussian"`` (default)
    The value TC would have if z were Gaussian with the sample covariance S. With R the correlation matrix
    (R_ij = S_ij / sqrt(S_ii S_jj)),

        TC = 1/2 (sum_i log S_ii - log det S) = -1/2 log det R.

    It depends only on R, so it is invariant to per-dimension scale and shift (this is what makes GIM's
    unconstrained latents comparable to SIM's unit-scale latents). It captures linear (second-order)
    dependence only; for non-Gaussian data it is the TC of the moment-matched Gaussian (a well-defined,
    consistent statistic, but not the true TC: it misses non-linear dependence). A singular correlation matrix
    (a constant dimension, exact linear dependence, or D >= N) gives an infinite Gaussian TC, which is reported
    as a :class:`ValueError`. The plug-in value is biased upwards by about D (D - 1) / (4 N) nats;
    ``debias=True`` removes that bias exactly for Gaussian data.

``"knn"``
    A non-parametric k-nearest-neighbour estimator: Kraskov, Stoegbauer & Grassberger (2004), "Estimating mutual
    information", algorithm 1, generalised from two to D variables. See :func:`knn_total_correlation` for the
    derivation. Each column is standardised first, and since every term only counts neighbours, the estimate
    is invariant to per-dimension scale and shift (with ``transform="rank"`` to any monotone per-dimension map).

``"reference"``
    The estimator of the paper's code (kept for parity with its numbers only; METHOD.md section 13): a Gaussian
    kernel density estimate with a *fixed* bandwidth of 0.1 on every 1-D marginal and on the D-dimensional joint,
    entropies by resubstitution (H = -mean log p_hat at the very points the density was fitted on), and
    TC = sum_i H(z_i) - H(z). It is strongly biased (resubstitution, and a fixed bandwidth that is far too small
    for the joint in high dimension) and **not scale-invariant** (multiplying the data by a constant changes the
    result), so it must not be used to compare models whose latents have different scales.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma
from sklearn.neighbors import KernelDensity

__all__ = ["total_correlation", "gaussian_total_correlation", "knn_total_correlation",
           "reference_total_correlation"]

METHODS = ("gaussian", "knn", "reference")


def _as_samples(x, name: str = "x", min_rows: int = 2) -> np.ndarray:
    """Validate an (N, D) sample matrix and return it as float64."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got an array with shape {arr.shape}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ValueError(f"{name} needs at least {min_rows} samples and 1 dimension, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def total_correlation(x, method: str = "gaussian", *, k: int = 5, bandwidth: float = 0.1, seed: int = 0,
                      transform: str = "standardize", debias: bool = False) -> float:
    """Total correlation of the columns of ``x`` (N samples, D dimensions), in nats.

    Parameters
    ----------
    x : array (N, D)
        Samples (rows) of the D-dimensional latent.
    method : {"gaussian", "knn", "reference"}
        Estimator (see the module docstring). ``"gaussian"`` and ``"knn"`` are scale-invariant; ``"reference"``
        is the paper code's biased, scale-dependent fixed-bandwidth KDE, kept for parity only.
    k : int
        Neighbour order of the ``"knn"`` estimator (KSG recommend 2-10; larger k: lower variance, more bias).
    bandwidth : float
        Kernel bandwidth of the ``"reference"`` estimator (the paper uses 0.1, in the data's units).
    seed : int
        Seeds the tiny jitter the ``"knn"`` estimator adds to break ties; the other methods are deterministic.
    transform : {"standardize", "rank"}
        Column preprocessing of the ``"knn"`` estimator.
    debias : bool
        ``"gaussian"`` only: subtract the finite-sample bias (about D (D - 1) / (4 N) nats), exact for Gaussian
        data; see :func:`gaussian_total_correlation`. Recommended when comparing different N or D.

    Raises
    ------
    ValueError
        Bad shapes, non-finite values, an unknown method, or (``"gaussian"``) a singular correlation matrix.
    """
    if method == "gaussian":
        return gaussian_total_correlation(x, debias=debias)
    if method == "knn":
        return knn_total_correlation(x, k=k, seed=seed, transform=transform)
    if method == "reference":
        return reference_total_correlation(x, bandwidth=bandwidth)
    raise ValueError(f"unknown total-correlation method {method!r}; choose one of {', '.join(METHODS)}")


def gaussian_total_correlation(x, *, debias: bool = False) -> float:
    """TC of the moment-matched Gaussian: -1/2 log det(corr(x)) in nats (scale- and shift-invariant).

    The plug-in value is biased upwards by about D (D - 1) / (4 N) nats (sample correlations are never exactly
    zero): 0.17 nats for D = 32, N = 1500, but 16 nats for D = 512, N = 4000. Compare plug-in values only at equal
    D and N. ``debias=True`` subtracts the exact bias for Gaussian data: with N samples, (N - 1) S is Wishart with
    N - 1 degrees of freedom, so E[log det S] = log det Sigma + sum_{i=1..D} psi((N - i) / 2) + D log(2 / (N - 1))
    and E[log S_ii] = log Sigma_ii + psi((N - 1) / 2) + log(2 / (N - 1)), hence

        E[log det R_hat] = log det R + sum_{i=1..D} psi((N - i) / 2) - D psi((N - 1) / 2).

    The debiased value is unbiased for Gaussian data and can be slightly negative.

    Raises :class:`ValueError` when the correlation matrix is singular (a constant column, exact collinearity,
    or fewer samples than dimensions + 1): the Gaussian TC is then infinite.
    """
    arr = _as_samples(x)
    n, d = arr.shape
    if d == 1:
        return 0.0
    centred = arr - arr.mean(axis=0)
    std = np.sqrt(np.mean(centred ** 2, axis=0))
    constant = np.flatnonzero(std <= 1e-12 * (np.abs(arr).max(axis=0) + 1e-300))
    if constant.size:
        shown = ", ".join(str(i) for i in constant[:10]) + (" ..." if constant.size > 10 else "")
        raise ValueError(f"singular covariance: {constant.size} constant dimension(s) ({shown}); "
                         f"drop them (e.g. collapsed latents) before the Gaussian total correlation")
    if n <= d:
        raise ValueError(f"singular covariance: {n} samples for {d} dimensions; the Gaussian total correlation "
                         f"needs more samples than dimensions")
    standardised = centred / std
    corr = standardised.T @ standardised / n
    sign, logdet = np.linalg.slogdet(corr)
    # log det R <= 0 always; a value this small means numerically rank-deficient (exact linear dependence).
    if sign <= 0 or not np.isfinite(logdet) or logdet < -30.0 * d:
        raise ValueError("singular covariance: the dimensions are (numerically) linearly dependent; "
                         "remove redundant dimensions before the Gaussian total correlation")
    if debias:
        expected_shift = np.sum(digamma((n - np.arange(1, d + 1)) / 2.0)) - d * digamma((n - 1) / 2.0)
        return float(-0.5 * (logdet - expected_shift))
    return float(max(-0.5 * logdet, 0.0))


def _preprocess_columns(arr: np.ndarray, transform: str, rng: np.random.Generator) -> np.ndarray:
    if transform == "standardize":
        std = arr.std(axis=0)
        std[std == 0] = 1.0
        out = (arr - arr.mean(axis=0)) / std
    elif transform == "rank":
        # Ranks / N (the empirical copula); tied values are ordered at random (seeded).
        n = arr.shape[0]
        out = np.empty_like(arr)
        for j in range(arr.shape[1]):
            order = np.lexsort((rng.random(n), arr[:, j]))
            out[order, j] = np.arange(n, dtype=np.float64) / n
    else:
        raise ValueError(f"unknown knn transform {transform!r}; choose 'standardize' or 'rank'")
    # KSG's remedy for ties (discrete or repeated values): noise far below any meaningful distance.
    return out + 1e-10 * rng.standard_normal(out.shape)


def knn_total_correlation(x, *, k: int = 5, seed: int = 0, transform: str = "standardize") -> float:
    """KSG-style k-nearest-neighbour estimate of the total correlation, in nats.

    Derivation (KSG algorithm 1 generalised to D one-dimensional variables). Use the max-norm in the joint
    space, and let eps_i be the distance from sample i to its k-th nearest neighbour (excluding itself).
    The Kozachenko-Leonenko estimator with a max-norm ball of radius eps (volume (2 eps)^m in m dimensions) is

        H(z) ~= -psi(k) + psi(N) + D <log 2 eps_i>.

    For a marginal z_j, KSG use the *same* radius eps_i for every point and let the neighbour count vary
    instead: n_j(i) = number of other samples with |z_j - z_j(i)| < eps_i (strictly). The point then has
    n_j(i) + 1 "neighbours" at radius about eps_i, so

        H(z_j) ~= -<psi(n_j(i) + 1)> + psi(N) + <log 2 eps_i>.

    In sum_j H(z_j) - H(z) the <log 2 eps_i> terms cancel (D of them on each side), leaving

        TC ~= psi(k) + (D - 1) psi(N) - < sum_j psi(n_j(i) + 1) >.

    Because the same eps_i is used in the joint and the marginals, the biases of the individual entropy
    estimates largely cancel, which is the point of the KSG construction. The estimate can be slightly negative
    for independent dimensions (sampling noise). Like all k-NN estimators it under-estimates large TC (strong
    dependence in many dimensions needs many samples), so compare values at equal N, D and k.

    Columns are standardised (``transform="standardize"``) or rank-transformed (``"rank"``: copula, invariant
    to any monotone map of each column) first, and a jitter of 1e-10 (seeded) breaks ties. Cost:
    O(N log N) per dimension plus one k-d tree query in D dimensions.
    """
    arr = _as_samples(x)
    n, d = arr.shape
    k = int(k)
    if k < 1 or k >= n:
        raise ValueError(f"k must be between 1 and N - 1 = {n - 1}, got {k}")
    if d == 1:
        return 0.0
    rng = np.random.default_rng(seed)
    data = _preprocess_columns(arr, transform, rng)
    tree = cKDTree(data)
    dist, _ = tree.query(data, k=k + 1, p=np.inf)
    # Shrink by a hair so that the k-th neighbour, which lies exactly at eps_i in its farthest coordinate, is
    # never counted because of rounding in the marginal comparisons below (the counts are strict).
    eps = dist[:, k] * (1.0 - 1e-12)
    total = np.zeros(n)
    for j in range(d):
        col = data[:, j]
        s = np.sort(col)
        inside = np.searchsorted(s, col + eps, side="left") - np.searchsorted(s, col - eps, side="right") - 1
        total += digamma(np.maximum(inside, 0) + 1)
    return float(digamma(k) + (d - 1) * digamma(n) - total.mean())


def reference_total_correlation(x, *, bandwidth: float = 0.1) -> float:
    """The paper code's estimator, for parity only: biased and NOT scale-invariant.

    Fixed-bandwidth Gaussian KDE (scikit-learn ``KernelDensity``) on each marginal and on the joint, resubstitution
    entropies H = -mean log p_hat(x_n) over the same samples that were used to fit, TC = sum_i H(z_i) - H(z).
    Cost O(N^2 D); subsample N for large inputs.
    """
    arr = _as_samples(x)
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")

    def entropy(cols: np.ndarray) -> float:
        kde = KernelDensity(kernel="gaussian", bandwidth=bandwidth).fit(cols)
        return float(-np.mean(kde.score_samples(cols)))

    marginals = sum(entropy(arr[:, [j]]) for j in range(arr.shape[1]))
    return float(marginals - entropy(arr))
