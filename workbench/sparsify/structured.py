"""Structured pruning of whole neurons / conv filters and physical shrinking of the network.

Per-parameter scores (from any criterion) are summed per output unit (row of a Linear weight,
filter of a Conv2d); in every hidden layer the ``round(sparsity * n_units)`` lowest-scoring units
are removed (at least one unit always survives); the output layer is never pruned.

:func:`structured_prune` returns the *masked* network - the removed units' weights and biases
and the consumer layer's matching inputs are zero, with a :class:`PruningMask` that keeps them
zero through fine-tuning - and :func:`shrink` builds the *physically smaller* module with the
surviving units only. Both compute the same function (float64 tests check it), so accuracy,
parameter count (non-zeros vs. actual numel) and FLOPs agree.

Supported architectures: feed-forward chains (``nn.Sequential``, nested allowed) of Linear,
Conv2d (groups=1), element-wise activations, dropout, pooling and Flatten.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import nn

from .masks import PruningMask, check_sparsity
from .models import PRUNABLE_TYPES

__all__ = ["structured_prune", "shrink", "unit_scores", "chain_layers"]

_PASSTHROUGH = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.LeakyReLU,
                nn.Softplus, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d,
                nn.AdaptiveAvgPool2d, nn.Flatten)


def _leaves(module: nn.Module, prefix: str = ""):
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"structured pruning needs an nn.Sequential chain; {prefix or 'model'} "
                        f"is {type(module).__name__}")
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, full)
        elif isinstance(child, PRUNABLE_TYPES) or isinstance(child, _PASSTHROUGH):
            if isinstance(child, nn.Conv2d) and child.groups != 1:
                raise TypeError(f"{full}: grouped convolutions are not supported")
            yield full, child
        else:
            raise TypeError(f"structured pruning does not support {type(child).__name__} "
                            f"(module {full!r})")


def chain_layers(model: nn.Module, example_input: torch.Tensor | None = None):
    """Prunable layers of a chain as ``[(name, module, expand)]`` where ``expand`` is how many
    consumer inputs each of the *previous* layer's units feeds (>1 after Conv -> Flatten)."""
    leaves = list(_leaves(model))
    flat_sizes: dict[str, int] = {}
    if any(isinstance(m, nn.Flatten) for _, m in leaves):
        if example_input is None:
            raise ValueError("example_input is needed for a network with nn.Flatten")
        handles = []
        for n, m in leaves:
            if isinstance(m, nn.Flatten):
                def hook(mod, inp, out, n=n):
                    flat_sizes[n] = math.prod(inp[0].shape[2:]) if inp[0].dim() > 2 else 1
                handles.append(m.register_forward_hook(hook))
        try:
            with torch.no_grad():
                model(example_input[:1])
        finally:
            for h in handles:
                h.remove()
    out, expand = [], 1
    for n, m in leaves:
        if isinstance(m, nn.Flatten):
            expand *= flat_sizes[n]
        elif isinstance(m, PRUNABLE_TYPES):
            out.append((n, m, expand))
            expand = 1
    if not out:
        raise ValueError(f"model {type(model).__name__} has no prunable layers (Linear/Conv2d)")
    return out


def unit_scores(model: nn.Module, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum of the weight scores per output unit of every prunable layer ``{layer: (n_out,)}``."""
    out = {}
    for name, mod in ((n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)):
        key = f"{name}.weight"
        if key not in scores:
            raise ValueError(f"scores lack an entry for {key!r}")
        out[name] = scores[key].reshape(mod.weight.shape[0], -1).sum(1)
    return out


def _keep_units(us: torch.Tensor, s: float) -> torch.Tensor:
    n = us.numel()
    n_remove = min(int(round(s * n)), n - 1)
    keep = torch.ones(n, dtype=torch.bool)
    if n_remove:
        keep[torch.sort(us.detach().cpu().double(), stable=True).indices[:n_remove]] = False
    return keep


@torch.no_grad()
def structured_prune(model: nn.Module, scores: Mapping[str, torch.Tensor], sparsity: float,
                     example_input: torch.Tensor | None = None):
    """Masked copy of ``model`` with the lowest-scoring hidden units removed.

    Returns ``(masked_model, mask, keep)``: ``mask`` a :class:`PruningMask` over the touched
    weights and biases, ``keep`` ``{layer name: bool (n_out,)}`` to pass to :func:`shrink`.
    """
    s = check_sparsity(sparsity)
    layers = chain_layers(model, example_input)
    us = unit_scores(model, scores)
    keep = {}
    for i, (name, mod, _) in enumerate(layers):
        n_out = mod.weight.shape[0]
        last = i == len(layers) - 1
        keep[name] = torch.ones(n_out, dtype=torch.bool) if last else _keep_units(us[name], s)
    masks = _unit_masks(layers, keep)
    pruned = copy.deepcopy(model)
    mask = PruningMask(masks)
    mask.apply(pruned)
    return pruned, mask, keep


def _in_keep(layers, keep, i):
    """Which inputs of layer i survive (from the previous layer's kept units)."""
    name, mod, expand = layers[i]
    if i == 0:
        return torch.ones(mod.weight.shape[1], dtype=torch.bool)
    prev = keep[layers[i - 1][0]]
    k = prev.repeat_interleave(expand)
    if k.numel() != mod.weight.shape[1]:
        raise ValueError(f"layer {name!r} takes {mod.weight.shape[1]} inputs but the previous "
                         f"layer provides {k.numel()}: unsupported wiring")
    return k


def _unit_masks(layers, keep):
    masks = {}
    for i, (name, mod, _) in enumerate(layers):
        ko, ki = keep[name], _in_keep(layers, keep, i)
        W = mod.weight
        shape = (W.shape[0], W.shape[1]) + (1,) * (W.dim() - 2)
        m = (ko[:, None] & ki[None, :]).reshape(shape).expand_as(W).clone()
        masks[f"{name}.weight"] = m.to(W.device)
        if mod.bias is not None:
            masks[f"{name}.bias"] = ko.clone().to(W.device)
    return masks


def _set_module(root: nn.Module, name: str, new: nn.Module):
    *path, last = name.split(".")
    parent = root
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


@torch.no_grad()
def shrink(model: nn.Module, keep: Mapping[str, torch.Tensor],
           example_input: torch.Tensor | None = None) -> nn.Module:
    """New, smaller module with only the kept units; the consumer layers' inputs are sliced."""
    layers = chain_layers(model, example_input)
    missing = [n for n, _, _ in layers if n not in keep]
    if missing:
        raise ValueError(f"keep lacks layers {missing}")
    small = copy.deepcopy(model)
    for i, (name, mod, _) in enumerate(layers):
        ko = torch.nonzero(keep[name].cpu()).squeeze(1)
        ki = torch.nonzero(_in_keep(layers, keep, i)).squeeze(1)
        W = mod.weight.detach()
        kw = dict(device=W.device, dtype=W.dtype)
        if isinstance(mod, nn.Linear):
            new = nn.Linear(len(ki), len(ko), bias=mod.bias is not None, **kw)
        else:
            new = nn.Conv2d(len(ki), len(ko), mod.kernel_size, stride=mod.stride,
                            padding=mod.padding, dilation=mod.dilation,
                            bias=mod.bias is not None, padding_mode=mod.padding_mode, **kw)
        ko_d, ki_d = ko.to(W.device), ki.to(W.device)
        new.weight.copy_(W.index_select(0, ko_d).index_select(1, ki_d))
        if mod.bias is not None:
            new.bias.copy_(mod.bias.detach().index_select(0, ko_d))
        new.train(mod.training)
        _set_module(small, name, new)
    return small
