"""Loss-Hessians (and their square roots) of the likelihoods against closed forms and autograd (float64)."""

import math

import pytest
import torch

from workbench.laplace.likelihoods import Classification, GaussianRegression, get_likelihood


@pytest.mark.parametrize("K", [2, 3, 10])
@pytest.mark.parametrize("scale", [0.1, 3.0, 60.0])
def test_softmax_factor_is_exact_with_rank_k_minus_1(K, scale):
    g = torch.Generator().manual_seed(K)
    eta = torch.randn(7, 4, K, generator=g, dtype=torch.float64) * scale
    L = Classification().hessian_sqrt(eta, None)
    assert L.shape == (7, 4, K, K - 1)
    assert L.dtype == torch.float64
    p = torch.softmax(eta, -1)
    H = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    torch.testing.assert_close(L @ L.transpose(-1, -2), H, rtol=0, atol=1e-14)


def test_softmax_factor_when_the_last_class_is_certain():
    # s_K -> 1 is the point where the Householder vector s + e_K is largest, never degenerate
    eta = torch.tensor([[0.0, 0.0, 80.0], [80.0, 0.0, 0.0]], dtype=torch.float64)
    L = Classification().hessian_sqrt(eta, None)
    assert torch.isfinite(L).all()
    p = torch.softmax(eta, -1)
    H = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    torch.testing.assert_close(L @ L.transpose(-1, -2), H, rtol=0, atol=1e-14)


def _eta_y(name, K, g):
    eta = torch.randn(6, K, generator=g, dtype=torch.float64) * 2
    if name == "heteroscedastic":  # (eta1, eta2 < 0)
        eta = torch.cat([eta, -0.5 * torch.rand(6, K, generator=g, dtype=torch.float64) - 0.1], -1)
        return eta, torch.randn(6, K, generator=g, dtype=torch.float64)
    if name == "classification":
        return eta, torch.randint(0, K, (6,), generator=g)
    if name == "binary":
        return eta, (torch.rand(6, 1, generator=g) < 0.5).double()
    return eta, torch.randn(6, K, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name,K", [("regression", 1), ("regression", 3), ("binary", 1),
                                    ("classification", 2), ("classification", 4), ("heteroscedastic", 2)])
def test_hessian_is_the_autograd_hessian_of_the_nll(name, K):
    """``hessian`` (closed forms for Gaussian/Bernoulli/softmax, ``L Lᵀ`` otherwise) against the
    autograd Hessian of ``-log_lik`` per sample (float64; Gaussian at σ = 1 and at σ = 0.7)."""
    lik = get_likelihood(name)
    eta, y = _eta_y(name, K, torch.Generator().manual_seed(K))
    sigmas = [None, torch.tensor(0.7, dtype=torch.float64)] if lik.has_sigma else [None]
    for sigma in sigmas:
        H = lik.hessian(eta, y, sigma)
        assert H.shape == (*eta.shape, eta.shape[-1])
        for n in range(eta.shape[0]):
            def nll(e, yn=y[n : n + 1], s=sigma):
                return -lik.log_lik(e[None], yn, s)

            ref = torch.autograd.functional.hessian(nll, eta[n])
            torch.testing.assert_close(H[n], ref, rtol=1e-12, atol=1e-14)


def test_sum_squares_is_the_sigma_free_gaussian_statistic():
    g = torch.Generator().manual_seed(0)
    eta, y = torch.randn(9, 2, generator=g, dtype=torch.float64), torch.randn(9, 2, generator=g, dtype=torch.float64)
    lik = GaussianRegression()
    sse = lik.sum_squares(eta, y)
    assert float(sse) == pytest.approx(float(((eta - y) ** 2).sum()), rel=1e-15)
    for s in (0.3, 1.0, 2.5):
        sigma = torch.tensor(s, dtype=torch.float64)
        closed = -0.5 * sse / s**2 - 0.5 * eta.numel() * math.log(2 * math.pi * s**2)
        assert float(lik.log_lik(eta, y, sigma)) == pytest.approx(float(closed), rel=1e-13)
