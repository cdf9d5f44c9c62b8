"""The Laplace bridge (link_approx="bridge" / "bridge_norm") against its closed form, per input."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace
from workbench.laplace.bridge import bridge_alpha, laplace_bridge

from .dense import jacobian


def closed_form(mu, cov, normalize=False):
    """One input, numpy float64: condition N(mu, cov) on sum(f) = 0, then the Dirichlet match."""
    K = len(mu)
    one = np.ones(K)
    gain = cov @ one / (one @ cov @ one)
    proj = np.eye(K) - np.outer(gain, one)  # f' = f - Σ1 (1ᵀf) / 1ᵀΣ1
    m, S = proj @ mu, proj @ cov @ proj.T
    v = np.diag(S).copy()
    if normalize:
        c = v.mean() / math.sqrt(K / 2)
        m, v = m / math.sqrt(c), v / c
    alpha = np.array(
        [
            (1 - 2 / K + math.exp(m[k]) * sum(math.exp(-m[j]) for j in range(K)) / K**2) / v[k]
            for k in range(K)
        ]
    )
    return alpha, alpha / alpha.sum()


@pytest.mark.parametrize("normalize", [False, True])
def test_bridge_matches_the_closed_form(normalize):
    g = torch.Generator().manual_seed(1)
    N, K = 6, 4
    mu = torch.randn(N, K, generator=g)
    A = torch.randn(N, K, K, generator=g)
    cov = A @ A.transpose(1, 2) + 0.1 * torch.eye(K)
    alpha = bridge_alpha(mu, cov, normalize)
    probs = laplace_bridge(mu, cov, normalize)
    for n in range(N):
        a_ref, p_ref = closed_form(mu[n].numpy(), cov[n].numpy(), normalize)
        np.testing.assert_allclose(alpha[n].numpy(), a_ref, rtol=1e-12)
        np.testing.assert_allclose(probs[n].numpy(), p_ref, rtol=1e-12)
    torch.testing.assert_close(probs.sum(-1), torch.ones(N))


def test_bridge_through_laplace_uses_the_glm_covariance():
    X, y = torch.randn(40, 3), torch.randint(0, 3, (40,))
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))
    la = Laplace(model, "classification", hessian_structure="full", prior_precision=2.0)
    la.fit(DataLoader(TensorDataset(X, y), batch_size=16))
    J, f = jacobian(model, X[:5])
    cov = J @ la.posterior_covariance() @ J.transpose(1, 2)
    for link, norm in [("bridge", False), ("bridge_norm", True)]:
        got = la(X[:5], link_approx=link)
        ref = np.stack([closed_form(f[n].numpy(), cov[n].numpy(), norm)[1] for n in range(5)])
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_bridge_errors():
    with pytest.raises(ValueError, match="f_var must be"):
        laplace_bridge(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="K >= 2"):
        laplace_bridge(torch.zeros(2, 1), torch.ones(2, 1, 1))
    X, y = torch.randn(10, 2), torch.randint(0, 2, (10,))
    la = Laplace(nn.Linear(2, 1), "binary").fit([(X, y)])
    with pytest.raises(ValueError, match="bridge.*classification"):
        la(X, link_approx="bridge")
