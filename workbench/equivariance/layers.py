"""Soft-equivariant layers: equivariant pathway + free pathway, after van der Ouderaa, Immer and
van der Wilk (NeurIPS 2023).

Every pathway is built only from ``nn.Conv2d`` and ``nn.Linear`` modules, so the Laplace core's
KFAC (which knows these two module types) covers both pathways without a special adapter, and
every parameter tensor gets its own prior precision under ``prior_structure="layerwise"``.

Equivariant pathway ``conv``
    A ``k x k`` convolution on a circularly padded input: exactly equivariant to circular
    translations. The padding is done with ``F.pad(mode="circular")`` in front of a zero-padding
    ``nn.Conv2d`` so that curvature code which unfolds the convolution sees a plain convolution.
Free pathway ``free``
    A fully connected map over all input positions and channels to all output positions and
    channels, in a Kronecker-factored form: with input ``h[c, y, x]``,

        free(h)[c', y', x'] = Σ_{c, y, x} A[(c', y'), (c, y)] B[x', x] h[c, y, x]

    i.e. the dense weight matrix is ``kron(A, B)`` over the flattened ``(c, y) x (x)`` axes. ``A``
    is an ``nn.Linear(C*H, C'*H')`` applied to every image column, ``B`` an ``nn.Linear(W, W')``
    applied to every (channel, row). Nothing is shared across positions: ``A`` can treat every
    row differently and ``B`` every column, so the pathway can express position-dependent maps
    that a convolution cannot. Parameters: (C H)(C' H') + W W' instead of C H W C' H' W'.
Sum, not ½ sum
    The paper writes a layer as ½ (conv + free). With a prior precision per pathway the ½ is only
    a reparameterisation, but not for the optimiser: to start at the same function the ½ needs
    doubled weights, which under SGD makes the soft net's convolutions learn 4x slower than the
    pure CNN's. A plain sum lets a soft layer with a zero free pathway be *exactly* the CNN layer
    (same initialisation, same gradients).
Initialisation of the free pathway
    ``A`` starts at ``free_init`` times its He scale (0 by default: exactly zero, the soft network
    starts as the CNN), ``B`` at its He scale (it must be non-zero for ``A`` to get gradients).
    Starting at zero matters for the marginal likelihood: at its optimum a pathway's precision
    satisfies δ = γ / ‖θ‖² (γ the effective dimension), so random initial weights that the data
    never asked for would hold δ down and the effective dimension up. With zero start ‖A‖ only
    grows where the data pay for it.
Stride
    by sub-sampling: the convolution's output is taken at every ``stride``-th position, and the
    free pathway maps directly to the sub-sampled grid (which is what sub-sampling a fully
    connected map's output amounts to).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PATHWAYS = ("conv", "free")


def _check_pathways(pathways) -> tuple[str, ...]:
    if isinstance(pathways, str):
        pathways = (pathways,)
    pathways = tuple(pathways)
    bad = [p for p in pathways if p not in PATHWAYS]
    if bad or not pathways or len(set(pathways)) != len(pathways):
        raise ValueError(f"pathways must be a non-empty subset of {PATHWAYS}, got {pathways!r}")
    return tuple(p for p in PATHWAYS if p in pathways)


class CircularConv2d(nn.Module):
    """Translation-equivariant pathway: circular padding + ``nn.Conv2d`` + sub-sampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 gain: float = 1.0):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' circular padding, got {kernel_size}")
        self.pad = kernel_size // 2
        self.stride = stride
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=0, bias=True)
        nn.init.normal_(self.conv.weight, std=gain * math.sqrt(2.0 / (in_channels * kernel_size**2)))
        nn.init.zeros_(self.conv.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.pad:
            h = F.pad(h, (self.pad,) * 4, mode="circular")
        out = self.conv(h)
        if self.stride > 1:
            out = out[:, :, :: self.stride, :: self.stride]
        return out


class FactoredFreeMap(nn.Module):
    """Free pathway: fully connected over positions and channels, weight ``kron(A, B)``."""

    def __init__(self, in_channels: int, out_channels: int, in_size: tuple[int, int],
                 stride: int = 1, gain: float = 1.0):
        super().__init__()
        H, W = in_size
        if H % stride or W % stride:
            raise ValueError(f"image size {in_size} is not divisible by stride {stride}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size = (H, W)
        self.out_size = (H // stride, W // stride)
        Ho, Wo = self.out_size
        self.rows = nn.Linear(in_channels * H, out_channels * Ho, bias=False)  # A over (c, y)
        self.cols = nn.Linear(W, Wo, bias=False)  # B over x
        # He-style init: var(out) ≈ 2 gain² var(in), like the convolution pathway
        nn.init.normal_(self.rows.weight, std=gain * math.sqrt(2.0 / (in_channels * H)))
        nn.init.normal_(self.cols.weight, std=math.sqrt(1.0 / W))

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense matrix, shape (C' H' W', C H W) over (c, y, x) flattening."""
        A = self.rows.weight.reshape(self.out_channels, self.out_size[0], self.in_channels,
                                     self.in_size[0])
        B = self.cols.weight
        W = torch.einsum("pqcy,rx->pqrcyx", A, B)
        n_out = self.out_channels * self.out_size[0] * self.out_size[1]
        return W.reshape(n_out, -1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        N, C, H, W = h.shape
        Ho, Wo = self.out_size
        t = h.permute(0, 3, 1, 2).reshape(N, W, C * H)  # one (c, y) vector per column x
        t = self.rows(t).reshape(N, W, self.out_channels, Ho)  # (N, x, c', y')
        t = self.cols(t.permute(0, 2, 3, 1))  # (N, c', y', x')
        return t


class SoftEquivariantConv2d(nn.Module):
    """One layer ``conv(h) + free(h)`` (or just one of them for the pure baselines).

    Parameters
    ----------
    in_channels, out_channels : channels.
    in_size : (H, W) of the input; the free pathway is tied to it.
    kernel_size : convolution kernel (odd).
    stride : sub-sampling factor of the output (1 or a divisor of H and W).
    pathways : which pathways exist: ``("conv", "free")`` (soft), ``("conv",)`` or ``("free",)``.
    free_init : initial scale of a soft layer's free row factor ``A`` relative to He (0 = the
        free pathway starts at exactly zero; 1.0 = both pathways equally strong). A pure free
        layer is always He-initialised.
    """

    def __init__(self, in_channels: int, out_channels: int, in_size: tuple[int, int],
                 kernel_size: int = 3, stride: int = 1, pathways=PATHWAYS,
                 free_init: float = 0.0):
        super().__init__()
        self.pathways = _check_pathways(pathways)
        if len(in_size) != 2 or min(in_size) < 1:
            raise ValueError(f"in_size must be (H, W) with positive entries, got {in_size!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size = tuple(int(s) for s in in_size)
        if self.in_size[0] % stride or self.in_size[1] % stride:
            raise ValueError(f"in_size {self.in_size} is not divisible by stride {stride}")
        self.stride = stride
        self.out_size = (self.in_size[0] // stride, self.in_size[1] // stride)
        if free_init < 0:
            raise ValueError(f"free_init must be >= 0, got {free_init}")
        # the convolution is He-initialised as in a CNN; in a soft layer the free pathway starts
        # at ``free_init`` times its He scale (default 0), and the data, through the marglik,
        # decide how much of it to use
        free_gain = free_init if len(self.pathways) > 1 else 1.0
        if "conv" in self.pathways:
            self.conv = CircularConv2d(in_channels, out_channels, kernel_size, stride)
        if "free" in self.pathways and len(self.pathways) > 1:
            # draw the free pathway's initial weights from a stream of their own (seeded from
            # the global one without advancing it): the convolutions and the head then get the
            # same initial weights as in the pure CNN with the same seed, so soft vs CNN is a
            # paired comparison from the same starting function
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**62, ())) ^ 0x5EED)
                self.free = FactoredFreeMap(in_channels, out_channels, self.in_size, stride,
                                            free_gain)
        elif "free" in self.pathways:
            self.free = FactoredFreeMap(in_channels, out_channels, self.in_size, stride)

    def _check(self, h: torch.Tensor):
        if h.ndim != 4 or h.shape[1] != self.in_channels or tuple(h.shape[2:]) != self.in_size:
            raise ValueError(
                f"expected input of shape (N, {self.in_channels}, {self.in_size[0]}, "
                f"{self.in_size[1]}), got {tuple(h.shape)}")

    def pathway_outputs(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each pathway's contribution to the output."""
        self._check(h)
        return {p: getattr(self, p)(h) for p in self.pathways}

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        outs = self.pathway_outputs(h)
        return sum(outs.values())

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, in_size={self.in_size}, "
                f"stride={self.stride}, pathways={self.pathways}")
