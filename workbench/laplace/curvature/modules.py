"""Layer inputs and output-gradients of supported modules (Linear, Conv1d/2d/3d, Embedding).

A forward hook stores each module's input and output; the loss-Hessian square root (or the
per-sample loss gradient, for the empirical Fisher) is then backpropagated column by column to
the module outputs with ``torch.autograd.grad``. The gradient of the parameters of a layer with
weight sharing over S positions is ``Σ_s g_s a_sᵀ`` with ``a`` the (unfolded, bias-augmented)
input and ``g`` the output gradient, so KFAC factors and the exact diagonal follow from (a, g).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def capture(modules: dict, keep_graph: bool):
    """Record (input, output) of every call of the given modules: ``store[name] = [(x, out), ...]``."""
    store = {name: [] for name in modules}
    hooks = []
    for name, mod in modules.items():

        def hook(m, inp, out, name=name):
            x = inp[0]
            store[name].append((x if keep_graph else x.detach(), out))

        hooks.append(mod.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in hooks:
            h.remove()


def _unfold(x, mod):
    """Patches of a convolution input: (N, S, C_in * prod(kernel))."""
    d = x.ndim - 2
    if any(p for p in mod._reversed_padding_repeated_twice):
        mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
        x = F.pad(x, mod._reversed_padding_repeated_twice, mode=mode)
    for i in range(d):
        k, st, dil = mod.kernel_size[i], mod.stride[i], mod.dilation[i]
        x = x.unfold(2 + i, dil * (k - 1) + 1, st)
        if dil > 1:
            x = x[..., ::dil]
    # x: (N, C, O1..Od, k1..kd) -> (N, O1..Od, C, k1..kd)
    N, C = x.shape[:2]
    perm = [0, *range(2, 2 + d), 1, *range(2 + d, 2 + 2 * d)]
    x = x.permute(perm)
    S = 1
    for s in x.shape[1 : 1 + d]:
        S *= s
    return x.reshape(N, S, -1)


def layer_input(mod, x, with_weight: bool, with_bias: bool):
    """Bias-augmented layer input a: (N, S, ia)."""
    if isinstance(mod, nn.Linear):
        a = x.reshape(x.shape[0], -1, x.shape[-1])
    elif isinstance(mod, nn.Embedding):
        a = F.one_hot(x.reshape(x.shape[0], -1).long(), mod.num_embeddings).to(mod.weight.dtype)
    else:
        if x.ndim == mod.weight.ndim - 1:  # unbatched conv input is not supported here
            raise ValueError(f"module {mod} got an unbatched input of shape {tuple(x.shape)}")
        a = _unfold(x, mod)
    parts = [a] if with_weight else []
    if with_bias:
        parts.append(torch.ones(*a.shape[:2], 1, dtype=a.dtype, device=a.device))
    return torch.cat(parts, -1)


def output_to_nso(mod, g):
    """Output gradient (or output) of a layer as (N, S, out)."""
    if isinstance(mod, (nn.Linear, nn.Embedding)):
        return g.reshape(g.shape[0], -1, g.shape[-1])
    N, C = g.shape[:2]
    return g.reshape(N, C, -1).transpose(1, 2)


def module_grads(out, cotangents, store, keep_graph):
    """Backpropagate each cotangent column to every recorded module output.

    ``cotangents``: (C, *out.shape). Returns {name: [g (C, N, S, out) per call]}.
    """
    names = [n for n in store for _ in store[n]]
    outs = [o for n in store for (_, o) in store[n]]
    res = {n: [] for n in store}
    C = cotangents.shape[0]
    batched = None
    if C > 1 and not keep_graph:
        try:  # one vmapped backward over all columns
            gs = torch.autograd.grad(
                out, outs, cotangents, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
            batched = [
                torch.zeros(C, *o.shape, dtype=o.dtype, device=o.device) if g is None else g
                for g, o in zip(gs, outs)
            ]
        except RuntimeError:
            batched = None
    if batched is not None:
        for j, n in enumerate(names):
            res[n].append(batched[j])
        return res
    cols = []
    for c in range(C):
        gs = torch.autograd.grad(
            out, outs, cotangents[c], retain_graph=True, create_graph=keep_graph, allow_unused=True
        )
        cols.append([torch.zeros_like(o) if g is None else g for g, o in zip(gs, outs)])
    for j, n in enumerate(names):
        res[n].append(torch.stack([cols[c][j] for c in range(len(cols))]))
    return res


def collect(mod, store_entry, grads_entry, with_weight, with_bias):
    """Concatenate the calls of one module along the position axis: a (N, S, ia), g (C, N, S, ob)."""
    a = _cat([layer_input(mod, x, with_weight, with_bias) for (x, _) in store_entry], 1)
    g = _cat(
        [output_to_nso(mod, gg.flatten(0, 1)).unflatten(0, gg.shape[:2]) for gg in grads_entry], 2
    )
    return a, g


def _cat(parts, dim):
    """torch.cat that does not copy the common single-call case."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def weight_order(mod, wshape):
    """Permutation that maps the layer's [W] in (out, in') row-major order to the tensor's own layout."""
    n = 1
    for s in wshape:
        n *= s
    idx = torch.arange(n).reshape(wshape)
    if isinstance(mod, nn.Embedding):
        return idx.T.reshape(-1)  # W_lin = weightᵀ (dim × vocab)
    return idx.reshape(wshape[0], -1).reshape(-1)


def out_in(mod):
    if isinstance(mod, nn.Embedding):
        return mod.embedding_dim, mod.num_embeddings
    w = mod.weight
    return w.shape[0], w[0].numel()
