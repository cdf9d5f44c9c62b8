"""Low-rank-plus-diagonal posteriors: ``P = s·FᵀF + D`` with a factor F (r, d), r ≪ d possible.

Two structures share this math and differ only in where F comes from:

* ``"lowrank"``: F = diag(√λ) Uᵀ with (λ, U) the top ``rank`` eigenpairs of the block's GGN (or
  empirical Fisher), found by Lanczos with full reorthogonalisation on curvature-vector products
  (one jvp and one vjp per batch and iteration; the curvature is never formed);
* ``"gp"``: the functional / GP view (Immer, Korzepa, Bauer, AISTATS 2021). F stacks the rows
  ``L_nᵀ J_n`` (loss-Hessian square root times Jacobian) of M context points, so ``FᵀF`` is the
  GGN of the context set and every quantity below is a GP computation on the M·R × M·R kernel
  ``K = F D⁻¹ Fᵀ`` (prior kernel ``k(x, x') = J(x) D⁻¹ J(x')ᵀ``). With ``context_scale="data"``
  (default) F is scaled by √(N/M) so that FᵀF estimates the GGN of all N training points; on all
  N points either way it *is* the full GGN Laplace.

With C = I/s + F D⁻¹ Fᵀ (r × r; the GP's ``Λ⁻¹ + K_MM``):

* ``log det P = Σ log D + log det(I + s F D⁻¹ Fᵀ)`` (determinant lemma);
* ``V Σ = V D⁻¹ − (V D⁻¹ Fᵀ) C⁻¹ (F D⁻¹)`` (Woodbury) — for Jacobian rows V this is the GP
  predictive covariance ``K** − K*M (Λ⁻¹ + K_MM)⁻¹ K_M*``;
* samples ``D^-½ (I + W Q diag(c) Qᵀ Wᵀ) z`` with W = √s D^-½ Fᵀ, WᵀW = Q diag(σ) Qᵀ and
  c = ((1+σ)^-½ − 1)/σ, since (I + WWᵀ)^-½ = I + W Q diag(c) Qᵀ Wᵀ.

Both are exact for any diagonal prior. Options come from ``Laplace(structure_options=...)``:
``rank`` (default min(d, 100)), ``n_iter`` (Lanczos steps, default min(d, 2·rank + 20)),
``n_context`` (GP context points, default min(N, 1000)), ``context_scale`` ("data" | a float),
``likelihood_hessian`` ("exact" | "diagonal": keep only the diagonal of the loss Hessian, as
laplace-torch's FunctionalLaplace does for classification), ``random_state`` (Lanczos start
vector, context subset).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import functional_call, jvp, vjp

from ..._torch_utils import seed_from
from ..batches import shape_outputs
from ..curvature.jacobians import jac_t_products
from ..curvature.modules import out_in
from ..fitting import _cotangents
from .base import Block, eigh_psd, factored_variance, module_idx, scaled, slice_idx
from .full import group_modules


class FactorBlock(Block):
    """Posterior ``s·FᵀF + D`` over whole tensors ``names``; subclasses fill ``F`` in ``finish``."""

    def __init__(self, idx, names, F=None, **kw):
        super().__init__(idx, names, **kw)
        self.F = F
        self.layers = []

    @classmethod
    def plan(cls, spec, group, names, fallback):
        block = cls(slice_idx(spec, names), names, group=group, spec=spec)
        mods = group_modules(spec, names)
        if {n for (_, _, w, b) in mods for n in (w, b) if n} == set(names):
            block.layers = (
                mods  # predictive from layer inputs / output gradients (no Jacobian rows)
            )
        return [block]

    def _tensors(self):
        return {"F": self.F}

    def start(self, ctx):
        super().start(ctx)
        if ctx.comps:
            raise ValueError(
                f"hessian_structure={self.kind!r} needs one scalar sigma_noise (no per-output σ)"
            )
        self.F, self._batches, self._options = None, [], dict(getattr(ctx, "options", {}) or {})

    def accumulate(self, pieces):
        self._batches.append((pieces.X, pieces.y))

    def merge(self, other):
        """Continual fitting: the factors stack (the curvatures add)."""
        self.F = torch.cat([self.F, other.F])
        self.clear_cache()
        return self

    # ---------------------------------------------------------------- posterior pieces
    def _gram(self, pos=None):
        """F Fᵀ (or F[:, pos] F[:, pos]ᵀ), cached: the curvature never changes after the fit."""
        key = ("gram",) if pos is None else ("gram", pos.numel(), int(pos[0]), int(pos.sum()))
        if key not in self._cache:
            Fp = self.F if pos is None else self.F[:, pos]
            self._cache[key] = Fp @ Fp.T
        return self._cache[key]

    def _kernel(self, prior):
        """K = F D⁻¹ Fᵀ (r, r) — from cached Gram matrices when the prior is isotropic or constant
        per tensor (O(r²) per hyperparameter step instead of O(r² d))."""
        if prior.iso is not None:
            return self._gram() / prior.iso
        if prior.pieces is not None:
            return sum(self._gram(pos) / val for pos, val in prior.pieces)
        return (self.F / prior.diag) @ self.F.T

    def _core(self, s, prior):
        """(D⁻¹ Fᵀ (d, r), Cholesky of C = I/s + F D⁻¹ Fᵀ), cached until the hyperparameters change."""
        st = torch.as_tensor(s).detach()
        dg = prior.diag.detach()
        key = (float(st), float(dg.sum()), float(dg[0]), float(dg[-1]))
        if self._cache.get("core_key") != key:
            r = self.F.shape[0]
            C = torch.eye(r, dtype=self.F.dtype, device=self.F.device) / st + self._kernel(
                _Detached(prior)
            )
            self._cache["core"] = (self.F.T / dg[:, None], torch.linalg.cholesky(C))
            self._cache["core_key"] = key
        return self._cache["core"]

    def invalidate(self):
        super().invalidate()
        self._cache.pop("core_key", None)

    @scaled
    def logdet(self, s, prior):
        r = self.F.shape[0]
        M = torch.eye(r, dtype=self.F.dtype, device=self.F.device) + s * self._kernel(prior)
        L = torch.linalg.cholesky(M)
        return torch.log(prior.diag).sum() + 2 * torch.log(torch.diagonal(L)).sum()

    @scaled
    def precision_diag(self, s, prior):
        return s * (self.F**2).sum(0) + prior.diag

    @scaled
    def precision_dense(self, s, prior):
        return s * self.F.T @ self.F + torch.diag(prior.diag)

    @scaled
    def cov_apply(self, s, prior, V):
        DiF, L = self._core(s, prior)
        VDiF = V @ DiF  # (n, r)
        return V / prior.diag - torch.cholesky_solve(VDiF.T, L).T @ DiF.T

    @scaled
    def sample(self, s, prior, z):
        d_isqrt = prior.diag.rsqrt()
        sq = torch.as_tensor(s, dtype=self.F.dtype, device=self.F.device).sqrt()
        W = self.F.T * (d_isqrt * sq)[:, None]
        sig, Q = eigh_psd(W.T @ W)
        c = -1 / ((1 + sig).sqrt() * (1 + (1 + sig).sqrt()))  # ((1+σ)^-½ - 1)/σ, stable at σ=0
        WQ = W @ Q
        return (z + ((z @ WQ) * c) @ WQ.T) * d_isqrt

    # ---------------------------------------------------------------- predictive pieces
    def _layer_positions(self):
        """Block positions of each layer's [W | b] entries, shaped (out, in')."""
        if "layer_pos" not in self._static:
            inv = torch.full((self.spec.P,), -1, dtype=torch.long)
            inv[self.idx.cpu()] = torch.arange(self.d)
            self._static["layer_pos"] = [
                inv[module_idx(self.spec, mod, w, b)]
                .reshape(out_in(mod)[0], -1)
                .to(self.idx.device)
                for (_, mod, w, b) in self.layers
            ]
        return self._static["layer_pos"]

    def layer_terms(self, s, prior):
        """J Σ Jᵀ = J D⁻¹ Jᵀ − (J D⁻¹ Fᵀ) C⁻¹ (F D⁻¹ Jᵀ), both parts from layer inputs a and
        output Jacobians g: the prior part as a diagonal block, J D⁻¹ Fᵀ as r directional
        derivatives per layer (einsum over a, g and the layer's slice of D⁻¹ Fᵀ)."""
        if not self.layers:
            return []
        DiF, L = self._core(s, prior)
        pos = self._layer_positions()
        layers = [(m, mod, w is not None, b is not None) for (m, mod, w, b) in self.layers]
        diag = prior.diag.detach()

        def fn(ags):
            out, JU = 0.0, 0.0
            for (a, g), p in zip(ags, pos):
                out = out + factored_variance(a, g, diag[p])
                JU = JU + torch.einsum("knso,nsi,oir->nkr", g, a, DiF[p])
            N, K, r = JU.shape
            CJ = torch.cholesky_solve(JU.reshape(-1, r).T, L).T.reshape(N, K, r)
            return out - torch.einsum("nkr,nlr->nkl", JU, CJ)

        return [(layers, fn)]

    def jacobian_terms(self, s, prior):
        return [] if self.layers else super().jacobian_terms(s, prior)

    @scaled
    def eff_dims(self, s, prior, sub):
        Fs = self.F[:, sub]
        lam, V = eigh_psd(Fs @ Fs.T)
        keep = lam > lam.max().clamp_min(1e-300) * 1e-12
        U = (Fs.T @ V[:, keep]) / lam[keep].sqrt()  # (|sub|, r') orthonormal eigenvectors
        dd = (U**2).T @ prior.diag[sub]
        return (s * lam[keep] / (s * lam[keep] + dd)).sum()


class _Detached:
    """A prior with its values detached (the cached factorisations are not differentiated)."""

    def __init__(self, prior):
        self.iso = None if prior.iso is None else prior.iso.detach()
        self.pieces = None if prior.pieces is None else [(p, v.detach()) for p, v in prior.pieces]
        self.diag = prior.diag.detach()


def _stacked(batches):
    Xs, ys = zip(*batches)
    return torch.cat(Xs), torch.cat(ys)


def _cotangent_rows(ctx, X, y, theta):
    """(N, C, n_out) columns of the loss-Hessian square root (GGN) or the loss gradient (EF) at θ*."""
    with torch.no_grad():
        eta = ctx.lik.link(functional_call(ctx.model, theta, (X,)))
    eta3, y3 = shape_outputs(ctx.lik, eta, y, 0)
    cot = _cotangents(ctx.lik, eta3, y3, ctx.curvature, ctx.sigma_curv, False)  # (C, N, M, K)
    return cot.reshape(cot.shape[0], X.shape[0], -1).permute(1, 2, 0), eta.shape


class GPBlock(FactorBlock):
    """The functional (GP) view over M context points (see the module docstring)."""

    kind = "gp"

    def finish(self):
        ctx, opt = self._ctx, self._options
        X, y = _stacked(self._batches)
        self._batches = []
        N = X.shape[0]
        M = min(N, int(opt.get("n_context", 1000)))
        if M < 1:
            raise ValueError(f"structure_options['n_context'] must be >= 1, got {M}")
        pick = torch.arange(N)
        if M < N:
            rng = np.random.default_rng(seed_from(opt.get("random_state", 0)))
            pick = torch.from_numpy(np.sort(rng.choice(N, M, replace=False)))
            X, y = X[pick.to(X.device)], y[pick.to(y.device)]
        self.context_index = pick  # rows of the training data (in loader order) used as context
        scale = opt.get("context_scale", "data")
        scale = N / M if scale == "data" else float(scale)
        theta = {k: v.detach() for k, v in ctx.params.items()}
        L, _ = _cotangent_rows(ctx, X, y, theta)
        if opt.get("likelihood_hessian", "exact") == "diagonal":  # laplace-torch's approximation
            L = torch.diag_embed(torch.einsum("noc,noc->no", L, L).sqrt())
        Jt = jac_t_products(ctx.model, theta, self.names, X, L, ctx.lik.link, ctx.chunk_budget)
        self.F = (Jt.reshape(-1, self.d) * math.sqrt(scale)).detach()  # (M·C, d)
        super().finish()


class LowRankBlock(FactorBlock):
    """Top-``rank`` eigenpairs of the curvature by Lanczos on curvature-vector products."""

    kind = "lowrank"

    def finish(self):
        ctx, opt = self._ctx, self._options
        rank = min(self.d, int(opt.get("rank", 100)))
        n_iter = min(self.d, int(opt.get("n_iter", 2 * rank + 20)))
        if rank < 1 or n_iter < rank:
            raise ValueError(f"structure_options: need 1 <= rank <= n_iter, got {rank}, {n_iter}")
        matvec = _curvature_matvec(ctx, self.names, self._batches)
        self._batches = []
        g = torch.Generator().manual_seed(seed_from(opt.get("random_state", 0)))
        lam, U = lanczos_top(matvec, self.d, rank, n_iter, g, ctx.ref)
        self.F = (U * lam.sqrt()).T.contiguous()  # (rank, d)
        super().finish()


def _curvature_matvec(ctx, names, batches):
    """v (d,) -> Σ_n J_nᵀ L_n L_nᵀ J_n v over the stored batches (GGN or empirical Fisher)."""
    theta = {k: v.detach() for k, v in ctx.params.items()}
    sel = {n: theta[n] for n in names}
    rest = {k: v for k, v in theta.items() if k not in sel}
    shapes = [sel[n].shape for n in names]
    sizes = [sel[n].numel() for n in names]
    prepared = []
    for X, y in batches:
        Lc, out_shape = _cotangent_rows(ctx, X, y, theta)
        prepared.append((X, Lc, out_shape))

    def matvec(v):
        tang = {n: t.reshape(sh) for n, t, sh in zip(names, v.split(sizes), shapes)}
        out = torch.zeros_like(v)
        for X, Lc, out_shape in prepared:

            def f(p, X=X):
                return ctx.lik.link(functional_call(ctx.model, {**rest, **p}, (X,)))

            _, jv = jvp(f, (sel,), (tang,))
            u = torch.einsum("noc,no->nc", Lc, jv.reshape(X.shape[0], -1))
            back = torch.einsum("noc,nc->no", Lc, u).reshape(out_shape)
            _, pull = vjp(f, sel)
            (g,) = pull(back)
            out += torch.cat([g[n].reshape(-1) for n in names])
        return out

    return matvec


def lanczos_top(matvec, d, rank, n_iter, generator, ref):
    """Top ``rank`` eigenpairs (λ ≥ 0 descending, U (d, rank)) of a PSD operator on R^d.

    Lanczos with full reorthogonalisation in float64; when the Krylov space is exhausted
    (β ≈ 0: the start vector has no component left outside it) it continues from a new random
    vector orthogonal to the basis, so repeated eigenvalues and n_iter = d give every eigenpair."""
    dt, dev = torch.float64, ref.device
    Q = torch.zeros(n_iter, d, dtype=dt, device=dev)
    alpha = torch.zeros(n_iter, dtype=dt, device=dev)
    beta = torch.zeros(n_iter, dtype=dt, device=dev)
    q = torch.randn(d, generator=generator, dtype=dt).to(dev)
    q = q / q.norm()
    scale = None
    for j in range(n_iter):
        Q[j] = q
        w = matvec(q.to(ref.dtype)).to(dt)
        alpha[j] = q @ w
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = w.norm()
        scale = max(scale or 0.0, float(alpha[j].abs()), float(b))
        if j + 1 == n_iter:
            break
        if b <= 1e-10 * max(scale, 1e-300):
            beta[j] = 0.0
            w = torch.randn(d, generator=generator, dtype=dt).to(dev)
            for _ in range(2):
                w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
            q = w / w.norm()
        else:
            beta[j] = b
            q = w / b
    T = torch.diag(alpha) + torch.diag(beta[:-1], 1) + torch.diag(beta[:-1], -1)
    evals, S = torch.linalg.eigh(T)
    order = torch.argsort(evals, descending=True)[:rank]
    U = Q.T @ S[:, order]
    return evals[order].clamp(min=0).to(ref.dtype), U.to(ref.dtype)
