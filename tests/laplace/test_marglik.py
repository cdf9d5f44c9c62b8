"""Log marginal likelihood: closed-form Bayesian linear regression, gradients vs finite differences,
the differentiable (create_graph) mode, and the KFAC log-determinant routes vs dense."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace


def blr_setup(prior_diag_fn, sigma=0.5, n=30, d=3, k=2):
    """Linear model at its exact MAP; returns model, loader, Φ, y, P0 (diag)."""
    X = torch.randn(n, d)
    y = X @ torch.randn(d, k) + sigma * torch.randn(n, k)
    model = nn.Linear(d, k)
    Phi = torch.cat([X, torch.ones(n, 1)], 1)  # [x, 1] per output row, matches [W | b] row-major
    p0 = prior_diag_fn(model)  # (k*(d+1),) in [W | b] row-major order per output
    P = torch.kron(torch.eye(k), Phi.T @ Phi) / sigma**2 + torch.diag(p0)
    theta = torch.linalg.solve(P, (Phi.T @ y / sigma**2).T.reshape(-1))
    W = theta.reshape(k, d + 1)
    with torch.no_grad():
        model.weight.copy_(W[:, :d])
        model.bias.copy_(W[:, d])
    return model, DataLoader(TensorDataset(X, y), batch_size=7), Phi, y, p0, P


def blr_evidence(Phi, y, p0, sigma):
    """log N(vec y | 0, σ² I + (I ⊗ Φ) P0⁻¹ (I ⊗ Φ)ᵀ), outputs independent given the prior."""
    k = y.shape[1]
    A = torch.kron(torch.eye(k), Phi)
    C = sigma**2 * torch.eye(A.shape[0]) + A @ torch.diag(1 / p0) @ A.T
    yv = y.T.reshape(-1)
    return torch.distributions.MultivariateNormal(torch.zeros_like(yv), C).log_prob(yv)


def _layerwise_rowmajor(dw, db, d=3, k=2):
    return torch.cat([torch.full((k, d), dw), torch.full((k, 1), db)], 1).reshape(-1)


@pytest.mark.parametrize("structure", ["full", "kron"])
@pytest.mark.parametrize("prior", ["scalar", "layerwise", "unitwise"])
def test_linear_model_marglik_equals_closed_form_evidence(structure, prior):
    sigma = 0.5
    if prior == "scalar":
        prec = 2.0
        fn = lambda m: torch.full((8,), 2.0)  # noqa: E731
    elif prior == "layerwise":
        prec = torch.tensor([2.0, 0.3])
        fn = lambda m: _layerwise_rowmajor(2.0, 0.3)  # noqa: E731
    else:  # a (out=2), b (in=3), c (bias unit)
        prec = torch.tensor([1.5, 3.0, 0.5, 2.0, 1.0, 0.7])
        a, b, c = prec[:2], prec[2:5], prec[5]
        fn = lambda m: torch.cat([a[:, None] * b[None, :], (a * c)[:, None]], 1).reshape(-1)  # noqa: E731
    model, dl, Phi, y, p0, P = blr_setup(fn, sigma)
    la = Laplace(
        model,
        "regression",
        hessian_structure=structure,
        prior_structure=prior,
        prior_precision=prec,
        sigma_noise=sigma,
    ).fit(dl)
    torch.testing.assert_close(
        la.prior_precision_diag[la.blocks_[0].idx]
        if structure == "kron"
        else la.prior_precision_diag,
        p0
        if structure == "kron"
        else torch.cat([p0.reshape(2, 4)[:, :3].reshape(-1), p0.reshape(2, 4)[:, 3]]),
    )
    lml = la.log_marginal_likelihood()
    torch.testing.assert_close(lml, blr_evidence(Phi, y, p0, sigma), rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("structure", ["full", "kron"])
def test_glm_predictive_equals_closed_form(structure):
    model, dl, Phi, y, p0, P = blr_setup(lambda m: torch.full((8,), 2.0), 0.5)
    la = Laplace(
        model, "regression", hessian_structure=structure, prior_precision=2.0, sigma_noise=0.5
    ).fit(dl)
    Xs = torch.randn(6, 3)
    f_mu, f_var = la(Xs)
    phi = torch.cat([Xs, torch.ones(6, 1)], 1)
    Sigma = torch.linalg.inv(P)  # [W | b] row-major order
    A = torch.stack([torch.kron(torch.eye(2), p[None, :]) for p in phi])  # (6, 2, 8)
    torch.testing.assert_close(f_var, A @ Sigma @ A.transpose(1, 2), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(f_mu, model(Xs).detach())


def mlp_fit(structure, prior, likelihood="regression", curvature="ggn"):
    X = torch.randn(20, 3)
    y = torch.randn(20, 2) if likelihood == "regression" else torch.randint(0, 2, (20,))
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    return Laplace(
        model,
        likelihood,
        hessian_structure=structure,
        prior_structure=prior,
        curvature=curvature,
        sigma_noise=0.7,
    ).fit(DataLoader(TensorDataset(X, y), batch_size=8))


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
@pytest.mark.parametrize("prior", ["scalar", "layerwise", "unitwise", "diagonal"])
def test_marglik_gradients_match_finite_differences(structure, prior):
    la = mlp_fit(structure, prior)
    n = la.layout_.n_hyper
    g = torch.Generator().manual_seed(1)
    log_prec = (torch.rand(n, generator=g) * 2 - 1).requires_grad_(True)
    log_sig = torch.tensor(-0.2, requires_grad=True)
    lml = la.log_marginal_likelihood(log_prec.exp(), log_sig.exp())
    gp, gs = torch.autograd.grad(lml, [log_prec, log_sig])
    eps = 1e-6
    with torch.no_grad():
        f = lambda lp, ls: la.log_marginal_likelihood(lp.exp(), ls.exp())  # noqa: E731
        for i in range(min(n, 6)):
            e = torch.zeros(n)
            e[i] = eps
            fd = (f(log_prec + e, log_sig) - f(log_prec - e, log_sig)) / (2 * eps)
            assert abs(float(fd - gp[i])) < 1e-5 * max(1, abs(float(fd)))
        fd = (f(log_prec, log_sig + eps) - f(log_prec, log_sig - eps)) / (2 * eps)
        assert abs(float(fd - gs)) < 1e-5 * max(1, abs(float(fd)))


def test_kron_unitwise_logdet_on_conv_layers_is_exact():
    X, y = torch.randn(10, 2, 5, 5), torch.randint(0, 3, (10,))
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(27, 3))
    la = Laplace(model, "classification", hessian_structure="kron", prior_structure="unitwise").fit(
        DataLoader(TensorDataset(X, y), batch_size=5)
    )
    prec = torch.rand(la.layout_.n_hyper) + 0.5
    diag = la.layout_.to_diag(prec)
    conv_w = diag[la.param_slices["0.weight"]].reshape(3, 2, 3, 3)
    # log-additive per output / input channel: every kernel position shares δ_oc = a_o b_c
    torch.testing.assert_close(
        conv_w,
        prec[:3].reshape(3, 1, 1, 1) * prec[3:5].reshape(1, 2, 1, 1) * torch.ones(1, 1, 3, 3),
    )
    for b in la.blocks_:
        bp = la.layout_.block_prior(prec, diag, b)
        torch.testing.assert_close(
            b.logdet(1.0, bp), torch.logdet(torch.kron(b.B, b.A) + torch.diag(bp.diag))
        )


def test_kron_logdet_routes_against_dense():
    la = mlp_fit("kron", "unitwise")
    s = la.likelihood_scale(la.sigma_noise)
    prec = torch.rand(la.layout_.n_hyper) + 0.5
    diag = la.layout_.to_diag(prec)
    for b in la.blocks_:
        bp = la.layout_.block_prior(prec, diag, b)
        dense = s * torch.kron(b.B, b.A) + torch.diag(bp.diag)
        torch.testing.assert_close(
            b.logdet(s, bp), torch.logdet(dense)
        )  # exact Kronecker-prior route
    lad = mlp_fit("kron", "diagonal")
    prec = torch.rand(lad.layout_.n_hyper) + 0.5
    diag = lad.layout_.to_diag(prec)
    for b in lad.blocks_:
        bp = lad.layout_.block_prior(prec, diag, b)
        exact = torch.logdet(s * torch.kron(b.B, b.A) + torch.diag(bp.diag))
        approx = b.logdet(s, bp)
        assert (
            approx >= exact - 1e-10
        )  # Hadamard: the eigenbasis-diagonal approximation is an upper bound
        assert approx - exact < 0.1 * abs(float(exact)) + 1.0
        bp_iso = lad.layout_.block_prior(torch.full_like(prec, 0.8), torch.full_like(diag, 0.8), b)
        torch.testing.assert_close(
            b.logdet(s, bp_iso), torch.logdet(s * torch.kron(b.B, b.A) + 0.8 * torch.eye(b.d))
        )


class Augmented(nn.Module):
    """Network whose input is scaled by a learned amplitude that the Laplace does not cover."""

    def __init__(self):
        super().__init__()
        self.amp = nn.Parameter(torch.tensor(0.8))
        self.net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1))

    def forward(self, x):
        return self.net(x * self.amp + 0.3 * torch.sin(3 * x * self.amp))


@pytest.mark.parametrize("structure", ["full", "kron", "diag"])
def test_differentiable_marglik_gradient_to_network_hyperparameter_matches_fd(structure):
    X, y = torch.randn(16, 2), torch.randn(16, 1)
    dl = DataLoader(TensorDataset(X, y), batch_size=6)
    model = Augmented()
    names = [n for n, _ in model.named_parameters() if n.startswith("net.")]
    la = Laplace(
        model, "regression", hessian_structure=structure, params=names, prior_precision=0.5
    )
    la.fit(dl, create_graph=True)
    (g,) = torch.autograd.grad(la.log_marginal_likelihood(), [model.amp])
    eps = 1e-5
    vals = []
    for sgn in (1, -1):
        with torch.no_grad():
            model.amp += sgn * eps
        vals.append(
            float(
                Laplace(
                    model,
                    "regression",
                    hessian_structure=structure,
                    params=names,
                    prior_precision=0.5,
                )
                .fit(dl)
                .log_marginal_likelihood()
            )
        )
        with torch.no_grad():
            model.amp -= sgn * eps
    fd = (vals[0] - vals[1]) / (2 * eps)
    assert abs(float(g) - fd) < 1e-5 * max(1.0, abs(fd))


def test_optimize_prior_precision_increases_marglik_and_full_eigendecomposition_is_cached():
    la = mlp_fit("full", "scalar", likelihood="classification")
    before = float(la.log_marginal_likelihood())
    hist = la.optimize_prior_precision(method="marglik", n_steps=50, lr=0.1)
    assert float(la.log_marginal_likelihood()) >= before
    assert hist[-1] >= hist[0]
    assert "evals" in la.blocks_[0]._cache  # eigenvalues computed once, reused by every step
    with pytest.raises(ValueError, match="method"):
        la.optimize_prior_precision(method="cv")


def test_effective_dimensions_match_eigenvalue_formula():
    la = mlp_fit("full", "layerwise")
    ed = la.effective_dimensions()
    s = la.likelihood_scale(la.sigma_noise)
    b = la.blocks_[0]
    H = torch.zeros(b.d, b.d)
    H[b.idx[:, None], b.idx[None, :]] = b.H  # back to the flat parameter order
    for name, sl in la.param_slices.items():
        lam = torch.linalg.eigvalsh(H[sl, sl]) * s
        delta = la.prior_precision_diag[sl][0]
        assert math.isclose(ed[name], float((lam / (lam + delta)).sum()), rel_tol=1e-8)


def test_per_output_sigma_full_and_diag_are_exact_and_differentiable():
    sig = torch.tensor([0.4, 1.3])
    model, dl, Phi, y, p0, P = blr_setup(lambda m: torch.full((8,), 2.0), 0.5)
    # evidence with one σ per output: outputs independent, log N(y_k | 0, σ_k² I + Φ Φᵀ / δ)
    ev = sum(
        torch.distributions.MultivariateNormal(
            torch.zeros(len(y)), sig[k] ** 2 * torch.eye(len(y)) + Phi @ Phi.T / 2.0
        ).log_prob(y[:, k])
        for k in range(2)
    )
    # the closed form needs the MAP under these σ: refit the weights per output
    with torch.no_grad():
        for k in range(2):
            A = Phi.T @ Phi / sig[k] ** 2 + 2.0 * torch.eye(4)
            w = torch.linalg.solve(A, Phi.T @ y[:, k] / sig[k] ** 2)
            model.weight[k] = w[:3]
            model.bias[k] = w[3]
    for structure in ["full", "diag"]:
        la = Laplace(
            model,
            "regression",
            hessian_structure=structure,
            prior_precision=2.0,
            sigma_noise=torch.tensor([1.0, 1.0]),
        ).fit(dl)
        if structure == "full":
            torch.testing.assert_close(la.log_marginal_likelihood(sigma_noise=sig), ev)
        ls = sig.log().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(la.log_marginal_likelihood(sigma_noise=ls.exp()), [ls])
        with torch.no_grad():
            for k in range(2):
                e = torch.zeros(2)
                e[k] = 1e-6
                fd = (
                    la.log_marginal_likelihood(sigma_noise=(ls + e).exp())
                    - la.log_marginal_likelihood(sigma_noise=(ls - e).exp())
                ) / 2e-6
                assert abs(float(fd - g[k])) < 1e-5 * max(1.0, abs(float(fd)))
    lak = Laplace(model, "regression", hessian_structure="kron", sigma_noise=sig).fit(dl)
    lak.log_marginal_likelihood(sigma_noise=2 * sig)  # a common rescaling is exact
    with pytest.raises(ValueError, match="fit-time sigma"):
        lak.log_marginal_likelihood(sigma_noise=torch.tensor([1.0, 2.0]))
