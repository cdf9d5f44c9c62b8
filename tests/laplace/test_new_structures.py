"""Low-rank, GP (functional) and subnetwork Laplace against dense float64 references."""

import math

import pytest
import torch
from torch import nn

from workbench.laplace import Laplace
from workbench.laplace.subnetwork import select_subnetwork

from .dense import dense_ggn, jacobian


def _net(k):
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, k))


def _data(likelihood, n=24, k=2):
    X = torch.randn(n, 3)
    y = torch.randn(n, k) if likelihood == "regression" else torch.randint(0, k, (n,))
    return _net(k), X, y


def _kw(likelihood):
    return dict(prior_precision=0.6, **({"sigma_noise": 0.5} if likelihood == "regression" else {}))


def _dense_posterior(model, X, y, likelihood, delta, sig2=1.0, scale=1.0):
    G = dense_ggn(model, X, y, likelihood) / sig2 * scale
    return G + delta * torch.eye(G.shape[0])


@pytest.mark.parametrize("likelihood", ["regression", "classification"])
def test_lowrank_with_full_rank_is_the_full_laplace(likelihood):
    model, X, y = _data(likelihood)
    full = Laplace(model, likelihood, hessian_structure="full", **_kw(likelihood)).fit([(X, y)])
    P = full.n_params
    lr = Laplace(
        model,
        likelihood,
        hessian_structure="lowrank",
        structure_options={"rank": P},
        **_kw(likelihood),
    ).fit([(X[:10], y[:10]), (X[10:], y[10:])])
    torch.testing.assert_close(lr.log_marginal_likelihood(), full.log_marginal_likelihood())
    torch.testing.assert_close(lr.posterior_covariance(), full.posterior_covariance())
    torch.testing.assert_close(lr.functional_variance(X[:5]), full.functional_variance(X[:5]))
    torch.testing.assert_close(
        lr.posterior_precision_diagonal(), full.posterior_precision_diagonal()
    )
    # differentiable evidence: same gradient w.r.t. the prior precision
    a = torch.tensor(0.6, requires_grad=True)
    b = torch.tensor(0.6, requires_grad=True)
    lr.log_marginal_likelihood(a).backward()
    full.log_marginal_likelihood(b).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_lowrank_rank_k_is_the_top_k_eigenpairs_plus_the_prior():
    model, X, y = _data("regression", k=1)
    k = 5
    la = Laplace(
        model,
        "regression",
        hessian_structure="lowrank",
        prior_structure="layerwise",
        prior_precision=torch.tensor([0.5, 1.0, 2.0, 3.0]),
        sigma_noise=0.5,
        structure_options={"rank": k, "n_iter": 21},
    ).fit([(X, y)])
    G = dense_ggn(model, X, y, "regression")
    lam, U = torch.linalg.eigh(G)
    Gk = U[:, -k:] @ torch.diag(lam[-k:]) @ U[:, -k:].T
    P = Gk / 0.25 + torch.diag(la.prior_precision_diag)
    torch.testing.assert_close(la.posterior_covariance(), torch.linalg.inv(P))
    t = la.evidence_terms()
    torch.testing.assert_close(t["log_det_posterior_precision"], torch.logdet(P))
    J, _ = jacobian(model, X[:4])
    torch.testing.assert_close(
        la.functional_variance(X[:4]), J @ torch.linalg.inv(P) @ J.transpose(1, 2)
    )


@pytest.mark.parametrize("structure", ["lowrank", "gp"])
def test_factor_samplers_map_standard_normals_to_the_posterior_covariance(structure):
    model, X, y = _data("classification")
    la = Laplace(
        model,
        "classification",
        hessian_structure=structure,
        prior_structure="diagonal",
        prior_precision=torch.linspace(0.3, 2.0, 26),
        structure_options={"rank": 7},
    ).fit([(X, y)])
    (b,), (bp,) = la.blocks_, la.block_priors()
    A = b.sample(la.likelihood_scale(), bp, torch.eye(b.d))  # rows: S e_i, so AᵀA = S Sᵀ
    torch.testing.assert_close(A.T @ A, la.posterior_covariance())
    torch.testing.assert_close(la.posterior_precision() @ la.posterior_covariance(), torch.eye(b.d))
    ed = la.effective_dimensions()
    assert set(ed) == set(la.param_names) and all(v >= 0 for v in ed.values())


@pytest.mark.parametrize("likelihood", ["regression", "classification"])
def test_gp_view_on_all_points_is_the_full_ggn_laplace(likelihood):
    model, X, y = _data(likelihood)
    full = Laplace(model, likelihood, hessian_structure="full", **_kw(likelihood)).fit([(X, y)])
    gp = Laplace(model, likelihood, hessian_structure="gp", **_kw(likelihood)).fit([(X, y)])
    torch.testing.assert_close(gp.log_marginal_likelihood(), full.log_marginal_likelihood())
    torch.testing.assert_close(gp.functional_variance(X[:6]), full.functional_variance(X[:6]))
    torch.testing.assert_close(gp(X[:6]), full(X[:6]))


def test_gp_view_on_context_points_is_the_gp_predictive_formula():
    """M < N context points, likelihood Hessian Λ = I/σ², prior kernel k = J P0⁻¹ J'ᵀ:
    f_var = K** − K*M (Λ⁻¹/c + K_MM)⁻¹ K_M*, c = N/M (context_scale='data')."""
    model, X, y = _data("regression", n=30, k=2)
    gp = Laplace(
        model,
        "regression",
        hessian_structure="gp",
        prior_precision=0.6,
        sigma_noise=0.5,
        structure_options={"n_context": 8, "random_state": 3},
    ).fit([(X, y)])
    ctx = gp.blocks_[0].context_index
    assert len(ctx) == 8
    Jm, _ = jacobian(model, X[ctx])
    Js, _ = jacobian(model, X[:5])
    Jm, Js = Jm.reshape(-1, Jm.shape[-1]) / math.sqrt(0.6), Js / math.sqrt(0.6)
    K_mm, K_sm = Jm @ Jm.T, torch.einsum("nop,mp->nom", Js, Jm)
    K_ss = Js @ Js.transpose(1, 2)
    C = 0.25 / (30 / 8) * torch.eye(16) + K_mm
    ref = K_ss - torch.einsum("nom,mq,npq->nop", K_sm, torch.linalg.inv(C), K_sm)
    torch.testing.assert_close(gp.functional_variance(X[:5]), ref)
    # the evidence is the Laplace evidence with the context GGN scaled to the data
    P = _dense_posterior(model, X[ctx], y[ctx], "regression", 0.6, 0.25, 30 / 8)
    t = gp.evidence_terms()
    torch.testing.assert_close(t["log_det_posterior_precision"], torch.logdet(P))


def test_gp_and_lowrank_continual_fits_stack_their_factors():
    model, X, y = _data("classification")
    opts = {"context_scale": 1.0}
    gp = Laplace(model, "classification", hessian_structure="gp", structure_options=opts)
    gp.fit([(X[:10], y[:10])]).fit([(X[10:], y[10:])], override=False)
    full = Laplace(model, "classification", hessian_structure="full").fit([(X, y)])
    torch.testing.assert_close(gp.log_marginal_likelihood(), full.log_marginal_likelihood())


def test_factor_structures_refuse_per_output_sigma_and_bad_options():
    model, X, y = _data("regression")
    with pytest.raises(ValueError, match="one scalar sigma_noise"):
        Laplace(
            model, "regression", hessian_structure="gp", sigma_noise=torch.tensor([0.5, 1.0])
        ).fit([(X, y)])
    with pytest.raises(ValueError, match="rank <= n_iter"):
        Laplace(
            model,
            "regression",
            hessian_structure="lowrank",
            structure_options={"rank": 5, "n_iter": 3},
        ).fit([(X, y)])


@pytest.mark.parametrize("structure", ["full", "diag"])
def test_subnetwork_is_the_full_laplace_restricted_to_the_indices(structure):
    model, X, y = _data("regression", k=1)
    idx = torch.tensor([0, 3, 7, 12, 16, 17, 20])
    la = Laplace(
        model,
        "regression",
        subset_of_weights="subnetwork",
        subnetwork_indices=idx,
        hessian_structure=structure,
        prior_precision=0.6,
        sigma_noise=0.5,
    ).fit([(X, y)])
    P_full = _dense_posterior(model, X, y, "regression", 0.6, 0.25)
    P = P_full[idx][:, idx]
    if structure == "diag":
        P = torch.diag(torch.diagonal(P))
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])[idx]
    torch.testing.assert_close(la.mean, theta)
    torch.testing.assert_close(la.posterior_covariance(), torch.linalg.inv(P))
    sse = float(((model(X) - y) ** 2).sum())
    ll = -sse / 0.5 - 24 * math.log(2 * math.pi * 0.25) / 2
    lml = ll - 0.5 * (torch.logdet(P) - 7 * math.log(0.6) + 0.6 * theta @ theta)
    torch.testing.assert_close(la.log_marginal_likelihood(), lml)
    J, f = jacobian(model, X[:4])
    Js = J[:, :, idx]
    mu, var = la(X[:4])
    torch.testing.assert_close(mu, f)
    torch.testing.assert_close(var, Js @ torch.linalg.inv(P) @ Js.transpose(1, 2))
    full_vec = la.model.full_vector(la.sample(3))
    assert full_vec.shape == (3, 21)
    keep = torch.ones(21, dtype=torch.bool)
    keep[idx] = False
    assert torch.equal(
        full_vec[:, keep],
        torch.cat([p.detach().reshape(-1) for p in model.parameters()])[keep].expand(3, -1),
    )


def test_subnetwork_selection_and_errors():
    model, X, y = _data("classification")
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    mag = select_subnetwork(model, 5, "largest_magnitude")
    assert torch.equal(mag, torch.argsort(flat.abs(), descending=True)[:5].sort().values)
    var = select_subnetwork(
        model, 5, "largest_variance", [(X, y)], "classification", prior_precision=2.0
    )
    diag = Laplace(model, "classification", hessian_structure="diag", prior_precision=2.0).fit(
        [(X, y)]
    )
    assert torch.equal(
        var,
        torch.argsort(1 / diag.posterior_precision_diagonal(), descending=True)[:5].sort().values,
    )
    assert torch.equal(
        select_subnetwork(model, 5, "random", random_state=1),
        select_subnetwork(model, 5, "random", random_state=1),
    )
    with pytest.raises(ValueError, match="needs train_loader"):
        select_subnetwork(model, 5)
    with pytest.raises(ValueError, match="needs subnetwork_indices"):
        Laplace(model, "classification", subset_of_weights="subnetwork")
    with pytest.raises(ValueError, match="duplicate"):
        Laplace(model, "classification", subset_of_weights="subnetwork", subnetwork_indices=[1, 1])
    with pytest.raises(ValueError, match=r"lie in \[0, 26\)"):
        Laplace(model, "classification", subset_of_weights="subnetwork", subnetwork_indices=[40])
    with pytest.raises(ValueError, match="'full' or 'diag'"):
        Laplace(
            model,
            "classification",
            subset_of_weights="subnetwork",
            subnetwork_indices=[1],
            hessian_structure="kron",
        )


@pytest.mark.parametrize("structure", ["lowrank", "gp"])
def test_factor_layer_route_equals_the_jacobian_route_with_weight_sharing(structure):
    """The predictive from layer inputs / output gradients (conv: shared positions) equals
    torch.func Jacobian rows through the same covariance."""
    from workbench.laplace.predictive import _functional_variance

    X = torch.randn(12, 2, 5)
    y = torch.randint(0, 3, (12,))
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(9, 3))
    la = Laplace(
        model,
        "classification",
        hessian_structure=structure,
        prior_structure="layerwise",
        prior_precision=torch.tensor([0.5, 1.0, 2.0, 3.0]),
        structure_options={"rank": 8, "n_context": 6},
    ).fit([(X, y)])
    assert la.blocks_[0].layers
    torch.testing.assert_close(
        _functional_variance(la, X[:4], None),
        _functional_variance(la, X[:4], None, route="jacobian"),
    )
