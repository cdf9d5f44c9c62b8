"""KFAC factors (expand / reduce) and the exact diagonal from layer inputs and output gradients.

``a``: (N, S, ia) bias-augmented layer inputs; ``g``: (C, N, S, ob) output gradients, one slice
per backpropagated column of the loss-Hessian square root (or the single per-sample loss gradient
for the empirical Fisher).

* expand (Eschenhagen et al., 2023): positions are extra batch items,
  ``A = Σ_{n,s} a aᵀ``, ``B = Σ_{c,n,s} g gᵀ``, curvature ``≈ B ⊗ A / (N·S)``.
* reduce: positions are aggregated first, ``â_n = mean_s a``, ``ĝ_{cn} = Σ_s g``,
  ``A = Σ_n â âᵀ``, ``B = Σ_{c,n} ĝ ĝᵀ``, curvature ``≈ B ⊗ A / N``.
"""

from __future__ import annotations

import torch


def kfac_accumulate(state, a, g, flavour, bias=False):
    """Add one batch's (A, B, count) contributions to ``state`` ([A, B, count] or None).

    ``bias=True``: ``a`` is the layer input *without* the bias column and the bias row/column of
    A is filled from column sums (no bias-augmented copy of the input). The Gram products are
    accumulated in place (``addmm_``) unless autograd tracks them (``create_graph``), which saves
    an allocation and an addition of every factor per batch."""
    if flavour == "expand":
        a2 = a.reshape(-1, a.shape[-1])
        g2 = g.reshape(-1, g.shape[-1])
        cnt = a.shape[0] * a.shape[1]
    else:
        a2 = a.mean(1)
        g2 = g.sum(2).reshape(-1, g.shape[-1])
        cnt = a.shape[0]
    tracked = a2.requires_grad or g2.requires_grad
    if state is not None:
        tracked = tracked or state[0].requires_grad or state[1].requires_grad
    if tracked:
        A = a2.T @ a2
        if bias:
            col = a2.sum(0)
            corner = a2.new_full((1,), float(a2.shape[0]))
            A = torch.cat([torch.cat([A, col[:, None]], 1), torch.cat([col, corner])[None]], 0)
        B = g2.T @ g2
        return [A, B, cnt] if state is None else [state[0] + A, state[1] + B, state[2] + cnt]
    if state is None:
        ia = a2.shape[-1] + int(bias)
        state = [a2.new_zeros(ia, ia), g2.new_zeros(g2.shape[-1], g2.shape[-1]), 0]
    A, B, n = state
    if bias:
        A[:-1, :-1].addmm_(a2.T, a2)
        col = a2.sum(0)
        A[:-1, -1] += col
        A[-1, :-1] += col
        A[-1, -1] += a2.shape[0]
    else:
        A.addmm_(a2.T, a2)
    B.addmm_(g2.T, g2)
    return [A, B, n + cnt]


def exact_diag(a, g, budget=2**24):
    """Exact diagonal of Σ_{n,c} vec(Σ_s g_{cns} a_{ns}ᵀ) vec(·)ᵀ, shaped (ob, ia)."""
    C, N, S, ob = g.shape
    ia = a.shape[-1]
    if S == 1:
        return (g[:, :, 0] ** 2).sum(0).T @ (a[:, 0] ** 2)
    out = a.new_zeros(ob, ia)
    step = max(1, budget // max(1, C * ob * ia))
    for i in range(0, N, step):
        G = torch.einsum("cnso,nsi->cnoi", g[:, i : i + step], a[i : i + step])
        out = out + (G**2).sum((0, 1))
    return out


def full_from_ag(ag, budget=2**25):
    """Exact curvature block Σ_{n,c} r_{nc} r_{nc}ᵀ of several layers, r the per-sample gradient
    rows vec(Σ_s g aᵀ) of each layer concatenated (block order: layer by layer, (out, in') row-major).

    One layer without weight sharing uses Σ_n (Σ_c g gᵀ) ⊗ a aᵀ, which avoids forming the rows."""
    if len(ag) == 1 and ag[0][0].shape[1] == 1:
        a, g = ag[0]
        a, g = a[:, 0], g[:, :, 0]
        N, ia = a.shape
        ob = g.shape[-1]
        if N * ia * ia <= budget and ob * ob <= 4 * N:
            G = torch.einsum("cno,cnp->nop", g, g).reshape(N, ob * ob)
            H = G.T @ (a[:, :, None] * a[:, None, :]).reshape(N, -1)  # (ob², ia²)
            return H.reshape(ob, ob, ia, ia).permute(0, 2, 1, 3).reshape(ob * ia, ob * ia)
    N = ag[0][0].shape[0]
    C = ag[0][1].shape[0]
    d = sum(g.shape[-1] * a.shape[-1] for a, g in ag)
    step = max(1, budget // max(1, C * d))
    H = 0
    for i in range(0, N, step):
        rows = [
            torch.einsum("cnso,nsi->cnoi", g[:, i : i + step], a[i : i + step]).flatten(2)
            for a, g in ag
        ]
        R = torch.cat(rows, -1).reshape(-1, d)
        H = H + R.T @ R
    return H
