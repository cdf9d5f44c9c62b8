"""LILA: the differentiable marglik gradient w.r.t. the amplitudes, and the estimator."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from workbench.equivariance import LearnedInvarianceClassifier, make_task
from workbench.equivariance.augmentation import AffineAugmentation, InvariantModel
from workbench.equivariance.invariance import make_mlp, marglik
from workbench.exceptions import NotFittedError


@pytest.fixture(scope="module")
def rotated():
    return make_task("rotated", 40, 20, canvas=8, random_state=0, dtype=np.float64)


def test_marglik_gradient_wrt_amplitudes_matches_finite_differences(rotated):
    torch.manual_seed(0)
    net = make_mlp((1, 8, 8), 10, (6,)).double()
    aug = AffineAugmentation(("rotate", "scale"), n_samples=3, init_amplitude=0.3).double()
    model = InvariantModel(net, aug)
    loader = DataLoader(TensorDataset(torch.from_numpy(rotated.X_train),
                                      torch.from_numpy(rotated.y_train)), batch_size=40)
    names = [f"net.{n}" for n, _ in net.named_parameters()]
    delta = torch.full((len(names),), 2.0, dtype=torch.float64, requires_grad=True)

    def value(raw):
        with torch.no_grad():
            aug.raw_amplitude.copy_(raw)
        torch.manual_seed(123)  # the same ε for every evaluation
        return marglik(model, loader, names, delta)

    raw0 = aug.raw_amplitude.detach().clone()
    lml = value(raw0)
    aug.raw_amplitude.grad = None
    lml.backward()
    grad = aug.raw_amplitude.grad.clone()
    assert torch.isfinite(grad).all() and (grad.abs() > 0).all()
    assert delta.grad is not None and torch.isfinite(delta.grad).all()
    h = 1e-5
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = h
        fd = (float(value(raw0 + e)) - float(value(raw0 - e))) / (2 * h)
        assert float(grad[i]) == pytest.approx(fd, rel=1e-4, abs=1e-6)


def test_lila_estimator_learns_amplitudes(rotated):
    est = LearnedInvarianceClassifier(transforms=("rotate", "translate_x"), hidden=(8,),
                                      n_samples=3, n_samples_eval=4, n_epochs=2,
                                      n_epochs_burnin=0, n_hypersteps=1, batch_size=20,
                                      lr_hyp=0.1)
    est.fit(rotated.X_train, rotated.y_train, rotated.X_test, rotated.y_test)
    h = est.history_
    assert h.amplitude.dims == ("epoch", "transform")
    assert h.transform.values.tolist() == ["rotate", "translate_x"]
    init = np.array([math.pi, 1.0]) * 0.05
    assert not np.allclose(h.amplitude.isel(epoch=-1), init)  # the marglik moved them
    assert np.isfinite(h.log_marglik).all()
    assert est.model_.n_samples_eval == 4  # restored after the marglik fits
    proba = est.predict_proba(rotated.X_test)
    assert proba.shape == (20, 10)
    plain = LearnedInvarianceClassifier(learn_invariance=False, hidden=(8,), n_epochs=1,
                                        n_epochs_burnin=0, batch_size=20)
    plain.fit(rotated.X_train, rotated.y_train)
    assert (plain.history_.amplitude == 0).all() and plain.model_.augmentation is None


def test_lila_bad_input(rotated):
    with pytest.raises(ValueError, match="transforms"):
        LearnedInvarianceClassifier(transforms=("shear",), n_epochs=1).fit(rotated.X_train,
                                                                          rotated.y_train)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        LearnedInvarianceClassifier(n_epochs=1).fit(rotated.X_train[:, 0], rotated.y_train)
    with pytest.raises(NotFittedError, match="not fitted"):
        LearnedInvarianceClassifier().predict(rotated.X_test)
