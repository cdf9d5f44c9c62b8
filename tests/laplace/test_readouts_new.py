"""Native read-outs added for laplace-torch users: dense precision, evidence terms, set_prior."""

import pytest
import torch
from torch import nn

from workbench.laplace import Laplace

from .dense import dense_ggn


def _fit(structure, **kw):
    X, y = torch.randn(30, 3), torch.randn(30, 2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    return (
        Laplace(model, "regression", hessian_structure=structure, **kw).fit([(X, y)]),
        model,
        X,
        y,
    )


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_dense_precision_is_the_inverse_covariance(structure):
    la, *_ = _fit(structure, prior_precision=0.5, sigma_noise=0.7)
    P = la.posterior_precision()
    torch.testing.assert_close(P @ la.posterior_covariance(), torch.eye(la.n_params))
    torch.testing.assert_close(torch.diagonal(P), la.posterior_precision_diagonal())


def test_evidence_terms_add_up_and_match_dense_quantities():
    la, model, X, y = _fit("full", prior_precision=0.5, sigma_noise=0.7)
    t = la.evidence_terms()
    lml = t["log_likelihood"] - 0.5 * (
        t["log_det_posterior_precision"] - t["log_det_prior_precision"] + t["scatter"]
    )
    torch.testing.assert_close(lml, la.log_marginal_likelihood())
    G = dense_ggn(model, X, y, "regression") / 0.49
    P = G + 0.5 * torch.eye(la.n_params)
    torch.testing.assert_close(t["log_det_posterior_precision"], torch.logdet(P))
    torch.testing.assert_close(t["scatter"], 0.5 * (la.mean**2).sum())
    torch.testing.assert_close(
        t["log_det_prior_precision"], la.n_params * torch.log(torch.tensor(0.5))
    )


def test_set_prior_changes_structure_without_refit():
    la, model, X, y = _fit("kron")
    n = len(la.param_names)
    prec = torch.linspace(0.5, 2.0, n)
    la.set_prior(prec, "layerwise")
    ref = Laplace(
        model,
        "regression",
        hessian_structure="kron",
        prior_structure="layerwise",
        prior_precision=prec,
    ).fit([(X, y)])
    torch.testing.assert_close(la.log_marginal_likelihood(), ref.log_marginal_likelihood())
    torch.testing.assert_close(la.prior_precision_diag, ref.prior_precision_diag)
    la.set_prior(3.0, "scalar")
    assert la.prior_precision.shape == (1,) and la.prior_structure == "scalar"
    with pytest.raises(ValueError, match="prior_structure"):
        la.set_prior(1.0, "nope")
