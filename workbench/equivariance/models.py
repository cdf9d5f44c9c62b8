"""A small image classifier made of soft-equivariant layers, and its pure baselines.

``SoftEquivariantNet``: ``n`` layers ``SoftEquivariantConv2d`` with ReLU in between, then a global
maximum over positions and a linear head over channels. The global pooling matters for what the
readouts mean: with only convolution pathways the whole network is exactly invariant to circular
translations of the input, so any position dependence of the prediction has to be paid for by
free pathways somewhere; the learned prior precisions decide where.

Baselines use the identical architecture with one pathway per layer: ``pathways="conv"`` (pure
CNN) or ``pathways="free"`` (pure fully connected).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from workbench.equivariance.layers import PATHWAYS, SoftEquivariantConv2d, _check_pathways


class SoftEquivariantNet(nn.Module):
    """Soft-equivariant CNN for ``(N, C, H, W)`` images.

    Parameters
    ----------
    image_shape : (C, H, W) of the inputs.
    n_classes : outputs of the linear head.
    channels : output channels of each soft layer (its length is the number of layers).
    strides : sub-sampling of each layer (same length as ``channels``).
    kernel_size : convolution kernel of the equivariant pathways.
    pathways : ``("conv", "free")`` for soft layers, ``"conv"`` / ``"free"`` for the pure
        baselines, or a *list* with one such entry per layer.
    free_init : initial scale of the soft layers' free pathways relative to He (0: they start at
        exactly zero and the network starts as the pure CNN).
    """

    def __init__(self, image_shape=(1, 16, 16), n_classes: int = 10,
                 channels=(16, 16, 16, 16), strides=(1, 2, 1, 2), kernel_size: int = 3,
                 pathways=PATHWAYS, free_init: float = 0.0):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"channels {channels!r} and strides {strides!r} must be non-empty "
                             "and of equal length")
        n_layers = len(channels)
        if isinstance(pathways, list):  # one entry per layer
            per_layer = [_check_pathways(p) for p in pathways]
            if len(per_layer) != n_layers:
                raise ValueError(f"pathways has {len(per_layer)} entries, need one per layer "
                                 f"({n_layers})")
        else:
            per_layer = [_check_pathways(pathways)] * n_layers
        self.image_shape = tuple(int(s) for s in image_shape)
        self.n_classes = n_classes
        layers = []
        c_in, size = self.image_shape[0], self.image_shape[1:]
        for c_out, s, pw in zip(channels, strides, per_layer):
            layer = SoftEquivariantConv2d(c_in, c_out, size, kernel_size, s, pw, free_init)
            layers.append(layer)
            c_in, size = c_out, layer.out_size
        self.layers = nn.ModuleList(layers)
        self.act = nn.ReLU()
        self.head = nn.Linear(c_in, n_classes)

    @property
    def layer_names(self) -> list[str]:
        return [f"layers.{i}" for i in range(len(self.layers))]

    def _check(self, x: torch.Tensor):
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images of shape (N, {', '.join(map(str, self.image_shape))})"
                             f", got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        h = x
        for layer in self.layers:
            h = self.act(layer(h))
        return self.head(h.amax(dim=(2, 3)))

    @torch.no_grad()
    def pathway_output_norms(self, x: torch.Tensor) -> torch.Tensor:
        """RMS of each pathway's contribution per layer on ``x``: tensor (layer, pathway).

        A pathway a layer does not have reads 0.
        """
        self._check(x)
        out = torch.zeros(len(self.layers), len(PATHWAYS), dtype=x.dtype, device=x.device)
        h = x
        for i, layer in enumerate(self.layers):
            parts = layer.pathway_outputs(h)
            for p, v in parts.items():
                out[i, PATHWAYS.index(p)] = v.pow(2).mean().sqrt()
            h = self.act(sum(parts.values()))
        return out


def pathway_of_parameter(model: SoftEquivariantNet) -> dict[str, tuple[str, str]]:
    """Map every parameter name to ``(layer, pathway)``; the head maps to ``("head", "head")``."""
    out = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")
        if parts[0] == "layers":
            out[name] = (f"layers.{parts[1]}", parts[2])
        else:
            out[name] = ("head", "head")
    return out
