"""Missing data and bad arguments at the video forecaster's and the last-layer Laplace's entry
points (#15.3, #15.4): missing frames / voxels are data, not poison; bad arguments are clear
errors naming the argument. (The trace baselines' cases are in test_fuzz_protocol_baselines.py.)

Classes tried: whole NaN frames, NaN voxels, all-missing targets, inf in the volume and in the
stimulus, bad types / ranges for every integer and float hyper-parameter, unknown devices,
unfitted use, old parameter names.
"""

import numpy as np
import pytest
import torch

from tests.forecast.video_data import random_walk_volume
from workbench.exceptions import NotFittedError
from workbench.forecast.video import VideoForecaster
from workbench.forecast.video.uncertainty import LastLayerLaplace


def _data(t=80, seed=0):
    return random_walk_volume(t, seed)


def _est(**kw):
    kw = {**dict(context=3, horizon=4, widths=(4, 8), emb_dim=8, batch_size=4, n_steps=8, lr=1e-2,
                 warmup_steps=2, n_threads=1, device="cpu"), **kw}
    return VideoForecaster(**kw)


def test_missing_frames_and_voxels_are_masked_not_poison():
    vol, seg, starts = _data()
    bad = vol.copy()
    bad[20:30] = np.nan                     # ten missing frames
    bad[:, 0, 0, :] = np.nan                # a row of voxels missing throughout
    est = _est(n_steps=12).fit_arrays(bad, seg, starts)
    assert np.all(np.isfinite(est.history_["loss"].values))
    assert np.isfinite(est.offset_) and np.isfinite(est.scale_)
    # windows far from the gap, and windows whose context lies in it: finite forecasts everywhere
    far, inside = [50, 60], [18, 22]
    assert np.all(np.isfinite(est.predict_arrays(bad, far)))
    assert np.all(np.isfinite(est.predict_arrays(bad, inside)))
    # the mask is what the network sees: NaN input equals the normalised mean as input
    filled = bad.copy()
    filled[np.isnan(filled)] = est.offset_
    np.testing.assert_allclose(est.predict_arrays(bad, inside), est.predict_arrays(filled, inside),
                               rtol=1e-5, atol=1e-6)


def test_masked_mae_counts_observed_voxels_only():
    mask = torch.ones(2, 2, 2, dtype=torch.bool)
    pred = torch.zeros(2, 2, 2, 2)
    target = torch.ones(2, 2, 2, 2)
    target[0, 0] = torch.nan                                    # half of window 0 missing
    target[0, 1] = 3.0
    assert float(VideoForecaster.masked_mae(pred, target, mask)) == pytest.approx((3.0 + 1.0) / 2)
    target[1] = torch.nan                                       # window 1 wholly missing: left out
    assert float(VideoForecaster.masked_mae(pred, target, mask)) == pytest.approx(3.0)
    # without missing values it is the plain per-window mean over the mask
    t2 = torch.arange(16.0).reshape(2, 2, 2, 2)
    m2 = torch.zeros(2, 2, 2, dtype=torch.bool)
    m2[0] = True
    expect = np.mean([t2[w][m2].abs().mean().item() for w in range(2)])
    assert float(VideoForecaster.masked_mae(torch.zeros_like(t2), t2, m2)) == pytest.approx(expect)


def test_all_missing_or_infinite_volume_is_a_clear_error():
    vol, seg, starts = _data()
    with pytest.raises(ValueError, match="no finite voxels"):
        _est().fit_arrays(np.full_like(vol, np.nan), seg, starts)
    bad = vol.copy()
    bad[0, seg > 0] = np.inf
    with pytest.raises(ValueError, match="inf"):
        _est().fit_arrays(bad, seg, starts)
    stim = np.zeros((vol.shape[0], 2))
    stim[5, 1] = np.nan
    with pytest.raises(ValueError, match="stimulus"):
        _est(stimulus=True).fit_arrays(vol, seg, starts, stim)


BAD_ARGS = [("batch_size", 0), ("batch_size", 2.5), ("batch_size", True), ("batch_size", -1),
            ("n_steps", -1), ("context", 0), ("context", "4"), ("horizon", 0), ("input_downsample", 0),
            ("lr", 0.0), ("lr", float("nan")), ("lr", -1e-3), ("weight_decay", -1.0),
            ("warmup_steps", 0), ("n_threads", 0), ("widths", ()), ("widths", (4, 0)),
            ("emb_dim", 0), ("checkpoint_every", -2), ("random_state", -1), ("random_state", "zero"),
            ("lead_sampling", "log"), ("dtype", "float16"), ("device", "tpu-7")]


@pytest.mark.parametrize("arg, value", BAD_ARGS, ids=[f"{a}={v!r}" for a, v in BAD_ARGS])
def test_video_forecaster_rejects_bad_arguments_by_name(arg, value):
    vol, seg, starts = _data(t=40)
    with pytest.raises((ValueError, TypeError), match=arg if arg != "random_state" else "random_state"):
        _est(n_steps=1, **{arg: value}).fit_arrays(vol, seg, np.arange(0, 28))


def test_unfitted_use_is_not_fitted_error():
    vol, _, _ = _data(t=40)
    est = _est()
    for call in (lambda: est.predict_arrays(vol, [0]), lambda: est.save_checkpoint("x.pt")):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    lla = LastLayerLaplace(est)
    with pytest.raises(NotFittedError, match="LastLayerLaplace.*not fitted"):
        lla.predict(None, [0])


def test_old_parameter_names_still_work_with_a_warning(tmp_path):
    with pytest.warns(FutureWarning, match="'seed'.*'random_state'"):
        est = VideoForecaster(seed=3, widths=(4, 8))
    assert est.random_state == 3
    with pytest.warns(FutureWarning, match="'num_threads'.*'n_threads'"):
        assert VideoForecaster(num_threads=2).n_threads == 2
    with pytest.raises(TypeError, match="only"):
        VideoForecaster(seed=1, random_state=2)
    with pytest.warns(FutureWarning, match="'seed'"):
        assert LastLayerLaplace(est, seed=5).random_state == 5


def test_last_layer_laplace_ignores_missing_targets(tiny):
    ds = tiny.copy(deep=True)
    vol = ds["volume"].values
    vol[200:260] = np.nan                                    # a stretch of missing frames
    est = _est(context=2, horizon=3, n_steps=2, dtype="float64").fit(ds)
    lla = LastLayerLaplace(est, n_fit_windows=4, n_noise_windows=4, max_voxels=3000,
                           device="cpu").fit(ds)
    assert np.isfinite(lla.sigma_fit_) and np.all(np.isfinite(lla.voxel_noise_))
    out = lla.predict(ds, [100, 230])
    assert np.all(np.isfinite(out["std"].values)) and np.all(np.isfinite(out["forecast"].values))
    with pytest.raises(ValueError, match="max_voxels"):
        LastLayerLaplace(est, max_voxels=0).fit(ds)
    with pytest.raises(TypeError, match="VideoForecaster"):
        LastLayerLaplace("not a model").fit(ds)
