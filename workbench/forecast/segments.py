"""Segment means: turn (…, z, y, x) frames into (…, neuron) traces by each label's voxel mean."""

from __future__ import annotations

import numpy as np

__all__ = ["segment_means", "segment_counts"]


def segment_counts(segmentation, n_neurons: int) -> np.ndarray:
    """Voxels per neuron (label = neuron + 1); labels above ``n_neurons`` raise."""
    seg = np.asarray(segmentation).reshape(-1)
    if seg.size and (seg.min() < 0 or seg.max() > n_neurons):
        raise ValueError(f"segmentation labels must lie in [0, n_neurons={n_neurons}], "
                         f"got [{seg.min()}, {seg.max()}]")
    return np.bincount(seg, minlength=n_neurons + 1)[1:]


def segment_means(volume, segmentation, n_neurons: int):
    """Mean of each label's voxels for every leading index, vectorised (bincount / scatter_add).

    ``volume``: numpy array or torch tensor (..., z, y, x); ``segmentation``: (z, y, x) integer
    labels, 0 = background, label = neuron index + 1. Returns (..., n_neurons) of the volume's
    floating dtype (torch in, torch out on the same device). Neurons without voxels are NaN.
    NaN voxels propagate to their neuron (a missing prediction stays missing).
    """
    seg_np = segmentation.detach().cpu().numpy() if hasattr(segmentation, "detach") else np.asarray(segmentation)
    vol_shape = tuple(volume.shape)
    if vol_shape[-3:] != seg_np.shape:
        raise ValueError(f"volume's trailing (z, y, x) shape {vol_shape[-3:]} does not match "
                         f"segmentation shape {seg_np.shape}")
    counts = segment_counts(seg_np, n_neurons)
    lead = vol_shape[:-3]
    n_vox = int(np.prod(seg_np.shape))
    if hasattr(volume, "detach"):                      # torch path: scatter_add on the device
        import torch

        flat = volume.reshape(-1, n_vox)
        idx = torch.as_tensor(seg_np.reshape(-1), device=volume.device, dtype=torch.long)
        out = torch.zeros(flat.shape[0], n_neurons + 1, dtype=flat.dtype, device=flat.device)
        out.scatter_add_(1, idx.expand(flat.shape[0], -1), flat)
        cnt = torch.as_tensor(counts, dtype=flat.dtype, device=flat.device)
        res = out[:, 1:] / cnt
        res = torch.where(cnt > 0, res, torch.full_like(res, float("nan")))
        return res.reshape(lead + (n_neurons,))
    vol = np.asarray(volume)
    dtype = vol.dtype if np.issubdtype(vol.dtype, np.floating) else np.float64
    flat = vol.reshape(-1, n_vox)
    # gather each label's voxels contiguously (one argsort), then one add.reduceat per label run;
    # NaN voxels only reach their own label
    lab = seg_np.reshape(-1)
    order = np.argsort(lab, kind="stable")
    order = order[lab[order] > 0]
    sums = np.zeros((flat.shape[0], n_neurons), dtype=np.float64)
    if order.size:
        lab_sorted = lab[order]
        run_start = np.flatnonzero(np.r_[True, lab_sorted[1:] != lab_sorted[:-1]])
        acc = np.float64 if dtype == np.float64 else np.float32
        sums[:, lab_sorted[run_start] - 1] = np.add.reduceat(flat[:, order], run_start, axis=1, dtype=acc)
    with np.errstate(invalid="ignore", divide="ignore"):
        res = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return res.astype(dtype).reshape(lead + (n_neurons,))
