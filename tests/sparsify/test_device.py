"""SpaM on a device: data moved once, every step there, numpy results on the CPU (#17).

The CUDA leg runs only where CUDA is available; it compares against the same fit on the CPU in
float64 (the networks are tiny, so the two agree to round-off).
"""

import numpy as np
import pytest
import torch

from workbench._torch_utils import resolve_device
from workbench.sparsify import SpaM, make_task

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))]
FAST = dict(n_epochs=3, n_epochs_burnin=1, marglik_frequency=1, n_hypersteps=3,
            dtype=torch.float64)


@pytest.fixture(scope="module")
def task():
    return make_task("breast_cancer", dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("prior", ["map", "diagonal"])
def test_fit_prune_predict_on_device(task, device, prior):
    est = SpaM(prior=prior, device=device, **FAST).fit(task.X_train, task.y_train)
    dev = torch.device(device)
    assert est.device_.type == dev.type
    assert all(p.device.type == dev.type for p in est.model_.parameters())
    assert est.X_train_.device.type == dev.type and est.y_train_.device.type == dev.type
    proba = est.predict_proba(task.X_test.numpy())
    assert isinstance(proba, np.ndarray) and proba.dtype == np.float64 and proba.shape == (171, 2)
    for crit in ("opd", "snip", "random"):
        pn = est.prune(0.8, crit, structured=crit == "snip", finetune_epochs=1)
        ev = pn.evaluate(task.X_test, task.y_test)  # CPU tensors in, moved to the model
        assert 0.5 < ev["accuracy"] <= 1.0 and np.isfinite(ev["nll"])
    assert est.prior_precision_diag().device.type == "cpu"
    if dev.type == "cuda":  # the same fit on the CPU agrees to round-off
        ref = SpaM(prior=prior, device="cpu", **FAST).fit(task.X_train, task.y_train)
        np.testing.assert_allclose(proba, ref.predict_proba(task.X_test), atol=1e-8)


def test_default_device_is_cuda_when_available(task):
    est = SpaM(prior="map", n_epochs=1).fit(task.X_train[:50], task.y_train[:50])
    assert est.device_ == resolve_device(None)
    assert est.get_params()["device"] is None  # the parameter itself stays as given


def test_fit_leaves_the_global_rng_alone(task):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    SpaM(prior="map", n_epochs=1, device="cpu").fit(task.X_train[:50], task.y_train[:50])
    torch.testing.assert_close(torch.rand(3), expected)
