import functools
import http.server
import shutil
import threading
import warnings

import numpy as np
import pytest
import zarr

from workbench.forecast import protocol, segment_means
from workbench.forecast.release import (
    MissingChunkWarning,
    ReleaseLayoutError,
    coarse_segmentation,
    estimate_trial_phase,
    open_release,
    write_release_layout,
)

N_FRAMES = 400     # a short crop keeps the (x, y, z, t=1)-chunked fixture small


@pytest.fixture(scope="module")
def crop(tiny):
    return tiny.isel(time=slice(0, N_FRAMES))


@pytest.fixture(scope="module")
def release_dir(crop, tmp_path_factory):
    return write_release_layout(crop, tmp_path_factory.mktemp("rel") / "20240930", trace_chunks=(128, 32))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_root(release_dir):
    """The release-layout fixture served over HTTP by a local server (offline)."""
    pytest.importorskip("aiohttp")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(release_dir.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{release_dir.name}", release_dir
    finally:
        server.shutdown()
        server.server_close()


def test_layout_is_the_release_layout(release_dir, crop):
    tr = zarr.open_array(str(release_dir / "traces"), mode="r")
    assert tr.metadata.zarr_format == 3 and tr.shape == (N_FRAMES, crop.sizes["neuron"])
    assert tr.metadata.dimension_names is None
    v = zarr.open_array(str(release_dir / "df_over_f_xyz_chunked" / "s0"), mode="r")
    assert v.shape == (28, 20, 4, N_FRAMES)                       # x, y, z, t
    assert zarr.open_array(str(release_dir / "df_over_f_xyz_chunked" / "s1"), mode="r").shape == (14, 10, 4, N_FRAMES)
    assert zarr.open_array(str(release_dir / "segmentation"), mode="r").shape == (28, 20, 4)
    assert zarr.open_array(str(release_dir / "stimuli_features"), mode="r").shape == (N_FRAMES, 26)
    pe = zarr.open_array(str(release_dir / "position_embedding"), mode="r")
    assert pe.metadata.zarr_format == 2 and pe.shape == (crop.sizes["neuron"], 192)
    assert (release_dir / "segmentation" / "dataframe.json").is_file()
    assert (release_dir / "traces_rastermap_sorted" / "sorting.json").is_file()


def test_open_release_roundtrip_lazy(release_dir, crop):
    ds = open_release(release_dir, scale="s0", centroids=True)
    assert ds["volume"].dims == ("time", "z", "y", "x") and ds["volume"].chunks is not None
    np.testing.assert_array_equal(ds["volume"].isel(time=[0, 170]).values, crop["volume"].isel(time=[0, 170]).values)
    np.testing.assert_array_equal(ds["segmentation"].values, crop["segmentation"].values)
    np.testing.assert_array_equal(ds["traces"].values, crop["traces"].values)
    rel = np.asarray(protocol.RELEASE_CONDITION_OFFSETS)
    np.testing.assert_array_equal(ds.attrs["condition_offsets"], np.round(rel / rel[-1] * N_FRAMES))
    assert ds.attrs["source"] == "zapbench-release" and ds.attrs["n_labels"] == crop.sizes["neuron"]
    np.testing.assert_allclose(ds.attrs["voxel_size_zyx_um"], [4.0, 0.406, 0.406])
    assert np.all(np.isfinite(ds["centroid_zyx"].values))
    np.testing.assert_allclose(segment_means(ds["volume"][:20].values, ds["segmentation"].values, ds.sizes["neuron"]),
                               ds["traces"][:20].values, rtol=1e-5, atol=1e-6)
    # the extra arrays: the position embedding and the rastermap-sorted traces with their order
    assert ds["position_embedding"].dims == ("neuron", "embedding") and ds.sizes["embedding"] == 192
    order = ds["rastermap_order"].values
    np.testing.assert_array_equal(ds["traces_rastermap_sorted"].values, crop["traces"].values[:, order])


def test_coarse_scale_uses_zapbench_segmentation_sampling(release_dir, crop):
    ds = open_release(release_dir, scale="s2")
    assert ds["volume"].shape == (N_FRAMES, 4, 5, 7) and ds["segmentation"].shape == (4, 5, 7)
    np.testing.assert_allclose(ds.attrs["voxel_size_zyx_um"], [4.0, 1.624, 1.624])
    # ZAPBench: slice(f // 2, None, f) in x and y (not [::f] from 0)
    np.testing.assert_array_equal(ds["segmentation"].values, crop["segmentation"].values[:, 2::4, 2::4][:, :5, :7])
    x = np.arange(10 * 9).reshape(10, 9, 1)
    np.testing.assert_array_equal(coarse_segmentation(x, 2, (5, 4))[..., 0], x[1::2, 1::2, 0][:5, :4])
    assert open_release(release_dir, scale=None, extras=False).data_vars.keys() == {"traces", "stimulus"}


def test_release_offsets_use_zapbench_trials(tmp_path):
    n = 7879
    root = tmp_path / "r"
    zarr.create_array(str(root / "traces"), shape=(n, 3), dtype="float32", chunks=(512, 3), zarr_format=3)[...] = 1
    zarr.create_array(str(root / "stimuli_features"), shape=(n, 26), dtype="float32", chunks=(n, 26),
                      zarr_format=2)[...] = 1
    ds = open_release(root, scale=None)
    assert ds.attrs["condition_offsets"] == list(protocol.RELEASE_CONDITION_OFFSETS)
    assert protocol.windows(ds, "test", context=4).sizes["window"] == 1557
    # the trial phase comes from the trial lengths, right-aligned (dots: three trials of 591)
    ph = ds["trial_phase"].values
    assert ph[649] == 0 and ph[649 + 590] == 590 and ph[649 + 591] == 0
    assert ph[0] == 66 - 58 and ph[57] == 65 and ph[58] == 0            # gain's cut first trial
    assert np.all(ph[5047 + 591:6623] == -1)                               # open loop: no trials


def test_missing_chunks_are_nan_with_a_warning_never_zeros(crop, tmp_path):
    root = write_release_layout(crop, tmp_path / "dmg", scales=("s0",), trace_chunks=(128, 32))
    (root / "traces" / "c" / "1" / "0").unlink()                            # frames 128..255, neurons 0..31
    with pytest.warns(MissingChunkWarning, match="'traces'.*1/0"):
        tr = open_release(root, scale=None)["traces"].values
    assert np.all(np.isnan(tr[128:256, :32]))
    np.testing.assert_array_equal(tr[:128], crop["traces"].values[:128])
    np.testing.assert_array_equal(tr[128:256, 32:], crop["traces"].values[128:256, 32:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                     # untouched chunks: silent
        head = open_release(root, scale=None)["traces"][:100].values
    np.testing.assert_array_equal(head, crop["traces"].values[:100])
    zeros = open_release(root, scale=None, missing_chunks="fill")["traces"].values
    assert np.all(zeros[128:256, :32] == 0)                                # only when asked for


def test_open_release_over_http(http_root, crop):
    url, local = http_root
    ds = open_release(url, scale="s2", time=slice(100, 300))
    assert ds.sizes["time"] == 200 and ds["time"].values[0] == 100 and ds.attrs["time_range"] == [100, 300]
    np.testing.assert_array_equal(ds["traces"].values, crop["traces"].values[100:300])
    np.testing.assert_array_equal(ds["stimulus"].values, crop["stimulus"].values[100:300])
    assert ds.attrs["n_labels"] == crop.sizes["neuron"]                    # from dataframe.json
    ref = open_release(local, scale="s2")
    np.testing.assert_array_equal(ds["volume"].values, ref["volume"].values[100:300])
    np.testing.assert_array_equal(ds["segmentation"].values, ref["segmentation"].values)
    np.testing.assert_array_equal(ds["position_embedding"].values, ref["position_embedding"].values)
    np.testing.assert_array_equal(ds["rastermap_order"].values, ref["rastermap_order"].values)
    with pytest.raises(ReleaseLayoutError, match="missing array 'traces'"):
        open_release(url + "/nothing-here", scale=None)


def test_stimulus_evoked_response_array(tiny, tmp_path):
    """The writer stores ZAPBench's evoked response; the reader hands it to the stimulus baseline."""
    from workbench.forecast.baselines import StimulusBaseline

    root = write_release_layout(tiny.drop_vars(["volume", "segmentation"]), tmp_path / "r")
    ds = open_release(root, scale=None, condition_offsets=tiny.attrs["condition_offsets"])
    ref = StimulusBaseline(4, mode="zapbench").fit(tiny)
    s = protocol.windows(tiny, "test", context=4)["start"].values[::40]
    f = StimulusBaseline(4).fit(ds)                                        # "auto" -> zapbench (release)
    assert f.mode_ == "zapbench" and f.source_ == "release"
    np.testing.assert_allclose(f.predict(ds, s), ref.predict(tiny, s), rtol=1e-6, atol=1e-7)


def test_layout_errors_name_path_and_expectation(crop, tmp_path):
    bad = write_release_layout(crop.isel(time=slice(0, 20)), tmp_path / "bad", scales=("s0",), extras=False)
    shutil.rmtree(bad / "stimuli_features")
    with pytest.raises(ReleaseLayoutError, match="stimuli_features.*" + str(bad)):
        open_release(bad)
    zarr.create_array(str(bad / "stimuli_features"), shape=(10, 26), dtype="float32", chunks=(10, 26),
                      zarr_format=2)[...] = 1
    with pytest.raises(ReleaseLayoutError, match=r"expected shape \(20, None\).*got \(10, 26\)"):
        open_release(bad)
    shutil.rmtree(bad / "stimuli_features")
    zarr.create_array(str(bad / "stimuli_features"), shape=(20, 26), dtype="float32", chunks=(20, 26),
                      zarr_format=2)[...] = 1
    shutil.rmtree(bad / "segmentation")
    zarr.create_array(str(bad / "segmentation"), shape=(28, 20, 4), dtype="float32", chunks=(28, 20, 4), zarr_format=3)
    with pytest.raises(ReleaseLayoutError, match="segmentation.*integer dtype, got float32"):
        open_release(bad, condition_offsets=[0, 20])
    shutil.rmtree(bad / "df_over_f_xyz_chunked" / "s0")
    with pytest.raises(ReleaseLayoutError, match="missing array 'df_over_f_xyz_chunked/s0'"):
        open_release(bad, condition_offsets=[0, 20])
    with pytest.raises(ReleaseLayoutError, match="does not exist"):
        open_release(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="time"):
        open_release(bad, scale=None, time=[1, 2])


def test_estimate_trial_phase_periodic():
    t = np.arange(600)
    stim = np.zeros((600, 3))
    stim[:, 0] = (t % 37) < 5
    ph = estimate_trial_phase(stim, [0, 300, 600])
    assert np.array_equal(ph[:300], t[:300] % 37)
    assert np.array_equal(ph[300:], t[300:] - 300 - ((t[300:] - 300) // 37) * 37)


def test_segmentation_group_per_scale(crop, tmp_path):
    root = write_release_layout(crop.isel(time=slice(0, 12)), tmp_path / "g", scales=("s0", "s1"),
                                segmentation_scales=True, extras=False)
    ds = open_release(root, scale="s1", condition_offsets=[0, 12])
    assert ds["segmentation"].shape == (4, 10, 14)
    np.testing.assert_array_equal(ds["segmentation"].values, crop["segmentation"].values[:, 1::2, 1::2])


def test_a_truncated_release_chunk_names_the_array(crop, tmp_path):
    root = write_release_layout(crop, tmp_path / "cut", scales=("s0",), trace_chunks=(128, 32))
    f = root / "traces" / "c" / "1" / "0"
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(ValueError, match="release array 'traces'.*cannot be read"):
        open_release(root, scale=None)["traces"].load()
