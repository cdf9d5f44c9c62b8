"""The interface every curvature structure implements (see the package docstring for how to add one).

A :class:`Block` is one posterior block ``P = s·H + D`` over the global parameter indices ``idx``
(in the block's own order): ``H`` its curvature, ``s`` the likelihood scale (``1/(σ²T)``, or
``1/(σ⁴T)`` for an empirical Fisher in regression, or a :class:`Scale` for blocks stored per output)
and ``D`` the block's prior (a :class:`~workbench.laplace.priors.BlockPrior`).
"""

from __future__ import annotations

import torch

from ..curvature.modules import out_in, weight_order


class Scale:
    """Likelihood scale: scalar s for ordinary blocks, per-output s_k for blocks stored per output.

    ``scalar`` is computed lazily so that blocks that need it can raise a clear error."""

    def __init__(self, scalar_fn, per_output):
        self._scalar_fn, self.per_output = scalar_fn, per_output

    @property
    def scalar(self):
        return self._scalar_fn()


def scaled(method):
    """Resolve a :class:`Scale` to what the block needs (per output when it stores per output)."""

    def wrapper(self, s, *args, **kwargs):
        if isinstance(s, Scale):
            s = s.per_output if getattr(self, "comps", False) else s.scalar
        return method(self, s, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


def eigh_psd(M):
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


def module_idx(spec, mod, w, b):
    """Global flat indices of the layer block [W | b] in (out, in') row-major order."""
    ob, in_w = out_in(mod)
    cols = []
    if w:
        cols.append(spec.slices[w].start + weight_order(mod, spec.shapes[w]).reshape(ob, in_w))
    if b:
        cols.append((spec.slices[b].start + torch.arange(ob)).reshape(ob, 1))
    return torch.cat(cols, 1).reshape(-1)


def slice_idx(spec, names):
    """Global flat indices of whole tensors, in the order of ``names``."""
    return torch.cat([torch.arange(spec.slices[n].start, spec.slices[n].stop) for n in names])


def factored_variance(a, g, lam):
    """``J Σ Jᵀ`` (N, K, K) of one layer from its inputs a (N, S, ia) and output Jacobians
    g (K, N, S, ob) given in the posterior's eigenbasis with eigenvalues lam (ob, ia).

    Without weight sharing (S = 1) the Jacobian rows are g ⊗ a and are never formed."""
    if a.shape[1] == 1:
        W = (a[:, 0] ** 2) @ (1 / lam).T  # (N, ob): Σ_j a_j² / λ_ij
        g0 = g[:, :, 0]
        return torch.einsum("kni,lni->nkl", g0 * W, g0)
    Gk = torch.einsum("knsi,nsj->knij", g, a) * lam.rsqrt()
    return torch.einsum("knij,lnij->nkl", Gk, Gk)


class Block:
    """One posterior block of a curvature structure (the interface ``Laplace`` talks to).

    Life cycle: ``plan`` (class method, one or more blocks per parameter group) → ``start(ctx)`` →
    ``accumulate(pieces)`` per batch → ``finish()``; or ``load(state)`` instead of the data pass.

    Attributes: ``kind`` (the ``hessian_structure`` name), ``idx`` (global flat indices, block
    order), ``names`` (parameter tensors covered), ``d`` (size), ``group`` (parameter group),
    ``module`` (layer name for layer-wise blocks, else ""), ``modules`` (``[(module name, module,
    weight name | None, bias name | None)]`` whose layer inputs/output gradients the block reads
    while fitting), ``generic`` (parameter names whose per-sample Jacobian columns it reads).
    """

    kind = ""

    def __init__(self, idx, names, group="all", modules=(), generic=(), module="", spec=None):
        self.idx = idx
        self.names = list(names)
        self.d = int(idx.numel())
        self.group = group
        self.modules = list(modules)
        self.generic = list(generic)
        self.module = module
        self.spec = spec  # the Laplace's ParamSpec (positions of tensors in the flat vector)
        self._cache = {}
        self._static = {}

    # ---------------------------------------------------------------- planning and fitting
    @classmethod
    def plan(cls, spec, group, names, fallback):
        """Blocks of this structure covering the parameter tensors ``names`` of one group."""
        raise NotImplementedError

    def start(self, ctx):
        """Reset the accumulators before a data pass (``ctx``: the :class:`FitContext`)."""
        self._ctx = ctx

    def accumulate(self, pieces):
        """Add one batch's curvature from ``pieces`` (a :class:`~..fitting.BatchPieces`)."""
        raise NotImplementedError

    def finish(self):
        """Turn the accumulated sums into the block's curvature tensors."""
        self._ctx = None

    # ---------------------------------------------------------------- state
    def _tensors(self):
        raise NotImplementedError

    def state(self):
        return {"kind": self.kind, "idx": self.idx, "names": self.names, **self._tensors()}

    def load(self, state):
        """Take the curvature tensors of ``state`` (a :meth:`state` of the same plan)."""
        for k in self._tensors():
            if k in state:
                setattr(self, k, state[k])
        self._cache = {}
        bad = self._check_loaded()
        if bad:
            raise ValueError(f"state of the {self.kind} block of {self.names}: {bad}")

    def _check_loaded(self):
        """A problem with the loaded tensors (shapes that do not fit the block), or None."""
        return None

    def is_finite(self):
        """Whether every curvature tensor of the block is finite (False after an overflow)."""
        return all(
            bool(torch.isfinite(t.detach()).all())
            for t in self._tensors().values()
            if isinstance(t, torch.Tensor)
        )

    def invalidate(self):
        """Forget what depends on the hyperparameters (eigendecompositions of the curvature stay)."""
        for k in ("chol", "chol_key"):
            self._cache.pop(k, None)

    def clear_cache(self):
        """Forget every cached decomposition (they are recomputed on the next use)."""
        self._cache.clear()

    # ---------------------------------------------------------------- posterior pieces
    def logdet(self, s, prior):
        """log det(s H + D), differentiable in s and the prior."""
        raise NotImplementedError

    def precision_diag(self, s, prior):
        raise NotImplementedError

    def cov_apply(self, s, prior, V):
        """Rows of V (n, d) times the block's posterior covariance."""
        raise NotImplementedError

    def sample(self, s, prior, z):
        """Map standard normal z (n, d) to samples of N(0, Σ_block)."""
        raise NotImplementedError

    def eff_dims(self, s, prior, sub):
        """Σ sλ/(sλ+δ) over the curvature restricted to block positions ``sub``."""
        raise NotImplementedError

    def precision_dense(self, s, prior):
        """The block's posterior precision as a dense (d, d) matrix (small blocks only)."""
        raise NotImplementedError(f"{type(self).__name__} has no dense precision")

    def merge(self, other):
        """Add ``other``'s curvature (same plan, a later fit) to this block's, in place, and
        return self: continual fitting (``fit(..., override=False)``)."""
        raise NotImplementedError(
            f"hessian_structure={self.kind!r} does not support fit(..., override=False)"
        )

    # ---------------------------------------------------------------- predictive pieces
    def layer_terms(self, s, prior):
        """``[(layers, fn)]``: ``layers`` = [(module name, module, with weight, with bias)] and
        ``fn([(a, g) per layer]) -> (N, K, K)`` this block's share of ``J Σ Jᵀ`` from layer inputs
        and output Jacobians (no Jacobian rows of the whole block). Default: none."""
        return []

    def jacobian_terms(self, s, prior):
        """``[(names, idx, apply)]`` for parameters whose Jacobian rows the predictive forms with
        torch.func: ``names`` the tensors, ``idx`` the global indices (the columns of the rows, in
        this order) and ``apply(J (n, d))`` the rows times this part's covariance. Default: the
        whole block through ``cov_apply`` (always correct; slower than layer terms)."""
        return [(self.names, self.idx, lambda V: self.cov_apply(s, prior, V))]
