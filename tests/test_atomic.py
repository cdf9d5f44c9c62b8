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
