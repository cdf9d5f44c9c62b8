"""The per-subnetwork Laplace blocks against dense float64 references built with autograd."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import block_diag

from workbench.nam.modules import AdditiveNet, gelu_and_grad
from workbench.nam.posterior import BlockPosterior, compute_curvature, log_marginal_likelihood

from .dense import LIKS, _block, _data, _dense_jacobians, _dense_lambda, _flat, _model


def test_gelu_grad_matches_autograd():
    h = torch.linspace(-4, 4, 101, dtype=torch.float64, requires_grad=True)
    a, da = gelu_and_grad(h)
    assert torch.allclose(a, torch.nn.functional.gelu(h))
    (g,) = torch.autograd.grad(torch.nn.functional.gelu(h).sum(), h)
    assert torch.allclose(da, g)


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "nan-inputs"])
@pytest.mark.parametrize("lik,k", LIKS)
def test_jacobians_ggn_and_bands_match_dense(lik, k, missing):
    """Every block (the missing-value offsets' included) against autograd; with NaN inputs the
    missing-value offsets get data and the MLP inputs are imputed by 0 (the training mean)."""
    model = _model(k)
    x, c, y = _data(40, k, missing=missing)
    assert torch.isnan(x).any() == missing
    jac = _dense_jacobians(model, x, c)
    mine = model.jacobians(x, c)
    for group, m in model.groups.items():
        for s in range(m.S):
            assert torch.allclose(mine[group][:, s], _block(jac, model, group, s), atol=1e-12), (group, s)

    curv = compute_curvature(model, x, c, y, lik, chunk=16)  # several chunks
    f = model(x, c).detach()
    lam = _dense_lambda(f, lik)
    rng = np.random.default_rng(0)
    log_prior = {g: torch.tensor(rng.normal(0, 1, (m.S, len(m.slot_names)))) for g, m in model.groups.items()}
    log_sigma = torch.tensor(math.log(0.7), dtype=torch.float64)
    post = BlockPosterior(model, curv, log_prior, log_sigma, lik)
    scale = 1 / 0.7**2 if lik == "regression" else 1.0

    xt, ct, _ = _data(7, k, seed=5, missing=missing)
    jac_t = _dense_jacobians(model, xt, ct)
    mine_t = model.jacobians(xt, ct)
    dense_blocks, dense_theta, dense_delta = [], [], []
    for group, m in model.groups.items():
        fv = post.functional_variance(group, mine_t[group])
        fv_centred = post.functional_variance(group, mine_t[group] - curv.mean_jac[group])
        for s in range(m.S):
            J = _block(jac, model, group, s)
            G = torch.einsum("nkp,nkl,nlq->pq", J, lam, J)
            assert torch.allclose(curv.ggn[group][s], G, rtol=1e-10, atol=1e-10), (group, s)
            delta = log_prior[group][s].exp()[m.slot_index()]
            P = G * scale + torch.diag(delta)
            Sigma = torch.linalg.inv(P)
            Jt = _block(jac_t, model, group, s)
            ref = torch.einsum("nkp,pq,nlq->nkl", Jt, Sigma, Jt)
            assert torch.allclose(fv[:, s], ref, rtol=1e-9, atol=1e-12), (group, s)
            Jc = Jt - J.mean(0)
            ref_c = torch.einsum("nkp,pq,nlq->nkl", Jc, Sigma, Jc)
            assert torch.allclose(fv_centred[:, s], ref_c, rtol=1e-9, atol=1e-12), (group, s)
            dense_blocks.append(P.numpy())
            dense_theta.append(_flat(model, group, s))
            dense_delta.append(delta.numpy())

    # Evidence against a dense block-diagonal precision over all parameters.
    P = block_diag(*dense_blocks)
    theta = np.concatenate(dense_theta)
    delta = np.concatenate(dense_delta)
    if lik == "regression":
        sse = float(((f[:, 0] - y) ** 2).sum())
        loglik = -0.5 * len(y) * math.log(2 * math.pi * 0.49) - 0.5 * sse / 0.49
    elif lik == "binary":
        p = torch.sigmoid(f[:, 0])
        loglik = float((y * torch.log(p) + (1 - y) * torch.log1p(-p)).sum())
    else:
        loglik = float(torch.log_softmax(f, -1)[torch.arange(len(y)), y].sum())
    ref = loglik - 0.5 * (np.linalg.slogdet(P)[1] - np.log(delta).sum() + (delta * theta**2).sum())
    got = float(log_marginal_likelihood(model, curv, log_prior, log_sigma, lik))
    assert got == pytest.approx(ref, rel=1e-10)


def test_marglik_gradients_flow_to_hyperparameters():
    model = _model(1)
    x, c, y = _data(30, 1)
    curv = compute_curvature(model, x, c, y, "regression")
    log_prior = {g: torch.zeros(m.S, len(m.slot_names), dtype=torch.float64, requires_grad=True)
                 for g, m in model.groups.items()}
    log_sigma = torch.zeros((), dtype=torch.float64, requires_grad=True)
    lml = log_marginal_likelihood(model, curv, log_prior, log_sigma, "regression")
    lml.backward()
    assert log_sigma.grad is not None and torch.isfinite(log_sigma.grad)
    assert all(lp.grad is not None and torch.isfinite(lp.grad).all() for lp in log_prior.values())
    # finite-difference check of d lml / d log_sigma
    eps = 1e-6
    up = log_marginal_likelihood(model, curv, log_prior, log_sigma.detach() + eps, "regression")
    dn = log_marginal_likelihood(model, curv, log_prior, log_sigma.detach() - eps, "regression")
    assert float(log_sigma.grad) == pytest.approx(float(up - dn) / (2 * eps), rel=1e-5)


def test_curvature_does_not_depend_on_the_sample_chunking():
    from workbench.nam.posterior import sample_chunk

    model = _model(1)
    x, c, y = _data(50, 1)
    ref = compute_curvature(model, x, c, y, "regression", chunk=50)
    assert sample_chunk(model) >= 32 and sample_chunk(model, budget=1) == 32
    for chunk in (None, 7):
        cur = compute_curvature(model, x, c, y, "regression", chunk=chunk)
        for g in ref.ggn:
            assert torch.allclose(cur.ggn[g], ref.ggn[g]) and torch.allclose(cur.mean_jac[g], ref.mean_jac[g])
        assert cur.data_term == pytest.approx(ref.data_term)


def test_micro_batches_give_the_same_training_trajectory():
    """Gradients accumulated over micro-batches equal the whole batch's (float64, several epochs
    with marglik steps in between)."""
    from workbench.nam.training import micro_batch, train_marglik

    x, c, y = _data(60, 1)
    runs = []
    for micro in (None, 7):
        model = _model(1)
        res = train_marglik(model, x, c, y, "regression", n_epochs=6, batch_size=25, n_epochs_burnin=2,
                            marglik_frequency=2, micro_batch_size=micro)
        runs.append((torch.cat([p.detach().ravel() for p in model.parameters()]), res.log_marglik))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-9, atol=1e-11)
    assert runs[0][1] == pytest.approx(runs[1][1], rel=1e-9)
    small, wide = _model(1), AdditiveNet(100, [], 1, n_hidden=64)
    assert micro_batch(small, 512) == 512 and 32 <= micro_batch(wide, 512) < 512


def test_logdet_closed_form_gradient_matches_autograd():
    from workbench.nam.posterior import _LogDetPD

    g = torch.Generator().manual_seed(0)
    J = torch.randn(3, 9, 5, generator=g, dtype=torch.float64)
    d = torch.rand(3, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    torch.autograd.gradcheck(lambda d: _LogDetPD.apply(J.transpose(1, 2) @ J + torch.diag_embed(d)), (d,))
