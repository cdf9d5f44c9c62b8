"""workbench.laplace.compat: laplace-torch 0.3's API over the native core, checked against the native
API and dense float64 references (laplace-torch itself is not a dependency)."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace as Native
from workbench.laplace.compat import (
    CurvlinopsEF,
    DiagLaplace,
    FullLaplace,
    KronLaplace,
    KronLLLaplace,
    Laplace,
)

from .dense import dense_ef, dense_ggn, jacobian


def _reg(n=40, k=1):
    X = torch.randn(n, 3)
    y = torch.randn(n, k)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, k))
    return model, X, y, DataLoader(TensorDataset(X, y), batch_size=16)


def _clf(n=40, k=3):
    X, y = torch.randn(n, 3), torch.randint(0, k, (n,))
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, k))
    return model, X, y, DataLoader(TensorDataset(X, y), batch_size=16)


def test_factory_defaults_to_last_layer_kfac_and_validates():
    model, X, y, dl = _clf()
    la = Laplace(model, "classification")
    assert isinstance(la, KronLLLaplace) and la.n_params is None
    la.fit(dl)
    assert la.n_params == 5 * 3 + 3 and la.n_layers == 2 and la.n_data == 40 and la.n_outputs == 3
    torch.testing.assert_close(la.mean, torch.cat([model[2].weight.reshape(-1), model[2].bias]))
    assert isinstance(Laplace(model, "classification", "all", "full"), FullLaplace)
    with pytest.raises(ValueError, match="Unsupported Laplace combination"):
        Laplace(model, "classification", "all", "nope")
    with pytest.raises(ValueError, match="Subnetwork Laplace requires"):
        Laplace(model, "classification", "subnetwork", "kron")
    with pytest.raises(ValueError, match="Invalid likelihood"):
        Laplace(model, "poisson")
    with pytest.raises(ValueError, match="Sigma noise != 1"):
        Laplace(model, "classification", sigma_noise=0.5)
    with pytest.raises(AttributeError, match="not fitted"):
        Laplace(model, "classification", "all", "full").log_marginal_likelihood()


def test_full_readouts_equal_dense_float64_quantities():
    model, X, y, dl = _reg()
    la = Laplace(model, "regression", "all", "full", sigma_noise=0.4, prior_precision=0.8)
    la.fit(dl)
    G = dense_ggn(model, X, y, "regression")
    P = G / 0.16 + 0.8 * torch.eye(la.n_params)
    torch.testing.assert_close(la.H, G)
    torch.testing.assert_close(la.posterior_precision, P)
    torch.testing.assert_close(la.posterior_covariance, torch.linalg.inv(P))
    torch.testing.assert_close(la.posterior_scale @ la.posterior_scale.T, torch.linalg.inv(P))
    torch.testing.assert_close(la.log_det_posterior_precision, torch.logdet(P))
    torch.testing.assert_close(
        la.log_det_prior_precision, la.n_params * torch.log(torch.tensor(0.8))
    )
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(la.scatter, 0.8 * theta @ theta)
    sse = ((model(X) - y) ** 2).sum().detach()
    ll = -sse / (2 * 0.16) - 40 * math.log(0.4 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(la.log_likelihood, ll)
    torch.testing.assert_close(la.loss, sse / 2)
    lml = ll - 0.5 * (torch.logdet(P) - la.n_params * math.log(0.8) + 0.8 * theta @ theta)
    torch.testing.assert_close(la.log_marginal_likelihood(), lml)
    J, f = jacobian(model, X[:4])
    mu, var = la(X[:4])
    torch.testing.assert_close(var, J @ torch.linalg.inv(P) @ J.transpose(1, 2))
    torch.testing.assert_close(la.functional_variance(J), var)
    delta = torch.randn(la.n_params)
    torch.testing.assert_close(la.square_norm(la.mean + delta), delta @ P @ delta)


def test_kfac_keeps_every_tensor_in_its_own_block_as_laplace_torch():
    """Weights Kronecker-factored, biases exact dense blocks, no weight-bias coupling."""
    model, X, y, dl = _clf()
    la = Laplace(model, "classification", "all", "kron", prior_precision=0.5)
    la.fit(dl)
    G = dense_ggn(model, X, y, "classification")
    P = la.posterior_precision
    for sl in (slice(15, 20), slice(35, 38)):  # the two biases: exact GGN blocks
        torch.testing.assert_close(P[sl, sl], G[sl, sl] + 0.5 * torch.eye(sl.stop - sl.start))
    assert P[:15, 15:20].abs().max() == 0 and P[20:35, 35:38].abs().max() == 0
    names = [n for n, _ in model.named_parameters()]
    groups = {n: [n] for n in names}
    structure = {n: "kron" if n.endswith("weight") else "full" for n in names}
    ref = Native(
        model,
        "classification",
        hessian_structure="kron",
        prior_precision=0.5,
        param_groups=groups,
        group_structure=structure,
    ).fit(dl)
    torch.testing.assert_close(la.log_marginal_likelihood(), ref.log_marginal_likelihood())
    with pytest.raises(ValueError, match="Kron either scalar or per-layer"):
        la.prior_precision = torch.ones(la.n_params)


@pytest.mark.parametrize("n_hyper,structure", [(1, "scalar"), (4, "layerwise"), (26, "diagonal")])
def test_prior_precision_structure_follows_the_tensor_length(n_hyper, structure):
    model, X, y, dl = _reg()
    prec = torch.linspace(0.5, 3.0, n_hyper)
    la = DiagLaplace(model, "regression", prior_precision=prec, sigma_noise=0.5)
    la.fit(dl)
    ref = Native(
        model,
        "regression",
        hessian_structure="diag",
        prior_structure=structure,
        prior_precision=prec,
        sigma_noise=0.5,
    ).fit(dl)
    torch.testing.assert_close(la.log_marginal_likelihood(), ref.log_marginal_likelihood())
    torch.testing.assert_close(la.prior_precision_diag, ref.prior_precision_diag)
    torch.testing.assert_close(la.posterior_variance, 1 / ref.posterior_precision_diagonal())
    with pytest.raises(ValueError, match="does not align"):
        la.prior_precision = torch.ones(7)


def test_log_marginal_likelihood_sets_and_differentiates_the_hyperparameters():
    model, X, y, dl = _reg()
    la = FullLaplace(model, "regression")
    la.fit(dl)
    log_prec = torch.zeros(4, requires_grad=True)
    log_sigma = torch.tensor(-0.5, requires_grad=True)
    lml = la.log_marginal_likelihood(log_prec.exp(), log_sigma.exp())
    lml.backward()
    torch.testing.assert_close(la.prior_precision.detach(), torch.ones(4))
    torch.testing.assert_close(la.sigma_noise.detach(), torch.tensor(-0.5).exp())
    ref = Native(model, "regression", prior_structure="layerwise").fit(dl)
    lp = torch.zeros(4, requires_grad=True)
    ls = torch.tensor(-0.5, requires_grad=True)
    ref.log_marginal_likelihood(lp.exp(), ls.exp()).backward()
    torch.testing.assert_close(log_prec.grad, lp.grad)
    torch.testing.assert_close(log_sigma.grad, ls.grad)


def test_optimize_prior_precision_marglik_matches_native_adam_from_init():
    model, X, y, dl = _clf()
    la = Laplace(model, "classification", "all", "diag", prior_precision=7.0)
    la.fit(dl)
    la.optimize_prior_precision(
        pred_type="glm",
        method="marglik",
        n_steps=30,
        lr=0.1,
        prior_structure="layerwise",
        link_approx="probit",
    )
    ref = Native(
        model,
        "classification",
        hessian_structure="diag",
        prior_structure="layerwise",
        prior_precision=1.0,
    ).fit(dl)  # laplace-torch restarts from init_prior_prec=1
    ref.optimize_prior_precision(n_steps=30, lr=0.1)
    assert la.prior_precision.shape == (4,)
    torch.testing.assert_close(la.prior_precision, ref.prior_precision)
    with pytest.warns(UserWarning, match="val_loader"):
        la.optimize_prior_precision(method="marglik", val_loader=dl, n_steps=1)
    with pytest.raises(ValueError, match="only marglik and gridsearch"):
        la.optimize_prior_precision(method="cv")


def test_gridsearch_scores_with_laplace_torchs_never_reset_running_metric():
    model, X, y, dl = _clf(60)
    val = DataLoader(TensorDataset(X[40:], y[40:]), batch_size=8)
    la = Laplace(model, "classification", "all", "kron")
    la.fit(DataLoader(TensorDataset(X[:40], y[:40]), batch_size=16))
    la.optimize_prior_precision(
        method="gridsearch",
        val_loader=val,
        grid_size=9,
        log_prior_prec_min=-2,
        log_prior_prec_max=2,
    )
    grid = torch.logspace(-2, 2, 9)
    nll = []
    for v in grid:
        la.prior_precision = float(v)
        p = la(X[40:])
        nll.append(float(-torch.log(p[torch.arange(20), y[40:]]).mean()))
    running = [sum(nll[: i + 1]) / (i + 1) for i in range(9)]  # laplace-torch: metric never reset
    la.optimize_prior_precision(
        method="gridsearch",
        val_loader=val,
        grid_size=9,
        log_prior_prec_min=-2,
        log_prior_prec_max=2,
    )
    assert float(la.prior_precision) == pytest.approx(float(grid[running.index(min(running))]))
    seen = []

    def my_loss(probs, targets):  # offline callable: called once per grid value on all of val
        seen.append(len(targets))
        return -torch.log(probs[torch.arange(len(targets)), targets]).mean()

    la.optimize_prior_precision(
        method="gridsearch",
        val_loader=val,
        loss=my_loss,
        grid_size=9,
        log_prior_prec_min=-2,
        log_prior_prec_max=2,
    )
    assert seen == [20] * 9
    assert float(la.prior_precision) == pytest.approx(float(grid[nll.index(min(nll))]))
    with pytest.raises(ValueError, match="requires a validation set"):
        la.optimize_prior_precision(method="gridsearch")


def test_call_variants_follow_laplace_torch_shapes_and_checks():
    model, X, y, dl = _reg(k=2)
    la = Laplace(model, "regression", "all", "full", sigma_noise=0.3)
    la.fit(dl)
    mu, var = la(X[:4], pred_type="glm")
    assert mu.shape == (4, 2) and var.shape == (4, 2, 2)
    mu_j, cov = la(X[:4], pred_type="glm", joint=True)
    assert mu_j.shape == (8,) and cov.shape == (8, 8)
    torch.testing.assert_close(cov.reshape(4, 2, 4, 2)[1, :, 1, :], var[1])
    _, dvar = la(X[:4], diagonal_output=True)
    torch.testing.assert_close(dvar, torch.diagonal(var, dim1=-2, dim2=-1))
    g = torch.Generator().manual_seed(0)
    m_nn, v_nn = la(X[:4], pred_type="nn", link_approx="mc", n_samples=20, generator=g)
    assert m_nn.shape == (4, 2) and v_nn.shape == (4, 2)
    assert la.predictive_samples(X[:4], n_samples=6).shape == (6, 4, 2)
    assert la.sample(5).shape == (5, la.n_params)
    with pytest.raises(ValueError, match="Only mc link approximation"):
        la(X[:4], pred_type="nn", link_approx="probit")
    with pytest.raises(ValueError, match="Only glm and nn"):
        la(X[:4], pred_type="gp")
    with pytest.raises(ValueError, match="Unsupported link approximation"):
        la(X[:4], link_approx="logit")
    model, X, y, dl = _clf()
    la = Laplace(model, "classification", "all", "diag")
    la.fit(dl)
    for link in ("probit", "bridge", "bridge_norm", "mc"):
        p = la(X[:3], link_approx=link, n_samples=50)
        torch.testing.assert_close(p.sum(-1), torch.ones(3))
    p_nn = la(X[:3], pred_type="nn", link_approx="mc", n_samples=30)
    torch.testing.assert_close(p_nn.sum(-1), torch.ones(3))
    pd = la(X[:3], link_approx="mc", diagonal_output=True, n_samples=4000, generator=g)
    assert (pd - la(X[:3], link_approx="mc", n_samples=4000, generator=g)).abs().max() < 0.1
    fs = la.functional_samples(X[:3], pred_type="nn", n_samples=5)
    assert fs.shape == (5, 3, 3)


def test_continual_fit_state_dict_and_backend_markers():
    model, X, y, dl = _reg()
    la = KronLaplace(model, "regression", sigma_noise=0.5)
    la.fit(DataLoader(TensorDataset(X[:20], y[:20]), batch_size=8))
    la.fit(DataLoader(TensorDataset(X[20:], y[20:]), batch_size=8), override=False)
    ref = KronLaplace(model, "regression", sigma_noise=0.5)
    ref.fit(dl)
    assert la.n_data == 40
    torch.testing.assert_close(la.log_marginal_likelihood(), ref.log_marginal_likelihood())
    other = KronLaplace(model, "regression")
    other.load_state_dict(la.state_dict())
    torch.testing.assert_close(other.log_marginal_likelihood(), la.log_marginal_likelihood())
    with pytest.raises(ValueError, match="wrong Laplace type"):
        DiagLaplace(model, "regression").load_state_dict(la.state_dict())
    ef = FullLaplace(model, "regression", backend=CurvlinopsEF)
    ef.fit(dl)
    E = dense_ef(model, X, y, "regression")
    torch.testing.assert_close(ef.H, E)


def test_tempered_log_likelihood_keeps_laplace_torchs_untempered_normaliser():
    model, X, y, dl = _reg()
    la = FullLaplace(model, "regression", sigma_noise=0.5, temperature=2.0)
    la.fit(dl)
    sse = float(((model(X) - y) ** 2).sum())
    ll = -sse / (2 * 0.25 * 2.0) - 40 * math.log(0.5 * math.sqrt(2 * math.pi))
    assert float(la.log_likelihood) == pytest.approx(ll, rel=1e-12)


def test_marglik_training_takes_laplace_torch_keywords_and_return_order():
    from workbench.laplace import marglik_training as native_training
    from workbench.laplace.compat import marglik_training

    X, y = torch.randn(48, 3), torch.randint(0, 3, (48,))
    dl = DataLoader(TensorDataset(X, y), batch_size=48)

    def net():
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3))

    la, model, margliks, losses = marglik_training(
        net(),
        dl,
        "classification",
        hessian_structure="full",
        n_epochs=5,
        optimizer_cls=torch.optim.SGD,
        optimizer_kwargs={"lr": 0.05, "momentum": 0.9},
        marglik_frequency=2,
        n_hypersteps=5,
        prior_structure="layerwise",
    )
    assert isinstance(la, FullLaplace) and len(losses) == 5 and len(margliks) == 2  # epochs 2, 4
    assert la.prior_precision.shape == (4,)
    torch.testing.assert_close(la.log_marginal_likelihood(), torch.tensor(-min(margliks)))
    # the same run through the native loop
    m2, ref, hist = native_training(
        net(),
        dl,
        "classification",
        hessian_structure="full",
        prior_structure="layerwise",
        n_epochs=5,
        lr=0.05,
        optimizer=torch.optim.SGD,
        optimizer_kwargs={"momentum": 0.9},
        n_epochs_burnin=1,
        marglik_frequency=2,
        n_hypersteps=5,
        progress=False,
    )
    torch.testing.assert_close(la.prior_precision, ref.prior_precision)
    torch.testing.assert_close(la.mean, ref.mean)
