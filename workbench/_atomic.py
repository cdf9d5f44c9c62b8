"""Atomic writes: write into a temporary sibling, then ``os.replace`` it onto the target.

Readers see either the old file (or directory store) or the complete new one, never a
half-written one, and a failed write leaves nothing behind.

Temporary siblings are named ``.<name>.p<pid>-<host>.<random>.tmp`` (the new content) and
``.<name>.old.p<pid>-<host>.<random>`` (the old content while it is swapped out), ``<host>`` a
short hash of the host name. A writer that is killed (SIGKILL, power loss) cannot clean up;
:func:`remove_leftovers` removes such siblings once the process that made them is gone (judged
only on the host that made them; elsewhere, e.g. on a shared file system, and for names without
a pid, once they are old), and every writer and reader of a store calls it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir", "atomic_file", "remove_leftovers", "LEFTOVER_MIN_AGE_S"]

#: siblings without a recorded pid are left alone until they are this old (a concurrent writer)
LEFTOVER_MIN_AGE_S = 3600.0

_PID = re.compile(r"\.p(\d+)-([0-9a-f]{8})\.")


def host_tag() -> str:
    """8 hex digits naming this host in temporary names (pids are only meaningful on their host)."""
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def _prefix(path: Path, old: bool = False) -> str:
    return f".{path.name}.{'old.' if old else ''}p{os.getpid()}-{host_tag()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _is_leftover(sibling: Path, name: str) -> bool:
    n = sibling.name
    if not n.startswith(f".{name}."):
        return False
    rest = n[len(name) + 2:]
    return rest.endswith(".tmp") or rest.startswith("old.")


def remove_leftovers(path: str | os.PathLike, min_age_s: float = LEFTOVER_MIN_AGE_S) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by interrupted or killed writers.

    A sibling whose name records a process id is removed when that process no longer runs; one
    without (written by an older version) when it is older than ``min_age_s`` seconds, so a
    concurrent writer's work in progress is never touched. Returns the removed paths.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return []
    removed = []
    now = time.time()
    for sib in parent.iterdir():
        if not _is_leftover(sib, path.name):
            continue
        m = _PID.search(sib.name[len(path.name) + 1:])
        if m is not None and m.group(2) == host_tag():
            if _alive(int(m.group(1))):
                continue
        else:                               # another host's (shared file system) or no pid: by age
            try:
                if now - sib.lstat().st_mtime < min_age_s:
                    continue
            except FileNotFoundError:
                continue
        _remove(sib)
        if not sib.exists():
            removed.append(sib)
    return removed


def _remove(p: Path, tries: int = 20, wait_s: float = 0.05) -> None:
    """Delete a file or tree, retrying while a background writer (zarr's I/O thread after Ctrl-C)
    may still be putting files into it."""
    for _ in range(tries):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        if not (p.exists() or p.is_symlink()):
            return
        time.sleep(wait_s)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path`` (e.g. for a zarr directory store).

    On success it takes the place of ``path``: an existing ``path`` is first renamed aside, the new
    directory renamed in, then the old one deleted, so the target never holds a partial store.
    On error (``KeyboardInterrupt`` included) the temporary directory is removed and ``path`` is
    untouched. Leftovers of earlier killed writers of ``path`` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        trash = None
        if path.exists() or path.is_symlink():
            trash = Path(tempfile.mkdtemp(prefix=_prefix(path, old=True), dir=path.parent))
            os.replace(path, trash / path.name)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    if trash is not None:
        _remove(trash)
