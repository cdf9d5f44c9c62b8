import numpy as np
import pytest
import xarray as xr

from workbench.forecast import (
    cached_dataset,
    make_dataset,
    open_dataset,
    save_dataset,
    segment_means,
)


def test_data_model(tiny):
    ds = tiny
    assert ds["volume"].dims == ("time", "z", "y", "x") and ds["volume"].dtype == np.float32
    assert ds["segmentation"].dims == ("z", "y", "x")
    assert ds["traces"].dims == ("time", "neuron")
    assert ds["stimulus"].dims == ("time", "feature") and ds.sizes["feature"] == 26
    for c in ("condition", "split", "condition_index", "time_s", "label", "centroid_zyx"):
        assert c in ds.coords
    assert set(np.unique(ds["split"].values)) == {"train", "val", "test", "context", "trim"}
    assert list(ds.attrs["condition_names"])[3] == "taxis"
    assert ds.attrs["heldout_conditions"] == ["taxis"]
    vol = ds["volume"].values
    assert vol.min() >= -0.25 and vol.max() <= 1.5
    seg = ds["segmentation"].values
    assert seg.max() == ds.sizes["neuron"] and set(np.unique(seg)) == set(range(seg.max() + 1))
    # traces are the segment means of the volume
    np.testing.assert_allclose(ds["traces"].values[:50],
                               segment_means(vol[:50], seg, ds.sizes["neuron"]), rtol=1e-5, atol=1e-6)
    # release proportions of conditions
    off = np.asarray(ds.attrs["condition_offsets"])
    rel = np.array([0, 649, 2422, 3078, 3735, 5047, 5638, 6623, 7279, 7879])
    np.testing.assert_allclose(off / off[-1], rel / rel[-1], atol=1e-3)


def test_deterministic_and_seeded(tiny):
    again = make_dataset("tiny", random_state=0)
    xr.testing.assert_identical(again, tiny)
    other = make_dataset("tiny", random_state=1)
    assert not np.allclose(other["traces"].values[:, :5], tiny["traces"].values[:, :5])
    with pytest.warns(FutureWarning, match="random_state"):  # the old name, one more release
        xr.testing.assert_identical(make_dataset("tiny", seed=0), tiny)
    from workbench.forecast import generate  # the name before data factories became make_*

    with pytest.warns(FutureWarning, match="make_dataset"):
        xr.testing.assert_identical(generate("tiny", random_state=0), tiny)


def test_store_roundtrip_lazy(tiny, tmp_path):
    path = save_dataset(tiny, tmp_path / "t.zarr")
    ds = open_dataset(path)
    assert ds["volume"].chunks is not None and ds["traces"].chunks is not None
    xr.testing.assert_identical(ds.load(), tiny)
    assert open_dataset(path, chunks="frame")["volume"].data.chunksize[0] == 1


def test_cached_dataset_caches(tmp_path):
    ds = cached_dataset("tiny", random_state=3, root=tmp_path)
    assert (tmp_path / "tiny-seed3.zarr").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp leftovers
    mtime = (tmp_path / "tiny-seed3.zarr").stat().st_mtime_ns
    ds2 = cached_dataset("tiny", random_state=3, root=tmp_path)
    assert (tmp_path / "tiny-seed3.zarr").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(ds["traces"].values, ds2["traces"].values)


def test_bad_preset_and_length():
    with pytest.raises(ValueError, match="unknown preset"):
        make_dataset("huge")
    with pytest.raises(ValueError, match="n_frames"):
        make_dataset("tiny", n_frames=500)


def test_neighbouring_cells_correlate_more(tiny):
    x = tiny["traces"].values
    c = np.corrcoef(x.T)
    pos = tiny["centroid_zyx"].values
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    iu = np.triu_indices_from(d, 1)
    near = c[iu][d[iu] < np.quantile(d[iu], 0.1)].mean()
    far = c[iu][d[iu] > np.quantile(d[iu], 0.9)].mean()
    assert near > far + 0.05


def test_failed_write_leaves_nothing(tiny, tmp_path, monkeypatch):
    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_dataset(tiny, tmp_path / "x.zarr")
    assert list(tmp_path.iterdir()) == []
