"""KFAC (expand) blocks for LA-NAM's MLP subnetworks, batched over the subnetwork axis.

The reference LA-NAM uses a KFAC Laplace: block-diagonal per layer, hence per subnetwork
(REFERENCES.md, LA-NAM). For layer ``l`` of subnetwork ``s`` the GGN block is approximated by
``A ⊗ B`` with ``A = sum_n a a^T`` over the bias-augmented layer input and
``B = (1/N) sum_n g^T Lambda_n g`` over the output-side Jacobian (Eschenhagen et al., 2023);
the output layer of a Gaussian model is exact.

The layerwise prior gives the weight rows and the bias row of ``[[W], [b]]`` their own
precisions, so the prior is ``D ⊗ I`` with ``D`` diagonal on the input side. Writing
``Ã = D^{-1/2} A D^{-1/2}``, the posterior precision of the layer is
``P = (D^{1/2} ⊗ I)(s Ã ⊗ B + I)(D^{1/2} ⊗ I)`` (``s = 1/sigma^2``), so, exactly,

* ``log det P - log det P0 = sum_j log det(I + s mu_j Ã)`` over the eigenvalues ``mu_j`` of B
  (one small Cholesky per (subnetwork, mu_j), differentiable in the prior precisions), and
* ``P^{-1} = (Q ⊗ U) diag(w) (Q ⊗ U)^T`` with ``Q = D^{-1/2} V``, ``Ã = V diag(lambda) V^T``,
  ``B = U diag(mu) U^T`` and ``w_ij = 1 / (1 + s lambda_i mu_j)``.

No approximation of the prior is needed (unlike a diagonal prior on a Kronecker factor pair).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KronLayer:
    """Kronecker factors of one layer of every subnetwork of a group (float64)."""

    A: torch.Tensor  # (S, in, in): sum_n a a^T, bias-augmented input
    B: torch.Tensor  # (S, out, out): (1/N) sum_n g^T Lambda g
    mu: torch.Tensor  # (S, out) eigenvalues of B (clamped at 0)
    U: torch.Tensor  # (S, out, out) eigenvectors of B
    slots: tuple[int, int]  # prior slots (weight rows, bias row)


def make_layers(sums: list[tuple[torch.Tensor, torch.Tensor]], n_samples: int) -> list[KronLayer]:
    """Normalise the accumulated sums (B by N) and eigendecompose the B factors once per fit."""
    layers = []
    for idx, (A, B) in enumerate(sums):
        A = 0.5 * (A + A.transpose(-1, -2))
        B = 0.5 * (B + B.transpose(-1, -2)) / n_samples
        mu, U = torch.linalg.eigh(B)
        layers.append(KronLayer(A=A, B=B, mu=mu.clamp_min(0.0), U=U, slots=(2 * idx, 2 * idx + 1)))
    return layers


def input_prior(layer: KronLayer, log_prior: torch.Tensor) -> torch.Tensor:
    """(S, in) prior precision of the rows of ``[[W], [b]]`` from the (S, T) layerwise log prior."""
    n_in = layer.A.shape[-1]
    w, b = layer.slots
    lp = torch.cat([log_prior[:, w : w + 1].expand(-1, n_in - 1), log_prior[:, b : b + 1]], dim=1)
    return lp.exp()


def _whitened(layer: KronLayer, d: torch.Tensor) -> torch.Tensor:
    r = d.rsqrt()
    return layer.A * r.unsqueeze(-1) * r.unsqueeze(-2)


def log_det_ratio(layers: list[KronLayer], log_prior: torch.Tensor, scale) -> torch.Tensor:
    """``sum_s sum_l [log det P_sl - log det P0_sl]``, differentiable in ``log_prior`` and ``scale``."""
    total = 0.0
    for layer in layers:
        at = _whitened(layer, input_prior(layer, log_prior))  # (S, in, in)
        n_in = at.shape[-1]
        eye = torch.eye(n_in, dtype=at.dtype, device=at.device)
        m = eye + (scale * layer.mu)[:, :, None, None] * at[:, None]  # (S, out, in, in)
        L, info = torch.linalg.cholesky_ex(m)
        if bool((info > 0).any()):  # I + PSD is PD; only rounding can break it
            L = torch.linalg.cholesky(m + 1e-12 * eye)
        total = total + 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum()
    return total


@dataclass
class KronPosteriorLayer:
    Q: torch.Tensor  # (S, in, in) D^{-1/2} V
    U: torch.Tensor  # (S, out, out)
    w: torch.Tensor  # (S, in, out) posterior variances in the Kronecker eigenbasis


def posterior_layers(layers: list[KronLayer], log_prior: torch.Tensor, scale: float) -> list[KronPosteriorLayer]:
    out = []
    for layer in layers:
        d = input_prior(layer, log_prior)
        lam, V = torch.linalg.eigh(_whitened(layer, d))
        w = 1.0 / (1.0 + scale * lam.clamp_min(0.0)[:, :, None] * layer.mu[:, None, :])
        out.append(KronPosteriorLayer(Q=V * d.rsqrt().unsqueeze(-1), U=layer.U, w=w))
    return out


def functional_variance(post: list[KronPosteriorLayer], jac: torch.Tensor) -> torch.Tensor:
    """``J Sigma J^T`` per sample and subnetwork: jac (N, S, K, P) -> (N, S, K, K)."""
    n, s, k, _ = jac.shape
    jac = jac.double()
    var = torch.zeros(n, s, k, k, dtype=torch.float64, device=jac.device)
    start = 0
    for layer in post:
        n_in, n_out = layer.Q.shape[-1], layer.U.shape[-1]
        jm = jac[..., start : start + n_in * n_out].reshape(n, s, k, n_in, n_out)
        start += n_in * n_out
        z = torch.einsum("sai,nskab->nskib", layer.Q, jm)
        z = torch.einsum("nskib,sbj->nskij", z, layer.U)
        var += torch.einsum("nskij,nslij,sij->nskl", z, z, layer.w)
    return var


def covariance(post: list[KronPosteriorLayer]) -> torch.Tensor:
    """Dense (S, P, P) posterior covariance, block-diagonal over the layers."""
    blocks = []
    for layer in post:
        s, n_in, n_out = layer.Q.shape[0], layer.Q.shape[-1], layer.U.shape[-1]
        c = torch.einsum("sai,sbj,sij,sci,sej->sabce", layer.Q, layer.U, layer.w, layer.Q, layer.U)
        blocks.append(c.reshape(s, n_in * n_out, n_in * n_out))
    size = sum(b.shape[-1] for b in blocks)
    out = torch.zeros(blocks[0].shape[0], size, size, dtype=torch.float64, device=blocks[0].device)
    start = 0
    for b in blocks:
        out[:, start : start + b.shape[-1], start : start + b.shape[-1]] = b
        start += b.shape[-1]
    return out
