"""Forecast stores: region-by-region zarr writes, atomic swap, slice reads, trace painting."""

import numpy as np
import pytest
import xarray as xr

from workbench.forecast.baselines import MeanBaseline
from workbench.forecast.protocol import windows
from workbench.forecast.segments import segment_means
from workbench.forecast.video import VideoForecaster
from workbench.forecast.video.store import (
    open_forecast_store,
    paint_traces,
    read_plane,
    write_forecast_store,
)
from workbench.forecast.video.viewer_data import PlaneCache, cached_video_store


@pytest.fixture(scope="module")
def video(tiny):
    return VideoForecaster(context=2, horizon=3, widths=(4, 8), emb_dim=8, batch_size=2, n_steps=2,
                           n_threads=1).fit(tiny)


def test_paint_traces_round_trips_through_segment_means(tiny):
    seg = tiny["segmentation"].values
    n = tiny.sizes["neuron"]
    tr = np.random.default_rng(0).normal(size=(2, 3, n)).astype(np.float32)
    vol = paint_traces(tr, seg)
    assert vol.shape == (2, 3, *seg.shape) and np.isnan(vol[..., seg == 0]).all()
    np.testing.assert_allclose(segment_means(vol, seg, n), tr, rtol=1e-6)
    with pytest.raises(ValueError, match="neurons"):
        paint_traces(tr[..., :3], seg)


def test_video_store_matches_direct_prediction(tiny, video, tmp_path):
    path = tmp_path / "fc.zarr"
    w = windows(tiny, "test", context=2, horizon=3)
    write_forecast_store(path, video, tiny, max_windows=5, block_windows=2)
    st = open_forecast_store(path)
    assert st["forecast"].dims == ("window", "lead", "z", "y", "x")
    assert st.sizes["window"] == 5 and st.attrs["kind"] == "video"
    assert set(st["condition"].values) <= set(w["condition"].values)
    direct = video.predict_arrays(tiny["volume"].values, st["start"].values)
    np.testing.assert_allclose(st["forecast"].values, direct, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(read_plane(st, "forecast", 3, 2, 1), direct[3, 1, 1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(st["trace_forecast"].values,
                               segment_means(direct, tiny["segmentation"].values, tiny.sizes["neuron"]),
                               rtol=1e-5, atol=1e-6)
    # rewriting swaps the store atomically and leaves no temporary siblings behind
    write_forecast_store(path, video, tiny, max_windows=3, block_windows=2)
    assert open_forecast_store(path).sizes["window"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["fc.zarr"]


def test_trace_baseline_store_is_labelled(tiny, tmp_path):
    mean = MeanBaseline(context=4).fit(tiny)
    path = write_forecast_store(tmp_path / "mean.zarr", mean, tiny, max_windows=2)
    st = open_forecast_store(path)
    assert st.attrs["kind"] == "trace rendered as video" and "mean" in st.attrs["label"]
    expect = mean.predict(tiny, st["start"].values)
    np.testing.assert_allclose(st["trace_forecast"].values, expect, rtol=1e-6)


def test_failed_write_leaves_old_store(tiny, video, tmp_path):
    path = write_forecast_store(tmp_path / "fc.zarr", video, tiny, max_windows=2)
    with pytest.raises(TypeError, match="source"):
        write_forecast_store(path, object(), tiny)
    bad = tiny.drop_vars("volume")
    with pytest.raises((KeyError, ValueError)):
        write_forecast_store(path, video, bad, max_windows=2)
    assert open_forecast_store(path).sizes["window"] == 2
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(FileNotFoundError, match="no forecast store"):
        open_forecast_store(tmp_path / "nope.zarr")
    assert isinstance(open_forecast_store(path), xr.Dataset)


def test_store_scores_equal_direct_scoring(tiny, tmp_path):
    """MAE from a store's traces == part 1's scoring of the same forecaster on the same windows."""
    from workbench.forecast.video.compare import score_methods
    from workbench.forecast.video.viewer_data import scores_by_method

    mean = MeanBaseline(context=4).fit(tiny)
    path = write_forecast_store(tmp_path / "mean.zarr", mean, tiny, max_windows=6)
    from_store = scores_by_method({"mean": path}, tiny)
    direct = score_methods({"mean": mean}, tiny, max_windows=6)
    np.testing.assert_allclose(from_store["mae"].values, direct["mae"].values, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(from_store["mae_train_conditions"].values,
                               direct["mae_train_conditions"].values, rtol=1e-5)


def test_viewer_video_store_from_a_stimulus_conditioned_checkpoint(tiny, tmp_path):
    est = VideoForecaster(context=2, horizon=3, widths=(4, 8), emb_dim=8, batch_size=2, n_steps=2,
                          stimulus=True, n_threads=1).fit(tiny)
    est.save_checkpoint(tmp_path / "ck.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        cached_video_store(tiny, tmp_path / "dir", checkpoint=tmp_path / "missing.pt")
    path = cached_video_store(tiny, tmp_path / "dir", max_windows=3, uncertainty=False,
                              checkpoint=tmp_path / "ck.pt")
    st = open_forecast_store(path)
    direct = est.predict_arrays(tiny["volume"].values, st["start"].values,
                                stimulus=tiny["stimulus"].values)
    np.testing.assert_allclose(st["forecast"].values, direct, rtol=1e-6, atol=1e-7)
    assert '"stimulus": true' in st.attrs["training"]
    # a damaged store is an error naming the chunk; the cache rebuilds it (with a warning)
    chunk = sorted(p for p in (path / "trace_forecast").rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    chunk.unlink()
    with pytest.raises(ValueError, match="'trace_forecast': chunk .* is missing"):
        open_forecast_store(path)
    with pytest.warns(UserWarning, match="rebuilding forecast store"):
        cached_video_store(tiny, tmp_path / "dir", max_windows=3, uncertainty=False,
                           checkpoint=tmp_path / "ck.pt")
    assert open_forecast_store(path)["forecast"].shape == st["forecast"].shape


def test_plane_cache_is_keyed_bounded_and_read_only():
    reads = []
    cache = PlaneCache(max_bytes=3 * 4 * 4 * 8)          # room for three 4x4 float64 planes

    def read(v):
        reads.append(v)
        return np.full((4, 4), float(v))
    a = cache.get(("store-a", 0, 1, 2), lambda: read(1))
    assert cache.get(("store-a", 0, 1, 2), lambda: read(99)) is a and reads == [1]
    b = cache.get(("store-b", 0, 1, 2), lambda: read(2))      # same indices, other store
    assert b[0, 0] == 2 and reads == [1, 2]
    with pytest.raises(ValueError):
        a[0, 0] = 5.0
    for v in (3, 4):
        cache.get(("store-a", v), lambda v=v: read(v))
    assert len(cache) == 3 and cache.nbytes == 3 * a.nbytes
    assert ("store-a", 0, 1, 2) not in cache                   # least recently used went first
    with pytest.raises(ValueError, match="2-d"):
        cache.get("bad", lambda: np.zeros(3))
