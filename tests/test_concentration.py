"""Concentration metrics of probe weights and ICS-curve scalars on constructed inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from smooth_infomax.analysis import (
    concentration_metrics,
    dims_for_energy,
    gini,
    ics_auc,
    ics_dims_to_reach,
    normalize_weights,
    participation_ratio,
    top_k_energy,
)

D = 64


def one_hot(d: int = D, at: int = 5, value: float = -3.0) -> np.ndarray:
    w = np.zeros(d)
    w[at] = value
    return w


def test_one_hot_row():
    w = one_hot()
    assert participation_ratio(w) == pytest.approx(1.0)
    assert gini(w) == pytest.approx((D - 1) / D)
    assert gini(w) > 0.95
    assert dims_for_energy(w) == 1
    assert top_k_energy(w, 1) == pytest.approx(1.0)


def test_uniform_row():
    w = np.full(D, 0.7) * np.where(np.arange(D) % 2, 1, -1)  # signs do not matter
    assert participation_ratio(w) == pytest.approx(D)
    assert gini(w) == pytest.approx(0.0, abs=1e-12)
    assert dims_for_energy(w, 0.9) == math.ceil(0.9 * D)
    assert dims_for_energy(np.ones(10), 0.9) == 9  # exactly 90% in 9 of 10 equal dims
    assert top_k_energy(w, 16) == pytest.approx(16 / D)
    assert top_k_energy(w, 10 * D) == pytest.approx(1.0)  # k clipped to D


def test_scale_invariance_and_tiny_weights():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(D)
    for f in (participation_ratio, gini, dims_for_energy):
        assert f(w) == pytest.approx(f(1e-30 * w)) and f(w) == pytest.approx(f(1e30 * w))


def test_matrix_gives_per_row_values():
    W = np.stack([one_hot(), np.ones(D)])
    assert np.allclose(participation_ratio(W), [1.0, D])
    assert np.allclose(gini(W), [(D - 1) / D, 0.0])
    assert dims_for_energy(W).tolist() == [1, math.ceil(0.9 * D)]


def test_concentration_metrics_dict():
    W = np.stack([one_hot(), np.ones(D), np.zeros(D)])
    m = concentration_metrics(W)
    json.dumps(m, allow_nan=False)  # JSON-ready: plain floats, None for the undefined all-zero row
    assert m["n_rows"] == 3 and m["dim"] == D
    assert m["participation_ratio"] == pytest.approx((1 + D) / 2)
    assert m["participation_ratio_fraction"] == pytest.approx((1 + D) / 2 / D)
    assert m["per_row"]["participation_ratio"][2] is None
    assert m["per_row"]["dims_for_energy"] == [1, math.ceil(0.9 * D), None]
    assert set(m["top_k_energy"]) == {"1", "4", "16"}
    assert m["top_k_energy"]["1"] == pytest.approx((1 + 1 / D) / 2)
    assert m["gini"] == pytest.approx(((D - 1) / D) / 2)


def test_concentration_ranks_sparse_above_dense():
    rng = np.random.default_rng(1)
    dense = rng.standard_normal((3, D))
    sparse = dense * (rng.random((3, D)) < 0.1)
    a, b = concentration_metrics(sparse), concentration_metrics(dense)
    assert a["participation_ratio"] < b["participation_ratio"]
    assert a["gini"] > b["gini"]
    assert a["dims_for_energy"] < b["dims_for_energy"]


def test_normalize_weights():
    W = np.array([[0.5, -2.0, 0.0, 1.0], [0.1, 0.2, 0.3, 0.4]])
    m = normalize_weights(W)
    assert np.allclose(m, [[0.25, -1.0, 0.0, 0.5], [0.25, 0.5, 0.75, 1.0]])
    r = normalize_weights(W, "reference")
    assert np.allclose(r.min(axis=1), -1) and np.allclose(r.max(axis=1), 1)
    assert r[0, 2] != 0.0  # documented: the reference's affine rescale does not keep zero
    assert r[1, 0] < 0 < W[1, 0]  # ... and flips signs
    assert np.allclose(normalize_weights(np.zeros(3)), 0) and normalize_weights(np.zeros(3)).shape == (3,)
    assert np.allclose(normalize_weights(np.full((1, 3), 2.0), "reference"), 0)
    with pytest.raises(ValueError, match="normalisation"):
        normalize_weights(W, "minmax")


def test_ics_dims_to_reach():
    ds = [2, 4, 8, 16, 32]
    rel = [0.9, 0.7, 0.3, 0.1, 0.0]
    # crossing 0.5 halfway between d=4 (0.7) and d=8 (0.3) in log2 space: 2 ** 2.5
    assert ics_dims_to_reach(ds, rel, 0.5) == pytest.approx(2 ** 2.5)
    assert ics_dims_to_reach(ds, rel, 0.95) == 2.0
    assert ics_dims_to_reach(ds, rel, -0.1) == math.inf
    assert ics_dims_to_reach([0] + ds, [1.0] + rel, 0.95) == pytest.approx(1.0)  # linear on [0, 2]
    assert ics_dims_to_reach(ds[::-1], rel[::-1], 0.5) == pytest.approx(2 ** 2.5)  # order does not matter
    with pytest.raises(ValueError):
        ics_dims_to_reach([2, 4], [1.0])


def test_ics_auc():
    ds = [2, 4, 8, 16]
    assert ics_auc(ds, [1, 1, 1, 1]) == pytest.approx(1.0)
    assert ics_auc(ds, [0, 0, 0, 0]) == pytest.approx(0.0)
    assert ics_auc(ds, [1.0, 0.5, 0.0, 0.0]) == pytest.approx((0.75 + 0.25) / 3)
    assert ics_auc([0] + ds, [1.0, 1.0, 0.5, 0.0, 0.0]) == pytest.approx(ics_auc(ds, [1.0, 0.5, 0.0, 0.0]))
    fast, slow = [0.3, 0.1, 0.05, 0.0], [0.9, 0.8, 0.5, 0.0]
    assert ics_auc(ds, fast) < ics_auc(ds, slow)
    assert ics_dims_to_reach(ds, fast) < ics_dims_to_reach(ds, slow)
    with pytest.raises(ValueError, match="two points"):
        ics_auc([0, 2], [1.0, 0.5])


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        participation_ratio([1.0, np.nan])
    with pytest.raises(ValueError, match="fraction"):
        dims_for_energy([1.0, 2.0], 0.0)
    with pytest.raises(ValueError):
        gini(np.zeros((2, 2, 2)))
