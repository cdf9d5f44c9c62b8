"""Full / diagonal GGN and empirical Fisher against brute-force dense references (float64)."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace

from .dense import dense_ef, dense_ggn


def sub(G, block):
    """The dense reference restricted to a block, in the block's own parameter order."""
    return G[block.idx][:, block.idx]


def hetero_link(f):
    return torch.cat([f[..., :1], -0.5 * torch.exp(f[..., 1:])], -1)


def make_data(likelihood, n=12, d=3):
    X = torch.randn(n, d)
    if likelihood == "regression":
        return X, torch.randn(n, 2), 2, lambda f: f
    if likelihood == "classification":
        return X, torch.randint(0, 3, (n,)), 3, lambda f: f
    if likelihood == "binary":
        return X, torch.randint(0, 2, (n,)).double(), 1, lambda f: f
    return X, torch.randn(n), 2, hetero_link


def mlp(d, k):
    return nn.Sequential(nn.Linear(d, 4), nn.Tanh(), nn.Linear(4, k))


class TinyCNN(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(8, k)

    def forward(self, x):
        return self.fc(torch.tanh(self.pool(self.conv(x))).flatten(1))


LIKS = ["regression", "classification", "binary", "heteroscedastic"]


@pytest.mark.parametrize("likelihood", LIKS)
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_full_and_diag_ggn_equal_dense(likelihood, arch):
    X, y, k, link = make_data(likelihood)
    if arch == "cnn":
        X = torch.randn(X.shape[0], 1, 4, 4)
        model = TinyCNN(k)
    else:
        model = mlp(X.shape[1], k)
    G = dense_ggn(model, X, y, likelihood, link=link)
    dl = DataLoader(TensorDataset(X, y), batch_size=5)
    la = Laplace(model, likelihood, hessian_structure="full").fit(dl)
    torch.testing.assert_close(la.blocks_[0].H, sub(G, la.blocks_[0]), rtol=1e-9, atol=1e-10)
    lad = Laplace(model, likelihood, hessian_structure="diag").fit(dl)
    torch.testing.assert_close(
        lad.blocks_[0].h, torch.diagonal(G)[lad.blocks_[0].idx], rtol=1e-9, atol=1e-10
    )


@pytest.mark.parametrize("likelihood", LIKS)
def test_empirical_fisher_equals_sum_of_per_sample_gradient_outer_products(likelihood):
    X, y, k, link = make_data(likelihood)
    model = mlp(X.shape[1], k)
    E = dense_ef(model, X, y, likelihood, link=link)
    dl = DataLoader(TensorDataset(X, y), batch_size=5)
    la = Laplace(model, likelihood, hessian_structure="full", curvature="ef").fit(dl)
    torch.testing.assert_close(la.blocks_[0].H, sub(E, la.blocks_[0]), rtol=1e-9, atol=1e-10)
    lad = Laplace(model, likelihood, hessian_structure="diag", curvature="ef").fit(dl)
    torch.testing.assert_close(
        lad.blocks_[0].h, torch.diagonal(E)[lad.blocks_[0].idx], rtol=1e-9, atol=1e-10
    )


class WithNorm(nn.Module):
    """Not an nn.Sequential; has a LayerNorm and a free parameter (generic torch.func route)."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.scale = nn.Parameter(torch.tensor([0.7, 1.3]))
        self.l2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.l2(torch.tanh(self.norm(self.l1(x)))) * self.scale


def test_any_module_generic_and_module_routes_agree_with_dense():
    X, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    model = WithNorm()
    G = dense_ggn(model, X, y, "classification")
    dl = DataLoader(TensorDataset(X, y), batch_size=4)
    lad = Laplace(model, "classification", hessian_structure="diag").fit(dl)
    torch.testing.assert_close(
        lad.blocks_[0].h, torch.diagonal(G)[lad.blocks_[0].idx], rtol=1e-9, atol=1e-10
    )
    laf = Laplace(model, "classification", hessian_structure="full").fit(dl)
    torch.testing.assert_close(laf.blocks_[0].H, sub(G, laf.blocks_[0]), rtol=1e-9, atol=1e-10)


def test_last_layer_full_ggn_equals_dense_block():
    X, y = torch.randn(10, 3), torch.randint(0, 3, (10,))
    model = mlp(3, 3)
    names = ["2.weight", "2.bias"]
    G = dense_ggn(model, X, y, "classification", names=names)
    la = Laplace(model, "classification", subset_of_weights="last_layer").fit(
        DataLoader(TensorDataset(X, y), batch_size=4)
    )
    assert la.param_names == names
    torch.testing.assert_close(la.blocks_[0].H, sub(G, la.blocks_[0]), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("conv", ["1d", "3d"])
def test_conv1d_conv3d_diag_equals_dense(conv):
    if conv == "1d":
        X = torch.randn(6, 2, 5)
        model = nn.Sequential(
            nn.Conv1d(2, 3, 3, padding=1, stride=2), nn.Tanh(), nn.Flatten(), nn.Linear(9, 2)
        )
    else:
        X = torch.randn(5, 1, 3, 3, 3)
        model = nn.Sequential(
            nn.Conv3d(1, 2, 2, dilation=1, padding="same"),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(54, 2),
        )
    y = torch.randn(X.shape[0], 2)
    G = dense_ggn(model, X, y, "regression")
    la = Laplace(model, "regression", hessian_structure="diag").fit(
        DataLoader(TensorDataset(X, y), batch_size=4)
    )
    torch.testing.assert_close(
        la.blocks_[0].h, torch.diagonal(G)[la.blocks_[0].idx], rtol=1e-9, atol=1e-10
    )


class Tied(nn.Module):
    """The same Linear applied twice (weight tying): its gradient sums over both calls."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(3, 3)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


@pytest.mark.parametrize("structure", ["diag", "full"])
def test_module_called_twice_equals_dense(structure):
    X, y = torch.randn(9, 3), torch.randn(9, 2)
    model = Tied()
    G = dense_ggn(model, X, y, "regression")
    was = model.training
    before = [p.detach().clone() for p in model.parameters()]
    la = Laplace(model, "regression", hessian_structure=structure).fit(
        DataLoader(TensorDataset(X, y), batch_size=4)
    )
    b = la.blocks_[0]
    ref = torch.diagonal(G)[b.idx] if structure == "diag" else sub(G, b)
    torch.testing.assert_close(b.h if structure == "diag" else b.H, ref, rtol=1e-9, atol=1e-10)
    assert model.training == was and all(
        torch.equal(p, q) for p, q in zip(model.parameters(), before)
    )
