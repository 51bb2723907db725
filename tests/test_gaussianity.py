"""KL to the prior, active dimensions and moments on data with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smooth_infomax.analysis import (
    active_dimensions,
    aggregate_kl_per_dim,
    aggregate_kl_to_standard_normal,
    gaussianity_report,
    per_dim_moments,
)

N, D = 4000, 8


@pytest.fixture(scope="module")
def standard():
    return np.random.default_rng(0).standard_normal((N, D))


def test_standard_normal(standard):
    assert aggregate_kl_to_standard_normal(standard) < 0.01
    assert np.all(aggregate_kl_per_dim(standard) < 0.005)
    count, var = active_dimensions(standard)
    assert count == D and np.allclose(var, 1.0, atol=0.1)
    mom = per_dim_moments(standard)
    assert np.allclose(mom["mean"], 0, atol=0.06) and np.allclose(mom["std"], 1, atol=0.05)
    assert np.allclose(mom["skew"], 0, atol=0.15) and np.allclose(mom["excess_kurtosis"], 0, atol=0.3)


def test_shifted_scaled_matches_closed_form(standard):
    m = np.linspace(-1.0, 2.0, D)
    s = np.linspace(0.5, 3.0, D)
    x = standard * s + m
    # the KL of N(m_hat, S_hat) is exact for the sample moments; compare with the closed form at the true moments
    closed = 0.5 * np.sum(s ** 2 + m ** 2 - 1 - np.log(s ** 2))
    assert aggregate_kl_to_standard_normal(x) == pytest.approx(closed, rel=0.03)
    per = aggregate_kl_per_dim(x)
    assert np.allclose(per, 0.5 * (s ** 2 + m ** 2 - 1 - np.log(s ** 2)), rtol=0.1, atol=0.02)
    # exact at the sample (population) moments
    mh, vh = x.mean(axis=0), x.var(axis=0)
    assert np.allclose(per, 0.5 * (vh + mh ** 2 - 1 - np.log(vh)), rtol=1e-10)
    # full KL = sum of marginal KLs + Gaussian total correlation (near 0 here)
    assert aggregate_kl_to_standard_normal(x) >= per.sum() - 1e-9


def test_aggregate_posterior_uses_posterior_variance():
    rng = np.random.default_rng(1)
    # mixture of N(mu_n, 0.36) with mu_n ~ N(0, 0.64): aggregate is exactly N(0, 1)
    mu = rng.standard_normal((N, D)) * 0.8
    logvar = np.full((N, D), np.log(0.36))
    assert aggregate_kl_to_standard_normal(mu, logvar) < 0.01
    assert aggregate_kl_to_standard_normal(mu) > 0.3  # the means alone are too narrow (closed form 0.345)


def test_collapsed_dimensions():
    rng = np.random.default_rng(2)
    mu = rng.standard_normal((500, 4))
    mu[:, 1] = 0.0  # collapsed: posterior = prior for every input
    mu[:, 3] = 0.05 * rng.standard_normal(500)  # variance 0.0025 < 0.01
    count, var = active_dimensions(mu, threshold=0.01)
    assert count == 2 and var[1] == 0.0
    assert aggregate_kl_to_standard_normal(mu) == float("inf")
    logvar = np.zeros_like(mu)
    logvar[:, 0] = np.log(0.01)
    rep = gaussianity_report(mu + np.exp(0.5 * logvar) * rng.standard_normal(mu.shape), mu=mu, logvar=logvar)
    assert rep["active_dimensions"] == 2
    assert rep["mean_posterior_variance"][1] == pytest.approx(1.0)
    assert np.isfinite(rep["kl_aggregate_posterior"])  # posterior variance makes the aggregate non-singular


def test_report_json_ready_with_constant_dim():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((200, 3))
    z[:, 2] = 1.5
    rep = gaussianity_report(z, mu=z)
    text = json.dumps(rep, allow_nan=False)  # plain floats; non-finite values become null
    assert json.loads(text)["dim"] == 3
    assert rep["kl_samples"] is None and rep["kl_samples_per_dim"][2] is None
    assert rep["moments"]["skew"][2] is None and rep["moments"]["mean"][2] == pytest.approx(1.5)
    assert rep["active_dimensions"] == 2
    assert set(rep["moments"]) == {"mean", "std", "skew", "excess_kurtosis"}


def test_report_without_posterior(standard):
    rep = gaussianity_report(standard)
    assert "active_dimensions" not in rep and rep["kl_samples"] < 0.01 and rep["n"] == N


def test_skewed_heavy_tailed_moments():
    rng = np.random.default_rng(4)
    e = rng.exponential(size=(20000, 1))
    mom = per_dim_moments(e)
    assert mom["skew"][0] == pytest.approx(2.0, rel=0.15)
    assert mom["excess_kurtosis"][0] == pytest.approx(6.0, rel=0.3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="logvar has shape"):
        aggregate_kl_to_standard_normal(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="without mu"):
        gaussianity_report(np.zeros((5, 2)), logvar=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        per_dim_moments(np.array([[np.nan], [1.0]]))
