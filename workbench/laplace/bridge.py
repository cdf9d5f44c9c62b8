"""The Laplace bridge: a Gaussian over K logits mapped to a Dirichlet over class probabilities.

Hobbhahn, Kristiadi, Hennig (UAI 2022). For logits ``f ~ N(μ, Σ)`` the bridge first removes the
direction softmax ignores (the logits' sum): conditioning the Gaussian on ``1ᵀf = 0`` gives

    μ' = μ − Σ1 (1ᵀμ) / (1ᵀΣ1),        Σ' = Σ − Σ1 1ᵀΣ / (1ᵀΣ1),

and then matches a Dirichlet to the diagonal of Σ':

    α_k = (1 − 2/K + e^{μ'_k} Σ_l e^{−μ'_l} / K²) / Σ'_kk,     E[p] = α / Σ_l α_l.

``normalize=True`` is laplace-torch's ``link_approx="bridge_norm"``: before the Dirichlet match,
μ' and the variance diagonal are rescaled by ``c = mean_k(Σ'_kk) / √(K/2)`` (μ' / √c, Σ'_kk / c),
which keeps the Dirichlet from collapsing when the variances are large.

All of it is closed form: no sampling, one (N, K, K) covariance in, (N, K) probabilities out.
"""

from __future__ import annotations

import math

import torch


def bridge_alpha(f_mu, f_var, normalize=False):
    """Dirichlet concentrations α (N, K) of the Laplace bridge for logits ``N(f_mu, f_var)``.

    f_mu : (N, K) logit means; f_var : (N, K, K) logit covariances (e.g. ``la.functional_variance``).
    """
    f_mu, f_var = _check(f_mu, f_var)
    K = f_mu.shape[-1]
    row = f_var.sum(-1)  # Σ1 (N, K)
    total = row.sum(-1, keepdim=True)  # 1ᵀΣ1 (N, 1)
    mu = f_mu - row * f_mu.sum(-1, keepdim=True) / total
    var = torch.diagonal(f_var, dim1=-2, dim2=-1) - row**2 / total
    if normalize:
        c = var.mean(-1, keepdim=True) / math.sqrt(K / 2)
        mu = mu / c.sqrt()
        var = var / c
    sum_exp = torch.exp(-mu).sum(-1, keepdim=True)
    return (1 - 2 / K + torch.exp(mu) * sum_exp / K**2) / var


def laplace_bridge(f_mu, f_var, normalize=False):
    """Predictive class probabilities (N, K): the mean of the bridge's Dirichlet, α / Σα.

    Where the bridge is undefined (0/0: no variance left after the sum-zero projection) the
    entry is 1, as in laplace-torch.
    """
    alpha = bridge_alpha(f_mu, f_var, normalize)
    return torch.nan_to_num(alpha / alpha.sum(-1, keepdim=True), nan=1.0)


def _check(f_mu, f_var):
    if f_mu.ndim != 2:
        raise ValueError(f"f_mu must be (N, K) logits, got shape {tuple(f_mu.shape)}")
    N, K = f_mu.shape
    if tuple(f_var.shape) != (N, K, K):
        raise ValueError(f"f_var must be (N, K, K) = {(N, K, K)}, got shape {tuple(f_var.shape)}")
    if K < 2:
        raise ValueError("the Laplace bridge needs K >= 2 logits (likelihood='classification')")
    return f_mu, f_var
