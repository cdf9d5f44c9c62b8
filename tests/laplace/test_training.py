"""marglik_training: recovers the noise level, returns the history as an xarray.Dataset."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace, marglik_training


def sine_data(n=160, sigma=0.3):
    g = torch.Generator().manual_seed(3)
    X = torch.rand(n, 1, generator=g) * 6 - 3
    y = torch.sin(X) + sigma * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(X, y), batch_size=40, shuffle=True, generator=g)


@pytest.mark.slow
def test_marglik_training_recovers_noise_level_and_keeps_best_model():
    dl = sine_data()
    model = nn.Sequential(nn.Linear(1, 24), nn.Tanh(), nn.Linear(24, 1))
    seen = []
    model, la, hist = marglik_training(
        model,
        dl,
        "regression",
        hessian_structure="kron",
        prior_structure="layerwise",
        n_epochs=120,
        lr=2e-2,
        n_epochs_burnin=20,
        marglik_frequency=10,
        n_hypersteps=30,
        progress=False,
        callback=lambda p: seen.append((p.done, p.state["la"])),
    )
    assert isinstance(la, Laplace)
    assert all(cb_la is la for _, cb_la in seen)
    seen = [epoch for epoch, _ in seen]
    assert abs(float(la.sigma_noise) - 0.3) / 0.3 < 0.15
    assert seen == list(range(1, 121))
    assert set(hist.data_vars) == {"loss", "log_marglik", "sigma_noise", "prior_precision"}
    assert hist.prior_precision.dims == ("epoch", "prior")
    assert list(hist.prior.values) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    lml = hist.log_marglik.values
    assert np.isnan(lml[:20]).all() and np.isfinite(lml[20::10]).all()
    # the returned model/Laplace are those of the best marglik estimate
    assert float(la.log_marginal_likelihood()) == pytest.approx(np.nanmax(lml), rel=1e-9)


@pytest.mark.parametrize("prior", ["unitwise", "diagonal", "group"])
def test_marglik_training_prior_structures_param_groups_and_stop(prior):
    X, y = torch.randn(40, 3), torch.randint(0, 3, (40,))
    dl = DataLoader(TensorDataset(X, y), batch_size=20)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 3))
    groups = {"body": ["0.weight", "0.bias"], "head": ["2.weight", "2.bias"]}
    model, la, hist = marglik_training(
        model,
        dl,
        "classification",
        hessian_structure="kron",
        prior_structure=prior,
        n_epochs=6,
        lr=1e-2,
        n_epochs_burnin=1,
        marglik_frequency=2,
        n_hypersteps=5,
        progress=False,
        param_groups=groups,
        group_structure={"head": "full"},
        callback=lambda p: p.done == 4,  # stop after epoch 4
    )
    assert hist.sizes["epoch"] == 4
    assert hist.sizes["prior"] == la.layout_.n_hyper
    assert np.isnan(hist.sigma_noise.values).all()
    assert {b.kind for b in la.blocks_} == {"kron", "full"}
    assert np.isfinite(float(la.log_marginal_likelihood()))


def test_marglik_training_learns_extra_parameter_by_differentiable_marglik():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.amp = nn.Parameter(torch.tensor(1.0))
            self.net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))

        def forward(self, x):
            return self.net(x * self.amp)

    dl = sine_data(n=40)
    model = Scaled()
    names = [n for n, _ in model.named_parameters() if n.startswith("net.")]
    before = float(model.amp)
    model, la, hist = marglik_training(
        model,
        dl,
        "regression",
        params=names,
        extra_params=[model.amp],
        n_epochs=3,
        n_epochs_burnin=1,
        n_hypersteps=2,
        lr=1e-2,
        progress=False,
    )
    assert float(model.amp) != before
    assert la.param_names == names


def test_marglik_training_per_output_sigma_history_has_output_dim():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 2, generator=g)
    y = torch.stack(
        [
            X[:, 0] + 0.1 * torch.randn(60, generator=g),
            X[:, 1] + 1.0 * torch.randn(60, generator=g),
        ],
        1,
    )
    dl = DataLoader(TensorDataset(X, y), batch_size=30)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    model, la, hist = marglik_training(
        model,
        dl,
        "regression",
        hessian_structure="diag",
        sigma_noise_init=torch.ones(2),
        n_epochs=40,
        lr=3e-2,
        n_epochs_burnin=5,
        marglik_frequency=5,
        n_hypersteps=20,
        progress=False,
    )
    assert hist.sigma_noise.dims == ("epoch", "output")
    s = la.sigma_noise
    assert s.shape == (2,) and s[0] < s[1]  # the noisier output gets the larger σ
    with pytest.raises(ValueError, match="per-output sigma_noise"):
        marglik_training(
            model,
            dl,
            "regression",
            hessian_structure="kron",
            sigma_noise_init=torch.ones(2),
            n_epochs=1,
            progress=False,
        )


def test_marglik_training_heteroscedastic_learns_input_dependent_noise():
    g = torch.Generator().manual_seed(1)
    X = torch.rand(120, 1, generator=g) * 4 - 2
    y = X[:, 0] + (0.05 + 0.5 * (X[:, 0] > 0)) * torch.randn(120, generator=g)
    dl = DataLoader(TensorDataset(X, y), batch_size=60)
    model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 2))
    model, la, hist = marglik_training(
        model,
        dl,
        "heteroscedastic",
        hessian_structure="kron",
        n_epochs=100,
        lr=3e-2,
        n_epochs_burnin=20,
        marglik_frequency=20,
        n_hypersteps=10,
        progress=False,
    )
    assert np.isnan(hist.sigma_noise.values).all()
    mu, var = la(torch.tensor([[-1.0], [1.0]]))
    assert var[1, 0, 0] > 2 * var[0, 0, 0]  # noisy half has the larger predictive variance
    assert abs(float(mu[0, 0]) + 1) < 0.3 and abs(float(mu[1, 0]) - 1) < 0.5


def test_marglik_training_callback_gets_progress_and_old_dict_style_warns():
    X, y = torch.randn(20, 2), torch.randn(20, 1)
    dl = DataLoader(TensorDataset(X, y), batch_size=10)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    got = []
    marglik_training(
        model,
        dl,
        "regression",
        n_epochs=3,
        n_epochs_burnin=1,
        n_hypersteps=2,
        progress=False,
        callback=got.append,
    )
    assert [p.done for p in got] == [1, 2, 3] and all(p.total == 3 for p in got)
    assert [p.state["marglik_step"] for p in got] == [False, True, True]
    assert np.isnan(got[0].metrics["log_marglik"]) and np.isfinite(got[1].metrics["log_marglik"])
    assert got[-1].state["history"].sizes["epoch"] == 3 and got[-1].fraction == 1.0
    with pytest.warns(FutureWarning, match="Progress"):
        assert got[1]["epoch"] == 2 and got[1]["la"] is got[1].state["la"]
