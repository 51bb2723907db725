"""Disentanglement of a latent code against known discrete generative factors: MIG, DCI and SAP.

All functions take ``z`` (N, D) float latents (e.g. time-mean-pooled module outputs) and ``factors`` (N, F)
integer labels (e.g. consonant, vowel, position, speaker of the artificial speech syllables). Scores lie in
[0, 1]; higher means more disentangled. Factors with a single value carry no information and are skipped.

* :func:`mig` - Mutual Information Gap (Chen et al. 2018, "Isolating sources of disentanglement in VAEs").
* :func:`dci` - Disentanglement, Completeness, Informativeness (Eastwood & Williams 2018, "A framework for the
  quantitative evaluation of disentangled representations").
* :func:`sap` - Separated Attribute Predictability (Kumar et al. 2018, "Variational inference of disentangled
  latent concepts from unlabeled observations"), classification variant.

MIG and the mutual information matrix use equal-width histogram discretisation of each latent dimension, as in
Chen et al. and the ``disentanglement_lib`` evaluation protocol; the plug-in MI estimate has a small positive bias
of about (bins - 1)(levels - 1) / (2N) nats, so use N well above bins x levels.
"""

from __future__ import annotations

import inspect

import numpy as np
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LogisticRegression

__all__ = ["mutual_info_matrix", "mig", "dci", "sap", "discretize", "factor_entropies"]


def _check_inputs(z, factors) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    f = np.asarray(factors)
    if f.ndim == 1:
        f = f[:, None]
    if z.ndim != 2 or f.ndim != 2:
        raise ValueError(f"z must be (N, D) and factors (N, F); got shapes {z.shape} and {f.shape}")
    if z.shape[0] != f.shape[0]:
        raise ValueError(f"z has {z.shape[0]} rows but factors has {f.shape[0]}")
    if z.shape[0] < 4:
        raise ValueError(f"need at least 4 samples, got {z.shape[0]}")
    if not np.all(np.isfinite(z)):
        raise ValueError("z contains NaN or infinite values")
    # Factors may be any labels (ints, strings): map each column to codes 0..K-1.
    codes = np.empty(f.shape, dtype=np.int64)
    for j in range(f.shape[1]):
        codes[:, j] = np.unique(f[:, j], return_inverse=True)[1].reshape(-1)
    return z, codes


def discretize(z, n_bins: int = 20) -> np.ndarray:
    """Equal-width histogram bin index (0 .. n_bins-1) of every entry, per column of ``z`` (N, D)."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    lo = z.min(axis=0)
    width = z.max(axis=0) - lo
    width[width == 0] = 1.0  # a constant column falls into bin 0 (and then carries no information)
    idx = np.floor((z - lo) / width * n_bins).astype(np.int64)
    return np.clip(idx, 0, n_bins - 1)


def _entropy_of_codes(codes: np.ndarray) -> float:
    p = np.bincount(codes) / codes.size
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def factor_entropies(factors) -> np.ndarray:
    """Entropy (nats) of each factor column's empirical distribution, shape (F,)."""
    f = np.asarray(factors)
    if f.ndim == 1:
        f = f[:, None]
    return np.array([_entropy_of_codes(np.unique(f[:, j], return_inverse=True)[1].reshape(-1))
                     for j in range(f.shape[1])])


def _mutual_info_codes(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two code vectors with values 0..A-1 and 0..B-1."""
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb) / a.size
    pa = joint.sum(axis=1, keepdims=True)
    pb = joint.sum(axis=0, keepdims=True)
    mask = joint > 0
    return float(np.sum(joint[mask] * np.log(joint[mask] / (pa @ pb)[mask])))


def mutual_info_matrix(z, factors, n_bins: int = 20) -> np.ndarray:
    """Mutual information (nats) between each discretised latent dimension and each factor, shape (D, F)."""
    z, codes = _check_inputs(z, factors)
    zb = discretize(z, n_bins)
    out = np.zeros((z.shape[1], codes.shape[1]))
    for d in range(z.shape[1]):
        for j in range(codes.shape[1]):
            out[d, j] = _mutual_info_codes(zb[:, d], codes[:, j])
    return np.maximum(out, 0.0)


def mig(z, factors, n_bins: int = 20) -> float:
    """Mutual Information Gap: mean over factors of (largest - second largest MI with a latent dim) / H(factor).

    1 when every factor is fully captured by one dimension and by no other, 0 when the top two dimensions are
    equally informative (or nothing is informative). With a single latent dimension the gap is MI / H.
    """
    z, codes = _check_inputs(z, factors)
    mi = mutual_info_matrix(z, codes, n_bins)
    ent = factor_entropies(codes)
    keep = ent > 0
    if not np.any(keep):
        raise ValueError("every factor is constant; MIG needs at least one factor with two or more values")
    top = np.sort(mi[:, keep], axis=0)[::-1]
    second = top[1] if top.shape[0] > 1 else np.zeros(top.shape[1])
    return float(np.mean((top[0] - second) / ent[keep]))


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, int(round(n * test_fraction))), n - 2)
    return perm[n_test:], perm[:n_test]


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy of each row of a row-stochastic matrix, in the given base (base 1 -> zeros)."""
    if base <= 1:
        return np.zeros(p.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1) / np.log(base)


def _importance(z_tr, y_tr, z_te, y_te, predictor: str, seed: int, n_estimators: int) -> tuple[np.ndarray, float]:
    """Importance of each latent dimension for predicting one factor, and the held-out accuracy."""
    if np.unique(y_tr).size < 2:  # nothing to learn: predict the single training class
        return np.zeros(z_tr.shape[1]), float(np.mean(y_te == y_tr[0]))
    if predictor == "trees":
        # All features are candidates at every split (max_features=None): with feature subsampling, splits that
        # cannot see the informative dimension leak importance to others and DCI drops even for a perfect code.
        model = ExtraTreesClassifier(n_estimators=n_estimators, max_features=None, min_samples_leaf=2,
                                     random_state=seed, n_jobs=1)
        model.fit(z_tr, y_tr)
        imp = model.feature_importances_
    elif predictor == "logistic":
        mean, std = z_tr.mean(axis=0), z_tr.std(axis=0)
        std[std == 0] = 1.0
        z_tr, z_te = (z_tr - mean) / std, (z_te - mean) / std
        # scikit-learn >= 1.8 selects L1 through l1_ratio (``penalty`` deprecated); older versions need penalty.
        if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated":
            l1 = {"l1_ratio": 1.0}
        else:
            l1 = {"penalty": "l1"}
        model = LogisticRegression(**l1, solver="saga", C=0.1, max_iter=2000, random_state=seed)
        model.fit(z_tr, y_tr)
        imp = np.abs(model.coef_).mean(axis=0)
    else:
        raise ValueError(f"unknown DCI predictor {predictor!r}; choose 'trees' or 'logistic'")
    return np.asarray(imp, dtype=np.float64), float(model.score(z_te, y_te))


def dci(z, factors, *, seed: int = 0, predictor: str = "trees", test_fraction: float = 0.25,
        n_estimators: int = 30) -> dict[str, float]:
    """Eastwood & Williams' DCI scores with a per-factor classifier.

    For each factor a classifier predicts the factor from all of ``z`` on a seeded training split
    (``1 - test_fraction`` of the samples). Its importances form column f of the importance matrix R (D, F):

    * ``predictor="trees"`` (default): extremely randomised trees (scikit-learn ``ExtraTreesClassifier``,
      ``n_estimators`` trees, every dimension a candidate at every split, impurity-based importances that sum
      to 1 per factor). Non-linear and deterministic given ``seed``; a few seconds per factor for D = 512,
      N = 2000. (Eastwood & Williams used lasso and random forests, ``disentanglement_lib`` gradient boosting;
      all rank a clean code the same way, gradient boosting is much slower.)
    * ``predictor="logistic"``: L1-regularised logistic regression on standardised z; importance = mean |coef|
      over classes (the linear, Lasso-style variant of the original paper).

    Returns ``disentanglement`` = sum_d rho_d (1 - H_F(P_d.)) with P_d. = R_d. / sum_f R_df and rho_d =
    sum_f R_df / sum R (entropy in base F; with a single factor it is 1 by definition), ``completeness`` =
    mean_f (1 - H_D(P_.f)) with P_.f = R_.f / sum_d R_df (entropy in base D), and ``informativeness`` = mean
    held-out accuracy over factors.
    """
    z, codes = _check_inputs(z, factors)
    keep = [j for j in range(codes.shape[1]) if np.unique(codes[:, j]).size > 1]
    if not keep:
        raise ValueError("every factor is constant; DCI needs at least one factor with two or more values")
    train, test = _split(z.shape[0], test_fraction, seed)
    n_dims = z.shape[1]
    imp = np.zeros((n_dims, len(keep)))
    accs = []
    for col, j in enumerate(keep):
        imp[:, col], acc = _importance(z[train], codes[train, j], z[test], codes[test, j], predictor, seed,
                                       n_estimators)
        accs.append(acc)
    imp = np.abs(imp)
    total = imp.sum()
    n_f = imp.shape[1]
    if total <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": float(np.mean(accs))}
    row_sum = imp.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_rows = np.where(row_sum[:, None] > 0, imp / row_sum[:, None], 1.0 / n_f)
    rho = row_sum / total
    disent = float(np.sum(rho * (1.0 - _entropy_rows(p_rows, n_f)))) if n_f > 1 else 1.0
    col_sum = imp.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_cols = np.where(col_sum[None, :] > 0, imp / col_sum[None, :], 1.0 / n_dims)
    if n_dims > 1:
        comp_per = 1.0 - _entropy_rows(p_cols.T, n_dims)
        comp_per[col_sum <= 0] = 0.0
        complete = float(np.mean(comp_per))
    else:
        complete = 1.0
    return {"disentanglement": disent, "completeness": complete, "informativeness": float(np.mean(accs))}


def _one_dim_accuracies(z_tr: np.ndarray, y_tr: np.ndarray, z_te: np.ndarray, y_te: np.ndarray) -> np.ndarray:
    """Held-out accuracy of a 1-D classifier per latent dimension (vectorised over dimensions), shape (D,).

    The classifier is Gaussian class-conditional in one variable (1-D QDA with class priors): in one dimension
    its decision regions are intervals bounded by learned thresholds, so it is the natural "threshold"
    classifier for a multi-class factor.
    """
    classes = np.unique(y_tr)
    n_cls, n_dims = classes.size, z_tr.shape[1]
    scale = z_tr.var(axis=0) + 1e-12
    scores = np.empty((n_cls, z_te.shape[0], n_dims))
    for c_i, c in enumerate(classes):
        zc = z_tr[y_tr == c]
        mean = zc.mean(axis=0)
        var = zc.var(axis=0) + 1e-3 * scale  # variance floor: a class may be (nearly) constant in a dimension
        prior = np.log(zc.shape[0] / z_tr.shape[0])
        scores[c_i] = prior - 0.5 * np.log(var) - 0.5 * (z_te - mean) ** 2 / var
    pred = classes[np.argmax(scores, axis=0)]
    return np.mean(pred == y_te[:, None], axis=0)


def sap(z, factors, *, seed: int = 0, test_fraction: float = 0.25) -> float:
    """Separated Attribute Predictability (classification variant), in [0, 1].

    For each factor and each latent dimension, a 1-D classifier (see ``_one_dim_accuracies``) is fitted on a
    seeded training split and scored on the held-out split; the score is the gap between the best and second-best
    dimension's accuracy, averaged over factors. High when each factor is predictable from exactly one dimension.
    """
    z, codes = _check_inputs(z, factors)
    train, test = _split(z.shape[0], test_fraction, seed)
    gaps = []
    for j in range(codes.shape[1]):
        y = codes[:, j]
        if np.unique(y).size < 2:
            continue
        acc = _one_dim_accuracies(z[train], y[train], z[test], y[test])
        top = np.sort(acc)[::-1]
        gaps.append(top[0] - (top[1] if top.size > 1 else 0.0))
    if not gaps:
        raise ValueError("every factor is constant; SAP needs at least one factor with two or more values")
    return float(np.mean(gaps))
