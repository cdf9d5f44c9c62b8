"""Full (dense) curvature block: exact GGN / empirical Fisher over a parameter group.

Log-determinants: eigendecomposition of H once, ``Σ log(sλ + δ)`` when the prior is isotropic on
the block, the determinant lemma for priors constant per tensor, otherwise a Cholesky of
``sH + D`` per call.
"""

from __future__ import annotations

import torch

from ..curvature.kfac import full_from_ag
from .base import Block, eigh_psd, module_idx, scaled, slice_idx


class FullBlock(Block):
    kind = "full"

    def __init__(self, idx, names, H=None, **kw):
        super().__init__(idx, names, **kw)
        self.H = H

    @classmethod
    def plan(cls, spec, group, names, fallback):
        mods = group_modules(spec, names)
        covered = {n for (_, _, w, b) in mods for n in (w, b) if n}
        if all(n in covered for n in names):
            # all parameters in supported layers: per-sample gradients from (a, g), no torch.func pass
            idx = torch.cat([module_idx(spec, mod, w, b) for (_, mod, w, b) in mods])
            order = [n for (_, _, w, b) in mods for n in (w, b) if n]
            return [cls(idx, order, group=group, modules=mods, spec=spec)]
        return [cls(slice_idx(spec, names), names, group=group, generic=names, spec=spec)]

    def _tensors(self):
        return {"H": self.H}

    def _check_loaded(self):
        H = self.H
        if (
            not isinstance(H, torch.Tensor)
            or H.ndim not in (2, 3)
            or H.shape[-2:] != (self.d, self.d)
        ):
            return f"H must be ({self.d}, {self.d}) (or per output (K, {self.d}, {self.d})), got {getattr(H, 'shape', H)}"
        return None

    # ---------------------------------------------------------------- fitting
    def start(self, ctx):
        super().start(ctx)
        self.H = None

    def accumulate(self, pieces):
        if self.modules:
            ag = [
                pieces.ag(m, mod, w is not None, b is not None) for (m, mod, w, b) in self.modules
            ]
            a_s = [a for a, _ in ag]
            budget = self._ctx.chunk_budget
            H = pieces.per_output(
                lambda *gs: full_from_ag(list(zip(a_s, gs)), budget), *[g for _, g in ag]
            )
        else:
            H = pieces.per_output(
                lambda J: J.reshape(-1, J.shape[-1]).T @ J.reshape(-1, J.shape[-1]),
                pieces.jac(self.generic),
            )
        self.H = H if self.H is None else self.H + H

    # ---------------------------------------------------------------- posterior pieces
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
            self._cache["eig"] = eigh_psd(self.H)
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

    @scaled
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

    @scaled
    def precision_diag(self, s, prior):
        H, s = self._Hs(s)
        return s * torch.diagonal(H) + prior.diag

    @scaled
    def precision_dense(self, s, prior):
        H, s = self._Hs(s)
        return s * H + torch.diag(prior.diag)

    def merge(self, other):
        self.H = self.H + other.H
        self.clear_cache()
        return self

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

    @scaled
    def cov_apply(self, s, prior, V):
        kind, M, lam = self._factor(s, prior)
        if kind == "eig":
            return ((V @ M) / lam) @ M.T
        return torch.cholesky_solve(V.T, M).T

    @scaled
    def sample(self, s, prior, z):
        kind, M, lam = self._factor(s, prior)
        if kind == "eig":
            return (z / lam.sqrt()) @ M.T
        return torch.linalg.solve_triangular(M.T, z.T, upper=True).T

    @scaled
    def eff_dims(self, s, prior, sub):
        """Σ sλ/(sλ+δ) over the eigenvalues of the curvature restricted to ``sub`` (block positions)."""
        H, s = self._Hs(s)
        Hs = H[sub][:, sub]
        lam, Q = eigh_psd(Hs.detach())
        dd = (Q**2).T @ prior.diag[sub]
        return (s * lam / (s * lam + dd)).sum()

    # ---------------------------------------------------------------- predictive pieces
    def layer_terms(self, s, prior):
        if not self.modules:
            return []
        layers = [(m, mod, w is not None, b is not None) for (m, mod, w, b) in self.modules]

        def fn(ags):
            R = torch.cat(
                [torch.einsum("knso,nsi->knoi", g, a).flatten(2) for a, g in ags], -1
            )  # (n_out, N, d)
            SR = self.cov_apply(s, prior, R.reshape(-1, self.d)).reshape(R.shape)
            return torch.einsum("knd,lnd->nkl", R, SR)

        return [(layers, fn)]

    def jacobian_terms(self, s, prior):
        return [] if self.modules else super().jacobian_terms(s, prior)


def group_modules(spec, names):
    """Supported layers ``[(module name, module, weight | None, bias | None)]`` owning ``names``."""
    gset = set(names)
    mods = []
    for mname, (mod, w, b) in spec.modules.items():
        wg = w if w in gset else None
        bg = b if b in gset else None
        if wg or bg:
            mods.append((mname, mod, wg, bg))
    return mods
