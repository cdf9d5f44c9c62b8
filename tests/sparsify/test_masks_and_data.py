import numpy as np
import pytest
import torch
from torch import nn

from workbench.sparsify import make_model, make_task
from workbench.sparsify.masks import PruningMask, global_prune
from workbench.sparsify.models import prunable_parameters
from workbench.sparsify.training import finetune


def test_breast_cancer_standardised_on_train_only():
    t = make_task("breast_cancer", random_state=3, dtype=torch.float64)
    assert t.X_train.shape[1] == 30 and t.n_classes == 2
    np.testing.assert_allclose(t.X_train.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(t.X_train.std(0, unbiased=False), 1, atol=1e-10)
    assert t.X_test.mean(0).abs().max() > 1e-3  # test split uses the train statistics
    assert len(t.X_train) + len(t.X_test) == 569


def test_digits_shape_and_split_seeded():
    a, b = make_task("digits", random_state=1), make_task("digits", random_state=1)
    assert a.X_train.shape[1:] == (1, 8, 8) and a.n_classes == 10
    assert torch.equal(a.X_train, b.X_train)
    assert float(a.X_train.max()) <= 1.0
    with pytest.raises(ValueError, match="task"):
        make_task("mnist")


def test_global_prune_exact_count_with_ties():
    scores = {"a": torch.zeros(10), "b": torch.tensor([[3.0, 0.0], [1.0, 2.0]])}
    m = global_prune(scores, 0.5)
    assert m.n_pruned == 7 and m.n_total == 14
    # the three largest scores survive, plus the 4 first-placed... (exact count is what matters)
    assert bool(m.masks["b"][0, 0]) and bool(m.masks["b"][1, 1]) and bool(m.masks["b"][1, 0])
    assert global_prune(scores, 0.0).n_pruned == 0


def test_global_prune_is_global_not_per_layer():
    scores = {"small": torch.full((100,), 0.1), "big": torch.full((100,), 10.0)}
    m = global_prune(scores, 0.5)
    assert m.layer_sparsity() == {"small": 1.0, "big": 0.0}


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_out_of_range(bad):
    with pytest.raises(ValueError, match=r"sparsity must lie in \[0, 1\)"):
        global_prune({"a": torch.ones(3)}, bad)


def test_nan_scores_rejected():
    with pytest.raises(ValueError, match="NaN"):
        global_prune({"a": torch.tensor([1.0, float("nan")])}, 0.5)


def test_mask_persists_through_finetuning():
    t = make_task("breast_cancer")
    model = make_model("breast_cancer")
    scores = {k: p.detach().abs() for k, p in prunable_parameters(model).items()}
    mask = global_prune(scores, 0.8)
    finetune(model, mask, t.train_loader(), n_epochs=3, lr=1e-2, prior_precision=10.0)
    for k, p in prunable_parameters(model).items():
        assert torch.all(p[~mask.masks[k]] == 0), k
        assert torch.all(p[mask.masks[k]] != 0), k
    # the model trained: kept weights moved
    assert mask.sparsity() == pytest.approx(0.8, abs=1e-3)


def test_mask_shape_mismatch_named():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="0.weight"):
        PruningMask({"0.weight": torch.ones(3, 3)}).apply(model)
    with pytest.raises(ValueError, match="nope"):
        PruningMask({"nope": torch.ones(3)}).apply(model)


def test_model_without_prunable_layers():
    with pytest.raises(ValueError, match="no prunable layers"):
        prunable_parameters(nn.Sequential(nn.ReLU(), nn.Dropout()))
