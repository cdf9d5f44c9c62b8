import numpy as np
import pytest
import zarr

from workbench.forecast import protocol, segment_means
from workbench.forecast.release import (
    ReleaseLayoutError,
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
    return write_release_layout(crop, tmp_path_factory.mktemp("rel") / "20240930")


def test_layout_is_the_release_layout(release_dir, crop):
    tr = zarr.open_array(str(release_dir / "traces"), mode="r")
    assert tr.metadata.zarr_format == 3 and tr.shape == (N_FRAMES, crop.sizes["neuron"])
    assert tr.metadata.dimension_names is None
    v = zarr.open_array(str(release_dir / "df_over_f_xyz_chunked" / "s0"), mode="r")
    assert v.shape == (28, 20, 4, N_FRAMES)                       # x, y, z, t
    assert zarr.open_array(str(release_dir / "df_over_f_xyz_chunked" / "s1"), mode="r").shape == (14, 10, 4, N_FRAMES)
    assert zarr.open_array(str(release_dir / "segmentation"), mode="r").shape == (28, 20, 4)
    assert zarr.open_array(str(release_dir / "stimuli_features"), mode="r").shape == (N_FRAMES, 26)


def test_open_release_roundtrip_lazy(release_dir, crop):
    tiny = crop
    ds = open_release(release_dir, scale="s0", centroids=True)
    assert ds["volume"].dims == ("time", "z", "y", "x") and ds["volume"].chunks is not None
    np.testing.assert_array_equal(ds["volume"].isel(time=[0, 170]).values, tiny["volume"].isel(time=[0, 170]).values)
    np.testing.assert_array_equal(ds["segmentation"].values, tiny["segmentation"].values)
    np.testing.assert_array_equal(ds["traces"].values, tiny["traces"].values)
    rel = np.asarray(protocol.RELEASE_CONDITION_OFFSETS)
    np.testing.assert_array_equal(ds.attrs["condition_offsets"], np.round(rel / rel[-1] * N_FRAMES))
    assert ds.attrs["source"] == "zapbench-release"
    np.testing.assert_allclose(ds.attrs["voxel_size_zyx_um"], [4.0, 0.406, 0.406])
    assert np.all(np.isfinite(ds["centroid_zyx"].values))
    # traces agree with the segment means of the volume (label = column + 1)
    np.testing.assert_allclose(segment_means(ds["volume"][:20].values, ds["segmentation"].values, ds.sizes["neuron"]),
                               ds["traces"][:20].values, rtol=1e-5, atol=1e-6)


def test_coarser_scale_and_phase(release_dir, tmp_path, tiny):
    ds = open_release(release_dir, scale="s2")
    assert ds["volume"].shape == (N_FRAMES, 4, 5, 7) and ds["segmentation"].shape == (4, 5, 7)
    np.testing.assert_allclose(ds.attrs["voxel_size_zyx_um"], [4.0, 1.624, 1.624])
    # phase estimated from the stimulus recovers the generator's trial structure (up to the period)
    ph = estimate_trial_phase(tiny["stimulus"].values, tiny.attrs["condition_offsets"])
    true = tiny["trial_phase"].values
    for c in range(9):
        lo, hi = tiny.attrs["condition_offsets"][c], tiny.attrs["condition_offsets"][c + 1]
        if true[lo] < 0:
            assert np.all(ph[lo:hi] == -1)
        else:
            assert np.all(np.diff(np.flatnonzero(ph[lo:hi] == 0)) % (true[lo:hi].max() + 1) == 0)
    assert open_release(release_dir, scale=None).data_vars.keys() == {"traces", "stimulus"}


def test_release_offsets_used_for_full_length(tmp_path):
    n = 7879
    root = tmp_path / "r"
    zarr.create_array(str(root / "traces"), shape=(n, 3), dtype="float32", chunks=(512, 3), zarr_format=3)[...] = 0
    zarr.create_array(str(root / "stimuli_features"), shape=(n, 26), dtype="float32", chunks=(n, 26),
                      zarr_format=2)[...] = 0
    ds = open_release(root, scale=None)
    assert ds.attrs["condition_offsets"] == list(protocol.RELEASE_CONDITION_OFFSETS)
    assert protocol.windows(ds, "test", context=4).sizes["window"] == 1557


def test_layout_errors_name_path_and_expectation(crop, tmp_path):
    import shutil

    bad = write_release_layout(crop.isel(time=slice(0, 20)), tmp_path / "bad", scales=("s0",))
    shutil.rmtree(bad / "stimuli_features")
    with pytest.raises(ReleaseLayoutError, match="stimuli_features.*" + str(bad)):
        open_release(bad)
    zarr.create_array(str(bad / "stimuli_features"), shape=(10, 26), dtype="float32", chunks=(10, 26), zarr_format=2)
    with pytest.raises(ReleaseLayoutError, match=r"expected shape \(20, None\).*got \(10, 26\)"):
        open_release(bad)
    shutil.rmtree(bad / "stimuli_features")
    zarr.create_array(str(bad / "stimuli_features"), shape=(20, 26), dtype="float32", chunks=(20, 26), zarr_format=2)
    shutil.rmtree(bad / "segmentation")
    zarr.create_array(str(bad / "segmentation"), shape=(28, 20, 4), dtype="float32", chunks=(28, 20, 4), zarr_format=3)
    with pytest.raises(ReleaseLayoutError, match="segmentation.*integer dtype, got float32"):
        open_release(bad, condition_offsets=[0, 20])
    shutil.rmtree(bad / "df_over_f_xyz_chunked" / "s0")
    with pytest.raises(ReleaseLayoutError, match="missing array 'df_over_f_xyz_chunked/s0'"):
        open_release(bad, condition_offsets=[0, 20])
    with pytest.raises(ReleaseLayoutError, match="does not exist"):
        open_release(tmp_path / "nowhere")


def test_estimate_trial_phase_periodic():
    t = np.arange(600)
    stim = np.zeros((600, 3))
    stim[:, 0] = (t % 37) < 5
    ph = estimate_trial_phase(stim, [0, 300, 600])
    assert np.array_equal(ph[:300], t[:300] % 37)
    assert np.array_equal(ph[300:], t[300:] - 300 - ((t[300:] - 300) // 37) * 37)


def test_segmentation_group_per_scale(crop, tmp_path):
    root = write_release_layout(crop.isel(time=slice(0, 12)), tmp_path / "g", scales=("s0", "s1"),
                                segmentation_scales=True)
    ds = open_release(root, scale="s1", condition_offsets=[0, 12])
    assert ds["segmentation"].shape == (4, 10, 14)
    np.testing.assert_array_equal(ds["segmentation"].values, crop["segmentation"].values[:, ::2, ::2])
