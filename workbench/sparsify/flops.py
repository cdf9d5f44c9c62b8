"""Parameter and FLOP counts measured on a module's actual shapes with forward hooks.

FLOPs are per example, for the Linear/Conv2d layers: 2 per multiply-accumulate plus one per
bias add; activations and pooling are not counted. With ``sparse=True`` only non-zero weights
(and biases) count, which is what a pruned network costs with sparse kernels; a physically
shrunk network counted with ``sparse=False`` gives its true dense cost.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_flops", "count_parameters"]


def count_parameters(model: nn.Module, sparse: bool = True) -> int:
    """Number of parameters (non-zero ones only with ``sparse=True``)."""
    if sparse:
        return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def count_flops(model: nn.Module, example_input: torch.Tensor, sparse: bool = True,
                per_layer: bool = False):
    """FLOPs of one forward pass per example, measured by hooks on ``example_input``.

    ``example_input`` is a batch ``(B, ...)``; the result is divided by ``B``. Returns the total,
    or ``(total, {layer name: flops})`` with ``per_layer=True``.
    """
    if not torch.is_tensor(example_input) or example_input.dim() < 2:
        raise ValueError("example_input must be a batched tensor (B, ...)")
    counts: dict[str, float] = {}

    def hook(name):
        def fn(mod, inp, out):
            W = mod.weight
            nw = int(torch.count_nonzero(W)) if sparse else W.numel()
            if isinstance(mod, nn.Conv2d):
                positions = out.shape[-1] * out.shape[-2]
            else:  # Linear: every leading dim except the batch is a position
                positions = out[0].numel() // out.shape[-1]
            f = 2 * nw * positions
            if mod.bias is not None:
                nb = int(torch.count_nonzero(mod.bias)) if sparse else mod.bias.numel()
                f += nb * positions
            counts[name] = counts.get(name, 0) + f
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        model(example_input[:1])
    finally:
        for h in handles:
            h.remove()
    total = int(sum(counts.values()))
    return (total, {k: int(v) for k, v in counts.items()}) if per_layer else total
