import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from workbench.sparsify import CRITERIA
from workbench.sparsify.criteria import score_parameters
from workbench.sparsify.models import mlp, prunable_parameters


@pytest.fixture
def problem():
    torch.manual_seed(0)
    model = mlp(4, 3, width=6, depth=1).double()
    X = torch.randn(30, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    return model, X, y, DataLoader(TensorDataset(X, y), batch_size=7)


def _flat_loss(model, X, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]

    def f(theta):
        ps = dict(zip(names, [t.reshape(s) for t, s in zip(theta.split(sizes), shapes)]))
        return F.cross_entropy(functional_call(model, ps, (X,)), y, reduction="sum")

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    offs = dict(zip(names, torch.tensor([0] + sizes).cumsum(0)[:-1].tolist()))
    return f, theta, {n: slice(offs[n], offs[n] + s) for n, s in zip(names, sizes)}


def test_registry_and_shapes(problem):
    model, X, y, loader = problem
    assert {"opd", "obd", "magnitude", "random", "snip", "grasp"} <= set(CRITERIA)
    for c in ("magnitude", "random", "snip", "grasp"):
        sc = score_parameters(model, c, loader=loader)
        assert set(sc) == {"0.weight", "2.weight"}
        for k, p in prunable_parameters(model).items():
            assert sc[k].shape == p.shape


def test_snip_matches_full_batch_gradient(problem):
    model, X, y, loader = problem
    f, theta, sl = _flat_loss(model, X, y)
    g = torch.func.grad(f)(theta)
    sc = score_parameters(model, "snip", loader=loader)
    for k, p in prunable_parameters(model).items():
        torch.testing.assert_close(sc[k], (g[sl[k]] * theta[sl[k]]).abs().reshape(p.shape))


def test_grasp_matches_dense_hessian_gradient_product(problem):
    model, X, y, loader = problem
    f, theta, sl = _flat_loss(model, X, y)
    g = torch.func.grad(f)(theta)
    H = torch.autograd.functional.hessian(f, theta)
    # GraSP (like the original) works on the prunable weights: Hg restricted to that block
    w = torch.cat([torch.arange(sl[k].start, sl[k].stop) for k in prunable_parameters(model)])
    Hg = torch.zeros_like(theta)
    Hg[w] = H[w][:, w] @ g[w]
    sc = score_parameters(model, "grasp", loader=loader)
    for k, p in prunable_parameters(model).items():
        torch.testing.assert_close(sc[k], (theta[sl[k]] * Hg[sl[k]]).reshape(p.shape))


def test_magnitude_and_random(problem):
    model, *_ = problem
    sc = score_parameters(model, "magnitude")
    torch.testing.assert_close(sc["0.weight"], model[0].weight.abs().detach())
    a = score_parameters(model, "random", random_state=3)
    b = score_parameters(model, "random", random_state=3)
    c = score_parameters(model, "random", random_state=4)
    assert torch.equal(a["0.weight"], b["0.weight"]) and not torch.equal(a["0.weight"], c["0.weight"])


def test_bad_criteria_inputs(problem):
    model, *_ = problem
    with pytest.raises(ValueError, match="unknown criterion 'obs'"):
        score_parameters(model, "obs")
    with pytest.raises(ValueError, match="needs a fitted Laplace"):
        score_parameters(model, "opd")
    with pytest.raises(ValueError, match="needs the training data"):
        score_parameters(model, "snip")


def test_opd_rejects_unfitted_laplace_like(problem):
    model, *_ = problem

    class Unfitted:
        mean = None
        prior_precision_diag = 1.0
        param_slices = {}

        def posterior_precision_diagonal(self):
            raise AttributeError("no posterior yet")

    with pytest.raises(ValueError, match="fitted Laplace"):
        score_parameters(model, "opd", la=Unfitted())
