"""laplace-torch-style user code run through workbench.laplace.compat.

Each snippet is written (by us) after laplace-torch's documented usage — its README, the
regression / calibration / subnetwork / GP examples of its documentation — with the one changed
line ``from workbench.laplace.compat import ...``. The numbers are checked against the native
API or a dense float64 reference, never against themselves.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace as Native
from workbench.laplace import marglik_training as native_marglik_training
from workbench.laplace.bridge import laplace_bridge
from workbench.laplace.compat import (
    BackPackGGN,
    DiagLaplace,
    Laplace,
    LargestVarianceDiagLaplaceSubnetMask,
    marglik_training,
)

from .dense import dense_ggn, jacobian


def toy_regression(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, generator=g) * 8
    y = torch.sin(X) + 0.3 * torch.randn(n, 1, generator=g)
    return X, y


def toy_classification(n=90, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()
    return X, y


def mlp(d_in, d_out, width=8, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, d_out))


def train(model, loader, loss_fn, epochs=30):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        for X, y in loader:
            opt.zero_grad()
            loss_fn(model(X), y).backward()
            opt.step()
    return model


def kfac_groups(model, names):
    """The native spelling of laplace-torch's KFAC (each tensor its own block)."""
    return dict(
        param_groups={n: [n] for n in names},
        group_structure={n: "kron" if n.endswith("weight") else "full" for n in names},
    )


def test_snippet_regression_posthoc_hyperparameters_by_hand():
    """docs: fit a full Laplace, tune log prior and log σ with Adam on -la.log_marginal_likelihood."""
    X, y = toy_regression()
    train_loader = DataLoader(TensorDataset(X, y), batch_size=20)
    model = train(mlp(1, 1), train_loader, nn.MSELoss())

    la = Laplace(model, "regression", subset_of_weights="all", hessian_structure="full")
    la.fit(train_loader)
    log_prior, log_sigma = torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)
    hyper_optimizer = torch.optim.Adam([log_prior, log_sigma], lr=1e-1)
    for _ in range(50):
        hyper_optimizer.zero_grad()
        neg_marglik = -la.log_marginal_likelihood(log_prior.exp(), log_sigma.exp())
        neg_marglik.backward()
        hyper_optimizer.step()
    X_test = torch.linspace(-2, 10, 7).unsqueeze(-1)
    f_mu, f_var = la(X_test)
    f_sigma = f_var.squeeze().sqrt()
    pred_std = torch.sqrt(f_sigma**2 + la.sigma_noise.item() ** 2)

    ref = Native(model, "regression", hessian_structure="full").fit(train_loader)
    lp, ls = torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)
    opt = torch.optim.Adam([lp, ls], lr=1e-1)
    for _ in range(50):
        opt.zero_grad()
        last = lp.exp().detach(), ls.exp().detach()  # la keeps the values of its last evaluation
        (-ref.log_marginal_likelihood(lp.exp(), ls.exp())).backward()
        opt.step()
    torch.testing.assert_close(log_sigma, ls)
    torch.testing.assert_close(la.sigma_noise.detach(), last[1].reshape(()))
    torch.testing.assert_close(la.prior_precision.detach(), last[0])
    ref.prior_precision, ref.sigma_noise = last
    J, _ = jacobian(model, X_test)
    G = dense_ggn(model, X, y, "regression")
    P = G / ref.sigma_noise**2 + ref.prior_precision * torch.eye(G.shape[0])
    dense_var = (J @ torch.linalg.inv(P) @ J.transpose(1, 2)).squeeze()
    torch.testing.assert_close(f_sigma**2, dense_var)
    torch.testing.assert_close(pred_std**2, dense_var + last[1] ** 2)


def test_snippet_regression_online_marglik_training():
    """docs: la, model, margliks, losses = marglik_training(model=..., train_loader=..., ...)."""
    X, y = toy_regression()
    train_loader = DataLoader(TensorDataset(X, y), batch_size=60)
    la, model, margliks, losses = marglik_training(
        model=mlp(1, 1, seed=1),
        train_loader=train_loader,
        likelihood="regression",
        hessian_structure="full",
        backend=BackPackGGN,
        n_epochs=20,
        optimizer_kwargs={"lr": 1e-2},
        prior_structure="scalar",
    )
    f_mu, f_var = la(X[:5])
    assert len(losses) == 20 and len(margliks) == 20 and f_var.shape == (5, 1, 1)
    m2, ref, _ = native_marglik_training(
        mlp(1, 1, seed=1),
        train_loader,
        "regression",
        hessian_structure="full",
        prior_structure="scalar",
        n_epochs=20,
        lr=1e-2,
        n_hypersteps=10,
        progress=False,
    )
    torch.testing.assert_close(la.prior_precision, ref.prior_precision)
    torch.testing.assert_close(la.sigma_noise, ref.sigma_noise.reshape(()))
    torch.testing.assert_close(f_var, ref(X[:5])[1])


def test_snippet_calibration_last_layer_kfac_marglik_probit():
    """docs: last-layer KFAC (the default), marglik prior, probit predictive over a test loader."""
    X, y = toy_classification()
    train_loader = DataLoader(TensorDataset(X[:60], y[:60]), batch_size=20)
    test_loader = DataLoader(TensorDataset(X[60:], y[60:]), batch_size=16)
    model = train(mlp(2, 3), train_loader, nn.CrossEntropyLoss())

    la = Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="kron")
    la.fit(train_loader)
    la.optimize_prior_precision(method="marglik", pred_type="glm", link_approx="probit")

    @torch.no_grad()
    def predict(dataloader, model, laplace=False, link_approx="probit"):
        py = []
        for x, _ in dataloader:
            if laplace:
                py.append(model(x, pred_type="glm", link_approx=link_approx))
            else:
                py.append(torch.softmax(model(x), dim=-1))
        return torch.cat(py)

    probs_map = predict(test_loader, model, laplace=False)
    probs_laplace = predict(test_loader, la, laplace=True)
    names = ["2.weight", "2.bias"]
    ref = Native(
        model, "classification", hessian_structure="kron", params=names, **kfac_groups(model, names)
    )
    ref.fit(train_loader).optimize_prior_precision(n_steps=100, lr=0.1)
    torch.testing.assert_close(la.prior_precision, ref.prior_precision)
    torch.testing.assert_close(probs_laplace, ref(X[60:], link_approx="probit"))
    nll = -torch.log(probs_laplace[torch.arange(30), y[60:]]).mean()
    assert torch.isfinite(nll) and probs_map.shape == probs_laplace.shape


def test_snippet_readme_diag_gridsearch_on_a_validation_loader():
    """README: diag over all weights, prior by grid search on val_loader, probit predictive."""
    X, y = toy_classification(120, seed=2)
    train_loader = DataLoader(TensorDataset(X[:80], y[:80]), batch_size=32)
    val_loader = DataLoader(TensorDataset(X[80:], y[80:]), batch_size=16)
    model = train(mlp(2, 3), train_loader, nn.CrossEntropyLoss())

    la = Laplace(model, "classification", subset_of_weights="all", hessian_structure="diag")
    la.fit(train_loader)
    la.optimize_prior_precision(
        method="gridsearch",
        pred_type="glm",
        link_approx="probit",
        val_loader=val_loader,
        grid_size=15,
    )
    pred = la(X[80:], pred_type="glm", link_approx="probit")

    ref = Native(model, "classification", hessian_structure="diag").fit(train_loader)
    grid = torch.logspace(-4, 4, 15)
    nll = []
    for v in grid:
        ref.prior_precision = float(v)
        p = ref(X[80:])
        nll.append(float(-torch.log(p[torch.arange(40), y[80:]]).mean()))
    running = np.cumsum(nll) / np.arange(1, 16)  # laplace-torch's metric is never reset
    best = float(grid[int(np.argmin(running))])
    assert float(la.prior_precision) == pytest.approx(best)
    ref.prior_precision = best
    torch.testing.assert_close(pred, ref(X[80:]))


def test_snippet_subnetwork_by_largest_variance():
    """docs: subnetwork mask from a diagonal Laplace, then a full Laplace over the subnetwork."""
    X, y = toy_classification()
    train_loader = DataLoader(TensorDataset(X, y), batch_size=30)
    model = train(mlp(2, 3), train_loader, nn.CrossEntropyLoss())

    diag_laplace_model = DiagLaplace(model, "classification")
    subnetwork_mask = LargestVarianceDiagLaplaceSubnetMask(
        model, n_params_subnet=10, diag_laplace_model=diag_laplace_model
    )
    subnetwork_indices = subnetwork_mask.select(train_loader)
    la = Laplace(
        model,
        "classification",
        subset_of_weights="subnetwork",
        hessian_structure="full",
        subnetwork_indices=subnetwork_indices,
    )
    la.fit(train_loader)
    probs = la(X[:6], pred_type="glm", link_approx="probit")

    idx = subnetwork_indices
    G = dense_ggn(model, X, y, "classification")[idx][:, idx]
    Sigma = torch.linalg.inv(G + torch.eye(10))
    J, f = jacobian(model, X[:6])
    var = torch.diagonal(J[:, :, idx] @ Sigma @ J[:, :, idx].transpose(1, 2), dim1=-2, dim2=-1)
    torch.testing.assert_close(probs, torch.softmax(f / torch.sqrt(1 + math.pi / 8 * var), -1))


def test_snippet_bridge_mc_and_nn_predictives():
    X, y = toy_classification()
    train_loader = DataLoader(TensorDataset(X, y), batch_size=30)
    model = train(mlp(2, 3), train_loader, nn.CrossEntropyLoss())
    la = Laplace(
        model,
        "classification",
        subset_of_weights="all",
        hessian_structure="full",
        prior_precision=2.0,
    )
    la.fit(train_loader)
    J, f = jacobian(model, X[:5])
    cov = J @ la.posterior_covariance @ J.transpose(1, 2)
    torch.testing.assert_close(la(X[:5], link_approx="bridge"), laplace_bridge(f, cov))
    torch.testing.assert_close(la(X[:5], link_approx="bridge_norm"), laplace_bridge(f, cov, True))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ref = Native(model, "classification", hessian_structure="full", prior_precision=2.0).fit(
        train_loader
    )
    torch.testing.assert_close(
        la(X[:5], pred_type="nn", link_approx="mc", n_samples=50, generator=g1),
        ref(X[:5], pred_type="nn", n_samples=50, generator=g2),
    )
    samples = la.predictive_samples(X[:5], pred_type="glm", n_samples=20)
    assert samples.shape == (20, 5, 3) and torch.allclose(samples.sum(-1), torch.ones(20, 5))


def test_snippet_joint_predictive_for_batch_bayesian_optimisation():
    X, y = toy_regression(40)
    train_loader = DataLoader(TensorDataset(X, y), batch_size=20)
    model = train(mlp(1, 1), train_loader, nn.MSELoss())
    la = Laplace(
        model, "regression", subset_of_weights="all", hessian_structure="kron", sigma_noise=0.3
    )
    la.fit(train_loader)
    f_mu, f_cov = la(X[:6], pred_type="glm", joint=True)
    assert f_mu.shape == (6,) and f_cov.shape == (6, 6)
    J, f = jacobian(model, X[:6])
    Jf = J.reshape(6, -1)
    torch.testing.assert_close(f_cov, Jf @ la.posterior_covariance @ Jf.T)
    torch.testing.assert_close(f_mu, f.reshape(6))


def test_snippet_continual_learning_and_serialisation(tmp_path):
    X, y = toy_regression(60)
    tasks = [
        DataLoader(TensorDataset(X[i : i + 20], y[i : i + 20]), batch_size=10) for i in (0, 20, 40)
    ]
    model = train(mlp(1, 1), DataLoader(TensorDataset(X, y), batch_size=20), nn.MSELoss())
    la = Laplace(model, "regression", subset_of_weights="all", hessian_structure="diag")
    la.fit(tasks[0])
    for loader in tasks[1:]:
        la.fit(loader, override=False)
    G = dense_ggn(model, X, y, "regression")
    torch.testing.assert_close(la.posterior_precision, torch.diagonal(G) + 1.0)
    torch.save(la.state_dict(), tmp_path / "la.pt")
    la2 = Laplace(model, "regression", subset_of_weights="all", hessian_structure="diag")
    la2.load_state_dict(torch.load(tmp_path / "la.pt", weights_only=False))
    torch.testing.assert_close(la2(X[:4])[1], la(X[:4])[1])


def test_snippet_gp_view_and_per_layer_prior():
    X, y = toy_regression(40)
    train_loader = DataLoader(TensorDataset(X, y), batch_size=20)
    model = train(mlp(1, 1), train_loader, nn.MSELoss())
    la = Laplace(
        model,
        "regression",
        subset_of_weights="all",
        hessian_structure="gp",
        n_subset=40,
        sigma_noise=0.3,
    )
    la.fit(train_loader)
    f_mu, f_var = la(X[:5], pred_type="gp")
    full = Laplace(
        model, "regression", subset_of_weights="all", hessian_structure="full", sigma_noise=0.3
    )
    full.fit(train_loader)
    torch.testing.assert_close(f_var, full(X[:5])[1])
    full.prior_precision = torch.tensor([1.0, 2.0, 3.0, 4.0])  # one per parameter tensor
    ref = Native(
        model,
        "regression",
        hessian_structure="full",
        prior_structure="layerwise",
        prior_precision=torch.tensor([1.0, 2.0, 3.0, 4.0]),
        sigma_noise=0.3,
    ).fit(train_loader)
    torch.testing.assert_close(full.log_marginal_likelihood(), ref.log_marginal_likelihood())
