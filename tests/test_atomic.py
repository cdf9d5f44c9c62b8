"""Atomic writes: the target holds the old or the complete new content, never a partial one."""

import pytest

from workbench._atomic import atomic_dir, atomic_file


def _siblings(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_atomic_file_replaces_on_success_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "first"
    assert _siblings(tmp_path) == ["out.txt"]


def test_atomic_dir_swaps_a_whole_directory(tmp_path):
    target = tmp_path / "store.zarr"
    with atomic_dir(target) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "a").write_text("1")
        assert not target.exists()  # nothing visible at the target until the swap
    assert (target / "a").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # old content gone, not merged
    assert _siblings(tmp_path) == ["store.zarr"]


def test_atomic_dir_failure_keeps_the_old_store(tmp_path):
    target = tmp_path / "nested" / "store.zarr"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("partial")
        raise ValueError("write failed")
    assert (target / "a").read_text() == "old"
    assert _siblings(target.parent) == ["store.zarr"]


def _dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_killed_writers_are_removed_but_live_ones_kept(tmp_path):
    import os
    import time

    from workbench._atomic import host_tag, remove_leftovers

    target = tmp_path / "store.zarr"
    dead = _dead_pid()
    tag = host_tag()
    for name in (f".store.zarr.p{dead}-{tag}.abc.tmp", f".store.zarr.old.p{dead}-{tag}.xyz"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "chunk").write_text("stale")
    live = tmp_path / f".store.zarr.p{os.getpid()}-{tag}.live.tmp"       # a writer at work: kept
    live.mkdir()
    legacy = tmp_path / ".store.zarr.oldstyle.tmp"                  # no pid, recent: kept
    legacy.mkdir()
    other = tmp_path / f".other.zarr.p{dead}-{tag}.q.tmp"          # another store's: kept
    other.mkdir()
    remote = tmp_path / f".store.zarr.p{dead}-00000000.r.tmp"       # another host's, recent: kept
    remote.mkdir()
    removed = remove_leftovers(target)
    assert sorted(p.name for p in removed) == sorted([f".store.zarr.p{dead}-{tag}.abc.tmp",
                                                      f".store.zarr.old.p{dead}-{tag}.xyz"])
    assert live.exists() and legacy.exists() and other.exists() and remote.exists()
    old = time.time() - 7200
    os.utime(legacy, (old, old))
    assert remove_leftovers(target) == [legacy]
    os.utime(remote, (old, old))
    assert remove_leftovers(target) == [remote]                     # ... until it is old
    # and every writer cleans up before it writes
    (tmp_path / f".store.zarr.p{dead}-{tag}.again.tmp").mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    assert _siblings(tmp_path) == sorted([live.name, other.name, "store.zarr"])


def test_atomic_dir_cleans_up_after_keyboard_interrupt(tmp_path):
    target = tmp_path / "store.zarr"
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "part").write_text("half")
        raise KeyboardInterrupt
    assert _siblings(tmp_path) == []
