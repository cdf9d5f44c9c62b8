import pytest
import torch
from torch import nn

from workbench.sparsify import count_flops, count_parameters
from workbench.sparsify.models import mlp, prunable_parameters, small_cnn
from workbench.sparsify.structured import shrink, structured_prune, unit_scores


def _scores(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(p.shape, generator=g, dtype=torch.float64)
            for k, p in prunable_parameters(model).items()}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.75, 0.99])
def test_shrunk_equals_masked_float64(kind, sparsity):
    torch.manual_seed(0)
    if kind == "mlp":
        model, X = mlp(7, 3, width=20, depth=3).double(), torch.randn(50, 7, dtype=torch.float64)
    else:
        model, X = small_cnn(10, (6, 8), 12).double(), torch.randn(40, 1, 8, 8, dtype=torch.float64)
    masked, mask, keep = structured_prune(model, _scores(model), sparsity, X)
    small = shrink(masked, keep, X)
    torch.testing.assert_close(small(X), masked(X), rtol=0, atol=1e-12)
    # parameter count and FLOPs of the physically smaller net = non-zeros of the masked one
    assert count_parameters(small, sparse=False) == count_parameters(masked, sparse=True)
    assert count_flops(small, X, sparse=False) == count_flops(masked, X, sparse=True)
    # output layer untouched, hidden layers lose round(s * n) units (at least one kept)
    names = list(keep)
    assert keep[names[-1]].all()
    for n in names[:-1]:
        k = keep[n]
        assert int((~k).sum()) == min(round(sparsity * k.numel()), k.numel() - 1)
    if sparsity > 0:
        assert count_parameters(small, sparse=False) < count_parameters(model, sparse=False)


def test_shrink_removes_lowest_unit_scores_and_slices_next_layer():
    model = mlp(4, 2, width=5, depth=1).double()
    sc = {k: torch.ones_like(p) for k, p in prunable_parameters(model).items()}
    sc["0.weight"][[1, 3]] = 0.0  # units 1 and 3 of the hidden layer are least important
    masked, _, keep = structured_prune(model, sc, 0.4)
    assert keep["0"].tolist() == [True, False, True, False, True]
    small = shrink(masked, keep)
    assert small[0].weight.shape == (3, 4) and small[2].weight.shape == (2, 3)
    torch.testing.assert_close(small[2].weight, model[2].weight[:, [0, 2, 4]])
    assert torch.all(masked[2].weight[:, [1, 3]] == 0)


def test_unit_scores_sum_rows_and_filters():
    model = small_cnn(10, (3, 4), 5)
    sc = {k: torch.ones_like(p) for k, p in prunable_parameters(model).items()}
    us = unit_scores(model, sc)
    assert us["0"].tolist() == [9.0] * 3 and us["3"].tolist() == [27.0] * 4
    assert us["7"].shape == (5,)


def test_flops_by_hand():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 16, 3))
    X = torch.randn(4, 1, 4, 4)
    total, per = count_flops(model, X, sparse=False, per_layer=True)
    assert per["0"] == 2 * (2 * 9) * 16 + 2 * 16
    assert per["2"] == 2 * 32 * 3 + 3
    assert total == per["0"] + per["2"]
    with torch.no_grad():
        model[2].weight[:, :10] = 0
    assert count_flops(model, X, sparse=True, per_layer=True)[1]["2"] == 2 * 22 * 3 + 3


def test_structured_errors():
    X = torch.randn(2, 3)
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x)
    net = Net()
    with pytest.raises(TypeError, match="nn.Sequential"):
        structured_prune(net, _scores(net), 0.5, X)
    seq = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(TypeError, match="BatchNorm1d"):
        structured_prune(seq, _scores(seq), 0.5, X)
    cnn = small_cnn(10, (2, 2), 3)
    with pytest.raises(ValueError, match="example_input"):
        structured_prune(cnn, _scores(cnn), 0.5)
    with pytest.raises(ValueError, match="sparsity"):
        structured_prune(cnn, _scores(cnn), 1.0, torch.randn(1, 1, 8, 8))
