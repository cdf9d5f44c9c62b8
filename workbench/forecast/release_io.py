"""Reading the release's zarr arrays from a local folder or any fsspec URL, lazily and safely.

- ``location(root)`` accepts a path or a URL (``gs://``, ``https://``, ``s3://``, any fsspec
  protocol); remote arrays open as zarr stores over fsspec (``zarr.storage.FsspecStore``), so only
  the chunks a computation touches are fetched. ``gs://`` needs ``gcsfs`` (the ``cloud`` extra),
  ``http(s)://`` ``aiohttp`` (``fsspec[http]``, in the ``forecast`` extra).
- :func:`lazy` wraps an array as dask, one dask chunk per zarr chunk (or shard). A chunk missing
  from the store reads as NaN with a warning naming the array and the chunk, never as the
  array's fill value (zeros): the release is written without empty chunks only for label
  arrays, where a missing chunk is background and keeps the fill value (``missing="fill"``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

__all__ = ["Location", "location", "lazy", "MissingChunkWarning"]


class MissingChunkWarning(UserWarning):
    """A chunk of a release array is absent from its store; its values read as NaN."""


class Location:
    """A release root: a local folder or a URL, with ``/`` joining and existence checks."""

    def __init__(self, root, storage_options=None):
        text = str(root)
        self.is_url = "://" in text and not text.startswith("file://")
        self.storage_options = dict(storage_options or {})
        if text.startswith("file://"):
            text = text[len("file://"):]
        self.root = text.rstrip("/") if self.is_url else Path(text)

    def __truediv__(self, sub: str) -> Location:
        out = Location.__new__(Location)
        out.is_url, out.storage_options = self.is_url, self.storage_options
        out.root = f"{self.root}/{sub}" if self.is_url else self.root / sub
        return out

    def __str__(self):
        return str(self.root)

    def store(self):
        """A read-only zarr store rooted here."""
        from zarr.storage import FsspecStore

        if not self.is_url:
            return str(self.root)
        try:
            return FsspecStore.from_url(str(self.root), storage_options=self.storage_options or None,
                                        read_only=True)
        except ImportError as e:
            protocol = str(self.root).split("://", 1)[0]
            extra = "cloud" if protocol in ("gs", "gcs", "s3") else "forecast"
            raise ImportError(f"reading {self.root} needs the fsspec filesystem for {protocol!r}: "
                              f"{e} (pip install 'workbench[{extra}]')") from e

    def exists(self) -> bool:
        if not self.is_url:
            return self.root.exists()
        return True                                     # remote: found out when opened

    def read_json(self):
        """The JSON document here (``None`` if it does not exist)."""
        if not self.is_url:
            if not self.root.is_file():
                return None
            return json.loads(self.root.read_text())
        import fsspec

        try:
            with fsspec.open(str(self.root), "rt", **self.storage_options) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None

    @property
    def name(self) -> str:
        return PurePosixPath(str(self.root)).name


def location(root, storage_options=None) -> Location:
    return root if isinstance(root, Location) else Location(root, storage_options)


def open_node(loc: Location, what: str, error):
    """Open a zarr array or group at ``loc``; ``error`` (an exception class) names what is missing."""
    import zarr

    if not loc.exists():
        raise error(f"missing array {what!r}: nothing at {loc}")
    try:
        return zarr.open(store=loc.store(), mode="r")
    except (FileNotFoundError, KeyError) as e:
        raise error(f"missing array {what!r}: nothing at {loc}") from e
    except ImportError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise error(f"cannot open {what!r} at {loc} as zarr: {type(e).__name__}: {e}") from e


class _NanForMissing:
    """Array-like over a zarr array whose missing chunks read as NaN (with a warning).

    With ``nan_missing=False`` missing chunks keep the fill value (label arrays). Either way a chunk
    that cannot be decoded (truncated, corrupt) is a ``ValueError`` naming the array, the block and
    the store, not a bare codec error.
    """

    def __init__(self, arr, name: str, nan_missing: bool = True):
        self.arr = arr
        self.name = name
        self.nan_missing = nan_missing
        self.shape = tuple(arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.ndim = len(self.shape)
        self.grid = tuple(arr.shards or arr.chunks)

    def _missing(self, coords) -> bool:
        from zarr.core.sync import sync

        key = self.arr.metadata.encode_chunk_key(coords)
        path = self.arr.store_path.path
        return not sync(self.arr.store.exists(f"{path}/{key}" if path else key))

    def _read(self, index):
        try:
            return np.asarray(self.arr[index])
        except Exception as err:  # noqa: BLE001 - codec errors have many types; re-raised with names
            raise ValueError(f"release array {self.name!r}: the chunk(s) at {index} cannot be read "
                             f"(truncated or corrupt?) in store {self.arr.store_path}: "
                             f"{type(err).__name__}: {err}") from err

    def __getitem__(self, index):
        out = self._read(index)
        if out.size == 0 or self.dtype.kind != "f" or not self.nan_missing:
            return out
        fill = self.arr.fill_value
        if not (np.all(out == fill) or (fill is not None and np.isnan(fill) and np.all(np.isnan(out)))):
            return out                                  # a chunk with data: not missing
        index = index if isinstance(index, tuple) else (index,)
        starts = [(ix.start or 0) if isinstance(ix, slice) else int(ix) for ix in index]
        stops = [(ix.stop if ix.stop is not None else n) if isinstance(ix, slice) else int(ix) + 1
                 for ix, n in zip(index, self.shape)]
        first = [s // g for s, g in zip(starts, self.grid)]
        last = [(e - 1) // g for e, g in zip(stops, self.grid)]
        out = out.astype(self.dtype, copy=True)
        for coords in np.ndindex(*[b - a + 1 for a, b in zip(first, last)]):   # chunks of this block
            c = tuple(a + k for a, k in zip(first, coords))
            if self._missing(c):
                sel = tuple(slice(max(ci * g, s) - s, min((ci + 1) * g, e) - s)
                            for ci, g, s, e in zip(c, self.grid, starts, stops))
                out[sel] = np.nan
                warnings.warn(f"release array {self.name!r}: chunk {'/'.join(map(str, c))} is missing from "
                              f"its store; its values read as NaN", MissingChunkWarning, stacklevel=2)
        return out


def lazy(arr, name: str, missing: str = "nan"):
    """A dask array over zarr array ``arr``, one dask chunk per stored chunk (or shard).

    ``missing="nan"``: absent chunks read as NaN with a :class:`MissingChunkWarning`;
    ``"fill"``: as the array's fill value (label arrays, where absence means background).
    """
    import dask.array as da

    if missing not in ("nan", "fill"):
        raise ValueError(f"missing must be 'nan' or 'fill', got {missing!r}")
    grid = tuple(arr.shards or arr.chunks)
    src = _NanForMissing(arr, name, nan_missing=missing == "nan")
    return da.from_array(src, chunks=grid, asarray=False, fancy=False, lock=False,
                         meta=np.empty((0,) * len(grid), dtype=arr.dtype),
                         name=f"release-{name}-{da.core.tokenize(str(arr.store_path), name)}")
