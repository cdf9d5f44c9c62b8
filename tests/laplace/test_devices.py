"""Device agnosticism: every structure fits, evaluates the marglik and predicts on each available
device (CPU always, CUDA when present), agrees with CPU, and keeps outputs on the input's device."""

import pytest
import torch
from torch import nn

from workbench.laplace import Laplace

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
    "structure,subset",
    [("full", "all"), ("diag", "all"), ("kron", "all"), ("full", "last_layer")],
)
def test_fit_marglik_predict_on_device(device, structure, subset):
    model, X, y = _problem()
    ref = Laplace(model, "classification", hessian_structure=structure, subset_of_weights=subset)
    ref.fit([(X, y)])
    m = model.to(device)
    la = Laplace(m, "classification", hessian_structure=structure, subset_of_weights=subset)
    la.fit([(X.to(device), y.to(device))])
    lml = la.log_marginal_likelihood()
    assert lml.device.type == device
    torch.testing.assert_close(lml.cpu(), ref.log_marginal_likelihood())
    la.optimize_prior_precision(n_steps=5)
    probs = la(X[:6].to(device), link_approx="probit")
    assert probs.device.type == device and probs.dtype == torch.float64
    torch.testing.assert_close(probs.sum(-1).cpu(), torch.ones(6, dtype=torch.float64))
    samples = la.predictive_samples(X[:6].to(device), n_samples=4)
    assert samples.device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_marglik_training_and_state_dict_on_device(device):
    from workbench.laplace import marglik_training

    g = torch.Generator().manual_seed(1)
    X = torch.randn(30, 2, generator=g, dtype=torch.float64)
    y = torch.sin(X[:, :1]) + 0.1 * torch.randn(30, 1, generator=g, dtype=torch.float64)
    runs = {}
    for dev in ("cpu", device):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).double().to(dev)
        batches = [(X[i : i + 10].to(dev), y[i : i + 10].to(dev)) for i in range(0, 30, 10)]
        runs[dev] = marglik_training(
            model,
            batches,
            "regression",
            hessian_structure="kron",
            n_epochs=4,
            n_epochs_burnin=1,
            n_hypersteps=3,
            lr=1e-2,
            progress=False,
        )
    (_, la_cpu, h_cpu), (model, la, h) = runs["cpu"], runs[device]
    assert la.mean.device.type == device and la.log_marginal_likelihood().device.type == device
    torch.testing.assert_close(torch.as_tensor(h.loss.values), torch.as_tensor(h_cpu.loss.values))
    torch.testing.assert_close(la.log_marginal_likelihood().cpu(), la_cpu.log_marginal_likelihood())
    la2 = Laplace(model, "regression", hessian_structure="kron", prior_structure="layerwise")
    la2.load_state_dict(la.state_dict())
    torch.testing.assert_close(la2(X[:3].to(device))[1], la(X[:3].to(device))[1])
