"""Fitting: one pass over the data that feeds every posterior block (see :mod:`.structures`).

Per batch, the model runs once with forward hooks on the supported layers the blocks read; the
loss-Hessian square root (or the loss gradient, for the empirical Fisher) is backpropagated to
those layers' outputs, and per-sample Jacobian-transpose products are formed with torch.func for
the parameters some block reads generically. Each block takes what it needs from the
:class:`BatchPieces`; this module never looks at a block's kind.
"""

from __future__ import annotations

import torch
from torch.func import functional_call
from tqdm.auto import tqdm

from ._validation import check_finite
from .batches import prepare_batch, run_model, shape_outputs
from .curvature.jacobians import jac_t_products
from .curvature.modules import capture, collect, module_grads


class FitContext:
    """What the blocks need to know about a fit: ``spec``, ``ref`` (a parameter: device and
    dtype), ``kfac``, ``chunk_budget``, ``create_graph``, ``comps`` (curvature stored per output,
    regression with one σ per output), ``K_out``, ``sigma_fit``, ``model``, ``loader``,
    ``options`` (the Laplace's ``structure_options``)."""

    def __init__(self, la, loader, create_graph):
        self.spec, self.model, self.loader, self.lik = la.spec_, la.model, loader, la.lik_
        params = dict(la.model.named_parameters())
        self.params = params
        self.ref = params[self.spec.names[0]]
        self.kfac, self.chunk_budget, self.curvature = la.kfac, la.chunk_budget, la.curvature
        self.create_graph = bool(create_graph)
        self.comps = la.per_output_curvature
        self.sigma_fit = la.sigma_fit_
        self.K_out = self.sigma_fit.numel() if self.comps else 1
        self.sigma_curv = None if self.comps else la.curvature_sigma()
        self.options = dict(getattr(la, "structure_options", None) or {})


class BatchPieces:
    """One batch's ingredients: layer inputs / output gradients, Jacobian columns, output split."""

    def __init__(self, ctx, X, eta_shape, store, grads, jt, gpos, colk):
        self.ctx, self.X, self.N, self.eta_shape = ctx, X, X.shape[0], tuple(eta_shape)
        self._store, self._grads, self._jt, self._gpos = store, grads, jt, gpos
        self.colk = colk  # output index of every backpropagated column (per-output σ)

    def ag(self, mname, mod, with_weight, with_bias):
        """(a (N, S, ia), g (C, N, S, ob)) of one supported layer (see ``curvature.modules``)."""
        return collect(mod, self._store[mname], self._grads[mname], with_weight, with_bias)

    def jac(self, names):
        """Columns ``Jᵀ L`` (C, N, d) of the tensors ``names`` (all in some block's ``generic``)."""
        parts = [self._jt[:, :, slice(*self._gpos[n])] for n in names]
        J = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
        return J.transpose(0, 1)

    def per_output(self, fn, *columns):
        """``fn(*columns)``, or stacked (K, ...) over each output's columns when stored per output."""
        if not self.ctx.comps:
            return fn(*columns)
        return torch.stack(
            [fn(*[c[self.colk == k] for c in columns]) for k in range(self.ctx.K_out)]
        )


def _cotangents(lik, eta3, y3, curvature, sigma_curv, keep_graph):
    """Columns to backpropagate: (C, N, M, K)."""
    e = eta3 if keep_graph else eta3.detach()
    if curvature == "ef":
        return lik.grad(e, y3, sigma_curv).unsqueeze(0)
    L = lik.hessian_sqrt(e, y3, sigma_curv)  # (N, M, K, R)
    N, M, K, R = L.shape
    if M == 1:
        return L[:, 0].permute(2, 0, 1).unsqueeze(2)  # (R, N, 1, K)
    eye = torch.eye(M, dtype=L.dtype, device=L.device)
    return torch.einsum("nmkr,mp->mrnpk", L, eye).reshape(M * R, N, M, K)


class LoglikStats:
    """Sufficient statistics of the log-likelihood: Σ residual² and count (Gaussian), else Σ log p."""

    def __init__(self, lik, keep):
        self.lik, self.keep = lik, keep
        self.sse, self.n_obs, self.ll = None, 0, 0.0

    def add(self, eta3, y3):
        if self.lik.has_sigma:
            r2 = ((y3 - eta3) ** 2).sum((0, 1))
            r2 = r2 if self.keep else r2.detach()
            self.sse = r2 if self.sse is None else self.sse + r2
            self.n_obs += eta3.shape[0] * eta3.shape[1]
        else:
            ll = self.lik.log_lik(eta3, y3)
            self.ll = self.ll + (ll if self.keep else ll.detach())

    def result(self, dtype):
        value = self.sse if self.lik.has_sigma else self.ll
        if not torch.isfinite(torch.as_tensor(value)).all():
            what = "sum of squared residuals" if self.lik.has_sigma else "log-likelihood"
            raise ValueError(
                f"the {what} of the training data is not finite in {dtype} (it overflows: targets "
                "or model outputs of very large magnitude); rescale the targets or use a float64 model"
            )
        return {"sse": self.sse, "n_obs": self.n_obs, "ll": self.ll}


def _batch_pieces(ctx, X, y, bi, need_mod, generic, gpos):
    keep, spec, lik, model = ctx.create_graph, ctx.spec, ctx.lik, ctx.model
    if keep:
        theta = dict(ctx.params)
    else:
        theta = {
            k: (v.detach().requires_grad_(True) if k in spec.slices else v.detach())
            for k, v in ctx.params.items()
        }
    with torch.enable_grad(), capture(need_mod, keep) as store:
        out = run_model(model, X, lambda: functional_call(model, theta, (X,)), f"X (batch {bi})")
        eta = lik.link(out)
    check_finite(out, "model output", bi)
    eta3, y3 = shape_outputs(lik, eta, y, bi)
    cot = _cotangents(lik, eta3, y3, ctx.curvature, ctx.sigma_curv, keep)
    C = cot.shape[0]
    colk = torch.arange(C, device=ctx.ref.device) % ctx.K_out
    grads = module_grads(eta, cot.reshape(C, *eta.shape), store, keep) if need_mod else {}
    jt = None
    if generic:
        Lc = cot.reshape(C, X.shape[0], -1).permute(1, 2, 0)
        Xg = X
        if not keep:
            Lc, Xg = Lc.detach(), X.detach()
        jt = jac_t_products(model, theta, generic, Xg, Lc, lik.link, budget=ctx.chunk_budget)
        jt = jt if keep else jt.detach()  # (N, C, P_generic)
    pieces = BatchPieces(ctx, X, eta.shape, store, grads, jt, gpos, colk)
    pieces.y = y  # the targets, for structures that keep the batches (lowrank, gp)
    return pieces, eta3, y3


def fit_curvature(la, loader, create_graph=False, progress=False):
    """Accumulate the curvature of every block of ``la.blocks_`` over ``loader``; returns
    (log-likelihood statistics, n_data, output shape)."""
    ctx = FitContext(la, loader, create_graph)
    blocks = la.blocks_
    for b in blocks:
        b.start(ctx)
    need_mod = {m: mod for b in blocks for (m, mod, _, _) in b.modules}
    wanted = {n for b in blocks for n in b.generic}
    generic = [n for n in ctx.spec.names if n in wanted]
    gpos, off = {}, 0
    for n in generic:
        gpos[n] = (off, off + ctx.spec.numel(n))
        off = gpos[n][1]
    stats, n_data, out_shape = LoglikStats(ctx.lik, ctx.create_graph), 0, None
    for bi, batch in enumerate(tqdm(loader, desc="Laplace fit", disable=not progress, leave=False)):
        X, y = prepare_batch(batch, bi, ctx.ref)
        if X.shape[0] == 0:
            continue
        pieces, eta3, y3 = _batch_pieces(ctx, X, y, bi, need_mod, generic, gpos)
        stats.add(eta3, y3)
        n_data += X.shape[0]
        out_shape = pieces.eta_shape[1:]
        for b in blocks:
            b.accumulate(pieces)
        del pieces
    if n_data == 0:
        raise ValueError("train_loader has no rows (every batch is empty)")
    for b in blocks:
        b.finish()
        if not b.is_finite():
            raise ValueError(
                f"the curvature of the {b.kind} block of {b.names} is not finite in "
                f"{ctx.ref.dtype} (it overflows: inputs, activations or output gradients of very "
                "large magnitude); rescale the inputs or use a float64 model"
            )
    return stats.result(ctx.ref.dtype), n_data, out_shape


def merge_fits(previous, blocks, stats, n_data):
    """``fit(override=False)``: the previous fit's (blocks, log-likelihood stats, n_data) plus this
    fit's, block by block (each structure's ``merge``)."""
    old_blocks, old_stats, old_n = previous
    if [(b.kind, b.names) for b in old_blocks] != [(b.kind, b.names) for b in blocks]:
        raise ValueError("fit(override=False): the posterior blocks changed since the last fit")
    merged = {k: old_stats[k] + v if v is not None else None for k, v in stats.items()}
    return [old.merge(new) for old, new in zip(old_blocks, blocks)], merged, old_n + n_data
