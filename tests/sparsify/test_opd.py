"""OPD / OBD read from the Laplace core, checked against a dense float64 GGN."""

import pytest
import torch
from torch.func import functional_call, jacrev
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace
from workbench.sparsify.criteria import score_parameters
from workbench.sparsify.models import mlp, prunable_parameters


def _dense_ggn(model, X):
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}

    def f(ps, x):
        return functional_call(model, ps, (x[None],))[0]

    G = 0
    for x in X:
        J = jacrev(f)(params, x)
        J = torch.cat([J[n].reshape(J[n].shape[0], -1) for n in names], 1)  # (K, P)
        p = f(params, x).softmax(0)
        G = G + J.T @ (torch.diag(p) - torch.outer(p, p)) @ J
    sizes = [params[n].numel() for n in names]
    offs = torch.tensor([0] + sizes).cumsum(0).tolist()
    return G.diagonal(), {n: slice(offs[i], offs[i + 1]) for i, n in enumerate(names)}


@pytest.mark.parametrize("structure,n", [("diag", 25), ("kron", 1)])
def test_opd_equals_theta2_times_dense_posterior_precision(structure, n):
    # diag: exact GGN diagonal; kron on a single example: the Kronecker factors are exact
    torch.manual_seed(0)
    model = mlp(4, 3, width=5, depth=1).double()
    X = torch.randn(n, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    la = Laplace(model, "classification", hessian_structure=structure, prior_precision=0.7)
    la.fit(DataLoader(TensorDataset(X, y), batch_size=8))
    g, sl = _dense_ggn(model, X)
    opd = score_parameters(model, "opd", la=la)
    obd = score_parameters(model, "obd", la=la)
    for k, p in prunable_parameters(model).items():
        th = p.detach().reshape(-1)
        torch.testing.assert_close(opd[k].reshape(-1), th**2 * (g[sl[k]] + 0.7))
        torch.testing.assert_close(obd[k].reshape(-1), th**2 * g[sl[k]])


def test_opd_uses_learned_per_parameter_prior():
    torch.manual_seed(1)
    model = mlp(3, 2, width=4, depth=1).double()
    X, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))
    la = Laplace(model, "classification", hessian_structure="diag", prior_structure="diagonal",
                 prior_precision=torch.linspace(0.1, 5.0, sum(p.numel() for p in model.parameters()),
                                                dtype=torch.float64))
    la.fit(DataLoader(TensorDataset(X, y), batch_size=10))
    opd, obd = score_parameters(model, "opd", la=la), score_parameters(model, "obd", la=la)
    for k, sl in la.param_slices.items():
        if k in opd:
            th = la.mean[sl]
            torch.testing.assert_close(opd[k].reshape(-1) - obd[k].reshape(-1),
                                       th**2 * la.prior_precision_diag[sl])


def test_opd_without_fitted_laplace_is_clear():
    model = mlp(3, 2, width=4, depth=1)
    la = Laplace(model, "classification", hessian_structure="kron")
    with pytest.raises(ValueError, match="fitted Laplace"):
        score_parameters(model, "opd", la=la)
    with pytest.raises(ValueError, match="needs a fitted Laplace"):
        score_parameters(model, "opd")


def test_opd_laplace_of_another_model_rejected():
    a, b = mlp(3, 2, width=4, depth=1), mlp(3, 2, width=6, depth=1)
    X, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    la = Laplace(a, "classification", hessian_structure="diag")
    la.fit(DataLoader(TensorDataset(X, y), batch_size=5))
    with pytest.raises(ValueError, match="was la fitted on this model"):
        score_parameters(b, "opd", la=la)
