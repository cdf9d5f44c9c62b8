"""Gathering context/target frames of many windows from a (time, z, y, x) volume in one index.

The volume may be a torch tensor, a numpy array, or a lazy array (xarray/dask/zarr backed): a lazy
volume is read only at the frames a batch needs (unique frames, one read), never loaded whole.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["take_frames", "gather_video", "volume_shape"]


def volume_shape(volume) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 4:
        raise ValueError(f"volume must be 4-d (time, z, y, x), got shape {shape}")
    return shape


def take_frames(volume, idx, device=None, dtype=torch.float32) -> torch.Tensor:
    """Frames ``volume[idx]`` for an integer index array of any shape -> tensor ``idx.shape + (z, y, x)``."""
    idx_t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    if isinstance(volume, torch.Tensor):
        out = volume[idx_t.to(volume.device)]
        return out.to(device=device or volume.device, dtype=dtype)
    flat = idx_t.reshape(-1).numpy()
    uniq, inv = np.unique(flat, return_inverse=True)
    if isinstance(volume, np.ndarray):
        block = volume[uniq]
    elif hasattr(volume, "isel"):                        # xarray.DataArray (possibly dask backed)
        block = np.asarray(volume.isel({volume.dims[0]: uniq}).values)
    else:                                                # zarr / dask array: orthogonal index on time
        try:
            block = np.asarray(volume.oindex[uniq]) if hasattr(volume, "oindex") else np.asarray(volume[uniq])
        except TypeError:
            block = np.stack([np.asarray(volume[int(i)]) for i in uniq])
    out = torch.as_tensor(block, dtype=dtype)[torch.as_tensor(inv)]
    return out.reshape(*idx_t.shape, *out.shape[1:]).to(device)


def gather_video(volume, starts, leads, context: int, device=None, dtype=torch.float32):
    """Context frames ``(B, C, z, y, x)`` and the target frame ``(B, z, y, x)`` for each window.

    ``starts`` (B,) are first context frames; ``leads`` (B,) in 1..H; the target of window ``b`` is
    frame ``starts[b] + context - 1 + leads[b]``.
    """
    s = np.asarray(starts, dtype=np.int64).reshape(-1)
    lead = np.asarray(leads, dtype=np.int64).reshape(-1)
    if s.shape != lead.shape:
        raise ValueError(f"starts {s.shape} and leads {lead.shape} must have the same length")
    t = volume_shape(volume)[0]
    if s.size and (s.min() < 0 or (s + context - 1 + lead).max() >= t):
        raise ValueError(f"windows reach outside the volume's {t} frames (starts in "
                         f"[{s.min()}, {s.max()}], context={context}, leads up to {lead.max()})")
    idx = np.concatenate([s[:, None] + np.arange(context)[None, :], (s + context - 1 + lead)[:, None]], 1)
    block = take_frames(volume, idx, device=device, dtype=dtype)
    return block[:, :context], block[:, context]
