"""Continual fitting (fit(..., override=False)) and the joint GLM predictive over a batch."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace

from .dense import dense_ggn, jacobian


def _data(n=36, k=2, likelihood="regression"):
    X = torch.randn(n, 3)
    y = torch.randn(n, k) if likelihood == "regression" else torch.randint(0, k, (n,))
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, k))
    return model, X, y


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
@pytest.mark.parametrize("likelihood", ["regression", "classification"])
def test_continual_fit_equals_one_fit_on_all_loaders(structure, likelihood):
    model, X, y = _data(likelihood=likelihood)
    kw = dict(hessian_structure=structure, prior_precision=0.7, sigma_noise=0.5)
    if likelihood != "regression":
        kw.pop("sigma_noise")
    parts = [(X[:10], y[:10]), (X[10:25], y[10:25]), (X[25:], y[25:])]
    la = Laplace(model, likelihood, **kw).fit(DataLoader(TensorDataset(*parts[0]), batch_size=4))
    for part in parts[1:]:
        la.fit(DataLoader(TensorDataset(*part), batch_size=7), override=False)
    ref = Laplace(model, likelihood, **kw).fit(DataLoader(TensorDataset(X, y), batch_size=9))
    assert la.n_data == ref.n_data == len(X)
    torch.testing.assert_close(la.log_marginal_likelihood(), ref.log_marginal_likelihood())
    torch.testing.assert_close(
        la.posterior_precision_diagonal(), ref.posterior_precision_diagonal()
    )
    torch.testing.assert_close(la.functional_variance(X[:5]), ref.functional_variance(X[:5]))
    # and override=True (the default) starts over
    la.fit(DataLoader(TensorDataset(*parts[0]), batch_size=4))
    assert la.n_data == 10


def test_continual_full_curvature_is_the_sum_of_dense_ggns():
    model, X, y = _data()
    la = Laplace(model, "regression", hessian_structure="full").fit([(X[:20], y[:20])])
    la.fit([(X[20:], y[20:])], override=False)
    G = dense_ggn(model, X, y, "regression")
    P = G + torch.eye(G.shape[0])
    torch.testing.assert_close(la.posterior_covariance(), torch.linalg.inv(P))


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_joint_predictive_equals_dense_j_sigma_jt(structure):
    model, X, y = _data(k=2)
    la = Laplace(model, "regression", hessian_structure=structure, sigma_noise=0.3)
    la.fit(DataLoader(TensorDataset(X, y), batch_size=12))
    J, f = jacobian(model, X[:4])
    Jf = J.reshape(-1, J.shape[-1])
    ref = (Jf @ la.posterior_covariance() @ Jf.T).reshape(4, 2, 4, 2)
    f_mu, f_cov = la(X[:4], joint=True)
    torch.testing.assert_close(f_mu, f.reshape(4, 2))
    torch.testing.assert_close(f_cov, ref)
    # its diagonal blocks are the marginal predictive
    marg = torch.stack([f_cov[n, :, n, :] for n in range(4)])
    torch.testing.assert_close(marg, la(X[:4])[1])
    torch.testing.assert_close(la.functional_covariance(X[:4]), ref)


def test_joint_needs_regression_glm():
    model, X, y = _data(likelihood="classification")
    la = Laplace(model, "classification").fit([(X, y)])
    with pytest.raises(ValueError, match="joint=True.*regression"):
        la(X[:3], joint=True)
    assert la.functional_covariance(X[:3]).shape == (3, 2, 3, 2)
