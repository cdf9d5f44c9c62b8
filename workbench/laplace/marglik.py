"""Laplace log marginal likelihood and its optimisation w.r.t. the prior precision (and σ).

``log p(D) ≈ log p(D | θ*) − ½ [log det P − log det P0 + (θ* − μ0)ᵀ P0 (θ* − μ0)]``
(the laplace-torch convention). With the curvature fixed, every term is a cheap function of the
hyperparameters because each block caches its eigendecomposition (see ``posteriors``).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ._validation import check_choice


def _hyper(la, prior_precision, sigma_noise):
    ref = la._mean
    if prior_precision is None:
        prec = la._prior_prec
    else:
        prec = (
            torch.as_tensor(prior_precision, dtype=ref.dtype, device=ref.device)
            if not isinstance(prior_precision, torch.Tensor)
            else prior_precision
        )
        if prec.numel() == 1 and prec.ndim <= 1:
            prec = la.layout_.broadcast(prec.reshape(()))
        if tuple(prec.shape) != la.layout_.expected_shape:
            raise ValueError(
                f"prior_precision has shape {tuple(prec.shape)}, expected () or "
                f"{la.layout_.expected_shape} for {la.layout_.describe()}"
            )
    if sigma_noise is None:
        sigma = la._sigma
    else:
        sigma = (
            sigma_noise
            if isinstance(sigma_noise, torch.Tensor)
            else torch.as_tensor(sigma_noise, dtype=ref.dtype, device=ref.device)
        )
        if la.lik_.has_sigma and sigma.numel() != la._sigma.numel() and sigma.numel() != 1:
            raise ValueError(
                f"sigma_noise has shape {tuple(sigma.shape)}, expected () or {tuple(la._sigma.shape)}"
            )
    return prec, sigma


def log_marginal_likelihood(la, prior_precision=None, sigma_noise=None):
    t = evidence_terms(la, prior_precision, sigma_noise)
    return t["log_likelihood"] - 0.5 * (
        t["log_det_posterior_precision"] - t["log_det_prior_precision"] + t["scatter"]
    )


def evidence_terms(la, prior_precision=None, sigma_noise=None):
    """The evidence's pieces: log_likelihood, log_det_posterior_precision,
    log_det_prior_precision and scatter (θ*-μ0)ᵀP0(θ*-μ0), each differentiable."""
    prec, sigma = _hyper(la, prior_precision, sigma_noise)
    s = la._lik_scale(sigma)
    loglik = la._loglik(sigma)
    cache = {}

    def diag():
        if "d" not in cache:
            cache["d"] = la.layout_.to_diag(prec)
        return cache["d"]

    if la.layout_.structure == "unitwise":
        delta = la._mean - la.prior_mean
        scatter = (delta**2 * diag()).sum()
        logdet_prior = torch.log(diag()).sum()
    else:  # per-hyperparameter sums, cached per fit: no (P,)-sized work per hyper-step
        sq, cnt = la._hyper_stats()
        scatter = (prec * sq).sum()
        logdet_prior = (cnt * torch.log(prec)).sum()
    logdet_post = 0.0
    for b in la.blocks_:
        bp = la.layout_.block_prior(prec, diag, b)
        logdet_post = logdet_post + b.logdet(s, bp)
    return {
        "log_likelihood": loglik,
        "log_det_posterior_precision": logdet_post,
        "log_det_prior_precision": logdet_prior,
        "scatter": scatter,
    }


def optimize_prior_precision(
    la, method="marglik", n_steps=100, lr=0.1, optimize_sigma=False, progress=False
):
    check_choice("method", method, ("marglik",))
    log_prec = la._prior_prec.detach().log().clone().requires_grad_(True)
    params = [log_prec]
    log_sigma = None
    if optimize_sigma:
        if not la.lik_.has_sigma:
            raise ValueError(
                f"optimize_sigma=True needs likelihood='regression', not {la.lik_.name!r}"
            )
        log_sigma = la._sigma.detach().log().clone().requires_grad_(True)
        params.append(log_sigma)
    opt = torch.optim.Adam(params, lr=lr)
    history = []
    for _ in tqdm(range(n_steps), desc="marglik", disable=not progress, leave=False):
        opt.zero_grad()
        sigma = log_sigma.exp() if log_sigma is not None else None
        nlml = -log_marginal_likelihood(la, log_prec.exp(), sigma)
        nlml.backward()
        opt.step()
        history.append(-float(nlml.detach()))
    la.prior_precision = log_prec.detach().exp()
    if log_sigma is not None:
        la.sigma_noise = log_sigma.detach().exp()
    return history
