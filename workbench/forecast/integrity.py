"""Damage detection for the zarr stores this project writes: a manifest of every chunk.

:func:`write_manifest` runs inside the atomic writer, after the last chunk is written and before
the store is moved into place, and records per array every chunk file (stored shards included)
with its size, plus one checksum (BLAKE2b over the chunk names and bytes) per array and per
metadata document. The manifest is the attributes of an empty zarr group ``workbench_manifest``
inside the store, so zarr and xarray see a valid hierarchy (a loose file would make zarr warn)
and xarray, which reads one group, does not show it. :func:`verify_store` checks a store against it:

- ``"size"`` (the default for :func:`~workbench.forecast.open_dataset`): every metadata document
  parses and every chunk in the manifest exists with its recorded size. This is a directory
  listing, cheap at any scale, and catches deleted and truncated chunks.
- ``"checksum"``: also re-hashes every array (reads the whole store once) and catches chunks whose
  bytes changed but not their length.

A failure raises :class:`DamagedStoreError` (a ``ValueError``) naming the store, the array and the
chunk. Zarr itself cannot tell: an absent chunk reads as the array's fill value (zero for
``condition_index``, NaN for floats), which is how a damaged store used to load as valid data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["MANIFEST", "DamagedStoreError", "write_manifest", "verify_store", "read_metadata_checked"]

MANIFEST = "workbench_manifest"   # a zarr group whose attributes hold the manifest
_FORMAT = 1
_LEVELS = ("size", "checksum", "none")


class DamagedStoreError(ValueError):
    """A stored Dataset does not match the manifest written with it (missing / truncated chunks)."""


def _arrays(root: Path):
    """``{array path: directory}`` for every zarr v3 array node under ``root``."""
    out = {}
    for meta in sorted(root.rglob("zarr.json")):
        if meta.parent.name == MANIFEST:
            continue
        doc = read_metadata_checked(meta)
        if doc.get("node_type") == "array":
            out[meta.parent.relative_to(root).as_posix()] = meta.parent
    return out


def read_metadata_checked(path: Path) -> dict:
    """A zarr.json document; an unreadable one is a :class:`DamagedStoreError` naming the file."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedStoreError(f"metadata file {str(path)!r} is corrupt or unreadable "
                                f"({type(err).__name__}: {err})") from None
    if not isinstance(doc, dict):
        raise DamagedStoreError(f"metadata file {str(path)!r} is not a JSON object")
    return doc


def _chunk_files(adir: Path) -> list[str]:
    """Every file of an array but its metadata (zarr v3 arrays are leaves: no child nodes)."""
    return sorted(p.relative_to(adir).as_posix() for p in adir.rglob("*")
                  if p.is_file() and p != adir / "zarr.json")


def _digest(adir: Path, names) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in names:
        h.update(name.encode() + b"\0")
        with open(adir / name, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def write_manifest(root) -> Path:
    """Record every array's chunks (name, size) and checksum in ``<root>/workbench_manifest``."""
    root = Path(root)
    arrays = {}
    for name, adir in _arrays(root).items():
        files = _chunk_files(adir)
        arrays[name] = {"chunks": {f: os.path.getsize(adir / f) for f in files},
                        "blake2b": _digest(adir, files),
                        "metadata_blake2b": _digest(adir, ["zarr.json"])}
    path = root / MANIFEST
    path.mkdir(exist_ok=True)
    doc = {"zarr_format": 3, "node_type": "group",
           "attributes": {"workbench_manifest": {"format": _FORMAT, "arrays": arrays}}}
    (path / "zarr.json").write_text(json.dumps(doc, sort_keys=True))
    return path


def verify_store(root, level: str = "size") -> bool:
    """Check the store at ``root`` against its manifest; ``False`` when it has none.

    Raises :class:`DamagedStoreError` naming the array and the chunk on the first problem.
    """
    if level not in _LEVELS:
        raise ValueError(f"verify must be one of {_LEVELS}, got {level!r}")
    root = Path(root)
    if level == "none":
        return False
    if root.is_file():
        raise DamagedStoreError(f"{str(root)!r} is a file, not a zarr store directory")
    for meta in sorted(root.rglob("zarr.json")):   # every metadata document parses
        read_metadata_checked(meta)
    mpath = root / MANIFEST / "zarr.json"
    if not mpath.is_file():
        return False
    try:
        manifest = json.loads(mpath.read_text())["attributes"]["workbench_manifest"]
        arrays = manifest["arrays"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DamagedStoreError(f"manifest {str(mpath)!r} is corrupt ({type(err).__name__}: {err})") from None
    for name, entry in arrays.items():
        adir = root / name
        if not (adir / "zarr.json").is_file():
            raise DamagedStoreError(f"store {str(root)!r}: array {name!r} is missing (no {name}/zarr.json)")
        for chunk, size in entry["chunks"].items():
            f = adir / chunk
            try:
                actual = f.stat().st_size
            except FileNotFoundError:
                raise DamagedStoreError(f"store {str(root)!r}: array {name!r}: chunk {chunk!r} is missing "
                                        f"(file {str(f)!r})") from None
            if actual != size:
                raise DamagedStoreError(f"store {str(root)!r}: array {name!r}: chunk {chunk!r} is truncated "
                                        f"or altered ({actual} bytes, {size} written; file {str(f)!r})")
        if level == "checksum":
            if _digest(adir, ["zarr.json"]) != entry["metadata_blake2b"]:
                raise DamagedStoreError(f"store {str(root)!r}: array {name!r}: metadata "
                                        f"{str(adir / 'zarr.json')!r} changed since it was written")
            if _digest(adir, sorted(entry["chunks"])) != entry["blake2b"]:
                raise DamagedStoreError(f"store {str(root)!r}: array {name!r}: chunk contents changed "
                                        "since they were written (checksum mismatch)")
    return True
