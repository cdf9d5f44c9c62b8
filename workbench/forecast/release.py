"""The real ZAPBench release, from a local copy or any fsspec URL, read lazily into the forecast Dataset.

Layout (the release bucket's ``volumes/20240930/``; ``root`` may be a folder or a URL such as
``gs://zapbench-release/volumes/20240930`` or ``https://.../volumes/20240930``)::

    <root>/traces/                          zarr v3 array (t, neuron) float32, no dimension names
    <root>/df_over_f_xyz_chunked/s0|s1|s2/  zarr v3 arrays (x, y, z, t) float32 (xy halved per level)
    <root>/segmentation/                    zarr array (x, y, z) integer labels (label = column + 1),
                                            or a group with one array per scale (s0, s1, ...);
                                            ``segmentation/dataframe.json``: one record per label
    <root>/stimuli_features/                zarr array (t, 26) float (v2 in the release)
    <root>/stimulus_evoked_response/        optional: zarr v3 (t, neuron), ZAPBench's stimulus baseline
    <root>/position_embedding/              optional: zarr v2 (neuron, 192)
    <root>/traces_rastermap_sorted/         optional: ``s0/`` zarr v3 (t, neuron) and ``sorting.json``

Only what is asked for is opened: the volume of one ``scale`` (``None``: traces only), and with
``time`` only those frames. Arrays are dask-backed (one dask chunk per stored chunk), so nothing is
read until computed; a chunk missing from a float array reads as NaN with a warning naming the
array (see :mod:`.release_io`). The number of labels comes from ``dataframe.json`` when present,
else from a chunked reduction of the segmentation at the opened scale. Volumes are transposed
lazily to (time, z, y, x); a segmentation stored only at full resolution is brought to a coarser
scale by ZAPBench's sampling of every ``f``-th voxel starting at ``f // 2`` in x and y.
:func:`write_release_layout` writes this layout (fixtures and tests).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from .._atomic import atomic_dir
from . import protocol
from .dataset import build_dataset
from .release_io import MissingChunkWarning, lazy, location, open_node

__all__ = ["open_release", "write_release_layout", "estimate_trial_phase", "ReleaseLayoutError",
           "MissingChunkWarning", "RELEASE_VOXEL_SIZE_UM", "RELEASE_FRAME_PERIOD_S"]

RELEASE_VOXEL_SIZE_UM = (4.0, 0.406, 0.406)       # z, y, x at s0
RELEASE_FRAME_PERIOD_S = 0.9141
VOLUME_DIR = "df_over_f_xyz_chunked"
EXTRA_ARRAYS = ("stimulus_evoked_response", "position_embedding", "traces_rastermap_sorted")


class ReleaseLayoutError(ValueError):
    """A release directory lacks an array or holds one of the wrong shape or dtype."""


def _open(loc, what: str):
    return open_node(loc, what, ReleaseLayoutError)


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


def _segmentation(root, scale: str, xy_shape):
    import zarr

    path = root / "segmentation"
    node = _open(path, "segmentation")
    if isinstance(node, zarr.Group):
        with warnings.catch_warnings():             # dataframe.json sits beside the arrays
            warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
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


def coarse_segmentation(seg_xyz, factor: int, xy_shape=None):
    """Labels at a scale ``factor`` times coarser in x and y: ZAPBench samples every ``factor``-th
    voxel starting at ``factor // 2`` (``slice(f // 2, None, f)``, the voxel nearest the centre of
    each block), cut to the coarser volume's ``xy_shape``."""
    if factor == 1:
        return seg_xyz
    out = seg_xyz[factor // 2::factor, factor // 2::factor]
    if xy_shape is not None:
        out = out[:xy_shape[0], :xy_shape[1]]
    return out


def _n_labels(root, seg, n_neurons):
    """Highest label: from ``segmentation/dataframe.json`` if present, else a chunked reduction."""
    meta = (root / "segmentation" / "dataframe.json").read_json()
    if meta is not None:
        import pandas as pd

        df = pd.DataFrame(meta)
        if "label" not in df:
            raise ReleaseLayoutError(f"{root / 'segmentation' / 'dataframe.json'} has no 'label' column")
        return int(df["label"].max()) if len(df) else 0, "dataframe.json"
    return int(seg.max().compute()), "segmentation"


def _extras(root, n_frames, n_neurons, missing):
    """The optional arrays that exist: name -> (dims, dask array) and extra coords."""
    data, coords = {}, {}
    loc = root / "stimulus_evoked_response"
    if _exists(loc):
        a = _open(loc, "stimulus_evoked_response")
        _check(a, loc, "stimulus_evoked_response", 2, "f", (n_frames, n_neurons))
        data["stimulus_evoked_response"] = (("time", "neuron"), lazy(a, "stimulus_evoked_response", missing))
    loc = root / "position_embedding"
    if _exists(loc):
        a = _open(loc, "position_embedding")
        _check(a, loc, "position_embedding", 2, "f", (n_neurons, None))
        data["position_embedding"] = (("neuron", "embedding"), lazy(a, "position_embedding", missing))
    loc = root / "traces_rastermap_sorted"
    order = (loc / "sorting.json").read_json() if _exists(loc) else None
    if order is not None:
        if isinstance(order, dict):
            lists = [v for v in order.values() if isinstance(v, list)]
            order = lists[0] if len(lists) == 1 else None
        order = np.asarray(order, dtype=np.int64) if order is not None else None
        if order is None or order.shape != (n_neurons,) or not np.array_equal(np.sort(order), np.arange(n_neurons)):
            raise ReleaseLayoutError(f"{loc / 'sorting.json'}: expected a permutation of the "
                                     f"{n_neurons} trace columns")
        a = _open(loc / "s0", "traces_rastermap_sorted/s0")
        _check(a, loc / "s0", "traces_rastermap_sorted/s0", 2, "f", (n_frames, n_neurons))
        data["traces_rastermap_sorted"] = (("time", "rastermap_rank"),
                                           lazy(a, "traces_rastermap_sorted", missing))
        coords["rastermap_order"] = ("rastermap_rank", order)      # trace column of each rank
    return data, coords


def _exists(loc) -> bool:
    if not loc.is_url:
        return loc.exists()
    for probe in ("zarr.json", ".zarray", ".zgroup", "sorting.json"):   # no listing over HTTP
        try:
            if (loc / probe).read_json() is not None:
                return True
        except (OSError, ValueError):
            continue
    return False


def _volume(root, scale, n_frames, missing):
    """``(volume (t, z, y, x), segmentation (z, y, x), voxel size)`` of one scale, lazily."""
    vs = np.array(RELEASE_VOXEL_SIZE_UM)
    if scale is None:
        return None, None, vs
    if scale not in ("s0", "s1", "s2"):
        raise ValueError(f"scale must be 's0', 's1', 's2' or None, got {scale!r}")
    vpath = root / VOLUME_DIR / scale
    v = _open(vpath, f"{VOLUME_DIR}/{scale}")
    _check(v, vpath, f"{VOLUME_DIR}/{scale}", 4, "f", (None, None, None, n_frames))
    seg_arr, seg_path, factor = _segmentation(root, scale, v.shape[:2])
    _check(seg_arr, seg_path, "segmentation", 3, "iu")
    seg_xyz = coarse_segmentation(lazy(seg_arr, "segmentation", "fill"), factor, v.shape[:2])
    if tuple(seg_xyz.shape) != tuple(v.shape[:3]):
        raise ReleaseLayoutError(f"segmentation at {seg_path} (x, y, z) = {tuple(seg_xyz.shape)} "
                                 f"after /{factor} xy does not match volume {vpath} (x, y, z) = "
                                 f"{tuple(v.shape[:3])}")
    vol = lazy(v, f"{VOLUME_DIR}/{scale}", missing).transpose(3, 2, 1, 0)   # (t, z, y, x)
    k = int(scale[1:])
    vs = vs * np.array([1.0, 2.0 ** k, 2.0 ** k])         # physical xy grid of s0 halves per level
    return vol, seg_xyz.transpose(2, 1, 0).astype(np.int32), vs


def open_release(root, scale: str | None = "s0", condition_offsets=None, centroids: bool = False,
                 frame_period_s: float = RELEASE_FRAME_PERIOD_S, time=None, extras: bool = True,
                 storage_options=None, missing_chunks: str = "nan") -> xr.Dataset:
    """Open the ZAPBench release (a local folder or any fsspec URL) as the forecast Dataset (lazy).

    ``scale``: "s0" | "s1" | "s2" volume scale, or None for traces and stimulus only.
    ``condition_offsets``: default the release's when it has 7879 frames, otherwise the release's
    proportions scaled to the number of frames. ``centroids=True`` computes neuron centroids from
    the segmentation (reads it). ``time``: a ``slice`` of frames to keep (the Dataset is then that
    time slice, frame indices kept in ``time``; protocol functions need the whole recording).
    ``extras``: add ``stimulus_evoked_response`` (time, neuron), ``position_embedding`` (neuron,
    embedding) and ``traces_rastermap_sorted`` (time, rastermap_rank) with coord
    ``rastermap_order`` where the release has them. ``storage_options`` go to fsspec.
    ``missing_chunks``: ``"nan"`` (default; with a :class:`MissingChunkWarning`) or ``"fill"``.
    Trial phases come from ZAPBench's trial lengths for the release's offsets, else are
    estimated from the stimulus (:func:`estimate_trial_phase`).
    """
    root = location(root, storage_options)
    if not root.is_url and not root.root.is_dir():
        raise ReleaseLayoutError(f"release directory {root} does not exist")
    if time is not None and not isinstance(time, slice):
        raise TypeError(f"time must be a slice of frames or None, got {type(time).__name__}")
    tr = _open(root / "traces", "traces")
    _check(tr, root / "traces", "traces", 2, "f")
    n_frames, n_neurons = tr.shape
    st = _open(root / "stimuli_features", "stimuli_features")
    _check(st, root / "stimuli_features", "stimuli_features", 2, "f", (n_frames, None))
    traces = lazy(tr, "traces", missing_chunks)
    stimulus = np.asarray(lazy(st, "stimuli_features", missing_chunks).compute(), dtype=np.float32)
    vol, seg, vs = _volume(root, scale, n_frames, missing_chunks)
    offsets = condition_offsets
    if offsets is None:
        rel = np.asarray(protocol.RELEASE_CONDITION_OFFSETS)
        offsets = rel if n_frames == rel[-1] else np.round(rel / rel[-1] * n_frames).astype(np.int64)
    offsets = [int(o) for o in offsets]
    if offsets[-1] != n_frames:
        raise ReleaseLayoutError(f"condition offsets end at {offsets[-1]} but traces at {root / 'traces'} "
                                 f"have {n_frames} frames")
    attrs = dict(source="zapbench-release", scale=scale or "none", root=str(root))
    cen = None
    if seg is not None:
        mx, how = _n_labels(root, seg, n_neurons)
        if mx > n_neurons:
            raise ReleaseLayoutError(f"segmentation label {mx} ({how}) exceeds the {n_neurons} trace "
                                     f"columns of {root / 'traces'} (label = column + 1)")
        attrs["n_labels"] = mx
        if centroids:
            cen = _centroids(np.asarray(seg), n_neurons, vs)
    if offsets == list(protocol.RELEASE_CONDITION_OFFSETS):
        phase = protocol.trial_phases(offsets, protocol.RELEASE_TRIAL_LENGTHS)
        attrs["trial_lengths"] = [list(r) for r in protocol.RELEASE_TRIAL_LENGTHS]
    else:
        phase = estimate_trial_phase(stimulus, offsets)
    ds = build_dataset(traces=traces, stimulus=stimulus, offsets=offsets, frame_period_s=frame_period_s,
                       voxel_size_zyx_um=vs, volume=vol, segmentation=seg, centroid_zyx=cen,
                       trial_phase=phase, names=list(protocol.CONDITION_NAMES)
                       if len(offsets) == len(protocol.CONDITION_NAMES) + 1 else None, attrs=attrs)
    if extras:
        data, coords = _extras(root, n_frames, n_neurons, missing_chunks)
        ds = ds.assign(data).assign_coords(coords)
    if time is not None:
        ds = ds.isel(time=time)
        ds.attrs["time_range"] = [int(ds["time"].values[0]), int(ds["time"].values[-1]) + 1] if ds.sizes["time"] else []
    return ds


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


def write_release_layout(ds: xr.Dataset, root, scales=("s0", "s1", "s2"), segmentation_scales=False,
                         extras: bool = True, trace_chunks=(512, 512)) -> Path:
    """Write ``ds`` in the release's layout (for fixtures and tests), atomically.

    traces zarr3 (t, neuron) without dimension names, ``trace_chunks`` per chunk; volumes
    (x, y, z, t) per scale, xy down-sampled by 2 per level (block mean); segmentation (x, y, z) at
    s0 (or, with ``segmentation_scales=True``, a group with one segmentation per scale, sampled
    like :func:`coarse_segmentation`) and its ``dataframe.json`` (label, voxel count, centroid);
    stimulus features as a zarr v2 array (t, feature) like the release. ``extras``: also
    ``stimulus_evoked_response`` (ZAPBench's definition from the trial lengths, see
    :mod:`workbench.forecast.baselines.stimulus`; only when ``ds`` is a whole recording with
    known trials), ``position_embedding`` (sinusoids of the
    neuron centroids, 192 per neuron) and ``traces_rastermap_sorted`` with ``sorting.json`` (neurons
    ordered by their loading on the traces' first principal component, a one-dimensional embedding
    like rastermap's).
    """
    import zarr

    root = Path(root)
    with atomic_dir(root) as tmp:
        tr = np.asarray(ds["traces"].values, dtype=np.float32)
        chunks = (min(trace_chunks[0], tr.shape[0]), min(trace_chunks[1], tr.shape[1]))
        zarr.create_array(str(tmp / "traces"), shape=tr.shape, dtype="float32", chunks=chunks,
                          zarr_format=3)[...] = tr
        st = np.asarray(ds["stimulus"].values, dtype=np.float32)
        zarr.create_array(str(tmp / "stimuli_features"), shape=st.shape, dtype="float32",
                          chunks=st.shape, zarr_format=2)[...] = st
        if extras:
            _write_extras(ds, tmp, tr, chunks)
        if "volume" in ds:
            _write_volumes(ds, tmp, scales, segmentation_scales)
    return root


def _write_extras(ds, tmp, tr, chunks):
    import json

    import zarr

    from .baselines.stimulus import _trial_table, evoked_response

    try:
        offsets, lengths, kept = _trial_table(ds)
    except ValueError:                                  # e.g. a time crop: its trials are unknown
        offsets = None
    if offsets is not None and offsets[-1] == tr.shape[0]:
        templates, row = evoked_response(tr, offsets, lengths, kept)
        zarr.create_array(str(tmp / "stimulus_evoked_response"), shape=tr.shape, dtype="float32",
                          chunks=chunks, zarr_format=3)[...] = templates[row].astype(np.float32)
    cen = np.asarray(ds["centroid_zyx"].values, dtype=np.float64)
    cen = np.where(np.isfinite(cen), cen, 0.0)
    freq = 1.0 / (10.0 * 2.0 ** (np.arange(32) / 4.0))                    # 32 frequencies per axis, 1/µm
    ang = cen[:, :, None] * freq[None, None, :]                            # (N, 3, 32)
    emb = np.concatenate([np.sin(ang), np.cos(ang)], axis=2).reshape(cen.shape[0], 192)
    zarr.create_array(str(tmp / "position_embedding"), shape=emb.shape, dtype="float32",
                      chunks=(min(4096, emb.shape[0]), 192), zarr_format=2)[...] = emb
    x = np.nan_to_num(tr - np.nanmean(tr, 0), nan=0.0).astype(np.float64)
    _, _, vt = np.linalg.svd(x[:: max(1, x.shape[0] // 2000)], full_matrices=False)
    order = np.argsort(vt[0], kind="stable")
    zarr.create_array(str(tmp / "traces_rastermap_sorted" / "s0"), shape=tr.shape, dtype="float32",
                      chunks=chunks, zarr_format=3)[...] = tr[:, order]
    (tmp / "traces_rastermap_sorted" / "sorting.json").write_text(json.dumps([int(i) for i in order]))


def _write_volumes(ds, tmp, scales, segmentation_scales):
    import json

    import zarr

    vol = np.asarray(ds["volume"].values, dtype=np.float32).transpose(3, 2, 1, 0)   # x y z t
    seg = np.asarray(ds["segmentation"].values).transpose(2, 1, 0).astype(np.uint32)
    for sc in scales:
        v = vol
        for _ in range(int(sc[1:])):                      # 2x2 block mean in x, y
            nx, ny = v.shape[0] // 2 * 2, v.shape[1] // 2 * 2
            v = v[:nx, :ny].reshape(nx // 2, 2, ny // 2, 2, *v.shape[2:]).mean((1, 3))
        zarr.create_array(str(tmp / VOLUME_DIR / sc), shape=v.shape, dtype="float32",
                          chunks=(min(512, v.shape[0]), min(512, v.shape[1]), v.shape[2], 1),
                          zarr_format=3)[...] = v
    if segmentation_scales:
        g = zarr.open_group(str(tmp / "segmentation"), mode="w", zarr_format=3)
        for sc in scales:
            f = 2 ** int(sc[1:])
            part = coarse_segmentation(seg, f, (vol.shape[0] // f, vol.shape[1] // f))
            g.create_array(sc, shape=part.shape, dtype="uint32", chunks=part.shape)[...] = part
    else:
        zarr.create_array(str(tmp / "segmentation"), shape=seg.shape, dtype="uint32",
                          chunks=seg.shape, zarr_format=3)[...] = seg
    lab = seg.reshape(-1)
    n = int(ds.sizes["neuron"])
    cnt = np.bincount(lab, minlength=n + 1)[1:]
    grids = np.indices(seg.shape).reshape(3, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = [np.bincount(lab, weights=grids[a], minlength=n + 1)[1:] / cnt for a in range(3)]
    records = [{"label": i + 1, "n_voxels": int(cnt[i]), "x": float(c[0][i]), "y": float(c[1][i]),
                "z": float(c[2][i])} for i in range(n) if cnt[i] > 0]
    (tmp / "segmentation" / "dataframe.json").write_text(json.dumps(records))
