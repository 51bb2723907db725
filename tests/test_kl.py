"""KL to N(0, I): analytic form, reductions (reference = T * mean) and beta conversion."""

import math

import pytest
import torch
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from smooth_infomax.model import convert_beta, kl_divergence


def _stats(B=3, T=7, C=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    logvar = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    return mu, logvar


def test_elementwise_matches_torch_distributions():
    mu, logvar = _stats()
    expected = torch_kl(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    torch.testing.assert_close(kl_divergence(mu, logvar, "none"), expected)


def test_matches_monte_carlo_estimate():
    g = torch.Generator().manual_seed(1)
    mu = torch.tensor([0.0, 1.5, -0.7], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.0, 0.8], dtype=torch.float64)
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros(3, dtype=torch.float64), 1.0)
    z = mu + (0.5 * logvar).exp() * torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(kl_divergence(mu, logvar, "none"), mc, atol=0.02, rtol=0.0)


def test_zero_at_prior_and_nonnegative():
    assert float(kl_divergence(torch.zeros(2, 4, 3), torch.zeros(2, 4, 3))) == 0.0
    mu, logvar = _stats(seed=2)
    assert bool((kl_divergence(mu, logvar, "none") >= 0).all())


def test_reductions():
    mu, logvar = _stats(B=3, T=7, C=5)
    el = kl_divergence(mu, logvar, "none")
    ref = kl_divergence(mu, logvar, "reference")
    mean = kl_divergence(mu, logvar, "mean")
    torch.testing.assert_close(ref, 7 * mean)  # reference = T * mean
    manual = sum(el[b, :, c].sum() for b in range(3) for c in range(5)) / (3 * 5)  # sum over time, mean over B, C
    torch.testing.assert_close(ref, manual)
    torch.testing.assert_close(kl_divergence(mu, logvar, "vae"), 5 * ref)
    with pytest.raises(ValueError, match="reduction"):
        kl_divergence(mu, logvar, "sum")
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(mu, logvar[:, :3])


def test_beta_conversion_gives_the_same_loss():
    mu, logvar = _stats(T=11, C=4)
    beta_ref = 0.01
    beta_mean = convert_beta(beta_ref, "reference", "mean", n_frames=11)
    assert math.isclose(beta_mean, beta_ref * 11)
    assert math.isclose(convert_beta(0.01, "reference", "mean", 511), 5.11)
    torch.testing.assert_close(beta_ref * kl_divergence(mu, logvar, "reference"),
                               beta_mean * kl_divergence(mu, logvar, "mean"))
    beta_vae = convert_beta(beta_ref, "reference", "vae", 11, n_channels=4)
    torch.testing.assert_close(beta_vae * kl_divergence(mu, logvar, "vae"),
                               beta_ref * kl_divergence(mu, logvar, "reference"))
    assert math.isclose(convert_beta(beta_mean, "mean", "reference", 11), beta_ref)
    with pytest.raises(ValueError, match="n_channels"):
        convert_beta(0.1, "reference", "vae", 11)


def test_gradient():
    mu, logvar = _stats()
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    kl_divergence(mu, logvar, "mean").backward()
    n = mu.numel()
    torch.testing.assert_close(mu.grad, mu.detach() / n)
    torch.testing.assert_close(logvar.grad, 0.5 * (logvar.detach().exp() - 1) / n)
