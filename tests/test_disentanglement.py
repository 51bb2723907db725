"""MIG, DCI and SAP on constructed latents with known factors."""

from __future__ import annotations

import numpy as np
import pytest

from smooth_infomax.analysis import dci, mig, mutual_info_matrix, sap
from smooth_infomax.analysis.disentanglement import discretize, factor_entropies

N = 1200


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    factors = np.column_stack([rng.integers(0, 10, N), rng.integers(0, 8, N), rng.integers(0, 6, N)])
    std = (factors - factors.mean(0)) / factors.std(0)
    copy = np.column_stack([std + 0.05 * rng.standard_normal(std.shape), rng.standard_normal((N, 2))])
    noise = rng.standard_normal((N, 5))
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    rotated = np.column_stack([std @ q + 0.05 * rng.standard_normal(std.shape), rng.standard_normal((N, 2))])
    return factors, copy, noise, rotated


def test_mutual_info_matrix_shape_and_values(data):
    factors, copy, _, _ = data
    mi = mutual_info_matrix(copy, factors, n_bins=20)
    assert mi.shape == (5, 3)
    ent = factor_entropies(factors)
    # dimension j copies factor j: MI close to the factor entropy; other entries near 0
    assert np.allclose(np.diag(mi[:3]), ent, rtol=0.02)
    off = mi.copy()
    off[np.arange(3), np.arange(3)] = 0
    assert off.max() < 0.1


def test_mig_axis_aligned_vs_noise_vs_rotated(data):
    factors, copy, noise, rotated = data
    m_copy, m_noise, m_rot = mig(copy, factors), mig(noise, factors), mig(rotated, factors)
    assert m_copy > 0.8
    assert m_noise < 0.05
    assert m_rot < m_copy - 0.3


def test_dci(data):
    factors, copy, noise, rotated = data
    good = dci(copy, factors, seed=0, n_estimators=10)
    bad = dci(noise, factors, seed=0, n_estimators=10)
    rot = dci(rotated, factors, seed=0, n_estimators=10)
    assert set(good) == {"disentanglement", "completeness", "informativeness"}
    assert good["disentanglement"] > 0.8 and good["completeness"] > 0.8 and good["informativeness"] > 0.9
    assert bad["disentanglement"] < 0.2 and bad["completeness"] < 0.2 and bad["informativeness"] < 0.3
    assert rot["disentanglement"] < good["disentanglement"] - 0.3
    assert all(0.0 <= v <= 1.0 for d in (good, bad, rot) for v in d.values())


def test_dci_logistic(data):
    factors, copy, noise, _ = data
    assert dci(copy, factors, predictor="logistic")["disentanglement"] > 0.8
    assert dci(noise, factors, predictor="logistic")["disentanglement"] < 0.2


def test_dci_deterministic(data):
    factors, copy, _, _ = data
    assert dci(copy[:300], factors[:300], seed=4, n_estimators=5) == dci(copy[:300], factors[:300], seed=4,
                                                                          n_estimators=5)


def test_sap(data):
    factors, copy, noise, rotated = data
    s_copy, s_noise, s_rot = sap(copy, factors), sap(noise, factors), sap(rotated, factors)
    assert s_copy > 0.6
    assert s_noise < 0.05
    assert s_rot < s_copy - 0.3


def test_constant_factor_is_skipped(data):
    factors, copy, _, _ = data
    with_const = np.column_stack([factors, np.zeros(N, dtype=int)])
    assert mig(copy, with_const) == pytest.approx(mig(copy, factors))
    assert sap(copy, with_const) == pytest.approx(sap(copy, factors))
    with pytest.raises(ValueError, match="constant"):
        mig(copy, np.zeros((N, 2), dtype=int))


def test_string_factors_and_single_dim():
    rng = np.random.default_rng(0)
    labels = rng.choice(["a", "i", "u"], size=300)
    z = (labels == "i").astype(float) + 2 * (labels == "u") + 0.01 * rng.standard_normal(300)
    assert mig(z, labels) > 0.9  # one latent dim: the gap is MI / H
    assert dci(z, labels, n_estimators=5)["disentanglement"] == 1.0  # one factor: trivially disentangled


def test_discretize_constant_column():
    z = np.column_stack([np.zeros(10), np.arange(10.0)])
    b = discretize(z, 5)
    assert b[:, 0].tolist() == [0] * 10 and b[:, 1].min() == 0 and b[:, 1].max() == 4


def test_bad_inputs():
    with pytest.raises(ValueError, match="rows"):
        mig(np.zeros((10, 2)), np.zeros((9, 1), dtype=int))
    with pytest.raises(ValueError, match="predictor"):
        dci(np.random.default_rng(0).standard_normal((20, 2)), np.arange(20) % 2, predictor="gbt")
