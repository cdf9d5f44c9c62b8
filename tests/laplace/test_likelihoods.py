"""Loss-Hessian square roots of the likelihoods against the closed-form Hessians (float64)."""

import pytest
import torch

from workbench.laplace.likelihoods import Classification


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
