"""Posterior blocks: full, diagonal and Kronecker-factored (KFAC) curvature plus a prior.

Each block covers global parameter indices ``idx`` (in the block's own order) and represents the
posterior precision ``P = s·H + D`` with ``s = 1/(σ²T)`` (or ``1/(σ⁴T)`` for an empirical Fisher
in regression) the likelihood scale and ``D`` the prior precision diagonal of the block.

Log-determinants (differentiable in s and D, curvature fixed):

* Full: eigendecomposition of H once, ``Σ log(sλ + δ)`` when the prior is isotropic on the block,
  otherwise a Cholesky of ``sH + D`` per call.
* Diagonal: ``Σ log(s h + δ)``.
* Kron (``H ≈ B ⊗ A``): isotropic prior → ``Σ log(s λ_B λ_A + δ)`` from the factors' eigenvalues
  (computed once). Kronecker-structured prior ``D = diag(u) ⊗ diag(v)`` (layerwise with a
  separate bias precision, unitwise, group) → exact: ``log det D + Σ log(1 + s μ_i ν_j)`` with
  μ, ν the eigenvalues of ``diag(u)^-½ B diag(u)^-½`` and ``diag(v)^-½ A diag(v)^-½``.
  A per-parameter (``diagonal``) prior is not Kronecker: we use the documented approximation
  ``P ≈ Q diag(s λ + diag(Qᵀ D Q)) Qᵀ`` in the Kronecker eigenbasis Q = Q_B ⊗ Q_A (exact when D
  is isotropic; by Hadamard's inequality its log-determinant is an upper bound of the exact one).
"""

from __future__ import annotations

import torch


class Scale:
    """Likelihood scale: scalar s for ordinary blocks, per-output s_k for blocks stored per output.

    ``scalar`` is computed lazily so that blocks that need it can raise a clear error."""

    def __init__(self, scalar_fn, per_output):
        self._scalar_fn, self.per_output = scalar_fn, per_output

    @property
    def scalar(self):
        return self._scalar_fn()


def _scaled(method):
    def wrapper(self, s, *args, **kwargs):
        if isinstance(s, Scale):
            s = s.per_output if getattr(self, "comps", False) else s.scalar
        return method(self, s, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


def _eigh(M):
    """Eigenvalues (clamped at 0) and eigenvectors of a symmetric PSD curvature factor.

    Decomposed in float64 whatever the factor's dtype: float32 ``eigh`` of a factor with exactly
    repeated zero eigenvalues (dead units, pruned inputs) can return NaN, which would poison every
    later log-determinant. If float64 still fails, a tiny relative jitter is added once.
    """
    dtype = M.dtype
    M64 = 0.5 * (M + M.transpose(-1, -2)).to(torch.float64)
    lam, Q = torch.linalg.eigh(M64)
    if not (torch.isfinite(lam).all() and torch.isfinite(Q).all()):
        scale = M64.diagonal(dim1=-2, dim2=-1).abs().max().clamp_min(1.0)
        eye = torch.eye(M64.shape[-1], dtype=M64.dtype, device=M64.device)
        lam, Q = torch.linalg.eigh(M64 + 1e-12 * scale * eye)
        if not (torch.isfinite(lam).all() and torch.isfinite(Q).all()):
            raise FloatingPointError(
                f"eigendecomposition of a {tuple(M.shape)} curvature factor failed (non-finite entries: "
                f"{int((~torch.isfinite(M)).sum())}); check the model's outputs for inf/NaN"
            )
    return lam.clamp(min=0).to(dtype), Q.to(dtype)


class Block:
    kind = ""

    def __init__(self, idx, names):
        self.idx = idx
        self.names = list(names)
        self.d = int(idx.numel())
        self._cache = {}
        self._static = {}

    def invalidate(self):
        """Forget what depends on the hyperparameters (eigendecompositions of the curvature stay)."""
        for k in ("chol", "chol_key"):
            self._cache.pop(k, None)

    # state ------------------------------------------------------------------------------
    def state(self):
        return {"kind": self.kind, "idx": self.idx, "names": self.names, **self._tensors()}


class FullBlock(Block):
    kind = "full"

    def __init__(self, idx, names, H):
        super().__init__(idx, names)
        self.H = H

    def _tensors(self):
        return {"H": self.H}

    def merge(self, other):
        """This block's curvature plus ``other``'s (same parameters): continual fitting."""
        return FullBlock(self.idx, self.names, self.H + other.H)

    @property
    def comps(self):
        """H stored per output (K, d, d): regression with one σ per output, H(σ) = Σ_k H_k/σ_k²."""
        return self.H.ndim == 3

    def _Hs(self, s):
        if self.comps:
            return torch.einsum("k,kij->ij", s, self.H), 1.0
        return self.H, s

    def _eig(self):
        if self.H.requires_grad:
            return torch.linalg.eigvalsh(self.H).clamp(min=0), None
        if "eig" not in self._cache:
            self._cache["eig"] = _eigh(self.H)
        return self._cache["eig"]

    def _evals(self):
        """Eigenvalues only (about 3x cheaper than eigh with vectors); enough for iso log-dets."""
        if self.H.requires_grad:
            return torch.linalg.eigvalsh(self.H).clamp(min=0)
        if "eig" in self._cache:
            return self._cache["eig"][0]
        if "evals" not in self._cache:
            self._cache["evals"] = torch.linalg.eigvalsh(self.H).clamp(min=0)
        return self._cache["evals"]

    @_scaled
    def logdet(self, s, prior):
        if not self.comps and prior.iso is not None:
            return torch.log(s * self._evals() + prior.iso).sum()
        if not self.comps and prior.pieces is not None and not self.H.requires_grad:
            out = self._logdet_pieces(s, prior)
            if out is not None:
                return out
        H, s = self._Hs(s)
        P = s * H + torch.diag(prior.diag)
        return 2 * torch.log(torch.diagonal(torch.linalg.cholesky(P))).sum()

    def _logdet_pieces(self, s, prior):
        """Prior constant per tensor: D = δ0 I + U C Uᵀ with U selecting the r entries of the other
        tensors; determinant lemma on the cached eigendecomposition, O(r² d) per call."""
        big = max(range(len(prior.pieces)), key=lambda i: prior.pieces[i][0].numel())
        d0 = prior.pieces[big][1]
        rest = [p for i, p in enumerate(prior.pieces) if i != big]
        r = sum(p[0].numel() for p in rest)
        if r > max(64, self.d // 4):
            return None
        lam, Q = self._eig()
        t = s * lam + d0
        pos = torch.cat([p[0] for p in rest])
        c = torch.cat([(p[1] - d0).expand(p[0].numel()) for p in rest])
        Qr = Q[pos]  # (r, d)
        K = (Qr / t) @ Qr.T
        M = torch.eye(r, dtype=K.dtype, device=K.device) + c[:, None] * K
        return torch.log(t).sum() + torch.linalg.slogdet(M)[1]

    @_scaled
    def precision_diag(self, s, prior):
        H, s = self._Hs(s)
        return s * torch.diagonal(H) + prior.diag

    @_scaled
    def precision_dense(self, s, prior):
        H, s = self._Hs(s)
        return s * H + torch.diag(prior.diag)

    def _factor(self, s, prior):
        """('eig', Q, s λ + δ) when the eigendecomposition is cached and the prior isotropic, else
        ('chol', L, None) with L Lᵀ = s H + D (cached until the hyperparameters change)."""
        if (
            prior.iso is not None
            and "eig" in self._cache
            and not self.H.requires_grad
            and not self.comps
        ):
            lam, Q = self._cache["eig"]
            return ("eig", Q, s * lam + prior.iso)
        st = torch.as_tensor(s).detach()
        key = (
            float(st.sum()),
            float(st.reshape(-1)[0]),
            float(prior.diag.detach().sum()),
            float(prior.diag.detach()[0]),
        )
        if self._cache.get("chol_key") != key:
            H, s = self._Hs(s)
            P = s * H.detach() + torch.diag(prior.diag.detach())
            self._cache["chol"] = torch.linalg.cholesky(P)
            self._cache["chol_key"] = key
        return ("chol", self._cache["chol"], None)

    @_scaled
    def cov_apply(self, s, prior, V):
        kind, M, lam = self._factor(s, prior)
        if kind == "eig":
            return ((V @ M) / lam) @ M.T
        return torch.cholesky_solve(V.T, M).T

    @_scaled
    def sample(self, s, prior, z):
        kind, M, lam = self._factor(s, prior)
        if kind == "eig":
            return (z / lam.sqrt()) @ M.T
        return torch.linalg.solve_triangular(M.T, z.T, upper=True).T

    @_scaled
    def eff_dims(self, s, prior, sub):
        """Σ sλ/(sλ+δ) over the eigenvalues of the curvature restricted to ``sub`` (block positions)."""
        H, s = self._Hs(s)
        Hs = H[sub][:, sub]
        lam, Q = _eigh(Hs.detach())
        dd = (Q**2).T @ prior.diag[sub]
        return (s * lam / (s * lam + dd)).sum()


class DiagBlock(Block):
    kind = "diag"

    def __init__(self, idx, names, h):
        super().__init__(idx, names)
        self.h = h

    def _tensors(self):
        return {"h": self.h}

    def merge(self, other):
        return DiagBlock(self.idx, self.names, self.h + other.h)

    @property
    def comps(self):
        return self.h.ndim == 2

    def _hs(self, s):
        return (s @ self.h, 1.0) if self.comps else (self.h, s)

    @_scaled
    def logdet(self, s, prior):
        return torch.log(self.precision_diag(s, prior)).sum()

    @_scaled
    def precision_diag(self, s, prior):
        h, s = self._hs(s)
        return s * h + prior.diag

    @_scaled
    def cov_apply(self, s, prior, V):
        return V / self.precision_diag(s, prior)

    @_scaled
    def precision_dense(self, s, prior):
        return torch.diag(self.precision_diag(s, prior))

    @_scaled
    def sample(self, s, prior, z):
        return z / self.precision_diag(s, prior).sqrt()

    @_scaled
    def eff_dims(self, s, prior, sub):
        h, s = self._hs(s)
        h = s * h[sub]
        return (h / (h + prior.diag[sub])).sum()


class KronBlock(Block):
    """Curvature ``B ⊗ A`` of a layer block [W | b] in row-major order (out ``ob`` × in ``ia``)."""

    kind = "kron"

    def __init__(self, idx, names, A, B, module="", count=None):
        super().__init__(idx, names)
        self.A, self.B, self.module, self.count = A, B, module, count
        self.ob, self.ia = B.shape[0], A.shape[0]

    def _tensors(self):
        return {"A": self.A, "B": self.B, "module": self.module, "count": self.count}

    def merge(self, other):
        """KFAC of the union of both fits' data: A sums, B is the count-weighted mean."""
        if self.count is None or other.count is None:
            raise ValueError("this KFAC block has no sample count (old state_dict): refit it")
        n = self.count + other.count
        B = (self.B * self.count + other.B * other.count) / n
        return KronBlock(self.idx, self.names, self.A + other.A, B, self.module, n)

    def _eigs(self):
        if "eig" not in self._cache:
            self._cache["eig"] = (_eigh(self.A), _eigh(self.B))
        return self._cache["eig"]

    @_scaled
    def _decomp(self, s, prior, need_vectors=True):
        """(Q_B, Q_A, lam (ob, ia), su, sv) with Σ = S Q diag(1/lam) Qᵀ S, S = diag(su) ⊗ diag(sv)."""
        grad_mode = self.A.requires_grad or self.B.requires_grad
        if prior.iso is not None:
            if grad_mode and not need_vectors:
                la, lb = (
                    torch.linalg.eigvalsh(self.A).clamp(min=0),
                    torch.linalg.eigvalsh(self.B).clamp(min=0),
                )
                return None, None, s * lb[:, None] * la[None, :] + prior.iso, None, None
            (la, Qa), (lb, Qb) = (_eigh(self.A), _eigh(self.B)) if grad_mode else self._eigs()
            return Qb, Qa, s * lb[:, None] * la[None, :] + prior.iso, None, None
        D = prior.diag.reshape(self.ob, self.ia)
        if prior.kron_ok:
            u = D[:, 0]
            v = D[0, :] / D[0, 0]
            su, sv = u.rsqrt(), v.rsqrt()
            Bu = self.B * su[:, None] * su[None, :]
            Av = self.A * sv[:, None] * sv[None, :]
            if need_vectors:
                (nu, Qa), (mu, Qb) = _eigh(Av), _eigh(Bu)
            else:
                nu, mu, Qa, Qb = (
                    torch.linalg.eigvalsh(Av).clamp(min=0),
                    torch.linalg.eigvalsh(Bu).clamp(min=0),
                    None,
                    None,
                )
            return Qb, Qa, 1 + s * mu[:, None] * nu[None, :], su, sv
        (la, Qa), (lb, Qb) = (_eigh(self.A), _eigh(self.B)) if grad_mode else self._eigs()
        dd = (Qb**2).T @ D @ (Qa**2)
        return Qb, Qa, s * lb[:, None] * la[None, :] + dd, None, None

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

    @_scaled
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
        Qb, Qa, lam, su, sv = self._decomp(s, prior, need_vectors=False)
        out = torch.log(lam).sum()
        if su is not None:
            out = out - 2 * (self.ia * torch.log(su).sum() + self.ob * torch.log(sv).sum())
        return out

    @_scaled
    def precision_diag(self, s, prior):
        return (
            s * (torch.diagonal(self.B)[:, None] * torch.diagonal(self.A)[None, :]).reshape(-1)
            + prior.diag
        )

    @_scaled
    def precision_dense(self, s, prior):
        return s * torch.kron(self.B, self.A) + torch.diag(prior.diag)

    @_scaled
    def cov_apply(self, s, prior, V):
        Qb, Qa, lam, su, sv = self._decomp(s, prior)
        V = V.reshape(-1, self.ob, self.ia)
        if su is not None:
            V = V * su[:, None] * sv[None, :]
        W = (Qb.T @ V @ Qa) / lam
        W = Qb @ W @ Qa.T
        if su is not None:
            W = W * su[:, None] * sv[None, :]
        return W.reshape(-1, self.d)

    @_scaled
    def sample(self, s, prior, z):
        Qb, Qa, lam, su, sv = self._decomp(s, prior)
        W = Qb @ (z.reshape(-1, self.ob, self.ia) / lam.sqrt()) @ Qa.T
        if su is not None:
            W = W * su[:, None] * sv[None, :]
        return W.reshape(-1, self.d)

    @_scaled
    def eff_dims(self, s, prior, sub):
        """Effective dimensions of the tensor at block positions ``sub`` (a set of columns of [W | b])."""
        cols = torch.unique(sub % self.ia)
        A = self.A.detach()[cols][:, cols]
        (la, Qa), (lb, Qb) = (
            _eigh(A),
            self._eigs()[1] if not self.B.requires_grad else _eigh(self.B.detach()),
        )
        D = prior.diag.reshape(self.ob, self.ia)[:, cols]
        lam = s * lb[:, None] * la[None, :]
        dd = (Qb**2).T @ D @ (Qa**2)
        return (lam / (lam + dd)).sum()


def block_from_state(st):
    kind = st["kind"]
    if kind == "full":
        return FullBlock(st["idx"], st["names"], st["H"])
    if kind == "diag":
        return DiagBlock(st["idx"], st["names"], st["h"])
    return KronBlock(
        st["idx"], st["names"], st["A"], st["B"], st.get("module", ""), st.get("count")
    )
