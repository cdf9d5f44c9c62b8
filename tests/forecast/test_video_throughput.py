"""Throughput options of the video forecaster (#17.3): streamed batches from a lazy zarr volume
equal in-memory ones (also across a resume), bf16 autocast keeps float32 master weights, the
memory layout does not change the result, and ZAPBench mode samples leads uniformly (#18.4)."""

import numpy as np
import pytest
import torch
import xarray as xr

from tests.forecast.video_data import SHAPE, random_walk_volume
from workbench.forecast.video import VideoForecaster
from workbench.forecast.video.loader import StepSampler, frame_loader, lead_probabilities

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _data(t=60, seed=0):
    return random_walk_volume(t, seed)


def _est(**kw):
    kw = {**dict(context=3, horizon=4, widths=(4, 8), emb_dim=8, batch_size=3, n_steps=6, lr=1e-2,
                 warmup_steps=2, n_threads=1, device="cpu"), **kw}
    return VideoForecaster(**kw)


@pytest.fixture(scope="module")
def lazy_volume(tmp_path_factory):
    pytest.importorskip("zarr")
    vol, seg, starts = _data()
    path = tmp_path_factory.mktemp("vol") / "v.zarr"
    xr.Dataset({"volume": (("time", "z", "y", "x"), vol)}).to_zarr(
        path, zarr_format=3, consolidated=False, encoding={"volume": {"chunks": (1, *SHAPE)}})
    lazy = xr.open_zarr(path, zarr_format=3, consolidated=False)["volume"]   # dask backed
    assert lazy.chunks is not None
    return vol, lazy, seg, starts


def _same_weights(a, b):
    sa, sb = a.model_.state_dict(), b.model_.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_streamed_batches_equal_in_memory_ones(lazy_volume):
    vol, lazy, seg, starts = lazy_volume
    ref = _est().fit_arrays(vol, seg, starts)
    streamed = _est(num_workers=2, prefetch_factor=2).fit_arrays(lazy, seg, starts)
    assert _same_weights(ref, streamed)
    np.testing.assert_array_equal(ref.history_["loss"].values, streamed.history_["loss"].values)


def test_streamed_resume_is_exact_although_workers_run_ahead(lazy_volume, tmp_path):
    vol, lazy, seg, starts = lazy_volume
    full = _est(n_steps=8).fit_arrays(vol, seg, starts)
    ck = tmp_path / "ck.pt"
    _est(n_steps=8, num_workers=2, prefetch_factor=4, checkpoint_path=str(ck),
         checkpoint_every=2).fit_arrays(lazy, seg, starts, stop_at_step=4)
    resumed = _est(n_steps=8, num_workers=2).fit_arrays(lazy, seg, starts, resume_from=ck)
    assert resumed.step_ == 8 and _same_weights(full, resumed)
    # the end-of-fit checkpoint too (written after the loop, while workers had drawn ahead)
    ck2 = tmp_path / "end.pt"
    _est(n_steps=8, num_workers=2, prefetch_factor=4, checkpoint_path=str(ck2)).fit_arrays(
        lazy, seg, starts, stop_at_step=3)
    again = _est(n_steps=8, num_workers=2).fit_arrays(lazy, seg, starts, resume_from=ck2)
    assert _same_weights(full, again)


def test_frame_loader_yields_the_sampler_batches_in_order(lazy_volume):
    vol, lazy, _, starts = lazy_volume
    gen = torch.Generator().manual_seed(1)
    sampler = StepSampler(gen, starts.size, lead_probabilities(4, "uniform"), 5, 0, 7)
    got = list(frame_loader(lazy, starts, 3, sampler, num_workers=2))
    assert [g[0] for g in got] == list(range(7))
    replay = StepSampler(torch.Generator().manual_seed(1), starts.size, lead_probabilities(4, "uniform"), 5, 0, 7)
    for (_, i, lead, ctx, target), (_, i2, lead2) in zip(got, replay):
        np.testing.assert_array_equal(lead.numpy(), lead2)
        np.testing.assert_array_equal(i.numpy(), i2)
        s = starts[i2]
        np.testing.assert_array_equal(ctx.numpy(), vol[s[:, None] + np.arange(3)])    # independent gather
        np.testing.assert_array_equal(target.numpy(), vol[s + 2 + lead2])


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_keeps_float32_master_weights(device):
    vol, seg, starts = _data()
    est = _est(precision="bf16", device=device).fit_arrays(vol, seg, starts)
    assert all(p.dtype == torch.float32 for p in est.model_.parameters())
    assert np.all(np.isfinite(est.history_["loss"].values))
    low = est.predict_arrays(vol, [40, 41])
    assert low.dtype == np.float32
    est.set_params(precision="float32")
    np.testing.assert_allclose(low, est.predict_arrays(vol, [40, 41]), rtol=0.05, atol=0.05 * np.abs(vol).max())
    ref = _est(device=device).fit_arrays(vol, seg, starts)           # same run in float32: close losses
    np.testing.assert_allclose(est.history_["loss"].values, ref.history_["loss"].values, rtol=0.1)
    with pytest.raises(ValueError, match="bf16.*float32"):
        _est(precision="bf16", dtype="float64").fit_arrays(vol, seg, starts)


def test_memory_layout_does_not_change_the_forecast():
    vol, seg, starts = _data()
    a = _est(dtype="float64").fit_arrays(vol, seg, starts)
    b = _est(dtype="float64", channels_last=False).fit_arrays(vol, seg, starts)
    np.testing.assert_allclose(a.predict_arrays(vol, [40]), b.predict_arrays(vol, [40]), rtol=1e-9, atol=1e-10)
    with pytest.raises(TypeError, match="compile"):
        _est(compile="yes").fit_arrays(vol, seg, starts)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.compile is exercised on the GPU run")
def test_compiled_training_matches_eager_closely():
    vol, seg, starts = _data()
    a = _est(device="cuda").fit_arrays(vol, seg, starts)
    b = _est(device="cuda", compile=True).fit_arrays(vol, seg, starts)
    np.testing.assert_allclose(a.history_["loss"].values, b.history_["loss"].values, rtol=1e-3)


def test_zapbench_mode_samples_leads_uniformly(tiny):
    est = _est(n_steps=0, context=2, horizon=3)
    est.fit(tiny)
    assert est.lead_sampling_ == "inverse"                       # synthetic data: the workbench choice
    est.fit(tiny.assign_attrs(source="zapbench-release"))
    assert est.lead_sampling_ == "uniform"                       # release data: ZAPBench's
    assert _est(n_steps=0, lead_sampling="inverse").fit_arrays(*_data(), mode="zapbench").lead_sampling_ == "inverse"
    # the uniform sampler draws every lead about equally often; "inverse" favours lead 1 as 1/l
    g = torch.Generator().manual_seed(0)
    draws = np.concatenate([lead for _, _, lead in StepSampler(g, 10, lead_probabilities(4, "uniform"),
                                                                1000, 0, 8)])
    np.testing.assert_allclose(np.bincount(draws, minlength=5)[1:] / draws.size, 0.25, atol=0.02)
    g = torch.Generator().manual_seed(0)
    draws = np.concatenate([lead for _, _, lead in StepSampler(g, 10, lead_probabilities(4, "inverse"),
                                                                1000, 0, 8)])
    p = 1 / np.arange(1, 5)
    np.testing.assert_allclose(np.bincount(draws, minlength=5)[1:] / draws.size, p / p.sum(), atol=0.02)


def test_input_downsample_that_does_not_divide_the_volume():
    vol, seg, starts = _data()                 # y 8, x 10: neither divisible by 3
    est = _est(input_downsample=3, n_steps=2).fit_arrays(vol, seg, starts)
    assert est.predict_arrays(vol, [40]).shape == (1, 4, *SHAPE)


def test_bench_video_s2_mode_runs_scaled_down(capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_video

    rows = bench_video.main(["--size", "s2", "--scale-down", "16", "--frames", "20", "--steps", "1",
                             "--warmup", "1", "--horizon", "3", "--workers", "1", "--batch-size", "1",
                             "--device", "cpu", "--precision", "float32"])
    assert rows[0]["steps_per_s"] > 0 and np.isfinite(rows[0]["val_mae_lead1"])
    assert "samples/s" in capsys.readouterr().out
