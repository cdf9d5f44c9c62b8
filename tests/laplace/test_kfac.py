"""KFAC expand / reduce against the exact block-diagonal GGN of deep linear networks
(Eschenhagen et al., 2023), computed by brute force."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace

from .dense import dense_ggn


class SeqLinear(nn.Module):
    """Deep linear net applied per position: (N, S, d) -> (N, S, K); loss per position."""

    def __init__(self, d=3, h=4, k=2):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, k)

    def forward(self, x):
        return self.l3(self.l2(self.l1(x)))


class PooledLinear(SeqLinear):
    """Shared deep linear layers, mean-pooled over positions before a linear output: (N, K)."""

    def forward(self, x):
        return self.l3(self.l2(self.l1(x)).mean(1))


def kron_dense(block):
    return torch.kron(block.B, block.A)


def block_errors(la, G):
    return [float((kron_dense(b) - G[b.idx][:, b.idx]).abs().max()) for b in la.blocks_]


@pytest.mark.parametrize("batch_size", [1, 5])
def test_expand_exact_in_expand_setting_reduce_is_not(batch_size):
    X, y = torch.randn(5, 4, 3), torch.randn(5, 4, 2)
    model = SeqLinear()
    G = dense_ggn(model, X, y.reshape(5, -1), "regression")
    dl = DataLoader(TensorDataset(X, y), batch_size=batch_size)
    la = Laplace(model, "regression", hessian_structure="kron", kfac="expand").fit(dl)
    assert max(block_errors(la, G)) < 1e-9
    lr = Laplace(model, "regression", hessian_structure="kron", kfac="reduce").fit(dl)
    assert max(block_errors(lr, G)) > 1e-2


@pytest.mark.parametrize("batch_size", [1, 5])
def test_reduce_exact_in_reduce_setting_expand_is_not(batch_size):
    X, y = torch.randn(5, 4, 3), torch.randn(5, 2)
    model = PooledLinear()
    G = dense_ggn(model, X, y, "regression")
    dl = DataLoader(TensorDataset(X, y), batch_size=batch_size)
    lr = Laplace(model, "regression", hessian_structure="kron", kfac="reduce").fit(dl)
    assert max(block_errors(lr, G)) < 1e-9
    le = Laplace(model, "regression", hessian_structure="kron", kfac="expand").fit(dl)
    errs = block_errors(le, G)
    assert max(errs[:2]) > 1e-2  # shared layers differ
    assert errs[2] < 1e-9  # the unshared output layer is the same for both flavours


class ConvSeq(nn.Module):
    """Deep linear Conv1d (kernel 1, i.e. a Linear over positions) with a per-position loss."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(3, 4, 1), nn.Conv1d(4, 2, 1)

    def forward(self, x):
        return self.c2(self.c1(x)).transpose(1, 2)


def test_conv_kfac_expand_exact_for_pointwise_deep_linear_conv():
    X, y = torch.randn(4, 3, 5), torch.randn(4, 5, 2)
    model = ConvSeq()
    G = dense_ggn(model, X, y.reshape(4, -1), "regression")
    la = Laplace(model, "regression", hessian_structure="kron").fit(
        DataLoader(TensorDataset(X, y), batch_size=2)
    )
    assert max(block_errors(la, G)) < 1e-9


def test_single_layer_kfac_is_exact_for_classification_last_layer():
    # one Linear layer, no weight sharing, classification: KFAC is not exact in general, but the
    # diagonal of the Kronecker product must be PSD and close in trace
    X, y = torch.randn(20, 3), torch.randint(0, 3, (20,))
    model = nn.Linear(3, 3)
    G = dense_ggn(model, X, y, "classification")
    la = Laplace(model, "classification", hessian_structure="kron").fit(
        DataLoader(TensorDataset(X, y), batch_size=7)
    )
    K = kron_dense(la.blocks_[0])
    assert torch.linalg.eigvalsh(K).min() > -1e-10
    idx = la.blocks_[0].idx
    assert abs(float(torch.trace(K) / torch.trace(G[idx][:, idx])) - 1) < 0.5


class WithNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.norm, self.l2 = nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.l2(self.norm(self.l1(x)))


def test_unsupported_layer_error_names_module_or_falls_back_to_exact_diag():
    X, y = torch.randn(8, 3), torch.randn(8, 2)
    dl = DataLoader(TensorDataset(X, y), batch_size=4)
    model = WithNorm()
    with pytest.raises(ValueError, match=r"\['norm'\].*diag.*full"):
        Laplace(model, "regression", hessian_structure="kron", kfac_fallback="error").fit(dl)
    with pytest.warns(UserWarning, match="norm.weight"):
        la = Laplace(model, "regression", hessian_structure="kron").fit(dl)
    kinds = {tuple(b.names): b.kind for b in la.blocks_}
    assert kinds[("norm.weight", "norm.bias")] == "diag"
    G = dense_ggn(model, X, y, "regression")
    diag_block = [b for b in la.blocks_ if b.kind == "diag"][0]
    torch.testing.assert_close(diag_block.h, torch.diagonal(G)[diag_block.idx])


def test_embedding_kfac_matches_dense_block():
    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = nn.Embedding(5, 3), nn.Linear(3, 1)

        def forward(self, i):
            return self.out(self.emb(i[:, 0]))

    X, y = torch.randint(0, 5, (12, 1)), torch.randn(12, 1)
    model = Emb()
    G = dense_ggn(model, X, y, "regression")
    la = Laplace(model, "regression", hessian_structure="kron").fit(
        DataLoader(TensorDataset(X, y), batch_size=4)
    )
    # single-output linear read-out: both factors exact (rank-one output gradient, one-hot inputs)
    assert max(block_errors(la, G)) < 1e-9


@pytest.mark.parametrize("threads", [1, 2])
def test_both_factor_accumulation_routes_are_exact(threads):
    # one torch thread: BLAS syrk into one triangle; several: addmm_ (see curvature/kfac.py)
    X, y = torch.randn(7, 4, 3), torch.randn(7, 4, 2)
    model = SeqLinear()
    G = dense_ggn(model, X, y.reshape(7, -1), "regression")
    dl = DataLoader(TensorDataset(X, y), batch_size=3)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        la = Laplace(model, "regression", hessian_structure="kron").fit(dl)
    finally:
        torch.set_num_threads(before)
    assert max(block_errors(la, G)) < 1e-9
    for b in la.blocks_:
        torch.testing.assert_close(b.A, b.A.T, rtol=0, atol=1e-13)
        torch.testing.assert_close(b.B, b.B.T, rtol=0, atol=1e-13)
