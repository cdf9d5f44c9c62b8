"""LA-NAM's KFAC blocks against dense float64 references: factors, evidence, bands, covariance."""

import math

import numpy as np
import pytest
import torch

from workbench.nam import LaplaceAdditiveRegressor
from workbench.nam.kron import covariance
from workbench.nam.posterior import BlockPosterior, compute_curvature, log_marginal_likelihood

from .dense import LIKS, _block, _data, _dense_jacobians, _dense_lambda, _model

KRON_GROUPS = ("numeric", "pair")


def _layer_slices(m):
    out, start = [], 0
    for n_in, n_out in m.layer_shapes():
        out.append(slice(start, start + n_in * n_out))
        start += n_in * n_out
    return out


def _kron_dense(layer, s, scale=1.0):
    return scale * torch.kron(layer.A[s], layer.B[s])


def _log_prior(model, seed=0, requires_grad=False):
    rng = np.random.default_rng(seed)
    return {g: torch.tensor(rng.normal(0, 1, (m.S, len(m.slot_names))), requires_grad=requires_grad)
            for g, m in model.groups.items()}


@pytest.mark.parametrize("lik,k", LIKS)
def test_one_sample_kfac_equals_the_dense_layer_blocks(lik, k):
    """With a single sample the per-layer GGN block is exactly a Kronecker product."""
    model = _model(k)
    x, c, y = _data(1, k)
    jac = _dense_jacobians(model, x, c)
    lam = _dense_lambda(model(x, c).detach(), lik)
    curv = compute_curvature(model, x, c, y, lik, structure="kron")
    assert set(curv.kron) == set(KRON_GROUPS) and set(curv.ggn) == {"bias", "categorical", "missing"}
    for g in KRON_GROUPS:
        m = model.groups[g]
        for s in range(m.S):
            J = _block(jac, model, g, s)
            G = torch.einsum("nkp,nkl,nlq->pq", J, lam, J)
            for layer, sl in zip(curv.kron[g], _layer_slices(m)):
                torch.testing.assert_close(_kron_dense(layer, s), G[sl, sl], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lik,k", LIKS)
def test_kfac_factors_are_sums_of_the_per_sample_factors(lik, k):
    """A = sum_n A_n and B = (1/N) sum_n B_n, against a loop over one-sample curvatures, and the
    Gaussian output layer is exact for any N."""
    model = _model(k)
    x, c, y = _data(23, k)
    curv = compute_curvature(model, x, c, y, lik, chunk=5, structure="kron")
    singles = [compute_curvature(model, x[i : i + 1], c[i : i + 1], y[i : i + 1], lik, structure="kron")
               for i in range(len(x))]
    for g in KRON_GROUPS:
        for li, layer in enumerate(curv.kron[g]):
            torch.testing.assert_close(layer.A, sum(o.kron[g][li].A for o in singles), rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(layer.B, sum(o.kron[g][li].B for o in singles) / len(x),
                                       rtol=1e-10, atol=1e-12)
    jac = _dense_jacobians(model, x, c)
    full = compute_curvature(model, x, c, y, lik, chunk=5)
    for g in KRON_GROUPS:  # training-mean Jacobian (for centred bands) without the per-sample Jacobian
        ref = torch.stack([_block(jac, model, g, s).mean(0) for s in range(model.groups[g].S)])
        torch.testing.assert_close(curv.mean_jac[g], ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(curv.mean_out[g], full.mean_out[g])
    assert curv.data_term == pytest.approx(full.data_term, rel=1e-12)
    if lik == "regression":
        for g in KRON_GROUPS:
            m = model.groups[g]
            sl = _layer_slices(m)[1]
            for s in range(m.S):
                J = _block(jac, model, g, s)[:, :, sl]
                torch.testing.assert_close(_kron_dense(curv.kron[g][1], s), torch.einsum("nkp,nkq->pq", J, J),
                                           rtol=1e-10, atol=1e-12)


def _dense_precisions(model, curv, log_prior, scale):
    """Dense per-subnetwork posterior precisions (block-diagonal over KFAC layers)."""
    out = {}
    for g, m in model.groups.items():
        delta = log_prior[g].exp()[:, m.slot_index()]
        if g in curv.kron:
            blocks = []
            for s in range(m.S):
                G = torch.block_diag(*[_kron_dense(layer, s, scale) for layer in curv.kron[g]])
                blocks.append(G + torch.diag(delta[s]))
            out[g] = torch.stack(blocks)
        else:
            out[g] = curv.ggn[g] * scale + torch.diag_embed(delta)
    return out


@pytest.mark.parametrize("lik,k", LIKS)
def test_kfac_evidence_and_its_gradients_match_the_dense_determinant(lik, k):
    model = _model(k)
    x, c, y = _data(30, k)
    curv = compute_curvature(model, x, c, y, lik, structure="kron")
    log_prior = _log_prior(model, requires_grad=True)
    log_sigma = torch.tensor(math.log(0.7), dtype=torch.float64, requires_grad=True)
    got = log_marginal_likelihood(model, curv, log_prior, log_sigma, lik)
    # reference: the same Laplace evidence from dense precisions and torch.slogdet
    s2 = torch.exp(2 * log_sigma)
    if lik == "regression":
        n = curv.n_samples
        loglik = -0.5 * n * torch.log(2 * math.pi * s2) - 0.5 * curv.data_term / s2
        scale = 1 / s2
    else:
        loglik, scale = torch.tensor(curv.data_term, dtype=torch.float64), 1.0
    penalty = 0.0
    for g, P in _dense_precisions(model, curv, log_prior, scale).items():
        delta = log_prior[g].exp()[:, model.groups[g].slot_index()]
        penalty = penalty + torch.linalg.slogdet(P)[1].sum() - delta.log().sum() + (delta * curv.theta[g] ** 2).sum()
    ref = loglik - 0.5 * penalty
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-11)
    hyper = list(log_prior.values()) + ([log_sigma] if lik == "regression" else [])
    g_got = torch.autograd.grad(got, hyper)
    g_ref = torch.autograd.grad(ref, hyper)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("lik,k", LIKS)
def test_kfac_bands_and_covariance_match_the_dense_inverse(lik, k):
    model = _model(k)
    x, c, y = _data(30, k)
    curv = compute_curvature(model, x, c, y, lik, structure="kron")
    log_prior = _log_prior(model, seed=3)
    log_sigma = torch.tensor(math.log(0.4), dtype=torch.float64)
    post = BlockPosterior(model, curv, log_prior, log_sigma, lik)
    scale = 1 / 0.4**2 if lik == "regression" else 1.0
    dense = _dense_precisions(model, curv, log_prior, scale)
    xt, ct, _ = _data(6, k, seed=9)
    jac_t = _dense_jacobians(model, xt, ct)
    mine_t = model.jacobians(xt, ct)
    for g in KRON_GROUPS:
        assert post.structure(g) == "kron"
        sigma = torch.linalg.inv(dense[g])
        torch.testing.assert_close(post.covariance(g), sigma, rtol=1e-8, atol=1e-10)
        fv = post.functional_variance(g, mine_t[g] - curv.mean_jac[g])
        fv1 = post.functional_variance(g, mine_t[g][:, 1:2], subnets=slice(1, 2))
        for s in range(model.groups[g].S):
            J = _block(jac_t, model, g, s) - curv.mean_jac[g][s]
            torch.testing.assert_close(fv[:, s], J @ sigma[s] @ J.transpose(1, 2), rtol=1e-8, atol=1e-12)
        J1 = _block(jac_t, model, g, 1)
        torch.testing.assert_close(fv1[:, 0], J1 @ sigma[1] @ J1.transpose(1, 2), rtol=1e-8, atol=1e-12)
    assert covariance(post.kron["numeric"]).shape[-1] == model.groups["numeric"].n_params


def test_kfac_estimator_fits_selects_and_reports_bands():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] + 0.2 * rng.normal(size=400)
    kw = dict(n_epochs=60, batch_size=64, n_hidden=16, n_threads=1)
    est = LaplaceAdditiveRegressor(hessian_structure="kron", **kw).fit(X, y)
    assert all(est.posterior_.structure(g) == "kron" for g in ("numeric",))
    sf = est.shape_functions(grid=25)
    assert bool((sf["std"] > 0).all()) and bool(np.isfinite(sf["mean"]).all())
    imp = est.feature_importance_.to_series()
    assert imp.iloc[2] < 0.05 * min(imp.iloc[0], imp.iloc[1])  # the null feature is switched off
    mu, std = est.predict(X[:50], return_std=True)
    assert np.all(std > est.sigma_ * 0.999)
    full = LaplaceAdditiveRegressor(**kw).fit(X, y)  # same network, exact blocks
    assert est.sigma_ == pytest.approx(full.sigma_, rel=0.1) and est.sigma_ < 0.35  # true noise 0.2
    assert abs(est.score(X, y) - full.score(X, y)) < 0.02
    assert np.isfinite(est.log_marglik_)


def test_unknown_hessian_structure_is_named():
    with pytest.raises(ValueError, match="hessian_structure"):
        LaplaceAdditiveRegressor(hessian_structure="diag").fit(np.random.randn(20, 2), np.random.randn(20))
