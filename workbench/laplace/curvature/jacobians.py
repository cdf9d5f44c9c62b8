"""Per-sample Jacobian-transpose products with torch.func (vmap over samples, vjp per column).

``jac_t_products`` returns ``A[n, c] = J_nᵀ L_n[:, c]`` for every sample n and column c, with
J_n the Jacobian of the (linked, flattened) model output of sample n w.r.t. the chosen
parameters. With L = identity these are the Jacobian rows. Samples are processed in chunks so
that at most ``budget`` numbers are materialised at once.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, vjp, vmap


def jac_t_products(model, theta, names, x, L, link, budget=2**25):
    """theta: dict of all parameters to use (selected ones are differentiated); L: (N, n_out, C)."""
    N, n_out, C = L.shape
    P = sum(theta[n].numel() for n in names)
    sel = {n: theta[n] for n in names}
    rest = {k: v for k, v in theta.items() if k not in sel}

    def f1(th, xn):
        out = functional_call(model, {**rest, **th}, (xn.unsqueeze(0),))
        return link(out).reshape(-1)

    def one(xn, Ln):
        _, vjp_fn = vjp(lambda th: f1(th, xn), sel)
        (g,) = vmap(vjp_fn)(Ln.T)
        return torch.cat([g[n].reshape(C, -1) for n in names], 1)

    step = max(1, budget // max(1, C * P))
    # randomness="different": models that sample inside forward (e.g. augmentation) still work
    outs = [
        vmap(one, randomness="different")(x[i : i + step], L[i : i + step])
        for i in range(0, N, step)
    ]
    return torch.cat(outs, 0) if len(outs) > 1 else outs[0]


def jac_t_chunks(model, theta, names, x, n_out, link, budget=2**25):
    """Yield (slice, J (n, n_out, P)) chunks of per-sample Jacobians (for predictive variances)."""
    N = x.shape[0]
    P = sum(theta[n].numel() for n in names)
    step = max(1, budget // max(1, n_out * P))
    eye = torch.eye(n_out, dtype=next(iter(theta.values())).dtype, device=x.device)
    for i in range(0, N, step):
        xi = x[i : i + step]
        L = eye.expand(xi.shape[0], n_out, n_out)
        yield (
            slice(i, i + xi.shape[0]),
            jac_t_products(model, theta, names, xi, L, link, budget=2**62),
        )
