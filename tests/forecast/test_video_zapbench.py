"""ZAPBench-style video scoring (#18.4): forecasts scored against segment means of the target
volume (mask = segmentation > 0), the centre crop, and the missing-value rule, each checked
against a value computed independently here (explicit loops over segments)."""

import numpy as np
import pytest

from workbench.forecast.video import VideoForecaster, center_crop, score_video


@pytest.fixture(scope="module")
def fitted(tiny):
    return VideoForecaster(context=2, horizon=3, widths=(4, 8), emb_dim=8, batch_size=2, n_steps=2,
                           n_threads=1, device="cpu", dtype="float64").fit(tiny)


def _by_loops(pred, vol_targets, seg, missing):
    """Mean over present labels of |mean(pred[label]) - mean(target[label])| per (window, lead)."""
    labels = [k for k in np.unique(seg) if k > 0]
    w, l_ = pred.shape[:2]
    out = np.zeros((w, l_))
    for i in range(w):
        for j in range(l_):
            errs = []
            for k in labels:
                p = pred[i, j][seg == k].mean()
                t = vol_targets[i, j][seg == k].mean()
                if missing == "zapbench":
                    errs.append(abs(np.nan_to_num(p) - np.nan_to_num(t)))
                elif not (np.isnan(p) or np.isnan(t)):
                    errs.append(abs(p - t))
            out[i, j] = np.mean(errs)
    return out


def test_scores_are_segment_means_of_the_target_volume(tiny, fitted):
    ds = tiny.copy()
    ds["traces"] = ds["traces"] * 0 + 123.0            # the traces matrix is not what is scored
    res = score_video(fitted, ds, "test", leads=[1, 3], max_windows=3)
    starts = res["abs_err"]["window"].values
    from workbench.forecast import windows
    win = windows(tiny, "test", context=2, horizon=3)
    s = win.sel(window=starts)["start"].values
    vol = tiny["volume"].values
    pred = fitted.predict_arrays(vol, s, [1, 3])
    tgt = vol[s[:, None] + 2 - 1 + np.array([1, 3])[None]]
    expect = _by_loops(pred, tgt, tiny["segmentation"].values, "zapbench")
    np.testing.assert_allclose(res["abs_err"].values, expect, rtol=1e-6)   # float32 volume
    assert res.attrs["scored_against"] == "target-volume segment means"
    assert np.all(res["mae"].values[np.isfinite(res["mae"].values)] < 50)   # not the 123 traces


def test_centre_crop_and_missing_rules(tiny, fitted):
    cut = center_crop(tiny, y=12, x=20)
    ny, nx = tiny.sizes["y"], tiny.sizes["x"]
    y0, x0 = (ny - 12) // 2, (nx - 20) // 2
    np.testing.assert_array_equal(cut["segmentation"].values,
                                  tiny["segmentation"].values[:, y0:y0 + 12, x0:x0 + 20])
    np.testing.assert_array_equal(cut["volume"].values[5], tiny["volume"].values[5, :, y0:y0 + 12, x0:x0 + 20])
    with pytest.raises(ValueError, match="crop size y"):
        center_crop(tiny, y=ny + 1)
    # a model fitted on the full grid cannot predict on the cropped one; fit one on the crop
    est = VideoForecaster(context=2, horizon=3, widths=(4, 8), emb_dim=8, batch_size=2, n_steps=1,
                          n_threads=1, device="cpu", dtype="float64").fit(cut)
    ds = tiny.copy(deep=True)
    s = score_video(est, ds, "test", leads=[1], crop_y=12, crop_x=20, max_windows=2)
    assert s.attrs["crop_y"] == 12 and s.attrs["n_segments"] == len(np.unique(cut["segmentation"].values)) - 1
    # missing target voxels: "zapbench" zero-fills and keeps every segment, "exclude" drops them
    ds["volume"].values[:, :, y0:y0 + 6, :] = np.nan
    z = score_video(est, ds, "test", leads=[1], crop_y=12, crop_x=20, max_windows=2)
    e = score_video(est, ds, "test", leads=[1], crop_y=12, crop_x=20, max_windows=2, missing="exclude")
    c = center_crop(ds, y=12, x=20)
    from workbench.forecast import windows
    st = windows(c, "test", context=2, horizon=3).sel(window=z["abs_err"]["window"].values)["start"].values
    vol = c["volume"].values
    pred = est.predict_arrays(vol, st, [1])
    tgt = vol[st[:, None] + 2]                                    # lead 1: frame start + C
    for res, rule in ((z, "zapbench"), (e, "exclude")):
        np.testing.assert_allclose(res["abs_err"].values, _by_loops(pred, tgt, c["segmentation"].values, rule),
                                   rtol=1e-6)
    assert not np.allclose(z["abs_err"].values, e["abs_err"].values)


@pytest.mark.parametrize("f", [2, 3, 4])
def test_coarse_segmentation_samples_the_block_centres(f):
    from workbench.forecast.release import coarse_segmentation

    xyz = np.arange(13 * 11 * 2).reshape(13, 11, 2)          # (x, y, z) as the release stores it
    got = coarse_segmentation(xyz, f)
    xs = [f // 2 + k * f for k in range(13) if f // 2 + k * f < 13]
    ys = [f // 2 + k * f for k in range(11) if f // 2 + k * f < 11]
    expect = np.array([[xyz[i, j] for j in ys] for i in xs])
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(coarse_segmentation(xyz, f, (2, 2)), expect[:2, :2])
