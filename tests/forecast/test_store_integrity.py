"""Damaged stores are detected (#15.2): missing / truncated / altered chunks, corrupt metadata,
mismatched caches and leftovers of killed writers; never read back as fill values."""

import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from workbench.forecast import DamagedStoreError, cached_dataset, cli, open_dataset, save_dataset
from workbench.forecast import dataset as dataset_mod
from workbench.forecast.integrity import MANIFEST


@pytest.fixture(scope="module")
def small_ds(tiny):
    """Traces-only copy of the tiny recording: a store of a few hundred kB, written in a blink."""
    return tiny.drop_vars(["volume", "segmentation"])


@pytest.fixture
def store(small_ds, tmp_path):
    return save_dataset(small_ds, tmp_path / "rec.zarr")


def test_store_carries_a_manifest_and_opens_intact(store, small_ds):
    assert (store / MANIFEST / "zarr.json").is_file()
    xr.testing.assert_identical(open_dataset(store, verify="checksum").load(), small_ds)


@pytest.mark.parametrize("array, chunk", [("traces", "c/3/0"), ("condition_index", "c/0"),
                                          ("stimulus", "c/1/0")])
def test_a_deleted_chunk_is_an_error_naming_array_and_chunk(store, array, chunk):
    (store / array / chunk).unlink()
    with pytest.raises(DamagedStoreError, match=f"array '{array}': chunk '{chunk}' is missing"):
        open_dataset(store)
    # opening without the check is possible, but never the default
    assert open_dataset(store, verify="none").sizes["time"] > 0


def test_a_truncated_or_altered_chunk_is_an_error(store):
    f = store / "traces" / "c" / "2" / "0"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DamagedStoreError, match="'traces': chunk 'c/2/0' is truncated"):
        open_dataset(store)
    f.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))           # same length, other bytes
    open_dataset(store)                                           # sizes agree ...
    with pytest.raises(DamagedStoreError, match="'traces': chunk contents changed"):
        open_dataset(store, verify="checksum")                    # ... the checksum does not


def test_corrupt_metadata_and_bad_paths_name_the_file(store, tmp_path):
    (store / "traces" / "zarr.json").write_text('{"zarr_format": 3, "node_')
    with pytest.raises(DamagedStoreError, match=r"traces/zarr\.json.*corrupt"):
        open_dataset(store)
    f = tmp_path / "a_file.zarr"
    f.write_text("x")
    with pytest.raises(ValueError, match="a_file.zarr.*is a file"):
        open_dataset(f)
    with pytest.raises(ValueError, match="verify must be one of"):
        open_dataset(store, verify="yes")


def test_leftovers_of_killed_writers_are_removed_on_open(store, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    from workbench._atomic import host_tag

    tag = host_tag()
    junk = [tmp_path / f".rec.zarr.p{proc.pid}-{tag}.k1.tmp", tmp_path / f".rec.zarr.old.p{proc.pid}-{tag}.k2"]
    for j in junk:
        j.mkdir()
        (j / "zarr.json").write_text("{}")
    open_dataset(store)
    assert not any(j.exists() for j in junk)


def test_interrupted_write_leaves_nothing(small_ds, tmp_path, monkeypatch):
    real = xr.Dataset.to_zarr

    def interrupted(self, store, *a, **k):
        real(self, store, *a, **k)          # the chunks are on disk ...
        raise KeyboardInterrupt             # ... when Ctrl-C arrives

    monkeypatch.setattr(xr.Dataset, "to_zarr", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(small_ds, tmp_path / "rec.zarr")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def fake_generate(small_ds, monkeypatch):
    """``make_dataset`` writing the small store with the requested attrs (no simulation)."""
    calls = []

    def gen(preset, random_state=0, store=None, progress=False):
        calls.append((preset, random_state))
        save_dataset(small_ds.assign_attrs(preset=preset, seed=int(random_state)), store)
        return open_dataset(store)

    monkeypatch.setattr(dataset_mod, "make_dataset", gen)
    return calls


def test_cache_is_checked_before_use(small_ds, tmp_path, fake_generate):
    ds = cached_dataset("tiny", random_state=0, root=tmp_path)
    assert fake_generate == [("tiny", 0)] and ds.attrs["seed"] == 0
    cached_dataset("tiny", random_state=0, root=tmp_path)
    assert len(fake_generate) == 1                          # a good cache is reused
    # a store whose attrs say another seed is regenerated, with a warning saying why
    save_dataset(small_ds.assign_attrs(preset="tiny", seed=1), tmp_path / "tiny-seed0.zarr")
    with pytest.warns(UserWarning, match="seed=1"):
        ds = cached_dataset("tiny", random_state=0, root=tmp_path)
    assert ds.attrs["seed"] == 0 and len(fake_generate) == 2
    # a damaged cache: an error naming the chunk on request, else regenerated with a warning
    (tmp_path / "tiny-seed0.zarr" / "traces" / "c" / "1" / "0").unlink()
    with pytest.raises(DamagedStoreError, match="'traces': chunk 'c/1/0' is missing"):
        cached_dataset("tiny", random_state=0, root=tmp_path, on_damage="raise")
    with pytest.warns(UserWarning, match="regenerating.*c/1/0"):
        cached_dataset("tiny", random_state=0, root=tmp_path)
    assert len(fake_generate) == 3
    # a cache without a manifest (older version) is regenerated too
    shutil.rmtree(tmp_path / "tiny-seed0.zarr" / MANIFEST)
    with pytest.warns(UserWarning, match="no manifest"):
        cached_dataset("tiny", random_state=0, root=tmp_path)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="root .*file.* is a file"):
        cached_dataset("tiny", random_state=0, root=f)


def test_load_or_generate_is_a_deprecated_alias(tmp_path, fake_generate):
    from workbench.forecast import load_or_generate

    with pytest.warns(FutureWarning, match="cached_dataset"):
        load_or_generate("tiny", seed=0, root=tmp_path)


def test_cli_reports_damage_without_a_traceback(store, tmp_path, capsys):
    (store / "traces" / "c" / "0" / "0").unlink()
    assert cli.main(["evaluate", "--data", str(store), "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert "'traces': chunk 'c/0/0' is missing" in err and "Traceback" not in err
    f = tmp_path / "notadir"
    f.write_text("x")
    assert cli.main(["generate", "--preset", "tiny", "--root", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err
    models = tmp_path / "res" / "models"
    models.mkdir(parents=True)
    good = pickle.dumps({"a": np.arange(100)})
    (models / "mean-C4.pkl").write_bytes(good[: len(good) // 2])
    assert cli._load_model.__name__ == "_load_model"
    with pytest.raises(ValueError, match="mean-C4.pkl.*truncated or corrupt"):
        cli._load_model(models / "mean-C4.pkl")


def test_cli_unexpected_errors_are_one_line(monkeypatch, capsys):
    def boom(ns):
        raise RuntimeError("zstd: corrupted block")         # a codec error from a damaged chunk

    monkeypatch.setattr(cli, "cmd_generate", boom)
    monkeypatch.delenv("WORKBENCH_TRACEBACK", raising=False)
    assert cli.main(["generate", "--preset", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: zstd: corrupted block" in err and "Traceback" not in err
    monkeypatch.setenv("WORKBENCH_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        cli.main(["generate", "--preset", "tiny"])


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_any_damaged_chunk_of_any_array_is_named(store, seed):
    """Delete, truncate, empty or extend one chunk file of a randomly chosen array."""
    import json

    rng = np.random.default_rng(seed)
    manifest = json.loads((store / MANIFEST / "zarr.json").read_text())["attributes"]["workbench_manifest"]
    arrays = sorted(a for a, e in manifest["arrays"].items() if e["chunks"])
    array = arrays[rng.integers(len(arrays))]
    chunks = sorted(manifest["arrays"][array]["chunks"])
    chunk = chunks[rng.integers(len(chunks))]
    f = store / array / chunk
    raw = f.read_bytes()
    action = ["delete", "truncate", "empty", "extend"][seed % 4]
    if action == "delete":
        f.unlink()
    else:
        f.write_bytes({"truncate": raw[: len(raw) // 2], "empty": b"", "extend": raw + b"\0"}[action])
    with pytest.raises(DamagedStoreError, match=f"array '{array}': chunk '{chunk}'"):
        open_dataset(store)
