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

import numpy as np
import torch
from scipy.linalg import blas


def _gram_into(C, X):
    """C += Xᵀ X for a contiguous (n, d) X.

    On CPU with a single torch thread this is BLAS ``syrk`` (scipy), which computes one triangle
    only: ~40 % less time than ``addmm_``. With several torch threads it is ``addmm_``: scipy's
    OpenBLAS pool and torch's OpenMP pool then compete for the same cores (measured: a 2-thread
    KFAC fit 5x slower with syrk). Returns whether C now holds just one triangle (so the caller
    symmetrises it once at the end)."""
    if (
        C.device.type == "cpu"
        and C.dtype in _SYRK
        and X.shape[0] > 0
        and torch.get_num_threads() == 1
    ):
        X = X.contiguous()
        # X (n, d) row-major is Xᵀ (d, n) column-major, so syrk(trans=0) adds Xᵀ X. C's row-major
        # buffer read column-major is Cᵀ; syrk fills the lower triangle of that view, which is the
        # upper triangle of C as torch sees it (the one ``_symmetrise`` reads).
        out = _SYRK[C.dtype](
            1.0, X.numpy().T, beta=1.0, c=C.numpy().T, trans=0, lower=1, overwrite_c=1
        )
        if not np.shares_memory(out, C.numpy()):  # defensive: BLAS wrapper copied instead
            C.copy_(torch.from_numpy(np.ascontiguousarray(out.T)))
        return True
    C.addmm_(X.T, X)
    return False


_SYRK = {torch.float32: blas.ssyrk, torch.float64: blas.dsyrk}


def _symmetrise(M):
    """Fill a matrix of which one triangle holds the values (the other may hold stale zeros)."""
    upper = torch.triu(M)
    return upper + torch.triu(M, 1).T


class KronAccumulator:
    """Sums one layer's KFAC factors over batches: ``add(a, g)`` per batch, then ``result()``.

    ``bias=True``: ``a`` is the layer input *without* the bias column; the bias row/column of A
    comes from column sums (no bias-augmented copy of the input). Without autograd the Gram
    products go into preallocated buffers (BLAS syrk on CPU, ``addmm_`` elsewhere); with
    ``create_graph`` they are plain differentiable products."""

    def __init__(self, flavour, bias=False):
        self.flavour, self.bias = flavour, bias
        self.A = self.B = self.col = None
        self.rows = self.count = 0
        self.triangular = set()

    def add(self, a, g):
        if self.flavour == "expand":
            a2 = a.reshape(-1, a.shape[-1])
            g2 = g.reshape(-1, g.shape[-1])
            self.count += a.shape[0] * a.shape[1]
        else:
            a2 = a.mean(1)
            g2 = g.sum(2).reshape(-1, g.shape[-1])
            self.count += a.shape[0]
        self.rows += a2.shape[0]
        col = a2.sum(0) if self.bias else None
        tracked = a2.requires_grad or g2.requires_grad
        if tracked or (self.A is not None and (self.A.requires_grad or self.B.requires_grad)):
            A, B = a2.T @ a2, g2.T @ g2
            if self.A is None:
                self.A, self.B, self.col = A, B, col
            else:
                self.A, self.B = self.A + A, self.B + B
                self.col = None if col is None else self.col + col
            return
        if self.A is None:
            self.A = a2.new_zeros(a2.shape[-1], a2.shape[-1])
            self.B = g2.new_zeros(g2.shape[-1], g2.shape[-1])
            self.col = None if col is None else torch.zeros_like(col)
        if _gram_into(self.A, a2):
            self.triangular.add("A")
        if _gram_into(self.B, g2):
            self.triangular.add("B")
        if col is not None:
            self.col += col

    def result(self):
        """(A, B, count): A bias-augmented when ``bias``; both factors symmetric."""
        A = _symmetrise(self.A) if "A" in self.triangular else self.A
        B = _symmetrise(self.B) if "B" in self.triangular else self.B
        if self.bias:
            corner = A.new_full((1,), float(self.rows))
            A = torch.cat(
                [torch.cat([A, self.col[:, None]], 1), torch.cat([self.col, corner])[None]], 0
            )
        return A, B, self.count


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
