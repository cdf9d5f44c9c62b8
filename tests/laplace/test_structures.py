"""The curvature-structure interface: a structure defined outside the core plugs in by one class
and ``register_structure`` (fit, evidence, predictive, sampling and state_dict all work)."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace, register_structure
from workbench.laplace.structures import STRUCTURES, DiagBlock
from workbench.laplace.structures.base import slice_idx


class JacobianDiag(DiagBlock):
    """The exact diagonal, but every tensor through the torch.func Jacobian route (no layer hooks)."""

    kind = "jacdiag"

    @classmethod
    def plan(cls, spec, group, names, fallback):
        return [cls(slice_idx(spec, names), names, group=group, generic=names, spec=spec)]


@pytest.fixture
def registered():
    register_structure(JacobianDiag)
    yield JacobianDiag
    STRUCTURES.pop(JacobianDiag.kind)


def problem():
    X, y = torch.randn(24, 3), torch.randint(0, 3, (24,))
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))
    return model, DataLoader(TensorDataset(X, y), batch_size=8), X


def test_a_registered_structure_equals_the_builtin_it_reimplements(registered):
    model, dl, X = problem()
    kw = dict(prior_structure="layerwise", prior_precision=torch.tensor([0.5, 1.0, 2.0, 3.0]))
    ref = Laplace(model, "classification", hessian_structure="diag", **kw).fit(dl)
    la = Laplace(model, "classification", hessian_structure="jacdiag", **kw).fit(dl)
    assert [b.kind for b in la.blocks_] == ["jacdiag"] and la.blocks_[0].modules == []
    torch.testing.assert_close(la.blocks_[0].h, ref.blocks_[0].h)
    torch.testing.assert_close(la.log_marginal_likelihood(), ref.log_marginal_likelihood())
    torch.testing.assert_close(la.functional_variance(X[:4]), ref.functional_variance(X[:4]))
    torch.testing.assert_close(la.posterior_covariance(), ref.posterior_covariance())
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(la.sample(3, generator=g), ref.sample(3, generator=g.manual_seed(0)))
    la2 = Laplace(model, "classification", hessian_structure="jacdiag", **kw)
    la2.load_state_dict(la.state_dict())
    torch.testing.assert_close(la2(X[:4]), la(X[:4]))


def test_structures_mix_per_group_and_are_validated(registered):
    model, dl, X = problem()
    groups = {"body": ["0.weight", "0.bias"], "head": ["2.weight", "2.bias"]}
    la = Laplace(
        model,
        "classification",
        hessian_structure="kron",
        param_groups=groups,
        group_structure={"head": "jacdiag"},
    ).fit(dl)
    assert {d["kind"] for d in la.describe_blocks()} == {"kron", "jacdiag"}
    assert torch.isfinite(la.log_marginal_likelihood())
    with pytest.raises(ValueError, match="hessian_structure='nope'.*jacdiag"):
        Laplace(model, "classification", hessian_structure="nope")
    with pytest.raises(TypeError, match="Block subclass"):
        register_structure(object)


def test_prepare_plans_the_blocks_without_data():
    model, dl, X = problem()
    la = Laplace(model, "classification", hessian_structure="kron").prepare()
    assert [b.module for b in la.blocks_] == ["0", "2"] and la.layout_.n_hyper == 1
    with pytest.raises(ValueError, match="last_layer.*input batch"):
        Laplace(model, "classification", subset_of_weights="last_layer").prepare()
