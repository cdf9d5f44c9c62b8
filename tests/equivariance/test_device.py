"""Both classifiers on a device: data moved once, training there, numpy results on the CPU (#17).

The CUDA leg runs only where CUDA is available and compares with the same fit on the CPU in
float64.
"""

import numpy as np
import pytest
import torch

from workbench._torch_utils import resolve_device
from workbench.equivariance import (
    LearnedEquivarianceClassifier,
    LearnedInvarianceClassifier,
    make_task,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))]
SETTINGS = {
    LearnedEquivarianceClassifier: dict(channels=(2, 2), strides=(1, 2), n_epochs=2,
                                        batch_size=20, n_epochs_burnin=0, n_hypersteps=3),
    LearnedInvarianceClassifier: dict(transforms=("rotate",), hidden=(4,), n_samples=2,
                                      n_samples_eval=3, n_epochs=2, n_epochs_burnin=0,
                                      n_hypersteps=1, batch_size=20, marglik_subset=30),
}


@pytest.fixture(scope="module")
def task():
    return make_task("rotated", 40, 12, canvas=8, random_state=0, dtype=np.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", list(SETTINGS), ids=lambda c: c.__name__)
def test_fit_and_predict_on_device(task, cls, device):
    est = cls(device=device, **SETTINGS[cls]).fit(task.X_train, task.y_train, task.X_test,
                                                   task.y_test)
    dev = torch.device(device)
    assert est.device_.type == dev.type and est.dtype_ == torch.float64
    assert all(p.device.type == dev.type for p in est.model_.parameters())
    proba = est.predict_proba(task.X_test)
    assert isinstance(proba, np.ndarray) and proba.dtype == np.float64 and proba.shape == (12, 10)
    assert np.isfinite(est.history_.log_marglik.values[-1])
    assert est.history_.val_accuracy.notnull().all()
    # the same fit on the CPU agrees to round-off (LILA's transform draws differ per device)
    if dev.type == "cuda" and cls is LearnedEquivarianceClassifier:
        ref = cls(device="cpu", **SETTINGS[cls]).fit(task.X_train, task.y_train, task.X_test,
                                                     task.y_test)
        np.testing.assert_allclose(proba, ref.predict_proba(task.X_test), atol=1e-6)


def test_default_device_is_cuda_when_available(task):
    est = LearnedEquivarianceClassifier(**{**SETTINGS[LearnedEquivarianceClassifier],
                                           "n_epochs": 1}).fit(task.X_train, task.y_train)
    assert est.device_ == resolve_device(None) and est.get_params()["device"] is None


@pytest.mark.parametrize("cls", list(SETTINGS), ids=lambda c: c.__name__)
def test_fit_leaves_the_global_rng_alone(task, cls):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    cls(device="cpu", **SETTINGS[cls]).fit(task.X_train, task.y_train)
    torch.testing.assert_close(torch.rand(3), expected)
