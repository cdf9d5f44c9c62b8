"""Forecast stores for the viewer: build on first use, cache on disk, score from the stores.

``<directory>`` holds one zarr store per method (``<method>.zarr``, see :mod:`.store`). A trace
baseline store is seconds to build (its forecasts are painted onto the segmentation and labelled
as such); the video store trains a small forecaster (plus the last-layer Laplace for bands).
Scores are part 1's metrics (``window_errors`` + ``aggregate``) on the windows a store holds.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import xarray as xr

from ..._deprecation import deprecated_alias
from ..metrics import aggregate, window_errors
from ..protocol import gather, protocol_from
from .store import open_forecast_store, write_forecast_store

__all__ = ["forecast_directory", "available_stores", "cached_baseline_store", "cached_video_store",
           "ensure_baseline_store", "ensure_video_store", "store_scores", "scores_by_method",
           "DEMO_VIDEO_PARAMS", "PlaneCache"]

DEMO_VIDEO_PARAMS = dict(context=4, widths=(8, 16, 32), emb_dim=32, stimulus=True, batch_size=4,
                         n_steps=150, lr=3e-3, n_threads=1)


def forecast_directory(root, dataset_key: str) -> Path:
    """``<root>/forecasts/<dataset_key>``: where a dataset's forecast stores live."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(dataset_key))
    return Path(root) / "forecasts" / safe


def available_stores(directory) -> dict[str, Path]:
    """``{method: path}`` of the complete stores in ``directory`` (video first)."""
    d = Path(directory)
    if not d.is_dir():
        return {}
    found = {p.name[:-5]: p for p in sorted(d.glob("*.zarr")) if (p / "zarr.json").is_file()}
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != "video", kv[0])))


def _usable(path: Path) -> bool:
    """A complete, undamaged store (checked against its manifest); a damaged one is rebuilt."""
    import warnings

    from ..integrity import verify_store
    if not (path / "zarr.json").is_file():
        return False
    try:
        if verify_store(path, "size"):
            return True
        problem = "it has no manifest (written by an older version)"
    except ValueError as err:
        problem = str(err)
    warnings.warn(f"rebuilding forecast store {str(path)!r}: {problem}", UserWarning, stacklevel=3)
    return False


def cached_baseline_store(ds: xr.Dataset, directory, method: str = "linear", context: int = 4,
                          max_windows: int = 32) -> Path:
    """The store of a part-1 trace baseline (fit on the training split) rendered as video."""
    from ..baselines import BASELINES
    path = Path(directory) / f"{method}.zarr"
    if _usable(path):
        return path
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; known: {sorted(BASELINES)}")
    f = BASELINES[method](context=context).fit(ds)
    return write_forecast_store(path, f, ds, max_windows=max_windows)


def cached_video_store(ds: xr.Dataset, directory, max_windows: int = 32, uncertainty: bool = True,
                       callback=None, checkpoint=None, **params) -> Path:
    """The video store of ``directory``, written on first use from a trained forecaster.

    The forecaster comes from ``checkpoint`` if given, else from ``<directory>/video_checkpoint.pt``
    if present (:meth:`.VideoForecaster.from_checkpoint`, stimulus-conditioned models included:
    their stimulus features are read from ``ds`` for every window), else it is trained here
    (``DEMO_VIDEO_PARAMS`` updated by ``params``) and its checkpoint kept next to the store.
    ``callback(fraction, message)`` reports progress.
    """
    from .estimator import VideoForecaster
    from .uncertainty import LastLayerLaplace
    path = Path(directory) / "video.zarr"
    if _usable(path):
        return path
    saved = Path(checkpoint) if checkpoint is not None else Path(directory) / "video_checkpoint.pt"
    if checkpoint is not None and not saved.is_file():
        raise FileNotFoundError(f"video checkpoint {str(saved)!r} does not exist")
    if ds["volume"].nbytes <= 2 * 2**30:          # one read of a lazily opened store, not one per block
        ds = ds.load()
    if saved.is_file():
        if callback:
            callback(0.0, f"loading the video forecaster from {saved.name}")
        est = VideoForecaster.from_checkpoint(saved)
        shape = tuple(ds["segmentation"].shape)
        if tuple(est.spatial_shape_) != shape:
            raise ValueError(f"checkpoint {str(saved)!r} was trained on volumes {tuple(est.spatial_shape_)}, "
                             f"the data has {shape}")
        p = {k: v for k, v in est.get_params().items() if k in DEMO_VIDEO_PARAMS}
    else:
        p = {**DEMO_VIDEO_PARAMS, **params}
        est = VideoForecaster(**p)
        cb = None if callback is None else (
            lambda step, n, loss: callback(0.85 * step / max(n, 1), f"training step {step}/{n}, loss {loss:.4f}"))
        est.fit(ds, callback=cb)
        Path(directory).mkdir(parents=True, exist_ok=True)
        est.save_checkpoint(saved)
    source = est
    if uncertainty:
        if callback:
            callback(0.87, "fitting the last-layer Laplace")
        source = LastLayerLaplace(est, n_fit_windows=16, n_noise_windows=16, max_voxels=100_000).fit(ds)
    if callback:
        callback(0.92, "writing the forecast store")
    out = write_forecast_store(path, source, ds, max_windows=max_windows,
                               attrs=dict(training=json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                                               for k, v in p.items()})))
    if callback:
        callback(1.0, "done")
    return out


ensure_baseline_store = deprecated_alias(cached_baseline_store, "ensure_baseline_store")
ensure_video_store = deprecated_alias(cached_video_store, "ensure_video_store")


def store_scores(store, ds: xr.Dataset) -> xr.Dataset:
    """MAE by (condition, lead) of a store's trace forecasts on its windows (part 1's metrics)."""
    st = open_forecast_store(store) if not isinstance(store, xr.Dataset) else store
    c, h = int(st.attrs["context"]), int(st.attrs["horizon"])
    starts = st["start"].values
    lo, hi = int(starts.min()), int(starts.max()) + c + h
    traces = np.asarray(ds["traces"].isel(time=slice(lo, hi)).values)
    _, target = gather(traces, starts - lo, c, h)
    err = window_errors(np.asarray(st["trace_forecast"].values, np.float64), target)
    win = xr.Dataset({"start": ("window", starts)},
                     coords={"window": np.arange(starts.size),
                             "condition": ("window", np.asarray(st["condition"].values.tolist(), dtype=str))},
                     attrs={"heldout_conditions": list(protocol_from(ds)["heldout"])})
    err = err.assign_coords(window=np.arange(starts.size), condition=("window", win["condition"].values))
    res = aggregate(err, win, n_boot=0, condition_order=protocol_from(ds)["names"])
    res.attrs.update(label=st.attrs.get("label", ""), n_windows_scored=int(starts.size))
    return res


def scores_by_method(stores: dict, ds: xr.Dataset) -> xr.Dataset:
    """Scores of several stores stacked over ``model``: mae (model, condition, lead), ..."""
    items = [store_scores(p, ds).expand_dims(model=[m]) for m, p in stores.items()]
    if not items:
        raise ValueError("no forecast stores to score")
    return xr.concat(items, "model", join="outer", combine_attrs="drop")


class PlaneCache:
    """Least-recently-used cache of 2-D arrays read from zarr, keyed by (store path, indices).

    Keys name the store they were read from (its path, or a dataset key for the recording), so
    planes of two stores never mix and switching back to a store finds its planes again. The
    cache holds at most ``max_bytes`` (the least recently used arrays are dropped first).
    Thread-safe: a prefetching thread may fill it while the event loop reads from it.
    """

    def __init__(self, max_bytes: int = 256 * 2**20):
        if int(max_bytes) < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._planes: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._planes

    def get(self, key: Hashable, read: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array under ``key``, else ``read()`` (stored read-only)."""
        with self._lock:
            if key in self._planes:
                self._planes.move_to_end(key)
                self.hits += 1
                return self._planes[key]
        plane = np.array(read(), copy=True)
        if plane.ndim != 2:
            raise ValueError(f"a cached plane must be 2-d, got shape {plane.shape} for key {key!r}")
        plane.flags.writeable = False
        with self._lock:
            self.misses += 1
            if key not in self._planes:
                self._planes[key] = plane
                self.nbytes += plane.nbytes
            while self.nbytes > self.max_bytes and len(self._planes) > 1:
                self.nbytes -= self._planes.popitem(last=False)[1].nbytes
        return plane

    def __len__(self) -> int:
        return len(self._planes)

    def clear(self) -> None:
        with self._lock:
            self._planes.clear()
            self.nbytes = 0
