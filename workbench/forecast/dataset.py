"""The forecasting Dataset: build, save (zarr v3, atomic), open lazily (dask), cache by preset+seed.

See docs/architecture.md "Forecast API" for the data model (dims, variables, coords, attrs).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from .._atomic import atomic_dir, remove_leftovers
from .._deprecation import deprecated_alias, renamed_arguments
from . import protocol
from .dff import CLIP_RANGE
from .integrity import DamagedStoreError, verify_store, write_manifest
from .segments import segment_means
from .synthetic import get_config, simulate

__all__ = ["make_dataset", "cached_dataset", "load_or_generate", "open_dataset", "save_dataset",
           "build_dataset", "store_path", "validate_dataset", "DamagedStoreError",
           "VOLUME_SHARD_FRAMES", "TRACE_CHUNKS"]

VOLUME_SHARD_FRAMES = 256      # frames per volume shard (bulk dask chunk); inner chunk <= 256 KiB
TRACE_CHUNKS = (512, 4096)     # (time, neuron) chunks of traces on disk


def _coords_common(n_frames, offsets, names, frame_period, n_neurons, stim_names):
    cond, cidx, split = protocol.frame_labels(offsets, names)
    return {
        "time": np.arange(n_frames, dtype=np.int64),
        "time_s": ("time", np.arange(n_frames) * float(frame_period)),
        "condition": ("time", cond),
        "condition_index": ("time", cidx),
        "split": ("time", split),
        "neuron": np.arange(n_neurons, dtype=np.int64),
        "label": ("neuron", np.arange(1, n_neurons + 1, dtype=np.int64)),
        "feature": np.asarray(stim_names, dtype=str),
        "axis": np.array(["z", "y", "x"]),
    }


def build_dataset(*, traces, stimulus, offsets, frame_period_s, voxel_size_zyx_um,
                  volume=None, segmentation=None, centroid_zyx=None, trial_phase=None,
                  names=None, feature_names=None, attrs=None) -> xr.Dataset:
    """Assemble the Dataset from arrays (numpy or dask); validates shapes against each other."""
    n_frames, n_neurons = traces.shape
    if stimulus.shape[0] != n_frames:
        raise ValueError(f"stimulus has {stimulus.shape[0]} frames, traces have {n_frames}")
    if int(offsets[-1]) != n_frames:
        raise ValueError(f"last condition offset {offsets[-1]} != number of frames {n_frames}")
    names = list(names) if names is not None else protocol.protocol_from(list(offsets))["names"]
    feature_names = feature_names or [f"stim_{i:02d}" for i in range(stimulus.shape[1])]
    coords = _coords_common(n_frames, offsets, names, frame_period_s, n_neurons, feature_names)
    data = {"traces": (("time", "neuron"), traces), "stimulus": (("time", "feature"), stimulus)}
    if segmentation is not None:
        zyx = segmentation.shape
        if volume is not None and tuple(volume.shape) != (n_frames,) + tuple(zyx):
            raise ValueError(f"volume shape {tuple(volume.shape)} != (time, z, y, x) = "
                             f"{(n_frames,) + tuple(zyx)}")
        data["segmentation"] = (("z", "y", "x"), segmentation)
        for ax, n, d in zip("zyx", zyx, voxel_size_zyx_um):
            coords[ax] = (np.arange(n) + 0.5) * float(d)
    if volume is not None:
        if segmentation is None:
            raise ValueError("a volume needs its segmentation")
        data["volume"] = (("time", "z", "y", "x"), volume)
    if centroid_zyx is None:
        centroid_zyx = np.full((n_neurons, 3), np.nan)
    coords["centroid_zyx"] = (("neuron", "axis"), np.asarray(centroid_zyx, dtype=np.float64))
    if trial_phase is not None:
        coords["trial_phase"] = ("time", np.asarray(trial_phase, dtype=np.int64))
    base_attrs = dict(
        frame_period_s=float(frame_period_s),
        voxel_size_zyx_um=[float(v) for v in voxel_size_zyx_um],
        condition_names=[str(v) for v in names],
        condition_offsets=[int(v) for v in offsets],
        heldout_conditions=list(protocol.HELDOUT),
        horizon=protocol.HORIZON, max_context=protocol.MAX_CONTEXT,
        clip_range=list(CLIP_RANGE),
    )
    base_attrs.update(attrs or {})
    return xr.Dataset(data, coords=coords, attrs=base_attrs)


@renamed_arguments(seed="random_state")
def make_dataset(preset="tiny", random_state: int = 0, store=None, progress: bool = False,
             **overrides) -> xr.Dataset:
    """Generate a synthetic Dataset (deterministic from ``random_state``; ``seed`` is its
    deprecated name, and the attribute ``seed`` records it in the Dataset).

    ``preset``: "tiny" | "small" | "large" or a :class:`SyntheticConfig`; ``overrides`` replace
    config fields (e.g. ``n_frames=4000``). Without ``store`` the result is in memory (numpy); with
    ``store`` it is written atomically to that zarr path and returned opened lazily.
    Preset "large" (traces only) streams neuron blocks to the store and requires ``store``.
    """
    cfg = get_config(preset, **overrides)
    seed = int(random_state)
    sim = simulate(cfg, random_state=seed)
    attrs = dict(source="synthetic", preset=cfg.name, seed=int(seed), dff_radius=sim["dff_radius"],
                 trial_lengths=sim["trial_lengths"], **cfg.to_attrs())
    n = sim["n_neurons"]
    common = dict(stimulus=sim["stimulus"], offsets=sim["offsets"], frame_period_s=cfg.frame_period_s,
                  voxel_size_zyx_um=cfg.voxel_size, centroid_zyx=sim["centroid_um"],
                  trial_phase=sim["trial_phase"], attrs=attrs)
    if cfg.traces_only:
        if store is None:
            traces = np.empty((cfg.n_frames, n), np.float32)
            for sl, block in _progress(sim["traces_blocks"], progress, n, cfg.n_frames):
                traces[:, sl] = block
            return build_dataset(traces=traces, **common)
        import dask.array as da

        template = build_dataset(traces=da.zeros((cfg.n_frames, n), dtype=np.float32,
                                                 chunks=TRACE_CHUNKS), **common)

        def fill(tmp):
            import zarr

            arr = zarr.open_group(tmp, mode="r+")["traces"]
            for sl, block in _progress(sim["traces_blocks"], progress, n, cfg.n_frames):
                arr[:, sl] = block
        _atomic_write(template, store, fill=fill)
        return open_dataset(store)
    traces = segment_means(sim["volume"], sim["segmentation"], n).astype(np.float32)
    ds = build_dataset(traces=traces, volume=sim["volume"], segmentation=sim["segmentation"], **common)
    if store is None:
        return ds
    save_dataset(ds, store)
    return open_dataset(store)


def _progress(blocks, progress, n, n_frames):
    if not progress:
        return blocks
    from tqdm.auto import tqdm

    return tqdm(blocks, total=-(-n // 2048), desc=f"traces {n_frames}x{n}", unit="block")


def _encoding(ds: xr.Dataset) -> dict:
    enc = {}
    if "volume" in ds:
        t, z, y, x = ds["volume"].shape
        st = min(VOLUME_SHARD_FRAMES, t)
        enc["volume"] = {"chunks": (_frames_per_chunk(z * y * x, st), z, y, x),
                         "shards": (st, z, y, x)}
    if "traces" in ds:
        t, n = ds["traces"].shape
        enc["traces"] = {"chunks": (min(TRACE_CHUNKS[0], t), min(TRACE_CHUNKS[1], n))}
    if "segmentation" in ds:
        enc["segmentation"] = {"chunks": ds["segmentation"].shape}
    return enc


def _frames_per_chunk(voxels: int, shard_frames: int) -> int:
    """Frames per inner chunk: one frame, or a few when frames are tiny (<= ~256 KiB per chunk).

    Per-chunk codec overhead dominates for tiny frames; reading one frame then still touches one
    small inner chunk of its shard.
    """
    k = max(1, (256 * 1024) // (4 * voxels))
    while shard_frames % k:
        k -= 1
    return k


def _atomic_write(ds: xr.Dataset, path, fill=None) -> Path:
    path = Path(path)
    with atomic_dir(path) as tmp:
        ds = ds.drop_encoding() if hasattr(ds, "drop_encoding") else ds
        for v in ds.variables.values():
            v.encoding = {}
        with warnings.catch_warnings():   # fixed-width str coords have no v3 spec yet; zarr warns
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
            ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=_encoding(ds),
                       compute=fill is None)
        if fill is not None:
            fill(tmp)
        write_manifest(tmp)   # what was written, so damage is detected when it is opened
    return path


def save_dataset(ds: xr.Dataset, path) -> Path:
    """Write ``ds`` as zarr v3 at ``path`` atomically (temporary sibling + ``os.replace``)."""
    validate_dataset(ds)
    return _atomic_write(ds, path)


def open_dataset(path, chunks="bulk", verify: str = "size") -> xr.Dataset:
    """Open a stored Dataset lazily with dask, after checking it for damage.

    ``chunks``: "bulk" (volume: one shard of frames per dask chunk; traces: on-disk chunks),
    "frame" (volume: one frame per dask chunk, for interactive frame access) or an xarray chunks
    dict/None passed through to ``xarray.open_zarr``.

    ``verify``: "size" (default: every chunk listed in the store's manifest exists with the size
    it was written with; a directory listing), "checksum" (also re-hashes every array) or "none".
    A damaged store raises :class:`~workbench.forecast.integrity.DamagedStoreError` (a
    ``ValueError``) naming the array and the chunk; zarr alone would read a missing chunk as fill
    values. Stores written before manifests existed (or by other tools) open unverified.
    Leftover temporary siblings of killed writers are removed first.
    """
    path = Path(path)
    remove_leftovers(path)
    if not path.exists():
        raise FileNotFoundError(f"no forecast dataset at {path}")
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file, not a zarr store directory")
    verify_store(path, verify)
    try:
        if chunks in ("bulk", "frame"):
            ds = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks={})
            if "volume" in ds and chunks == "frame":
                ds["volume"] = ds["volume"].chunk({"time": 1})
            elif "volume" in ds:
                st = min(VOLUME_SHARD_FRAMES, ds.sizes["time"])
                ds["volume"] = ds["volume"].chunk({"time": st})
        else:
            ds = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks=chunks)
    except (FileNotFoundError, KeyError, ValueError, TypeError, OSError) as err:
        raise ValueError(f"{str(path)!r} is not a readable forecast zarr store: "
                         f"{type(err).__name__}: {err}") from err
    validate_dataset(ds)
    return ds


def store_path(preset: str, random_state: int, root="data") -> Path:
    return Path(root) / f"{preset}-seed{int(random_state)}.zarr"


def _cache_problem(ds: xr.Dataset, preset, seed) -> str | None:
    """Why an opened cache does not hold what was asked for (``None`` when it does)."""
    want = {"preset": str(preset), "seed": int(seed)}
    have = {k: ds.attrs.get(k) for k in want}
    if str(have["preset"]) != want["preset"] or have["seed"] is None or int(have["seed"]) != want["seed"]:
        return f"its attrs say preset={have['preset']!r}, seed={have['seed']!r}"
    return None


@renamed_arguments(seed="random_state")
def cached_dataset(preset: str = "small", random_state: int = 0, root="data", progress: bool = False,
                   on_damage: str = "regenerate") -> xr.Dataset:
    """Open ``<root>/<preset>-seed<seed>.zarr``, generating it (atomically) on first use.

    The cached store is checked before it is used: it must carry a manifest, match it (no missing
    or truncated chunk) and have attrs ``preset`` / ``seed`` equal to the request. A cache that
    fails is regenerated with a warning saying why (it is deterministic in ``preset`` and
    ``seed``), or, with ``on_damage="raise"``, raises the error naming the array and chunk.
    """
    if on_damage not in ("regenerate", "raise"):
        raise ValueError(f"on_damage must be 'regenerate' or 'raise', got {on_damage!r}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"root {str(root)!r} is a file; it must be a directory for cached stores")
    seed = int(random_state)
    path = store_path(preset, seed, root)
    remove_leftovers(path)
    if path.exists():
        try:
            if not verify_store(path, "size"):
                raise DamagedStoreError(f"cached store {str(path)!r} has no manifest (written by an "
                                        "older version or another tool)")
            ds = open_dataset(path, verify="none")
            problem = _cache_problem(ds, get_config(preset).name, seed)
            if problem is None:
                return ds
            err = DamagedStoreError(f"cached store {str(path)!r} does not match preset={preset!r}, "
                                    f"seed={int(seed)}: {problem}")
        except (ValueError, KeyError) as e:
            err = e
        if on_damage == "raise":
            raise err
        warnings.warn(f"regenerating the cache: {err}", UserWarning, stacklevel=2)
    return make_dataset(preset, random_state=seed, store=path, progress=progress)


load_or_generate = deprecated_alias(cached_dataset, "load_or_generate")


_REQUIRED_ATTRS = ("frame_period_s", "voxel_size_zyx_um", "condition_names", "condition_offsets")


def validate_dataset(ds: xr.Dataset) -> xr.Dataset:
    """Check the data model; raises ``ValueError`` naming what is missing or mis-shaped."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"expected an xarray.Dataset, got {type(ds).__name__}")
    for name, dims in (("traces", ("time", "neuron")), ("stimulus", ("time", "feature")),
                       ("segmentation", ("z", "y", "x")), ("volume", ("time", "z", "y", "x"))):
        if name in ds and ds[name].dims != dims:
            raise ValueError(f"variable {name!r} has dims {ds[name].dims}, expected {dims}")
    if "traces" not in ds:
        raise ValueError("dataset has no 'traces' variable")
    if "volume" in ds and "segmentation" not in ds:
        raise ValueError("dataset has a 'volume' but no 'segmentation'")
    missing = [a for a in _REQUIRED_ATTRS if a not in ds.attrs]
    if missing:
        raise ValueError(f"dataset attrs lack {missing}")
    if int(ds.attrs["condition_offsets"][-1]) != ds.sizes["time"]:
        raise ValueError(f"last condition offset {ds.attrs['condition_offsets'][-1]} != "
                         f"{ds.sizes['time']} frames")
    return ds


#: the name before data factories became ``make_*`` (kept one release, with a FutureWarning)
generate = deprecated_alias(make_dataset, "generate")
