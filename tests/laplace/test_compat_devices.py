"""The new structures, predictives and the compat layer on every available device (CPU always,
CUDA when present): same numbers as on the CPU, outputs on the input's device."""

import pytest
import torch
from torch import nn

from workbench.laplace import Laplace, compat

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return model, X, y


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "kw",
    [
        {"hessian_structure": "lowrank", "structure_options": {"rank": 10}},
        {"hessian_structure": "gp", "structure_options": {"n_context": 20}},
        {"subset_of_weights": "subnetwork", "subnetwork_indices": torch.arange(0, 75, 3)},
    ],
    ids=["lowrank", "gp", "subnetwork"],
)
def test_new_structures_on_device(device, kw):
    model, X, y = _problem()
    ref = Laplace(model, "classification", **kw).fit([(X, y)])
    m = model.to(device)
    la = Laplace(m, "classification", **kw).fit([(X.to(device), y.to(device))])
    lml = la.log_marginal_likelihood()
    assert lml.device.type == device
    torch.testing.assert_close(lml.cpu(), ref.log_marginal_likelihood())
    for link in ("probit", "bridge", "bridge_norm"):
        p = la(X[:6].to(device), link_approx=link)
        assert p.device.type == device
        torch.testing.assert_close(p.cpu(), ref(X[:6], link_approx=link))
    assert la.sample(3).device.type == device
    la.optimize_prior_precision(n_steps=5)


@pytest.mark.parametrize("device", DEVICES)
def test_joint_continual_gridsearch_and_compat_on_device(device):
    model, X, y = _problem()
    Xd, yd = X.to(device), y.to(device)
    m = model.to(device)
    la = Laplace(m, "classification", hessian_structure="kron").fit([(Xd[:20], yd[:20])])
    la.fit([(Xd[20:], yd[20:])], override=False)
    cov = la.functional_covariance(Xd[:4])
    assert cov.device.type == device and cov.shape == (4, 3, 4, 3)
    res = la.optimize_prior_precision(method="gridsearch", val_loader=[(Xd, yd)], grid=[0.1, 1.0])
    assert res.attrs["best"] in (0.1, 1.0)
    cla = compat.Laplace(m, "classification")
    cla.fit([(Xd, yd)])
    cla.optimize_prior_precision(method="marglik", n_steps=5)
    assert cla(Xd[:3]).device.type == device
    assert cla.log_marginal_likelihood().device.type == device
