"""Diagonal curvature block: the exact diagonal of the GGN / empirical Fisher.

Parameters of supported layers get their diagonal from layer inputs and output gradients
(``exact_diag``), all others from per-sample torch.func Jacobians. ``log det = Σ log(s h + δ)``.
"""

from __future__ import annotations

import torch

from ..curvature.kfac import exact_diag
from .base import Block, factored_variance, module_idx, scaled, slice_idx
from .full import group_modules


class DiagBlock(Block):
    kind = "diag"

    def __init__(self, idx, names, h=None, **kw):
        super().__init__(idx, names, **kw)
        self.h = h

    @classmethod
    def plan(cls, spec, group, names, fallback):
        mods = group_modules(spec, names)
        covered = {n for (_, _, w, b) in mods for n in (w, b) if n}
        rest = [n for n in names if n not in covered]
        return [
            cls(slice_idx(spec, names), names, group=group, modules=mods, generic=rest, spec=spec)
        ]

    def _tensors(self):
        return {"h": self.h}

    def _check_loaded(self):
        h = self.h
        if not isinstance(h, torch.Tensor) or h.ndim not in (1, 2) or h.shape[-1] != self.d:
            return (
                f"h must be ({self.d},) (or per output (K, {self.d})), got {getattr(h, 'shape', h)}"
            )
        return None

    def _positions(self):
        """Block positions of each supported layer's [W | b] entries and of each generic tensor."""
        spec = self.spec
        if "layer_pos" not in self._static:
            inv = torch.full((spec.P,), -1, dtype=torch.long)
            inv[self.idx.cpu()] = torch.arange(self.d)
            dev = self.idx.device
            self._static["layer_pos"] = [
                inv[module_idx(spec, mod, w, b)].to(dev) for (_, mod, w, b) in self.modules
            ]
            self._static["generic_pos"] = [
                inv[spec.slices[n].start : spec.slices[n].stop].to(dev) for n in self.generic
            ]
        return self._static["layer_pos"], self._static["generic_pos"]

    # ---------------------------------------------------------------- fitting
    def start(self, ctx):
        super().start(ctx)
        self._positions()
        shape = (ctx.K_out, self.d) if ctx.comps else (self.d,)
        self.h = ctx.ref.new_zeros(shape)

    def accumulate(self, pieces):
        layer_pos, generic_pos = self._positions()
        parts = []
        for (m, mod, w, b), pos in zip(self.modules, layer_pos):
            a, g = pieces.ag(m, mod, w is not None, b is not None)
            parts.append((pos, pieces.per_output(lambda gg, a=a: exact_diag(a, gg).reshape(-1), g)))
        for n, pos in zip(self.generic, generic_pos):
            parts.append((pos, pieces.per_output(lambda J: (J**2).sum((0, 1)), pieces.jac([n]))))
        for pos, v in parts:
            self.h = self.h.index_add(self.h.ndim - 1, pos, v)

    # ---------------------------------------------------------------- posterior pieces
    @property
    def comps(self):
        return self.h.ndim == 2

    def _hs(self, s):
        return (s @ self.h, 1.0) if self.comps else (self.h, s)

    @scaled
    def logdet(self, s, prior):
        return torch.log(self.precision_diag(s, prior)).sum()

    @scaled
    def precision_diag(self, s, prior):
        h, s = self._hs(s)
        return s * h + prior.diag

    @scaled
    def precision_dense(self, s, prior):
        return torch.diag(self.precision_diag(s, prior))

    def merge(self, other):
        self.h = self.h + other.h
        self.clear_cache()
        return self

    @scaled
    def cov_apply(self, s, prior, V):
        return V / self.precision_diag(s, prior)

    @scaled
    def sample(self, s, prior, z):
        return z / self.precision_diag(s, prior).sqrt()

    @scaled
    def eff_dims(self, s, prior, sub):
        h, s = self._hs(s)
        h = s * h[sub]
        return (h / (h + prior.diag[sub])).sum()

    # ---------------------------------------------------------------- predictive pieces
    def layer_terms(self, s, prior):
        if not self.modules:
            return []
        layer_pos, _ = self._positions()
        prec = self.precision_diag(s, prior)
        terms = []
        for (m, mod, w, b), pos in zip(self.modules, layer_pos):
            lam = prec[pos]

            def fn(ags, lam=lam):
                ((a, g),) = ags
                return factored_variance(a, g, lam.reshape(g.shape[-1], a.shape[-1]))

            terms.append(([(m, mod, w is not None, b is not None)], fn))
        return terms

    def jacobian_terms(self, s, prior):
        if not self.generic:
            return []
        _, generic_pos = self._positions()
        gp = torch.cat(generic_pos)
        prec = self.precision_diag(s, prior)[gp]
        return [(self.generic, self.idx[gp], lambda V: V / prec)]
