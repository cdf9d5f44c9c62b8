"""The real ZAPBench release from a local directory, read lazily into the forecast Dataset.

Expected layout (the release bucket's ``volumes/20240930/`` copied locally)::

    <root>/traces/                          zarr v3 array (t, neuron) float32, no dimension names
    <root>/df_over_f_xyz_chunked/s0|s1|s2/  zarr v3 arrays (x, y, z, t) float32 (xy halved per level)
    <root>/segmentation/                    zarr array (x, y, z) integer labels (label = column + 1),
                                            or a group with one array per scale (s0, s1, ...)
    <root>/stimuli_features/                zarr array (t, 26) float (v2 in the release)

Volumes are transposed lazily to (time, z, y, x). A segmentation stored only at full resolution is
brought to a coarser volume scale by taking every 2**k-th voxel in x and y (nearest neighbour).
:func:`write_release_layout` writes that layout (used for fixtures in tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .._atomic import atomic_dir
from . import protocol
from .dataset import build_dataset

__all__ = ["open_release", "write_release_layout", "estimate_trial_phase", "ReleaseLayoutError",
           "RELEASE_VOXEL_SIZE_UM", "RELEASE_FRAME_PERIOD_S"]

RELEASE_VOXEL_SIZE_UM = (4.0, 0.406, 0.406)       # z, y, x at s0
RELEASE_FRAME_PERIOD_S = 0.9141
VOLUME_DIR = "df_over_f_xyz_chunked"


class ReleaseLayoutError(ValueError):
    """A release directory lacks an array or holds one of the wrong shape or dtype."""


def _open(path: Path, what: str):
    import zarr

    if not path.exists():
        raise ReleaseLayoutError(f"missing array {what!r}: nothing at {path}")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise ReleaseLayoutError(f"cannot open {what!r} at {path} as zarr: {e}") from e
    return node


def _check(arr, path, what, ndim, kinds, shape=None):
    got_shape = tuple(arr.shape)
    if len(got_shape) != ndim:
        raise ReleaseLayoutError(f"{what!r} at {path}: expected {ndim}-d array, got shape {got_shape}")
    if np.dtype(arr.dtype).kind not in kinds:
        exp = {"f": "floating", "iu": "integer", "ui": "integer"}.get(kinds, kinds)
        raise ReleaseLayoutError(f"{what!r} at {path}: expected {exp} dtype, got {arr.dtype}")
    if shape is not None:
        for i, (e, g) in enumerate(zip(shape, got_shape)):
            if e is not None and e != g:
                raise ReleaseLayoutError(f"{what!r} at {path}: expected shape {tuple(shape)} "
                                         f"(None = any), got {got_shape} (axis {i})")


def _segmentation(root: Path, scale: str, xy_shape):
    import zarr

    path = root / "segmentation"
    node = _open(path, "segmentation")
    if isinstance(node, zarr.Group):
        keys = sorted(node.array_keys())
        if scale in keys:
            return node[scale], path / scale, 1
        if "s0" not in keys:
            raise ReleaseLayoutError(f"missing array 'segmentation': group {path} has {keys}, "
                                     f"expected {scale!r} or 's0'")
        arr, path = node["s0"], path / "s0"
    else:
        arr = node
    factor = 2 ** int(scale[1:]) if scale != "s0" else 1
    if xy_shape is not None and factor > 1 and tuple(arr.shape[:2]) == tuple(xy_shape):
        factor = 1                                 # already at the volume's resolution
    return arr, path, factor


def open_release(root, scale: str | None = "s0", condition_offsets=None, centroids: bool = False,
                 frame_period_s: float = RELEASE_FRAME_PERIOD_S) -> xr.Dataset:
    """Open a local ZAPBench release directory as the forecast Dataset (lazy, dask-backed).

    ``scale``: "s0" | "s1" | "s2" volume scale, or None for traces and stimulus only.
    ``condition_offsets``: default the release's when it has 7879 frames, otherwise the release's
    proportions scaled to the number of frames. ``centroids=True`` computes neuron centroids
    from the segmentation (reads it fully, vectorised bincounts).
    """
    import dask.array as da

    root = Path(root)
    if not root.is_dir():
        raise ReleaseLayoutError(f"release directory {root} does not exist")
    tr = _open(root / "traces", "traces")
    _check(tr, root / "traces", "traces", 2, "f")
    n_frames, n_neurons = tr.shape
    st = _open(root / "stimuli_features", "stimuli_features")
    _check(st, root / "stimuli_features", "stimuli_features", 2, "f", (n_frames, None))
    traces = da.from_zarr(tr)
    stimulus = np.asarray(st[...], dtype=np.float32)
    vol = seg = None
    vs = np.array(RELEASE_VOXEL_SIZE_UM)
    if scale is not None:
        if scale not in ("s0", "s1", "s2"):
            raise ValueError(f"scale must be 's0', 's1', 's2' or None, got {scale!r}")
        vpath = root / VOLUME_DIR / scale
        v = _open(vpath, f"{VOLUME_DIR}/{scale}")
        _check(v, vpath, f"{VOLUME_DIR}/{scale}", 4, "f", (None, None, None, n_frames))
        seg_arr, seg_path, factor = _segmentation(root, scale, v.shape[:2])
        _check(seg_arr, seg_path, "segmentation", 3, "iu")
        seg_xyz = da.from_zarr(seg_arr)[::factor, ::factor, :]
        if factor > 1:   # odd s0 sizes: striding keeps one more row than the block-mean pyramid
            seg_xyz = seg_xyz[:v.shape[0], :v.shape[1]]
        if tuple(seg_xyz.shape) != tuple(v.shape[:3]):
            raise ReleaseLayoutError(f"segmentation at {seg_path} (x, y, z) = {tuple(seg_xyz.shape)} "
                                     f"after /{factor} xy does not match volume {vpath} (x, y, z) = "
                                     f"{tuple(v.shape[:3])}")
        vol = da.from_zarr(v).transpose(3, 2, 1, 0)                  # (t, z, y, x), lazy
        seg = seg_xyz.transpose(2, 1, 0).astype(np.int32)
        k = int(scale[1:])
        vs = vs * np.array([1.0, 2.0 ** k, 2.0 ** k])
        # physical xy grid of s0 halves exactly per level
    offsets = condition_offsets
    if offsets is None:
        rel = np.asarray(protocol.RELEASE_CONDITION_OFFSETS)
        offsets = rel if n_frames == rel[-1] else np.round(rel / rel[-1] * n_frames).astype(np.int64)
    offsets = [int(o) for o in offsets]
    if offsets[-1] != n_frames:
        raise ReleaseLayoutError(f"condition offsets end at {offsets[-1]} but traces at {root / 'traces'} "
                                 f"have {n_frames} frames")
    cen = None
    if centroids and seg is not None:
        cen = _centroids(np.asarray(seg), n_neurons, vs)
    if seg is not None:
        mx = int(seg.max().compute())
        if mx > n_neurons:
            raise ReleaseLayoutError(f"segmentation label {mx} exceeds the {n_neurons} trace columns "
                                     f"of {root / 'traces'} (label = column + 1)")
    phase = estimate_trial_phase(stimulus, offsets)
    return build_dataset(traces=traces, stimulus=stimulus, offsets=offsets, frame_period_s=frame_period_s,
                         voxel_size_zyx_um=vs, volume=vol, segmentation=seg, centroid_zyx=cen,
                         trial_phase=phase, names=list(protocol.CONDITION_NAMES)
                         if len(offsets) == len(protocol.CONDITION_NAMES) + 1 else None,
                         attrs=dict(source="zapbench-release", scale=scale or "none", root=str(root)))


def _centroids(seg_zyx: np.ndarray, n: int, vs) -> np.ndarray:
    lab = seg_zyx.reshape(-1)
    cnt = np.bincount(lab, minlength=n + 1)[1:]
    out = np.full((n, 3), np.nan)
    grids = np.indices(seg_zyx.shape).reshape(3, -1)
    for a in range(3):                                   # three axes
        s = np.bincount(lab, weights=grids[a], minlength=n + 1)[1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, a] = np.where(cnt > 0, (s / np.maximum(cnt, 1) + 0.5) * vs[a], np.nan)
    return out


def estimate_trial_phase(stimulus: np.ndarray, offsets, min_period: int = 8,
                         min_correlation: float = 0.5) -> np.ndarray:
    """Per-frame phase in each condition's repeated trial, from the stimulus' autocorrelation.

    For each condition the period is the first lag (``min_period`` .. a third of its length) whose
    autocorrelation is within 10 % of the highest of the stimulus features (FFT, vectorised over features); phase is
    the frame offset modulo that period. Conditions with a constant stimulus, or whose best
    autocorrelation is below ``min_correlation`` of the zero-lag value, get -1.
    """
    stim = np.asarray(stimulus, dtype=np.float64)
    phase = np.full(stim.shape[0], -1, dtype=np.int64)
    for i in range(len(offsets) - 1):                     # loop over conditions only
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        x = stim[lo:hi] - stim[lo:hi].mean(0)
        n = hi - lo
        if n < 3 * min_period or np.allclose(x, 0):
            continue
        f = np.fft.rfft(x, n=2 * n, axis=0)
        ac = np.fft.irfft((f * f.conj()).real, axis=0)[:n].sum(1)
        ac /= (n - np.arange(n))                          # unbiased
        lags = np.arange(min_period, max(min_period + 1, n // 3))
        best = int(np.argmax(ac[lags]))
        if ac[lags[best]] < min_correlation * ac[0]:
            continue                                      # not periodic enough: no trial structure
        # multiples of the period correlate as well: take the first lag close to the best one
        period = int(lags[np.flatnonzero(ac[lags] >= 0.9 * ac[lags[best]])[0]])
        phase[lo:hi] = np.arange(n) % period
    return phase


def write_release_layout(ds: xr.Dataset, root, scales=("s0", "s1", "s2"), segmentation_scales=False) -> Path:
    """Write ``ds`` in the release's layout (for fixtures and tests), atomically.

    traces zarr3 (t, neuron) without dimension names; volumes (x, y, z, t) per scale, xy
    down-sampled by 2 per level (block mean); segmentation (x, y, z) at s0 (or, with
    ``segmentation_scales=True``, a group with one strided segmentation per scale); stimulus
    features as a zarr v2 array (t, feature) like the release.
    """
    import zarr

    root = Path(root)
    with atomic_dir(root) as tmp:
        tr = np.asarray(ds["traces"].values, dtype=np.float32)
        a = zarr.create_array(str(tmp / "traces"), shape=tr.shape, dtype="float32",
                              chunks=(min(512, tr.shape[0]), min(512, tr.shape[1])), zarr_format=3)
        a[...] = tr
        st = np.asarray(ds["stimulus"].values, dtype=np.float32)
        s = zarr.create_array(str(tmp / "stimuli_features"), shape=st.shape, dtype="float32",
                              chunks=st.shape, zarr_format=2)
        s[...] = st
        if "volume" in ds:
            vol = np.asarray(ds["volume"].values, dtype=np.float32).transpose(3, 2, 1, 0)   # x y z t
            seg = np.asarray(ds["segmentation"].values).transpose(2, 1, 0).astype(np.uint32)
            for sc in scales:
                k = int(sc[1:])
                v = vol
                for _ in range(k):                        # 2x2 block mean in x, y
                    nx, ny = v.shape[0] // 2 * 2, v.shape[1] // 2 * 2
                    v = v[:nx, :ny].reshape(nx // 2, 2, ny // 2, 2, *v.shape[2:]).mean((1, 3))
                arr = zarr.create_array(str(tmp / VOLUME_DIR / sc), shape=v.shape, dtype="float32",
                                        chunks=(min(512, v.shape[0]), min(512, v.shape[1]), v.shape[2], 1),
                                        zarr_format=3)
                arr[...] = v
            if segmentation_scales:
                g = zarr.open_group(str(tmp / "segmentation"), mode="w", zarr_format=3)
                for sc in scales:
                    f = 2 ** int(sc[1:])
                    nx = vol.shape[0] // f
                    ny = vol.shape[1] // f
                    part = seg[::f, ::f][:nx, :ny]
                    g.create_array(sc, shape=part.shape, dtype="uint32", chunks=part.shape)[...] = part
            else:
                z = zarr.create_array(str(tmp / "segmentation"), shape=seg.shape, dtype="uint32",
                                      chunks=seg.shape, zarr_format=3)
                z[...] = seg
    return root
