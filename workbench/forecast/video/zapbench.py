"""Scoring a video forecaster the way ZAPBench scores video models (#18.4).

ZAPBench evaluates a volumetric forecast against the *target volume*, not the traces matrix: both
the forecast and the true frame at the target time are reduced to per-segment means over the
segmentation (mask = segmentation > 0), and the MAE over segments is taken per window and lead
(google-research/zapbench, ``zapbench/video/`` evaluation: segment means of predicted and target
volumes; missing values via ``nan_to_zero``, the rule :func:`~workbench.forecast.metrics.resolve_missing`
calls "zapbench"). Its video inputs are centre-cropped in y (1152 of the release's 1328 rows at
s0; :data:`ZAPBENCH_CROP_Y_S0`) and read from the s1/s2 pyramid, whose segmentation is sampled as
``slice(f // 2, None, f)`` (:func:`workbench.forecast.release.coarse_segmentation`).

:func:`score_video` follows that definition; ``evaluate`` keeps scoring the video model against
``ds["traces"]`` like every trace baseline (the part-1 protocol), which is the better comparison
on data whose traces are not the volume's segment means (e.g. ΔF/F traces).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..metrics import aggregate, resolve_missing, window_errors
from ..protocol import protocol_from
from ..protocol import windows as make_windows

__all__ = ["ZAPBENCH_CROP_Y_S0", "center_crop", "score_video"]

#: ZAPBench's centre crop of y at full resolution (s0): 1152 of 1328 rows
ZAPBENCH_CROP_Y_S0 = 1152


def center_crop(ds: xr.Dataset, y: int | None = None, x: int | None = None) -> xr.Dataset:
    """``ds`` with its volume and segmentation cut to the central ``y`` rows and ``x`` columns.

    The cut starts at ``(n - size) // 2`` (ZAPBench's centre crop). ``None`` keeps a dimension.
    """
    sel = {}
    for dim, size in (("y", y), ("x", x)):
        if size is None:
            continue
        n = int(ds.sizes[dim])
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 1 <= size <= n:
            raise ValueError(f"crop size {dim}={size!r} must be an integer in [1, {n}]")
        lo = (n - int(size)) // 2
        sel[dim] = slice(lo, lo + int(size))
    return ds.isel(sel) if sel else ds


def score_video(forecaster, ds: xr.Dataset, split: str = "test", leads=None, crop_y: int | None = None,
                crop_x: int | None = None, max_windows: int | None = None, missing: str = "zapbench",
                batch_size: int = 8, n_boot: int = 0) -> xr.Dataset:
    """ZAPBench-style scores of a fitted volume forecaster on a split's windows.

    Returns ``aggregate``'s Dataset (``mae`` (condition, lead), ``mae_train_conditions`` (lead), ...)
    plus the per-window ``abs_err`` (window, lead). Segments are the labels present in the (cropped)
    segmentation; ``missing`` is the NaN rule ("zapbench": NaN -> 0 on both sides, all segments in
    the denominator; "exclude"). ``forecaster`` needs ``predict_arrays(volume, starts, leads)``
    returning volumes, ``context`` and ``horizon`` (a :class:`~.estimator.VideoForecaster`).
    """
    from ..segments import segment_means
    missing = resolve_missing(missing, ds)
    ds = center_crop(ds, crop_y, crop_x)
    context, horizon = int(forecaster.context), int(forecaster.horizon)
    win = make_windows(ds, split, context=context, horizon=horizon)
    if max_windows is not None and win.sizes["window"] > int(max_windows):
        keep = np.linspace(0, win.sizes["window"] - 1, int(max_windows)).astype(int)
        win = win.isel(window=keep)
    starts = win["start"].values
    leads = np.arange(1, horizon + 1) if leads is None else np.asarray(leads, np.int64).reshape(-1)
    seg = np.asarray(ds["segmentation"].values)
    present = np.unique(seg[seg > 0])
    if present.size == 0:
        raise ValueError("the (cropped) segmentation has no labelled voxels")
    relabel = np.zeros(int(seg.max()) + 1, np.int64)                  # present labels -> 1..K
    relabel[present] = np.arange(1, present.size + 1)
    seg_k = relabel[seg]
    vol = ds["volume"].transpose("time", "z", "y", "x")
    vol = vol.values if vol.chunks is None else vol
    stim = ds["stimulus"].values if getattr(forecaster, "stimulus", False) else None
    preds, targets = [], []
    for lo in range(0, starts.size, int(batch_size)):
        s = starts[lo:lo + int(batch_size)]
        pv = forecaster.predict_arrays(vol, s, leads, stim, batch_size)          # (w, l, z, y, x)
        t_idx = s[:, None] + context - 1 + leads[None, :]
        tv = np.asarray(vol[np.unique(t_idx)] if isinstance(vol, np.ndarray)
                        else vol.isel(time=np.unique(t_idx)).values)
        tv = tv[np.searchsorted(np.unique(t_idx), t_idx)]                   # (w, l, z, y, x)
        preds.append(segment_means(pv.astype(np.float64), seg_k, present.size))
        targets.append(segment_means(tv.astype(np.float64), seg_k, present.size))
    pred = np.concatenate(preds) if preds else np.zeros((0, leads.size, present.size))
    target = np.concatenate(targets) if targets else np.zeros_like(pred)
    err = window_errors(pred, target, missing=missing)
    err = err.assign_coords(window=win["window"].values, lead=leads,
                            condition=("window", win["condition"].values))
    names = protocol_from(ds)["names"]
    res = aggregate(err, win, n_boot=n_boot, condition_order=names)
    res["abs_err"] = err["abs_err"]
    res.attrs.update(scored_against="target-volume segment means", missing=missing,
                     n_segments=int(present.size), crop_y=-1 if crop_y is None else int(crop_y),
                     crop_x=-1 if crop_x is None else int(crop_x))
    return res
