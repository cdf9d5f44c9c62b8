"""Laplace log marginal likelihood and its optimisation w.r.t. the prior precision (and σ).

``log p(D) ≈ log p(D | θ*) − ½ [log det P − log det P0 + (θ* − μ0)ᵀ P0 (θ* − μ0)]``
(the laplace-torch convention). With the curvature fixed, every term is a cheap function of the
hyperparameters because each block caches its eigendecomposition (see ``structures``).
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ._validation import (
    check_bool,
    check_choice,
    check_hyper,
    check_positive_float,
    check_positive_int,
)


def _as_hyper(value, ref, name):
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a number or a tensor, got {value!r}") from err


def _hyper(la, prior_precision, sigma_noise, validate=True):
    ref = la.mean
    if prior_precision is None:
        prec = la.prior_precision
    else:
        prec = _as_hyper(prior_precision, ref, "prior_precision")
        if prec.numel() == 1 and prec.ndim <= 1:
            prec = la.layout_.broadcast(prec.reshape(()))
        if tuple(prec.shape) != la.layout_.expected_shape:
            raise ValueError(
                f"prior_precision has shape {tuple(prec.shape)}, expected () or "
                f"{la.layout_.expected_shape} for {la.layout_.describe()}"
            )
        if validate:
            check_hyper("prior_precision", prec)
    if sigma_noise is None:
        sigma = la.sigma_noise
    else:
        sigma = _as_hyper(sigma_noise, ref, "sigma_noise")
        current = la.sigma_noise
        if la.lik_.has_sigma and (
            sigma.ndim > 1 or (sigma.numel() != current.numel() and sigma.numel() != 1)
        ):
            want = (
                "a scalar" if current.numel() == 1 else f"a scalar or shape {tuple(current.shape)}"
            )
            raise ValueError(f"sigma_noise has shape {tuple(sigma.shape)}, expected {want}")
        if validate:
            check_hyper("sigma_noise", sigma)
            if not torch.isfinite(1 / sigma.detach() ** 2).all():
                raise ValueError(
                    f"sigma_noise={sigma.detach().reshape(-1)[:3].tolist()} is too small for "
                    f"{sigma.dtype}: its square underflows to 0; use a float64 model or a larger value"
                )
    return prec, sigma


def log_marginal_likelihood(la, prior_precision=None, sigma_noise=None, validate=True):
    t = evidence_terms(la, prior_precision, sigma_noise, validate)
    loglik, logdet_post = t["log_likelihood"], t["log_det_posterior_precision"]
    logdet_prior, scatter = t["log_det_prior_precision"], t["scatter"]
    out = loglik - 0.5 * (logdet_post - logdet_prior + scatter)
    if validate and not torch.isfinite(out.detach()):
        _explain_non_finite(la, loglik, logdet_post, logdet_prior, scatter, t["sigma"])
    return out


def evidence_terms(la, prior_precision=None, sigma_noise=None, validate=True):
    """The evidence's pieces: log_likelihood, log_det_posterior_precision,
    log_det_prior_precision and scatter (θ*-μ0)ᵀP0(θ*-μ0), each differentiable (and sigma)."""
    prec, sigma = _hyper(la, prior_precision, sigma_noise, validate)
    s = la.likelihood_scale(sigma)
    loglik = la.loglik(sigma)
    cache = {}

    def diag():
        if "d" not in cache:
            cache["d"] = la.layout_.to_diag(prec)
        return cache["d"]

    if la.layout_.structure == "unitwise":
        delta = la.mean - la.prior_mean
        scatter = (delta**2 * diag()).sum()
        logdet_prior = torch.log(diag()).sum()
    else:  # per-hyperparameter sums, cached per fit: no (P,)-sized work per hyper-step
        sq, cnt = la.hyper_stats()
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
        "sigma": sigma,
    }


def _explain_non_finite(la, loglik, logdet_post, logdet_prior, scatter, sigma):
    """Raise an error naming the term that made the evidence NaN/inf (overflow, underflow)."""
    dtype = la.mean.dtype
    terms = {
        "log-likelihood": loglik,
        "log det of the posterior precision": logdet_post,
        "log det of the prior precision": logdet_prior,
        "prior scatter (θ-μ0)ᵀ P0 (θ-μ0)": scatter,
    }
    bad = [k for k, v in terms.items() if not torch.isfinite(torch.as_tensor(v).detach()).all()]
    hint = ""
    if la.lik_.has_sigma:
        hint = f" (sigma_noise = {sigma.detach().reshape(-1)[:3].tolist()})"
    raise ValueError(
        f"the log marginal likelihood is not finite in {dtype}: {', '.join(bad) or 'a sum of terms'} "
        f"overflowed{hint}; extreme hyperparameters or data scales — rescale the data, use "
        "less extreme hyperparameters or a float64 model"
    )


def optimize_prior_precision(
    la, method="marglik", n_steps=100, lr=0.1, optimize_sigma=False, progress=False
):
    check_choice("method", method, ("marglik",))
    n_steps = check_positive_int("n_steps", n_steps, minimum=0)
    optimize_sigma = check_bool("optimize_sigma", optimize_sigma)
    check_bool("progress", progress)
    lr = check_positive_float("lr", lr)
    log_prec = la.prior_precision.detach().log().clone().requires_grad_(True)
    params = [log_prec]
    log_sigma = None
    if optimize_sigma:
        if not la.lik_.has_sigma:
            raise ValueError(
                f"optimize_sigma=True needs likelihood='regression', not {la.lik_.name!r}"
            )
        log_sigma = la.sigma_noise.detach().log().clone().requires_grad_(True)
        params.append(log_sigma)
    opt = torch.optim.Adam(params, lr=lr)
    history = []
    for _ in tqdm(range(n_steps), desc="marglik", disable=not progress, leave=False):
        opt.zero_grad()
        sigma = log_sigma.exp() if log_sigma is not None else None
        nlml = -log_marginal_likelihood(la, log_prec.exp(), sigma, validate=False)
        nlml.backward()
        opt.step()
        history.append(-float(nlml.detach()))
    check_converged(history, log_prec, log_sigma)
    la.prior_precision = log_prec.detach().exp()
    if log_sigma is not None:
        la.sigma_noise = log_sigma.detach().exp()
    return history


def check_converged(values, log_prec, log_sigma=None, where="optimize_prior_precision"):
    """Raise a clear error when the hyperparameter optimisation diverged (NaN/inf evidence or
    hyperparameters that over/underflow), instead of failing later on 'prior_precision must be
    finite'."""
    bad_values = [v for v in values if not math.isfinite(v)]
    hyper = [log_prec] + ([log_sigma] if log_sigma is not None else [])
    exp_ok = all(
        bool(torch.isfinite(h.detach().exp()).all() and (h.detach().exp() > 0).all()) for h in hyper
    )
    if bad_values or not exp_ok:
        what = (
            f"the log marginal likelihood became {bad_values[0]}"
            if bad_values
            else "the hyperparameters over/underflowed"
        )
        raise ValueError(
            f"{where} diverged: {what} (log hyperparameters up to "
            f"{max(float(h.detach().abs().max()) for h in hyper):.3g} in magnitude); the data or "
            "model outputs are badly scaled (e.g. inputs or targets of ~1e30) or the "
            "hyperparameter learning rate is too large"
        )
