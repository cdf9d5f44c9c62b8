"""Persistent pruning masks and global (unstructured) pruning from per-parameter scores.

A :class:`PruningMask` maps parameter names to boolean keep-masks. It zeroes the pruned
entries in place (:meth:`PruningMask.apply`) and, once attached to an optimiser
(:meth:`PruningMask.attach`), re-applies itself after every ``optimizer.step()`` so pruned
weights stay exactly zero during fine-tuning, whatever the optimiser's momentum or weight decay
does. Parameter names are unchanged (no parametrisation), so a Laplace fitted on the masked
model still lines up with the dense one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["PruningMask", "global_prune", "check_sparsity"]


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    s = float(sparsity)
    if not (0.0 <= s < 1.0):
        raise ValueError(f"{name} must lie in [0, 1), got {sparsity!r}")
    return s


class PruningMask:
    """Boolean keep-masks ``{parameter name: tensor shaped like the parameter}``."""

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self.masks = {k: v.to(torch.bool) for k, v in masks.items()}

    # -- read-outs -------------------------------------------------------------------------
    @property
    def n_total(self) -> int:
        return int(sum(m.numel() for m in self.masks.values()))

    @property
    def n_pruned(self) -> int:
        return int(sum((~m).sum() for m in self.masks.values()))

    def sparsity(self) -> float:
        """Fraction of masked entries pruned (0 for an empty mask)."""
        return self.n_pruned / self.n_total if self.n_total else 0.0

    def layer_sparsity(self) -> dict[str, float]:
        return {k: float((~m).float().mean()) for k, m in self.masks.items()}

    # -- acting on a model -----------------------------------------------------------------
    def _check(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        for k, m in self.masks.items():
            if k not in params:
                raise ValueError(f"mask names parameter {k!r} that the model does not have")
            if params[k].shape != m.shape:
                raise ValueError(f"mask for {k!r} has shape {tuple(m.shape)}, parameter has "
                                 f"{tuple(params[k].shape)}")
        return params

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the pruned entries of ``model``'s parameters in place; returns ``model``."""
        params = self._check(model)
        for k, m in self.masks.items():
            p = params[k]
            p.mul_(m.to(device=p.device, dtype=p.dtype))
        return model

    def attach(self, optimizer: torch.optim.Optimizer, model: nn.Module):
        """Re-apply the mask after every ``optimizer.step()``; returns the hook handle."""
        self.apply(model)
        return optimizer.register_step_post_hook(lambda *_: self.apply(model))

    def __repr__(self) -> str:
        return f"PruningMask({len(self.masks)} tensors, sparsity={self.sparsity():.3f})"


def global_prune(scores: Mapping[str, torch.Tensor], sparsity: float) -> PruningMask:
    """Keep-mask pruning exactly ``round(sparsity * n)`` lowest-scoring entries over all tensors.

    Scores are importances (higher = keep). Ties are broken by position (stable sort), so the
    number pruned is exact even when many scores coincide (e.g. already-zero weights).
    """
    s = check_sparsity(sparsity)
    if not scores:
        raise ValueError("scores is empty: nothing to prune")
    names = list(scores)
    flat = torch.cat([scores[k].detach().reshape(-1).to(torch.float64).cpu() for k in names])
    if torch.isnan(flat).any():
        bad = [k for k in names if torch.isnan(scores[k]).any()]
        raise ValueError(f"scores contain NaN for {bad}")
    n_prune = int(round(s * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if n_prune:
        order = torch.sort(flat, stable=True).indices
        keep[order[:n_prune]] = False
    masks, i = {}, 0
    for k in names:
        n = scores[k].numel()
        masks[k] = keep[i:i + n].reshape(scores[k].shape).to(scores[k].device)
        i += n
    return PruningMask(masks)
