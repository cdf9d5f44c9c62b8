"""3-D UNet video forecaster conditioned on the lead time by FiLM (Immer, Lueckmann et al., 2025).

The network maps ``C`` context frames of a volume ``(z, y, x)`` -- folded into input channels --
and a lead time ``l`` (1..H) to the frame ``l`` steps after the last context frame. One network
predicts every lead without autoregression: ``l`` is embedded (sinusoidal features + MLP) and
injected into every residual block through FiLM (per-channel scale and shift). Optional stimulus
features (flattened over the window) are embedded and added to the lead embedding.

Architecture: stem conv -> per level ``blocks_per_level`` pre-activation residual blocks
(GroupNorm, SiLU, 3x3x3 conv) and a strided down-sampling conv -> middle blocks with optional
global self-attention over all positions at the lowest resolution -> mirrored up path with skip
connections -> GroupNorm/SiLU read-out features ``phi`` (``width`` channels per voxel) -> a final
1x1x1 conv (``readout``), i.e. a linear model on ``phi``. The prediction is the last context frame
plus ``scale * readout(phi)`` so an untrained network starts at the persistence forecast.

Inputs whose spatial shape is not divisible by the total down-sampling are padded (replicate)
and the output is cropped back, so any volume shape works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet3D", "ResBlock3D", "GlobalAttention3D", "plan_strides", "lead_embedding"]


def _groups(channels: int, max_groups: int = 8) -> int:
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


def plan_strides(shape: Sequence[int], n_down: int, min_size: int = 2) -> list[tuple[int, int, int]]:
    """Per-level down-sampling strides for a ``(z, y, x)`` shape: halve an axis while it stays >= min_size.

    Thin axes (e.g. a few z-planes) are down-sampled fewer times than wide ones, giving an
    anisotropic pyramid like the zebrafish volumes (72 z-planes vs 2048 x 1328 in-plane).
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be (z, y, x), got {tuple(shape)}")
    cur = list(int(s) for s in shape)
    out = []
    for _ in range(n_down):
        st = tuple(2 if c // 2 >= min_size else 1 for c in cur)
        out.append(st)
        cur = [math.ceil(c / s) for c, s in zip(cur, st)]
    return out


def lead_embedding(lead: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of the (float) lead, shape ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=lead.dtype, device=lead.device)
                      / max(half, 1))
    ang = lead[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, lead[:, None]], dim=-1)
    return emb


class ResBlock3D(nn.Module):
    """Pre-activation residual block: GN-SiLU-conv, GN, FiLM(emb), SiLU-conv, plus a skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class GlobalAttention3D(nn.Module):
    """Multi-head self-attention over every voxel of a (low-resolution) feature volume."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        while channels % heads:
            heads -= 1
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv3d(channels, 3 * channels, 1)
        self.proj = nn.Conv3d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, z, y, xx = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, z * y * xx).unbind(1)
        q, k, v = (t.transpose(-1, -2) for t in (q, k, v))          # (b, heads, n, d)
        h = F.scaled_dot_product_attention(q, k, v)                   # (b, heads, n, d)
        h = h.transpose(-1, -2).reshape(b, c, z, y, xx)
        return x + self.proj(h)


class UNet3D(nn.Module):
    """Lead-conditioned 3-D UNet; see the module docstring.

    Parameters
    ----------
    context : number of context frames (input channels).
    widths : channels per level, e.g. ``(8, 16, 32)``; ``len(widths) - 1`` down-sampling steps.
    strides : per down-sampling step a ``(sz, sy, sx)`` stride (see :func:`plan_strides`).
    blocks_per_level : residual blocks per level on the way down (and up).
    attention : global self-attention at the lowest resolution.
    max_lead : largest lead the network is meant for (embedding is normalised by it).
    n_stimulus : number of stimulus inputs (flattened window of features); 0 disables it.
    emb_dim : width of the conditioning embedding.
    """

    def __init__(self, context: int, widths: Sequence[int] = (8, 16, 32),
                 strides: Sequence[Sequence[int]] | None = None, blocks_per_level: int = 1,
                 attention: bool = True, max_lead: int = 32, n_stimulus: int = 0, emb_dim: int = 32):
        super().__init__()
        widths = [int(w) for w in widths]
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {widths}")
        strides = [(2, 2, 2)] * (len(widths) - 1) if strides is None else [tuple(int(v) for v in s)
                                                                           for s in strides]
        if len(strides) != len(widths) - 1 or any(len(s) != 3 for s in strides):
            raise ValueError(f"strides must hold len(widths) - 1 = {len(widths) - 1} (sz, sy, sx) "
                             f"tuples, got {strides}")
        self.context, self.widths, self.strides = int(context), widths, strides
        self.max_lead, self.n_stimulus, self.emb_dim = int(max_lead), int(n_stimulus), int(emb_dim)
        self.lead_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stim_mlp = (nn.Sequential(nn.Linear(n_stimulus, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                         if n_stimulus else None)
        self.stem = nn.Conv3d(context, widths[0], 3, padding=1)
        self.down_blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        for i, w in enumerate(widths):
            cin = widths[i - 1] if i else widths[0]
            blocks = [ResBlock3D(cin if j == 0 else w, w, emb_dim) for j in range(blocks_per_level)]
            self.down_blocks.append(nn.ModuleList(blocks))
            if i < len(widths) - 1:
                st = strides[i]
                self.downs.append(nn.Conv3d(w, w, kernel_size=tuple(2 * s - 1 for s in st), stride=st,
                                            padding=tuple(s - 1 for s in st)))
        wl = widths[-1]
        self.mid1 = ResBlock3D(wl, wl, emb_dim)
        self.attn = GlobalAttention3D(wl) if attention else None
        self.mid2 = ResBlock3D(wl, wl, emb_dim)
        self.up_blocks = nn.ModuleList()
        for i in range(len(widths) - 2, -1, -1):
            self.up_blocks.append(ResBlock3D(widths[i + 1] + widths[i], widths[i], emb_dim))
        self.head_norm = nn.GroupNorm(_groups(widths[0]), widths[0])
        self.readout = nn.Conv3d(widths[0], 1, 1)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)

    @property
    def total_stride(self) -> tuple[int, int, int]:
        tot = [1, 1, 1]
        for s in self.strides:
            tot = [a * b for a, b in zip(tot, s)]
        return tuple(tot)

    def embed(self, lead: torch.Tensor, stimulus: torch.Tensor | None = None) -> torch.Tensor:
        lead = lead.to(dtype=self.stem.weight.dtype, device=self.stem.weight.device).reshape(-1)
        emb = self.lead_mlp(lead_embedding(lead / self.max_lead * 100.0, self.emb_dim))
        if self.stim_mlp is not None:
            if stimulus is None:
                raise ValueError(f"this network was built with n_stimulus={self.n_stimulus}; pass "
                                 f"stimulus of shape (B, {self.n_stimulus})")
            emb = emb + self.stim_mlp(stimulus.reshape(stimulus.shape[0], -1).to(emb.dtype))
        return F.silu(emb)

    def features(self, frames: torch.Tensor, lead: torch.Tensor,
                 stimulus: torch.Tensor | None = None) -> torch.Tensor:
        """Per-voxel read-out features ``phi``: ``(B, widths[0], z, y, x)``."""
        if frames.ndim != 5 or frames.shape[1] != self.context:
            raise ValueError(f"frames must be (B, C={self.context}, z, y, x), got {tuple(frames.shape)}")
        if lead.numel() != frames.shape[0]:
            raise ValueError(f"lead must hold one value per batch item ({frames.shape[0]}), "
                             f"got shape {tuple(lead.shape)}")
        shape = frames.shape[2:]
        tot = self.total_stride
        pad = [(-s) % t for s, t in zip(shape, tot)]
        if any(pad):
            frames = F.pad(frames, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
        emb = self.embed(lead, stimulus)
        h = self.stem(frames)
        skips = []
        for i, blocks in enumerate(self.down_blocks):
            for blk in blocks:
                h = blk(h, emb)
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        h = self.mid1(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        h = self.mid2(h, emb)
        for blk in self.up_blocks:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = blk(torch.cat([h, skip], dim=1), emb)
        h = F.silu(self.head_norm(h))
        return h[:, :, :shape[0], :shape[1], :shape[2]]

    def forward(self, frames: torch.Tensor, lead: torch.Tensor,
                stimulus: torch.Tensor | None = None) -> torch.Tensor:
        """Residual forecast ``readout(phi)`` of shape ``(B, z, y, x)`` (add it to the last frame)."""
        return self.readout(self.features(frames, lead, stimulus))[:, 0]
