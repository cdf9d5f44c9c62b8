"""Functional-ANOVA purification of LA-NAM's pairwise subnetworks (second stage).

With a 2-D subnetwork ``h(x_a, x_b)`` next to the 1-D ones, the split between main effects and the
pair is not identified: ``h`` can absorb any function of ``x_a`` alone. The read-outs therefore use
the functional-ANOVA decomposition under the product of the empirical marginals of the training
data (the purification of Lengerich et al., AISTATS 2020):

``h_a(x_a) = E_{x_b} h(x_a, x_b)``, ``h_b(x_b) = E_{x_a} h(x_a, x_b)``, ``h_0 = E_{x_a} E_{x_b} h``,

the main effect of ``a`` becomes ``f_a(x_a) + h_a(x_a) - h_0`` (then centred by its training mean
as every shape) and the pure interaction ``h - h_a - h_b + h_0``. The model's predictions do not
change. Every piece is linear in the pair subnetwork's outputs, so its posterior variance is
``J~ Sigma_pair J~^T`` with the same averages applied to the Jacobian (``J~ = E_{x_b} J(x_a, x_b)
- E E J``), added to the main subnetwork's own ``J~_a Sigma_a J~_a^T`` (independent blocks).

The expectations over a marginal use ``n_marginal`` evenly spaced order statistics of the training
values (all of them when there are fewer), evaluated for all pairs as one batched op.
"""

from __future__ import annotations

import torch

from workbench.nam.modules import MLPGroup


def marginal_samples(x: torch.Tensor, n_marginal: int = 200) -> torch.Tensor:
    """Evenly spaced order statistics of every column of ``x`` (N, F) -> (M, F), M = min(N, n_marginal)."""
    n = x.shape[0]
    if n <= n_marginal:
        return x.sort(0).values
    idx = torch.linspace(0, n - 1, n_marginal).round().long()
    return x.sort(0).values[idx]


@torch.no_grad()
def pair_marginal(
    group: MLPGroup, grid: torch.Tensor, samples: torch.Tensor, side: int, chunk: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average of every pair subnetwork over the other input's marginal.

    ``grid`` (G, Q): values of input ``side`` (0: the pair's first feature, 1: its second) of each
    of the Q pairs; ``samples`` (M, Q): draws of the other input. Returns the averaged outputs
    (G, Q, K) and averaged Jacobians (G, Q, K, P), float64.
    """
    g_n, q = grid.shape
    m = samples.shape[0]
    outs, jacs = [], []
    for start in range(0, g_n, chunk):
        gv = grid[start : start + chunk]  # (g, Q)
        inp = torch.empty(gv.shape[0], m, q, 2, dtype=grid.dtype, device=grid.device)
        inp[..., side] = gv[:, None, :]
        inp[..., 1 - side] = samples[None, :, :]
        flat = inp.reshape(-1, q, 2)
        out = group(flat).double().reshape(gv.shape[0], m, q, -1).mean(1)
        jac = group.jacobian(flat).double()
        jacs.append(jac.reshape(gv.shape[0], m, *jac.shape[1:]).mean(1))
        outs.append(out)
    return torch.cat(outs), torch.cat(jacs)


@torch.no_grad()
def pair_grand_mean(group: MLPGroup, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``E_{x_a} E_{x_b} h`` and the same mean of the Jacobian under the product of the marginals:
    ``samples`` (M, Q, 2) -> (Q, K), (Q, K, P)."""
    out, jac = pair_marginal(group, samples[:, :, 0], samples[:, :, 1], side=0)
    return out.mean(0), jac.mean(0)
