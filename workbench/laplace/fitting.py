"""Fitting: plan the posterior blocks and accumulate the curvature over a data loader."""

from __future__ import annotations

import warnings

import torch
from torch.func import functional_call
from tqdm.auto import tqdm

from ._validation import check_finite, unpack_batch
from .curvature.jacobians import jac_t_products
from .curvature.kfac import KronAccumulator, exact_diag, full_from_ag
from .curvature.modules import capture, collect, module_grads, out_in, weight_order
from .posteriors import DiagBlock, FullBlock, KronBlock


def module_idx(spec, mod, w, b):
    """Global flat indices of the layer block [W | b] in (out, in') row-major order."""
    ob, in_w = out_in(mod)
    cols = []
    if w:
        cols.append(spec.slices[w].start + weight_order(mod, spec.shapes[w]).reshape(ob, in_w))
    if b:
        cols.append((spec.slices[b].start + torch.arange(ob)).reshape(ob, 1))
    return torch.cat(cols, 1).reshape(-1)


def plan_blocks(spec, groups, structures, fallback):
    """List of block plans (dicts) covering every selected parameter exactly once."""
    plans = []
    for gname, names in groups.items():
        struct = structures[gname]
        gset = set(names)
        mods = []
        for mname, (mod, w, b) in spec.modules.items():
            wg = w if w in gset else None
            bg = b if b in gset else None
            if wg or bg:
                mods.append((mname, mod, wg, bg))
        covered = {n for (_, _, w, b) in mods for n in (w, b) if n}
        rest = [n for n in names if n not in covered]
        if struct == "full":
            # all parameters in supported layers: per-sample gradients from (a, g), no torch.func pass
            plans.append(
                {
                    "kind": "full",
                    "group": gname,
                    "names": list(names),
                    "modules": mods if not rest else [],
                }
            )
            continue
        if struct == "diag":
            plans.append(
                {
                    "kind": "diag",
                    "group": gname,
                    "names": list(names),
                    "modules": mods,
                    "generic": rest,
                }
            )
            continue
        for mname, mod, wg, bg in mods:
            plans.append(
                {
                    "kind": "kron",
                    "group": gname,
                    "module": mname,
                    "mod": mod,
                    "w": wg,
                    "b": bg,
                    "names": [n for n in (wg, bg) if n],
                }
            )
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
                stacklevel=3,
            )
            plans.append(
                {"kind": "diag", "group": gname, "names": rest, "modules": [], "generic": rest}
            )
    for p in plans:
        if p["kind"] == "kron":
            p["idx"] = module_idx(spec, p["mod"], p["w"], p["b"])
        elif p["kind"] == "full" and p["modules"]:
            p["idx"] = torch.cat([module_idx(spec, mod, w, b) for (_, mod, w, b) in p["modules"]])
            p["names"] = [n for (_, _, w, b) in p["modules"] for n in (w, b) if n]
        else:
            p["idx"] = torch.cat(
                [torch.arange(spec.slices[n].start, spec.slices[n].stop) for n in p["names"]]
            )
    return plans


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


def fit_curvature(la, loader, create_graph=False, progress=False):
    """Accumulate the curvature of every plan; returns (blocks, loglik stats, n_data, out shape)."""
    spec, plans, lik = la.spec_, la.plans_, la.lik_
    model = la.model
    keep = create_graph
    params = dict(model.named_parameters())
    need_mod = {p["module"]: p["mod"] for p in plans if p["kind"] == "kron"}
    for p in plans:
        if p["kind"] in ("diag", "full"):
            need_mod.update({m: mod for (m, mod, _, _) in p["modules"]})
    generic = []
    for p in plans:
        if p["kind"] == "full" and not p["modules"]:
            generic += p["names"]
        elif p["kind"] == "diag":
            generic += p["generic"]
    generic_set = set(generic)
    generic = [n for n in spec.names if n in generic_set]
    gpos = {}
    off = 0
    for n in generic:
        gpos[n] = (off, off + spec.numel(n))
        off += spec.numel(n)
    ref = params[spec.names[0]]
    acc = {i: None for i in range(len(plans))}
    hdiag = ref.new_zeros(spec.P)
    hdiag_parts = []
    stats = {"sse": None, "n_obs": 0, "ll": 0.0}
    n_data = 0
    out_shape = None
    comps = la._comps_mode()
    sigma_curv = None if comps else la._sigma_curv()
    K_out = la._sigma_fit.numel() if comps else 1
    if comps:
        hdiag = ref.new_zeros(K_out, spec.P)

    def per_k(fn, g, colk):
        """fn over the columns of each output k separately, stacked (K, ...), or fn(g) when not per output."""
        if not comps:
            return fn(g)
        return torch.stack([fn(g[colk == k]) for k in range(K_out)])

    it = tqdm(loader, desc="Laplace fit", disable=not progress, leave=False)
    for bi, batch in enumerate(it):
        X, y = unpack_batch(batch, bi)
        X = torch.as_tensor(X, device=ref.device)
        if X.is_floating_point():
            X = X.to(ref.dtype)
        y = torch.as_tensor(y, device=ref.device)
        check_finite(X, "X", bi)
        check_finite(y, "y", bi)
        if keep:
            theta = dict(params)
        else:
            theta = {
                k: (v.detach().requires_grad_(True) if k in spec.slices else v.detach())
                for k, v in params.items()
            }
        with torch.enable_grad(), capture(need_mod, keep) as store:
            out = functional_call(model, theta, (X,))
            if not isinstance(out, torch.Tensor) or out.ndim < 2:
                raise ValueError(
                    "the model must return a tensor shaped (N, K) or (N, ..., K); got "
                    f"{getattr(out, 'shape', type(out))}"
                )
            eta = lik.link(out)
        check_finite(out, "model output", bi)
        yy = lik.prepare_targets(eta, y, bi)
        N = eta.shape[0]
        out_shape = tuple(eta.shape[1:])
        eta3 = eta.reshape(N, -1, eta.shape[-1])
        y3 = (
            yy.reshape(N, eta3.shape[1])
            if lik.name == "classification"
            else yy.reshape(N, eta3.shape[1], -1)
        )
        n_data += N
        if lik.has_sigma:
            r2 = ((y3 - eta3) ** 2).sum((0, 1))
            r2 = r2 if keep else r2.detach()
            stats["sse"] = r2 if stats["sse"] is None else stats["sse"] + r2
            stats["n_obs"] += N * eta3.shape[1]
        else:
            ll = lik.log_lik(eta3, y3)
            stats["ll"] = stats["ll"] + (ll if keep else ll.detach())
        cot = _cotangents(lik, eta3, y3, la.curvature, sigma_curv, keep)
        C = cot.shape[0]
        colk = (
            torch.arange(C, device=ref.device) % K_out
        )  # output index of every column (per-output σ)
        if need_mod:
            grads = module_grads(eta, cot.reshape(C, *eta.shape), store, keep)
            for i, p in enumerate(plans):
                if p["kind"] == "kron":
                    has_w, has_b = p["w"] is not None, p["b"] is not None
                    # with a weight, the bias row/column of A comes from column sums of a
                    a, g = collect(
                        p["mod"], store[p["module"]], grads[p["module"]], has_w, has_b and not has_w
                    )
                    if comps:  # KFAC keeps the fit-time σ inside its factors
                        g = g / la._sigma_fit[colk][:, None, None, None]
                    if acc[i] is None:
                        acc[i] = KronAccumulator(la.kfac, bias=has_w and has_b)
                    acc[i].add(a, g)
                elif p["kind"] == "full" and p["modules"]:
                    ag = [
                        collect(mod, store[m], grads[m], w is not None, b is not None)
                        for (m, mod, w, b) in p["modules"]
                    ]
                    H = (
                        torch.stack(
                            [
                                full_from_ag([(a, g[colk == k]) for a, g in ag], la.chunk_budget)
                                for k in range(K_out)
                            ]
                        )
                        if comps
                        else full_from_ag(ag, la.chunk_budget)
                    )
                    acc[i] = H if acc[i] is None else acc[i] + H
                elif p["kind"] == "diag":
                    for mname, mod, w, b in p["modules"]:
                        a, g = collect(
                            mod, store[mname], grads[mname], w is not None, b is not None
                        )
                        dg = per_k(lambda gg, a=a: exact_diag(a, gg).reshape(-1), g, colk)
                        hdiag_parts.append((module_idx(spec, mod, w, b), dg))
        del store
        if generic:
            Lc = cot.reshape(C, N, -1).permute(1, 2, 0)
            if not keep:
                Lc = Lc.detach()
            Xg = X if keep else X.detach()
            Jt = jac_t_products(
                model, theta, generic, Xg, Lc, lik.link, budget=la.chunk_budget
            )  # (N, C, Pg)
            if not keep:
                Jt = Jt.detach()
            for i, p in enumerate(plans):
                if p["kind"] == "full" and not p["modules"]:
                    cols = torch.cat([torch.arange(*gpos[n]) for n in p["names"]]).to(ref.device)
                    Jb = Jt[:, :, cols].transpose(0, 1)  # (C, N, d)
                    H = per_k(
                        lambda J: J.reshape(-1, J.shape[-1]).T @ J.reshape(-1, J.shape[-1]),
                        Jb,
                        colk,
                    )
                    acc[i] = H if acc[i] is None else acc[i] + H
                elif p["kind"] == "diag" and p["generic"]:
                    for n in p["generic"]:
                        sq = per_k(
                            lambda J: (J**2).sum((0, 1)),
                            Jt[:, :, gpos[n][0] : gpos[n][1]].transpose(0, 1),
                            colk,
                        )
                        hdiag_parts.append(
                            (torch.arange(spec.slices[n].start, spec.slices[n].stop), sq)
                        )
        if hdiag_parts:
            for idx, v in hdiag_parts:
                hdiag = hdiag.index_add(hdiag.ndim - 1, idx.to(ref.device), v)
            hdiag_parts = []
    if n_data == 0:
        raise ValueError("train_loader is empty")
    blocks = []
    for i, p in enumerate(plans):
        idx = p["idx"].to(ref.device)
        if p["kind"] == "full":
            blocks.append(FullBlock(idx, p["names"], acc[i]))
        elif p["kind"] == "diag":
            blocks.append(DiagBlock(idx, p["names"], hdiag[..., idx]))
        else:
            A, B, cnt = acc[i].result()
            blocks.append(KronBlock(idx, p["names"], A, B / cnt, p["module"], cnt))
    return blocks, stats, n_data, out_shape
