"""Forecast stores: zarr v3 groups of forecasts (window, lead, z, y, x), written region by region.

Layout of a store::

    forecast        (window, lead, z, y, x) float32   chunk = one (y, x) plane, shard = a block of windows
    std             (window, lead, z, y, x) float32   predictive std (only with uncertainty)
    trace_forecast  (window, lead, neuron)  float32   segment means of the forecast (or the trace model's output)
    trace_std       (window, lead, neuron)  float32   (only with uncertainty)
    coords          window, start (window), condition (window), lead, z, y, x, neuron
    attrs           method, label, kind ("video" | "trace rendered as video"), context, horizon, split

A viewer reads one (y, x) plane per request (one inner chunk), never a whole volume. The store
is written into a temporary sibling and swapped in with ``os.replace`` (atomic for readers).
Sources: a fitted :class:`~.estimator.VideoForecaster`, a fitted
:class:`~.uncertainty.LastLayerLaplace` (adds ``std``), or any trace forecaster of the part-1
protocol (``predict(ds, starts) -> (window, lead, neuron)``), whose traces are painted onto each
neuron's voxels (:func:`paint_traces`) and labelled as such.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from ..._atomic import atomic_dir, remove_leftovers
from ..integrity import verify_store, write_manifest
from ..protocol import windows as make_windows
from ..segments import segment_means

__all__ = ["paint_traces", "write_forecast_store", "open_forecast_store", "read_plane"]


def paint_traces(traces, segmentation, fill=np.nan) -> np.ndarray:
    """Render traces (..., neuron) as volumes (..., z, y, x): each label's voxels get its value."""
    seg = np.asarray(segmentation)
    tr = np.asarray(traces)
    if seg.ndim != 3:
        raise ValueError(f"segmentation must be (z, y, x), got shape {seg.shape}")
    if seg.max() > tr.shape[-1]:
        raise ValueError(f"segmentation has label {seg.max()} but traces have {tr.shape[-1]} neurons")
    padded = np.concatenate([np.full(tr.shape[:-1] + (1,), fill, dtype=np.result_type(tr, np.float32)),
                             tr], axis=-1)
    return padded[..., seg]


def _source_kind(source):
    from .estimator import VideoForecaster
    from .uncertainty import LastLayerLaplace
    if isinstance(source, LastLayerLaplace):
        return "laplace", source.forecaster_
    if isinstance(source, VideoForecaster):
        return "video", source
    if hasattr(source, "predict") and hasattr(source, "context"):
        return "trace", source
    raise TypeError(f"source must be a VideoForecaster, LastLayerLaplace or trace forecaster, "
                    f"got {type(source).__name__}")


def _predict_block(kind, source, model, ds, starts, seg, n):
    if kind == "laplace":
        out = source.predict(ds, starts)
        return (out["forecast"].values, out["std"].values, out["trace_forecast"].values,
                out["trace_std"].values)
    if kind == "video":
        vol = ds["volume"].transpose("time", "z", "y", "x")
        vol = vol.values if vol.chunks is None else vol
        f = model.predict_arrays(vol, starts, None, ds["stimulus"].values if model.stimulus else None)
        return f, None, segment_means(f, seg, n), None
    tr = np.asarray(model.predict(ds, starts), np.float32)
    return paint_traces(tr, seg), None, tr, None


def write_forecast_store(path, source, ds: xr.Dataset, split: str = "test", windows: xr.Dataset | None = None,
                         max_windows: int | None = None, block_windows: int = 8, label: str | None = None,
                         progress: bool = False, attrs: dict | None = None) -> Path:
    """Forecast every window of ``split`` (or ``windows``) and write the store at ``path`` atomically.

    ``max_windows`` keeps that many windows spread evenly over the split (for quick viewer stores).
    The forecasts are computed and written ``block_windows`` windows at a time (one zarr region
    each), so memory stays bounded by one block.
    """
    kind, model = _source_kind(source)
    path = Path(path)
    c, h = int(model.context), int(getattr(model, "horizon", 32))
    win = make_windows(ds, split, context=c, horizon=h) if windows is None else windows
    if max_windows is not None and win.sizes["window"] > max_windows:
        keep = np.unique(np.linspace(0, win.sizes["window"] - 1, int(max_windows)).round().astype(int))
        win = win.isel(window=keep)
    starts = win["start"].values.astype(np.int64)
    if starts.size == 0:
        raise ValueError(f"no {split!r} windows to forecast")
    seg = np.asarray(ds["segmentation"].values)
    n = int(ds.sizes["neuron"])
    z, y, x = seg.shape
    bw = max(1, int(block_windows))
    nw = starts.size
    has_std = kind == "laplace"
    import dask.array as da
    vol_dims, tr_dims = ("window", "lead", "z", "y", "x"), ("window", "lead", "neuron")
    tmpl = {"forecast": (vol_dims, da.zeros((nw, h, z, y, x), chunks=(bw, h, z, y, x), dtype="f4")),
            "trace_forecast": (tr_dims, da.zeros((nw, h, n), chunks=(bw, h, n), dtype="f4"))}
    if has_std:
        tmpl["std"] = (vol_dims, da.zeros((nw, h, z, y, x), chunks=(bw, h, z, y, x), dtype="f4"))
        tmpl["trace_std"] = (tr_dims, da.zeros((nw, h, n), chunks=(bw, h, n), dtype="f4"))
    coords = {"window": np.arange(nw), "start": ("window", starts), "lead": np.arange(1, h + 1),
              "neuron": np.arange(n)}
    if "condition" in win.coords:
        coords["condition"] = ("window", win["condition"].values.astype(str).astype(object))
    for d in ("z", "y", "x"):
        if d in ds.coords:
            coords[d] = ds[d].values
    method = "video" if kind != "trace" else str(getattr(model, "name", None) or type(model).__name__)
    default_label = {"video": f"video UNet (C={c})", "laplace": f"video UNet + last-layer Laplace (C={c})",
                     "trace": f"trace baseline '{method}' (C={c}) rendered as video"}[kind]
    meta = dict(method=method, label=label or default_label,
                kind="trace rendered as video" if kind == "trace" else "video", context=c, horizon=h,
                split=split, has_uncertainty=int(has_std), **(attrs or {}))
    template = xr.Dataset(tmpl, coords=coords, attrs=meta)
    enc = {"forecast": {"chunks": (1, 1, 1, y, x), "shards": (bw, h, z, y, x)},
           "trace_forecast": {"chunks": (bw, h, n)}}
    if has_std:
        enc["std"] = dict(enc["forecast"])
        enc["trace_std"] = {"chunks": (bw, h, n)}
    with atomic_dir(path) as tmp:
        template.to_zarr(tmp, mode="w", compute=False, encoding=enc, zarr_format=3, consolidated=False)
        blocks = range(0, nw, bw)
        for lo in tqdm(blocks, disable=not progress, desc=f"forecast store ({kind})", unit="block"):
            s = starts[lo:lo + bw]
            fvol, fstd, ftr, ftstd = _predict_block(kind, source, model, ds, s, seg, n)
            data = {"forecast": (vol_dims, np.asarray(fvol, np.float32)),
                    "trace_forecast": (tr_dims, np.asarray(ftr, np.float32))}
            if has_std:
                data["std"] = (vol_dims, np.asarray(fstd, np.float32))
                data["trace_std"] = (tr_dims, np.asarray(ftstd, np.float32))
            xr.Dataset(data).to_zarr(tmp, region={"window": slice(lo, lo + s.size)}, consolidated=False)
        write_manifest(tmp)
    return path


def open_forecast_store(path, verify: str = "size") -> xr.Dataset:
    """Open a store lazily without dask: indexing reads only the chunks it touches.

    The store is first checked against its manifest (``verify``, as in
    :func:`~workbench.forecast.open_dataset`): a missing or truncated chunk is a
    :class:`~workbench.forecast.integrity.DamagedStoreError` naming the array and the chunk.
    """
    path = Path(path)
    remove_leftovers(path)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"no forecast store at {str(path)!r} (missing zarr.json)")
    verify_store(path, verify)
    ds = xr.open_zarr(path, chunks=None, consolidated=False)
    if "forecast" not in ds:
        raise ValueError(f"{str(path)!r} is a zarr group without a 'forecast' array")
    return ds


def read_plane(store: xr.Dataset, var: str, window: int, lead: int, z: int) -> np.ndarray:
    """One (y, x) plane of ``var`` at positional ``window``, lead value ``lead`` and plane ``z``."""
    li = int(np.searchsorted(store["lead"].values, lead))
    return np.asarray(store[var][int(window), li, int(z)].values)
