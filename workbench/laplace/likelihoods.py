"""Likelihoods: log-likelihood, loss-Hessian square roots (GGN) and output gradients (empirical Fisher).

Every method works on outputs shaped ``(N, M, K)``: N samples, M output positions (1 for ordinary
models, the sequence/spatial length for models that predict per position), K outputs per position.
The Hessian square root ``L`` has shape ``(N, M, K, R)`` with ``H = L Lᵀ`` per (sample, position),
H the Hessian of the negative log-likelihood w.r.t. the (natural-parameter) outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._validation import LIKELIHOODS, check_choice


class Likelihood:
    name = ""
    has_sigma = False

    def link(self, f: torch.Tensor) -> torch.Tensor:
        """Map raw model outputs to the parameters whose Hessian the GGN uses (identity but heteroscedastic)."""
        return f

    def prepare_targets(self, f: torch.Tensor, y: torch.Tensor, batch_index: int) -> torch.Tensor:
        raise NotImplementedError

    def log_lik(self, eta, y, sigma=None):
        """Summed log-likelihood of the batch (differentiable)."""
        raise NotImplementedError

    def hessian_sqrt(self, eta, y, sigma=None):
        raise NotImplementedError

    def hessian(self, eta, y=None, sigma=None):
        """Hessian H (..., K, K) of the negative log-likelihood w.r.t. eta: ``L Lᵀ`` of
        :meth:`hessian_sqrt` (closed forms where they are cheaper), for consumers that form
        ``Jᵀ H J`` themselves (LA-NAM's per-subnetwork blocks)."""
        L = self.hessian_sqrt(eta, y, sigma)
        return L @ L.transpose(-1, -2)

    def grad(self, eta, y, sigma=None):
        """Gradient of the per-sample negative log-likelihood w.r.t. eta, shaped like eta."""
        raise NotImplementedError


def _shape_error(name, f, y, expected):
    return ValueError(
        f"targets y of shape {tuple(y.shape)} (dtype {y.dtype}) do not match likelihood='{name}' "
        f"for model output of shape {tuple(f.shape)}; expected {expected}"
    )


class GaussianRegression(Likelihood):
    """N(y | f, σ²) with scalar σ or one σ per output (``sigma`` broadcast over the last dim)."""

    name = "regression"
    has_sigma = True

    def prepare_targets(self, f, y, batch_index):
        if not torch.is_floating_point(y):
            raise TypeError(
                f"likelihood='regression' needs floating-point targets, got y.dtype={y.dtype} "
                f"in batch {batch_index}"
            )
        if y.shape == f.shape:
            return y.to(f.dtype)
        if f.shape[-1] == 1 and y.shape == f.shape[:-1]:
            return y.unsqueeze(-1).to(f.dtype)
        raise _shape_error(
            self.name, f, y, f"shape {tuple(f.shape)} (or {tuple(f.shape[:-1])} for one output)"
        )

    def log_lik(self, eta, y, sigma=None):
        sigma = torch.ones((), dtype=eta.dtype, device=eta.device) if sigma is None else sigma
        var = sigma**2
        res2 = (y - eta) ** 2
        return -0.5 * (res2 / var + torch.log(2 * math.pi * var)).sum()

    @staticmethod
    def sum_squares(eta, y):
        """Σ (y - η)², the σ-free sufficient statistic: with n residuals and scalar σ,
        ``log_lik = -½ sum_squares / σ² - ½ n log(2π σ²)``, so an evidence optimised over σ
        stores this once instead of re-evaluating the data."""
        return ((eta - y) ** 2).sum()

    def hessian_sqrt(self, eta, y, sigma=None):
        K = eta.shape[-1]
        eye = torch.eye(K, dtype=eta.dtype, device=eta.device)
        if sigma is not None:
            eye = eye / sigma.reshape(-1, 1)
        return eye.expand(*eta.shape[:-1], K, K)

    def grad(self, eta, y, sigma=None):
        g = eta - y
        return g if sigma is None else g / sigma**2


class Classification(Likelihood):
    """Categorical likelihood with softmax link; targets are integer class indices."""

    name = "classification"

    def prepare_targets(self, f, y, batch_index):
        if torch.is_floating_point(y) or y.dtype == torch.bool:
            raise TypeError(
                f"likelihood='classification' needs integer class targets, got y.dtype={y.dtype} "
                f"in batch {batch_index}"
            )
        if y.shape != f.shape[:-1]:
            raise _shape_error(self.name, f, y, f"integer classes of shape {tuple(f.shape[:-1])}")
        C = f.shape[-1]
        if len(y) and (y.min() < 0 or y.max() >= C):
            raise ValueError(
                f"class targets of batch {batch_index} must lie in [0, {C}); got range "
                f"[{int(y.min())}, {int(y.max())}]"
            )
        return y.long()

    def log_lik(self, eta, y, sigma=None):
        return -F.cross_entropy(eta.reshape(-1, eta.shape[-1]), y.reshape(-1), reduction="sum")

    def hessian_sqrt(self, eta, y, sigma=None):
        """Rank-(K-1) factor L (..., K, K-1) with L Lᵀ = diag(p) - p pᵀ.

        With s = √p (a unit vector), H = diag(s) (I - s sᵀ) diag(s). The Householder reflection
        Q = I - v vᵀ / (1 + s_K), v = s + e_K, maps e_K to -s, so its first K-1 columns are an
        orthonormal basis of s⊥ and L = diag(s) Q[:, :K-1]. 1 + s_K >= 1, so it never degenerates.
        One column fewer than the K-column factor √p_r (e_r - p) saves a backward column and a
        1/K share of every curvature product.
        """
        p = torch.softmax(eta, -1)
        K = p.shape[-1]
        s = p.sqrt()
        if K < 2:
            return s.new_zeros(*s.shape, 1)
        v = s.clone()
        v[..., -1] = v[..., -1] + 1
        eye = torch.eye(K, K - 1, dtype=p.dtype, device=p.device)
        Q = eye - v.unsqueeze(-1) * (v[..., :-1] / v[..., -1:]).unsqueeze(-2)
        return s.unsqueeze(-1) * Q

    def hessian(self, eta, y=None, sigma=None):
        p = torch.softmax(eta, -1)
        return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)

    def grad(self, eta, y, sigma=None):
        return torch.softmax(eta, -1) - F.one_hot(y, eta.shape[-1]).to(eta.dtype)


class Binary(Likelihood):
    """Bernoulli likelihood on one logit; targets in {0, 1}."""

    name = "binary"

    def prepare_targets(self, f, y, batch_index):
        if f.shape[-1] != 1:
            raise ValueError(
                f"likelihood='binary' needs a model with one output logit, got output shape {tuple(f.shape)}"
            )
        if y.shape == f.shape[:-1]:
            y = y.unsqueeze(-1)
        if y.shape != f.shape:
            raise _shape_error(self.name, f, y, f"0/1 targets of shape {tuple(f.shape[:-1])}")
        if not ((y == 0) | (y == 1)).all():
            raise ValueError(
                f"likelihood='binary' needs targets in {{0, 1}}; batch {batch_index} has others"
            )
        return y.to(f.dtype)

    def log_lik(self, eta, y, sigma=None):
        return -F.binary_cross_entropy_with_logits(eta, y, reduction="sum")

    def hessian_sqrt(self, eta, y, sigma=None):
        p = torch.sigmoid(eta)
        return (p * (1 - p)).sqrt().unsqueeze(-1)

    def hessian(self, eta, y=None, sigma=None):
        p = torch.sigmoid(eta)
        return (p * (1 - p)).unsqueeze(-1)

    def grad(self, eta, y, sigma=None):
        return torch.sigmoid(eta) - y


class HeteroscedasticGaussian(Likelihood):
    """Gaussian in natural parameters (Immer et al., NeurIPS 2023).

    The model outputs ``2K`` values per position: ``f1 = η1 = μ/σ²`` and ``f2 = log(1/σ²)``; the
    link gives ``η2 = -½ exp(f2) < 0``. The GGN uses the Hessian w.r.t. (η1, η2), which is the
    covariance of the sufficient statistics (y, y²); the link is part of the Jacobian.
    """

    name = "heteroscedastic"

    def link(self, f):
        K = f.shape[-1] // 2
        return torch.cat([f[..., :K], -0.5 * torch.exp(f[..., K:])], -1)

    @staticmethod
    def mean_var(eta):
        K = eta.shape[-1] // 2
        eta1, eta2 = eta[..., :K], eta[..., K:]
        var = -0.5 / eta2
        return eta1 * var, var

    def prepare_targets(self, f, y, batch_index):
        if f.shape[-1] % 2:
            raise ValueError(
                "likelihood='heteroscedastic' needs 2K model outputs (η1 then log-precision), "
                f"got output shape {tuple(f.shape)}"
            )
        if not torch.is_floating_point(y):
            raise TypeError(f"likelihood='heteroscedastic' needs float targets, got {y.dtype}")
        K = f.shape[-1] // 2
        if K == 1 and y.shape == f.shape[:-1]:
            y = y.unsqueeze(-1)
        if y.shape != (*f.shape[:-1], K):
            raise _shape_error(self.name, f, y, f"shape {(*f.shape[:-1], K)}")
        return y.to(f.dtype)

    def log_lik(self, eta, y, sigma=None):
        K = eta.shape[-1] // 2
        e1, e2 = eta[..., :K], eta[..., K:]
        ll = (
            e1 * y
            + e2 * y**2
            + e1**2 / (4 * e2)
            + 0.5 * torch.log(-2 * e2)
            - 0.5 * math.log(2 * math.pi)
        )
        return ll.sum()

    def hessian_sqrt(self, eta, y, sigma=None):
        mu, var = self.mean_var(eta)
        sd = var.sqrt()
        K = mu.shape[-1]
        L = eta.new_zeros(*eta.shape, 2 * K)
        idx = torch.arange(K, device=eta.device)
        # Cholesky factor of [[σ², 2μσ²], [2μσ², 2σ⁴ + 4μ²σ²]] for each output k
        L[..., idx, idx] = sd
        L[..., K + idx, idx] = 2 * mu * sd
        L[..., K + idx, K + idx] = math.sqrt(2.0) * var
        return L

    def grad(self, eta, y, sigma=None):
        mu, var = self.mean_var(eta)
        return torch.cat([mu - y, mu**2 + var - y**2], -1)


def get_likelihood(name) -> Likelihood:
    if isinstance(name, Likelihood):
        return name
    check_choice("likelihood", name, LIKELIHOODS)
    return {
        "regression": GaussianRegression,
        "classification": Classification,
        "binary": Binary,
        "heteroscedastic": HeteroscedasticGaussian,
    }[name]()
