"""Kronecker-factored (KFAC) curvature block of one layer [W | b]: ``H ≈ B ⊗ A``.

Log-determinants: isotropic prior → ``Σ log(s λ_B λ_A + δ)`` from the factors' eigenvalues
(computed once). Kronecker-structured prior ``D = diag(u) ⊗ diag(v)`` (layerwise with a separate
bias precision, unitwise, group) → exact: ``log det D + Σ log(1 + s μ_i ν_j)`` with μ, ν the
eigenvalues of ``diag(u)^-½ B diag(u)^-½`` and ``diag(v)^-½ A diag(v)^-½``. A per-parameter
(``diagonal``) prior is not Kronecker: we use the documented approximation
``P ≈ Q diag(s λ + diag(Qᵀ D Q)) Qᵀ`` in the Kronecker eigenbasis Q = Q_B ⊗ Q_A (exact when D is
isotropic; by Hadamard's inequality its log-determinant is an upper bound of the exact one).
"""

from __future__ import annotations

import warnings

import torch

from ..curvature.kfac import KronAccumulator
from .base import Block, eigh_psd, factored_variance, module_idx, scaled
from .diag import DiagBlock
from .full import group_modules


class KronBlock(Block):
    """Curvature ``B ⊗ A`` of a layer block [W | b] in row-major order (out ``ob`` × in ``ia``)."""

    kind = "kron"

    def __init__(self, idx, names, A=None, B=None, module="", count=None, **kw):
        super().__init__(idx, names, module=module, **kw)
        self.A, self.B, self.count = A, B, count
        if A is not None:
            self.ob, self.ia = B.shape[0], A.shape[0]

    @classmethod
    def plan(cls, spec, group, names, fallback):
        mods = group_modules(spec, names)
        blocks = [
            cls(
                module_idx(spec, mod, w, b),
                [n for n in (w, b) if n],
                module=m,
                group=group,
                modules=[(m, mod, w, b)],
                spec=spec,
            )
            for (m, mod, w, b) in mods
        ]
        covered = {n for (_, _, w, b) in mods for n in (w, b) if n}
        rest = [n for n in names if n not in covered]
        if rest:
            owners = sorted({spec.owner.get(n, ("?", ""))[0] or "<model>" for n in rest})
            if fallback == "error":
                raise ValueError(
                    f"hessian_structure='kron' does not support the module(s) {owners} owning "
                    f"parameters {rest}: KFAC handles Linear, Conv1d/2d/3d (groups=1) and Embedding. "
                    "Use hessian_structure='diag' or 'full', put these parameters in a param group "
                    "with group_structure 'diag'/'full', or pass kfac_fallback='diag'."
                )
            warnings.warn(
                f"KFAC: parameters {rest} (module(s) {owners}) are not in a supported layer; "
                "they get an exact diagonal block (kfac_fallback='diag')",
                stacklevel=5,
            )
            blocks += DiagBlock.plan(spec, group, rest, fallback)
        return blocks

    def _tensors(self):
        return {"A": self.A, "B": self.B, "module": self.module, "count": self.count}

    def _check_loaded(self):
        A, B = self.A, self.B
        ok = all(
            isinstance(t, torch.Tensor) and t.ndim == 2 and t.shape[0] == t.shape[1] for t in (A, B)
        )
        if not ok or A.shape[0] * B.shape[0] != self.d:
            return f"A and B must be square with A.size * B.size = {self.d}, got {getattr(A, 'shape', A)}, {getattr(B, 'shape', B)}"
        self.ob, self.ia = B.shape[0], A.shape[0]
        return None

    # ---------------------------------------------------------------- fitting
    def start(self, ctx):
        super().start(ctx)
        ((_, _, w, b),) = self.modules
        self._acc = KronAccumulator(ctx.kfac, bias=w is not None and b is not None)

    def accumulate(self, pieces):
        ((m, mod, w, b),) = self.modules
        # with a weight, the bias row/column of A comes from column sums of a
        a, g = pieces.ag(m, mod, w is not None, b is not None and w is None)
        if self._ctx.comps:  # KFAC keeps the fit-time σ inside its factors
            g = g / self._ctx.sigma_fit[pieces.colk][:, None, None, None]
        self._acc.add(a, g)

    def finish(self):
        A, B, cnt = self._acc.result()
        self.A, self.B, self.count = A, B / cnt, cnt
        self.ob, self.ia = self.B.shape[0], self.A.shape[0]
        self._acc = None
        super().finish()

    def merge(self, other):
        """KFAC of the union of both fits' data: A sums, B is the count-weighted mean."""
        if self.count is None or other.count is None:
            raise ValueError("this KFAC block has no sample count (old state_dict): refit it")
        n = self.count + other.count
        self.B = (self.B * self.count + other.B * other.count) / n
        self.A, self.count = self.A + other.A, n
        self.clear_cache()
        return self

    @scaled
    def precision_dense(self, s, prior):
        return s * torch.kron(self.B, self.A) + torch.diag(prior.diag)

    # ---------------------------------------------------------------- posterior pieces
    def _eigs(self):
        if "eig" not in self._cache:
            self._cache["eig"] = (eigh_psd(self.A), eigh_psd(self.B))
        return self._cache["eig"]

    @scaled
    def decomp(self, s, prior, need_vectors=True):
        """(Q_B, Q_A, lam (ob, ia), su, sv) with Σ = S Q diag(1/lam) Qᵀ S, S = diag(su) ⊗ diag(sv)."""
        grad_mode = self.A.requires_grad or self.B.requires_grad
        if prior.iso is not None:
            if grad_mode and not need_vectors:
                la, lb = (
                    torch.linalg.eigvalsh(self.A).clamp(min=0),
                    torch.linalg.eigvalsh(self.B).clamp(min=0),
                )
                return None, None, s * lb[:, None] * la[None, :] + prior.iso, None, None
            (la, Qa), (lb, Qb) = (eigh_psd(self.A), eigh_psd(self.B)) if grad_mode else self._eigs()
            return Qb, Qa, s * lb[:, None] * la[None, :] + prior.iso, None, None
        D = prior.diag.reshape(self.ob, self.ia)
        if prior.kron_ok:
            u = D[:, 0]
            v = D[0, :] / D[0, 0]
            su, sv = u.rsqrt(), v.rsqrt()
            Bu = self.B * su[:, None] * su[None, :]
            Av = self.A * sv[:, None] * sv[None, :]
            if need_vectors:
                (nu, Qa), (mu, Qb) = eigh_psd(Av), eigh_psd(Bu)
            else:
                nu, mu, Qa, Qb = (
                    torch.linalg.eigvalsh(Av).clamp(min=0),
                    torch.linalg.eigvalsh(Bu).clamp(min=0),
                    None,
                    None,
                )
            return Qb, Qa, 1 + s * mu[:, None] * nu[None, :], su, sv
        (la, Qa), (lb, Qb) = (eigh_psd(self.A), eigh_psd(self.B)) if grad_mode else self._eigs()
        dd = (Qb**2).T @ D @ (Qa**2)
        return Qb, Qa, s * lb[:, None] * la[None, :] + dd, None, None

    _decomp = decomp  # older name

    def _wb(self, prior):
        """Weight columns share δ_w and the bias column has δ_b (layerwise / group priors)."""
        if prior.pieces is None or len(prior.pieces) != 2:
            return None
        bias_cols = None
        for pos, val in prior.pieces:
            if pos.numel() == self.ob and bool((pos % self.ia == self.ia - 1).all()):
                bias_cols = val
            else:
                dw = val
        if bias_cols is None:
            return None
        return ("wb", dw, bias_cols)

    def _logdet_wb(self, s, dw, db):
        # eigenbasis of B: block i is sλ_Bi A + δ_w I + (δ_b - δ_w) e eᵀ (e = bias column):
        # log det = Σ_j log(sλ_Bi λ_Aj + δ_w) + log(1 + (δ_b - δ_w) Σ_j Q_A[e, j]² / (sλ_Bi λ_Aj + δ_w))
        (la, Qa), (lb, _) = self._eigs()
        t = s * lb[:, None] * la[None, :] + dw
        q2 = Qa[-1] ** 2
        return torch.log(t).sum() + torch.log1p((db - dw) * (q2 / t).sum(1)).sum()

    @scaled
    def logdet(self, s, prior):
        wb = (
            None
            if (
                self.A.requires_grad
                or self.B.requires_grad
                or prior.iso is not None
                or not prior.kron_ok
            )
            else self._wb(prior)
        )
        if wb is not None:
            return self._logdet_wb(s, wb[1], wb[2])
        Qb, Qa, lam, su, sv = self.decomp(s, prior, need_vectors=False)
        out = torch.log(lam).sum()
        if su is not None:
            out = out - 2 * (self.ia * torch.log(su).sum() + self.ob * torch.log(sv).sum())
        return out

    @scaled
    def precision_diag(self, s, prior):
        return (
            s * (torch.diagonal(self.B)[:, None] * torch.diagonal(self.A)[None, :]).reshape(-1)
            + prior.diag
        )

    @scaled
    def cov_apply(self, s, prior, V):
        Qb, Qa, lam, su, sv = self.decomp(s, prior)
        V = V.reshape(-1, self.ob, self.ia)
        if su is not None:
            V = V * su[:, None] * sv[None, :]
        W = (Qb.T @ V @ Qa) / lam
        W = Qb @ W @ Qa.T
        if su is not None:
            W = W * su[:, None] * sv[None, :]
        return W.reshape(-1, self.d)

    @scaled
    def sample(self, s, prior, z):
        Qb, Qa, lam, su, sv = self.decomp(s, prior)
        W = Qb @ (z.reshape(-1, self.ob, self.ia) / lam.sqrt()) @ Qa.T
        if su is not None:
            W = W * su[:, None] * sv[None, :]
        return W.reshape(-1, self.d)

    @scaled
    def eff_dims(self, s, prior, sub):
        """Effective dimensions of the tensor at block positions ``sub`` (a set of columns of [W | b])."""
        cols = torch.unique(sub % self.ia)
        A = self.A.detach()[cols][:, cols]
        (la, Qa), (lb, Qb) = (
            eigh_psd(A),
            self._eigs()[1] if not self.B.requires_grad else eigh_psd(self.B.detach()),
        )
        D = prior.diag.reshape(self.ob, self.ia)[:, cols]
        lam = s * lb[:, None] * la[None, :]
        dd = (Qb**2).T @ D @ (Qa**2)
        return (lam / (lam + dd)).sum()

    # ---------------------------------------------------------------- predictive pieces
    def layer_terms(self, s, prior):
        ((m, mod, w, b),) = self.modules

        def fn(ags):
            ((a, g),) = ags
            Qb, Qa, lam, su, sv = self.decomp(s, prior)
            if su is not None:
                g = g * su
                a = a * sv
            return factored_variance(a @ Qa, g @ Qb, lam)  # eigenbasis coordinates

        return [([(m, mod, w is not None, b is not None)], fn)]

    def jacobian_terms(self, s, prior):
        return []
