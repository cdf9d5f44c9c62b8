"""Interaction ranking of LA-NAM (Bouchiat et al., ICML 2024).

Two scores, both Gaussian mutual informations ``-1/2 log(1 - rho^2)`` (textbook form), all pairs
at once:

* **Residual-aware score (used for ranking).** The additive combination ``b + sum_j f_j(x_j)`` at
  the Laplace MAP leaves a working residual (Gaussian: ``y - f``; Bernoulli / softmax: the IRLS
  residual with weights ``p(1-p)``). A pair (i, j) can explain part of it only through
  non-additive terms: products of the two features' basis functions (their standardised inputs and
  subnetwork outputs), with the additive span projected out. ``rho`` is the multiple correlation
  between residual and those terms (:func:`residual_interaction_information`).
* **Posterior-dependence score (the paper's, reported alongside).** With the subnetworks frozen, fit
  the linear "last layer" ``f(x) = b + sum_j w_j f_j(x_j)`` with a *full* Laplace over ``w`` (exact
  for Gaussian likelihoods; GGN around the MAP for Bernoulli / softmax), scalar prior precision by
  evidence maximisation (MacKay fixed point), and take ``rho_ij`` from the posterior covariance.

Why the ranking uses the first: for a Gaussian likelihood the posterior covariance of a model that
is linear in ``w`` does not depend on the targets at all (only on the features ``f_j(x_j)`` and
sigma), and the cross-blocks of the GGN of an *additive* network are ``sum_n J_i^T Lambda J_j`` with
no residual term (``d^2 f / d theta_i d theta_j = 0``). So the posterior-dependence score measures
how dependent two learned shapes are over the data, and it ranks a correlated pair first even when
it does not interact; ``benchmarks/bench_lanam.py`` measures both scores with and without a planted
interaction.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.nam.posterior import core_likelihood


def _design(phi: torch.Tensor) -> torch.Tensor:
    """(N, F, K) subnetwork outputs -> (N, K, F + K) Jacobian of the linear model w.r.t. (w, b)."""
    n, f, k = phi.shape
    eye = torch.eye(k, dtype=phi.dtype).expand(n, k, k)
    return torch.cat([phi.transpose(1, 2), eye], dim=2)


def linear_laplace(
    phi: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    likelihood: str,
    sigma: float = 1.0,
    prior_precision: float | None = None,
    n_iter: int = 50,
) -> dict[str, torch.Tensor]:
    """Full Laplace over the weights of ``f = b + sum_j w_j phi_j`` (float64).

    ``phi`` is (N, F, K); returns ``mean`` (F + K,), ``precision`` and ``covariance`` (F + K)^2
    (the last K entries are the intercept), and the prior precision used (optimised by the
    evidence fixed point unless given).
    """
    phi = torch.as_tensor(phi, dtype=torch.float64)
    n, f, k = phi.shape
    A = _design(phi)  # (N, K, F + K)
    y = torch.as_tensor(y)
    learn = prior_precision is None
    delta = torch.tensor(1.0 if learn else float(prior_precision), dtype=torch.float64)
    flat = torch.full((k,), 1e-6, dtype=torch.float64)  # intercept: nearly flat prior

    def prior(d):
        return torch.cat([d.expand(f), flat])

    theta = torch.cat([torch.ones(f), torch.zeros(k)]).double()
    if likelihood == "regression":
        yv = y.double().reshape(n, k)
        H = torch.einsum("nkp,nkq->pq", A, A) / sigma**2
        rhs = torch.einsum("nkp,nk->p", A, yv) / sigma**2
        for _ in range(n_iter if learn else 1):
            P = H + torch.diag(prior(delta))
            theta = torch.linalg.solve(P, rhs)
            if learn:  # MacKay: delta = gamma / |w|^2 with gamma = sum lam / (lam + delta)
                ev = torch.linalg.eigvalsh(H[:f, :f])
                gamma = (ev / (ev + delta)).sum()
                delta = (gamma / (theta[:f] ** 2).sum().clamp_min(1e-12)).clamp(1e-8, 1e8)
        P = H + torch.diag(prior(delta))
    else:
        def objective(th, d):
            fo = torch.einsum("nkp,p->nk", A, th)
            if likelihood == "binary":
                nll = torch.nn.functional.binary_cross_entropy_with_logits(fo[:, 0], y.double(), reduction="sum")
            else:
                nll = torch.nn.functional.cross_entropy(fo, y.long(), reduction="sum")
            return nll + 0.5 * (prior(d) * th**2).sum()

        for _ in range(n_iter if learn else 1):  # outer: evidence fixed point for delta
            for _ in range(100):  # inner: damped Newton to the MAP for this delta
                fout = torch.einsum("nkp,p->nk", A, theta)
                if likelihood == "binary":
                    grad_f = torch.sigmoid(fout) - y.double().reshape(n, 1)
                else:
                    grad_f = torch.softmax(fout, -1) - torch.nn.functional.one_hot(y.long(), k).double()
                H = torch.einsum("nkp,nkl,nlq->pq", A, core_likelihood(likelihood).hessian(fout), A)
                g = torch.einsum("nkp,nk->p", A, grad_f) + prior(delta) * theta
                step = torch.linalg.lstsq(H + torch.diag(prior(delta)), g.unsqueeze(1)).solution[:, 0]
                t, current = 1.0, objective(theta, delta)
                while t > 1e-8 and objective(theta - t * step, delta) > current - 1e-4 * t * (g @ step):
                    t *= 0.5
                theta = theta - t * step
                if float((t * step).abs().max()) < 1e-10:
                    break
            if learn:
                ev = torch.linalg.eigvalsh(H[:f, :f])
                new = ((ev / (ev + delta)).sum() / (theta[:f] ** 2).sum().clamp_min(1e-12)).clamp(1e-6, 1e8)
                if abs(float(torch.log(new / delta))) < 1e-6:
                    delta = new
                    break
                delta = new
        fout = torch.einsum("nkp,p->nk", A, theta)
        H = torch.einsum("nkp,nkl,nlq->pq", A, core_likelihood(likelihood).hessian(fout), A)
        P = H + torch.diag(prior(delta))
    return {"mean": theta, "precision": P, "covariance": torch.linalg.inv(P), "prior_precision": delta}


def mutual_information(covariance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise Gaussian MI ``-1/2 log(1 - rho^2)`` and correlation ``rho`` of a covariance matrix
    (all pairs at once; the diagonal of the MI is set to 0)."""
    sd = covariance.diagonal().sqrt()
    rho = covariance / torch.outer(sd, sd)
    rho = rho.clamp(-1.0, 1.0)
    mi = -0.5 * torch.log1p(-(rho**2).clamp(max=1 - 1e-15))
    mi.fill_diagonal_(0.0)
    return mi, rho


class AdditiveCombination(torch.nn.Module):
    """``f(phi) = b + sum_j w_j phi_j`` on frozen subnetwork outputs ``phi`` (N, F, K) -> (N, K)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())
        self.b = torch.nn.Parameter(b.clone())

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nfk,f->nk", phi, self.w) + self.b


def core_weight_covariance(phi, y, likelihood: str, fit: dict[str, torch.Tensor], sigma: float = 1.0) -> torch.Tensor:
    """Posterior covariance of ``(w, b)`` from the Laplace core (full GGN, layerwise prior
    ``[delta, ~flat]``) at the MAP found by :func:`linear_laplace`. The model is linear in its
    weights, so the core's GGN is the exact Hessian of the negative log joint."""
    from workbench.laplace import Laplace

    phi = torch.as_tensor(phi, dtype=torch.float64)
    n, f, k = phi.shape
    model = AdditiveCombination(fit["mean"][:f], fit["mean"][f:])
    y = torch.as_tensor(y)
    if likelihood == "regression":
        y = y.double().reshape(n, k)
    elif likelihood == "binary":
        y = y.double().reshape(n, 1)
    else:
        y = y.long()
    prior = torch.tensor([float(fit["prior_precision"]), 1e-6], dtype=torch.float64)
    la = Laplace(model, core_likelihood(likelihood).name, hessian_structure="full", prior_structure="layerwise",
                 prior_precision=prior, sigma_noise=sigma)
    la.fit([(phi, y)])
    return la.posterior_covariance().detach()


def pair_basis(u: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Products of per-feature basis functions for a batch of pairs: ``u`` (N, F, B) and
    ``pairs`` (P, 2) -> (P, N, B * B) with ``z[p, n, a * B + b] = u[n, i_p, a] * u[n, j_p, b]``."""
    n, _, b = u.shape
    ui, uj = u[:, pairs[:, 0]], u[:, pairs[:, 1]]  # (N, P, B)
    return (ui.unsqueeze(-1) * uj.unsqueeze(-2)).reshape(n, len(pairs), b * b).transpose(0, 1)


def residual_interaction_information(
    basis: torch.Tensor, design: torch.Tensor, resid: torch.Tensor, weight: torch.Tensor, chunk: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual-aware interaction score of every feature pair (all pairs batched, float64).

    For output k the additive model's working residual ``resid[:, k]`` (IRLS weights
    ``weight[:, k]``: 1 for a Gaussian likelihood, ``p(1-p)`` for Bernoulli / softmax) is what the
    additive combination ``design`` (N, D) leaves unexplained. A pair (i, j) can explain part of it
    only through terms that are not additive in ``x_i`` and ``x_j``: the products of the two
    features' basis functions ``basis`` (N, F, B), with everything the additive design spans
    projected out (weighted least squares). ``rho_ij^2`` is the weighted squared multiple
    correlation between the residual and those product terms (the fraction of residual variance the
    best pairwise term of the pair explains), and the score is the Gaussian mutual information
    ``-1/2 log(1 - rho_ij^2)``, summed over outputs. Under no interaction ``rho^2`` is only the
    chance level ``~ B^2 / N`` for every pair; correlated inputs alone do not raise it.

    Returns ``(mi, rho)``, both (F, F), symmetric with a zero diagonal (``rho`` of the first output).
    """
    basis, design = basis.double(), design.double()
    resid, weight = resid.double(), weight.double()
    n, f, b = basis.shape
    iu = torch.triu_indices(f, f, offset=1).T  # (P, 2)
    mi = torch.zeros(f, f, dtype=torch.float64)
    rho = torch.zeros(f, f, dtype=torch.float64)
    for k in range(resid.shape[1]):
        sw = weight[:, k].clamp_min(1e-12).sqrt()
        q, _ = torch.linalg.qr(design * sw[:, None])  # orthonormal basis of the weighted additive span
        r = resid[:, k] * sw
        r = r - q @ (q.T @ r)
        rr = (r @ r).clamp_min(1e-300)
        r2 = torch.empty(len(iu), dtype=torch.float64)
        for start in range(0, len(iu), chunk):  # chunks of pairs (memory), each chunk one batched op
            z = pair_basis(basis, iu[start : start + chunk]) * sw[None, :, None]  # (P, N, B^2)
            z = z - q @ (q.T @ z)
            g = z.transpose(1, 2) @ z  # (P, B^2, B^2)
            eps = 1e-9 * g.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)
            g = g + eps[:, None, None] * torch.eye(g.shape[-1], dtype=g.dtype)
            c = z.transpose(1, 2) @ r  # (P, B^2)
            r2[start : start + len(c)] = (c * torch.linalg.solve(g, c.unsqueeze(-1))[..., 0]).sum(-1) / rr
        r2 = r2.clamp(0.0, 1.0 - 1e-12)
        score = -0.5 * torch.log1p(-r2)
        mi[iu[:, 0], iu[:, 1]] += score
        if k == 0:
            rho[iu[:, 0], iu[:, 1]] = r2.sqrt()
    return mi + mi.T, rho + rho.T
