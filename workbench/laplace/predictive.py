"""Linearised (GLM) and sampling predictives, functional variances and posterior samples.

The GLM predictive never builds the Jacobian of the whole data set: per-sample Jacobians are
formed in chunks of at most ``la.chunk_budget`` numbers (``O(chunk · K · P)`` memory) and every
posterior block applies its covariance to them without densifying (KFAC blocks work in their
Kronecker eigenbasis). KFAC blocks of Linear layers without weight sharing use an even cheaper
factored route: their Jacobian rows are rank one (g ⊗ a), so ``J Σ Jᵀ`` is an einsum over the
eigenbasis coordinates of g and a and no Jacobian row of those layers is ever formed.
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call

from ._validation import (
    LINK_APPROX,
    PRED_TYPES,
    check_choice,
    check_finite,
    check_generator,
    check_positive_int,
)
from .batches import forward_errors, run_model, to_model_dtype
from .bridge import laplace_bridge
from .curvature.jacobians import jac_t_chunks
from .curvature.modules import capture, collect, module_grads


def _as_input(la, x, name="x"):
    """``x`` on the model's device and dtype, finite, with the rank of the training inputs."""
    x = to_model_dtype(x, la.mean, name)
    want = la.input_shape_
    if want is not None and x.ndim != len(want) + 1:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, expected a batch shaped (N, {', '.join(map(str, want))}) "
            "like the training inputs"
        )
    return x


def _theta(la):
    return {k: v.detach() for k, v in la.model.named_parameters()}


def _eval(la, fn):
    was = la.model.training
    la.model.eval()
    try:
        return fn()
    finally:
        la.model.train(was)


def _map_outputs(la, x):
    with torch.no_grad():
        out = _eval(la, lambda: run_model(la.model, x, what="x"))
    check_finite(out, "model output at x")
    return out


def _finite(out, x, what):
    """``out`` (a tensor or tuple), or a ValueError naming the rows of x where it is not finite."""
    for o in out if isinstance(out, tuple) else (out,):
        if not torch.isfinite(o).all():
            rows_dim = 1 if what == "predictive samples" else 0
            bad = (~torch.isfinite(o)).movedim(rows_dim, 0).reshape(o.shape[rows_dim], -1).any(1)
            big = float(x.abs().max()) if x.is_floating_point() and x.numel() else float("nan")
            raise ValueError(
                f"the {what} is not finite at rows {bad.nonzero().flatten()[:5].tolist()} of x "
                f"(largest |x| = {big:.3g}): the linearised model overflows {o.dtype} there; "
                "rescale the inputs or use a float64 model"
            )
    return out


def functional_variance(la, x, group=None):
    x = _as_input(la, x)
    with forward_errors(x, "x"):
        fvar = _eval(la, lambda: _functional_variance(la, x, group))
    return _finite(fvar, x, "functional variance")


def _functional_variance(la, x, group, route="auto"):
    """Σ over posterior blocks of J_b Σ_b J_bᵀ.

    Each block contributes layer terms (per-sample gradient rows built from layer inputs a and
    output Jacobians g of one batched backward over the outputs; KFAC and diagonal blocks of
    unshared layers never form the rows) and/or Jacobian terms (chunked torch.func Jacobians).
    ``route="jacobian"`` is the reference: torch.func Jacobians and ``cov_apply`` for every block."""
    s = la.likelihood_scale()
    priors = la.block_priors()
    n_out = math.prod(la.output_shape_)
    N = x.shape[0]
    fvar = x.new_zeros(N, n_out, n_out, dtype=la.mean.dtype)
    theta = _theta(la)
    layer, jac = [], []
    for i in la.select_blocks(group):
        b, bp = la.blocks_[i], priors[i]
        if route == "jacobian":
            jac.append((b.names, b.idx, lambda V, b=b, bp=bp: b.cov_apply(s, bp, V)))
        else:
            layer += b.layer_terms(s, bp)
            jac += b.jacobian_terms(s, bp)
    if N and layer:
        fvar = fvar + _layer_variance(la, x, layer, theta, n_out)
    if N and jac:
        _jacobian_variance(la, x, jac, theta, n_out, fvar)
    return (
        fvar.reshape(N, *la.output_shape_, *la.output_shape_) if len(la.output_shape_) > 1 else fvar
    )


def _jacobian_variance(la, x, terms, theta, n_out, fvar):
    spec = la.spec_
    names_set = {n for names, _, _ in terms for n in names}
    names = [n for n in spec.names if n in names_set]
    loc = torch.full((spec.P,), -1, dtype=torch.long, device=la.mean.device)
    off = 0
    for n in names:
        sl = spec.slices[n]
        loc[sl] = torch.arange(off, off + sl.stop - sl.start, device=loc.device)
        off += sl.stop - sl.start
    with torch.no_grad():
        for sl, J in jac_t_chunks(la.model, theta, names, x, n_out, lambda f: f, la.chunk_budget):
            for _, idx, apply in terms:
                Jb = J[:, :, loc[idx]]
                n, d = Jb.shape[0], Jb.shape[-1]
                SJ = apply(Jb.reshape(-1, d)).reshape(n, n_out, d)
                fvar[sl] += torch.einsum("nod,npd->nop", Jb, SJ)


def _layer_variance(la, x, terms, theta, n_out):
    mods = {m: mod for layers, _ in terms for (m, mod, _, _) in layers}
    th = {
        k: (v.detach().requires_grad_(True) if k in la.spec_.slices else v)
        for k, v in theta.items()
    }
    with torch.enable_grad(), capture(mods, False) as store:
        out = functional_call(la.model, th, (x,))
        N = out.shape[0]
        eye = torch.eye(n_out, dtype=out.dtype, device=out.device)
        cot = eye[:, None, :].expand(n_out, N, n_out).reshape(n_out, *out.shape)
        grads = module_grads(out, cot, store, False)
    fvar = out.new_zeros(N, n_out, n_out)
    for layers, fn in terms:
        fvar += fn([collect(mod, store[m], grads[m], w, b) for (m, mod, w, b) in layers])
    return fvar.detach()


def functional_covariance(la, x):
    """Joint J Σ Jᵀ over a batch: (N, n_out, N, n_out), cross-input covariances included.

    Builds the (N·n_out, P) Jacobian of the batch (torch.func) and applies every posterior block's
    covariance to its columns; meant for batches of tens to hundreds of inputs."""
    x = _as_input(la, x)
    return _eval(la, lambda: _functional_covariance(la, x))


def _functional_covariance(la, x):
    s = la.likelihood_scale()
    names, N = la.spec_.names, x.shape[0]
    n_out = math.prod(la.output_shape_)
    with torch.no_grad():
        J = torch.cat(
            [J for _, J in jac_t_chunks(la.model, _theta(la), names, x, n_out, lambda f: f)]
        ).reshape(N * n_out, la.spec_.P)
        cov = J.new_zeros(N * n_out, N * n_out)
        for b, bp in zip(la.blocks_, la.block_priors()):
            Jb = J[:, b.idx]
            cov += Jb @ b.cov_apply(s, bp, Jb).T
    return cov.reshape(N, n_out, N, n_out)


def predict(
    la, x, pred_type="glm", link_approx="probit", n_samples=100, generator=None, joint=False
):
    check_choice("pred_type", pred_type, PRED_TYPES)
    check_choice("link_approx", link_approx, LINK_APPROX)
    n_samples = check_positive_int("n_samples", n_samples)
    check_generator(generator)
    x = _as_input(la, x)
    out = _predict(la, x, pred_type, link_approx, n_samples, generator, joint)
    return _finite(out, x, "predictive")


def _predict(la, x, pred_type, link_approx, n_samples, generator, joint=False):
    name = la.lik_.name
    if joint:
        if name != "regression" or pred_type != "glm":
            raise ValueError(
                "joint=True (the covariance across inputs) needs likelihood='regression' and "
                f"pred_type='glm', not {name!r} / {pred_type!r}"
            )
        return _map_outputs(la, x), functional_covariance(la, x)
    if pred_type == "nn":
        fs = predictive_samples(la, x, n_samples, "nn", generator, raw=True)
        if name == "regression":
            mu = fs.mean(0)
            d = (fs - mu).reshape(n_samples, x.shape[0], math.prod(fs.shape[2:]))
            return mu, torch.einsum("snk,snl->nkl", d, d) / max(1, n_samples - 1)
        return _link_mean(la, fs)
    f_mu = _map_outputs(la, x)
    f_var = functional_variance(la, x)
    if name == "regression":
        return f_mu, f_var
    if name == "heteroscedastic":
        return _hetero_predictive(f_mu, f_var)
    var = torch.diagonal(
        f_var.reshape(x.shape[0], math.prod(f_mu.shape[1:]), math.prod(f_mu.shape[1:])),
        dim1=-2,
        dim2=-1,
    ).reshape(f_mu.shape)
    if link_approx.startswith("bridge"):
        if name != "classification":
            raise ValueError(
                f"link_approx={link_approx!r} needs likelihood='classification', not {name!r}"
            )
        return laplace_bridge(f_mu, f_var, normalize=link_approx == "bridge_norm")
    if link_approx == "probit":
        kappa = 1 / torch.sqrt(1 + math.pi / 8 * var)
        z = f_mu * kappa
        return torch.softmax(z, -1) if name == "classification" else torch.sigmoid(z)
    fs = _gaussian_samples(f_mu, f_var, n_samples, generator)
    return _link_mean(la, fs)


def _link_mean(la, fs):
    if la.lik_.name == "classification":
        return torch.softmax(fs, -1).mean(0)
    if la.lik_.name == "binary":
        return torch.sigmoid(fs).mean(0)
    return fs.mean(0)


def _hetero_predictive(f_mu, f_var):
    """Mean and variance of y: μ = f1·exp(-f2), σ² = exp(-f2); epistemic part by the delta method."""
    K = f_mu.shape[-1] // 2
    prec = torch.exp(f_mu[..., K:])
    mu = f_mu[..., :K] / prec
    N = f_mu.shape[0]
    Jm = f_mu.new_zeros(N, K, 2 * K)
    ar = torch.arange(K, device=f_mu.device)
    Jm[:, ar, ar] = 1 / prec
    Jm[:, ar, K + ar] = -mu
    epi = Jm @ f_var @ Jm.transpose(1, 2)
    return mu, epi + torch.diag_embed(1 / prec)


def _gaussian_samples(f_mu, f_var, n_samples, generator):
    N = f_mu.shape[0]
    n_out = math.prod(f_mu.shape[1:])
    cov = f_var.reshape(N, n_out, n_out)
    jitter = 1e-10 * torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1).clamp(min=1e-30)[:, None, None]
    eye = torch.eye(n_out, dtype=cov.dtype, device=cov.device)
    for _ in range(6):
        Lc, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if not info.any():
            break
        jitter = jitter * 100
    z = torch.randn(n_samples, N, n_out, 1, dtype=cov.dtype, device=cov.device, generator=generator)
    return f_mu.unsqueeze(0) + (Lc @ z).reshape(n_samples, *f_mu.shape)


def sample_params(la, n_samples, generator=None):
    n_samples = check_positive_int("n_samples", n_samples)
    check_generator(generator)
    s = la.likelihood_scale()
    priors = la.block_priors()
    m = la.mean
    z = torch.randn(n_samples, la.spec_.P, dtype=m.dtype, device=m.device, generator=generator)
    out = m.expand(n_samples, -1).clone()
    with torch.no_grad():
        for b, bp in zip(la.blocks_, priors):
            out[:, b.idx] += b.sample(s, bp, z[:, b.idx])
    return out


def predictive_samples(la, x, n_samples=100, pred_type="glm", generator=None, raw=False):
    check_choice("pred_type", pred_type, PRED_TYPES)
    n_samples = check_positive_int("n_samples", n_samples)
    check_generator(generator)
    x = _as_input(la, x)
    if pred_type == "glm":
        f_mu = _map_outputs(la, x)
        fs = _gaussian_samples(f_mu, functional_variance(la, x), n_samples, generator)
    else:
        thetas = sample_params(la, n_samples, generator)
        base = _theta(la)

        def run():
            outs = []
            with torch.no_grad():
                for t in thetas:
                    th = dict(base)
                    for n in la.spec_.names:
                        th[n] = t[la.spec_.slices[n]].reshape(la.spec_.shapes[n])
                    outs.append(
                        run_model(
                            la.model, x, lambda th=th: functional_call(la.model, th, (x,)), "x"
                        )
                    )
            return torch.stack(outs)

        fs = _eval(la, run)
    _finite(fs, x, "predictive samples")
    if raw or la.lik_.name in ("regression", "heteroscedastic"):
        return fs
    return torch.softmax(fs, -1) if la.lik_.name == "classification" else torch.sigmoid(fs)


def dense_precision(la, group=None):
    """Dense posterior precision (P, P) (or of one group's parameters); small models only."""
    return dense_covariance(la, group, precision=True)


def dense_covariance(la, group=None, precision=False):
    sel = la.select_blocks(group)
    s = la.likelihood_scale()
    priors = la.block_priors()
    P = la.spec_.P
    m = la.mean
    if P > 20000:
        raise ValueError(f"a dense {P}x{P} posterior matrix is too large; use a group or sample()")
    cov = m.new_zeros(P, P)
    idx_all = []
    with torch.no_grad():
        for i in sel:
            b = la.blocks_[i]
            if precision:
                Sb = b.precision_dense(s, priors[i])
            else:
                Sb = b.cov_apply(s, priors[i], torch.eye(b.d, dtype=m.dtype, device=m.device))
            cov[b.idx[:, None], b.idx[None, :]] = Sb
            idx_all.append(b.idx)
    if group is None:
        return cov
    keep = torch.sort(torch.cat(idx_all)).values
    return cov[keep][:, keep]
