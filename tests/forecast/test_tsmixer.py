"""TSMixer, time-mix and TiDE: ZAPBench's per-context settings, shapes, RevIN, training."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

from workbench.forecast import protocol
from workbench.forecast.baselines import (
    MeanBaseline,
    TiDEBaseline,
    TimeMixBaseline,
    TSMixerBaseline,
)
from workbench.forecast.baselines.tide import TiDENet
from workbench.forecast.baselines.tsmixer import TSMixerNet
from workbench.forecast.evaluate import evaluate_loop, score_forecaster

FAST = dict(max_steps=2, check_every=1, max_val_windows=4, device="cpu")


@pytest.mark.parametrize("context, ff, revin", [(4, 256, False), (256, 128, True)])
def test_tsmixer_zapbench_settings(tiny, context, ff, revin):
    f = TSMixerBaseline(context, mode="zapbench", **FAST).fit(tiny)
    s = f.settings_
    assert (s["n_blocks"], s["ff_dim"], s["dropout"], s["block_norm"]) == (2, ff, 0.0, None)
    assert s["instance_norm"] == ("revin" if revin else None)
    assert (s["batch_size"], s["lr"], s["weight_decay"], s["patience"], s["min_delta"]) == (8, 1e-3, 1e-4, 20, 1e-4)
    n = tiny.sizes["neuron"]
    assert len(f.net_.blocks) == 2
    assert f.net_.blocks[0].time[0].weight.shape == (context, context)     # time mixing C -> C
    assert f.net_.blocks[0].feat_in.weight.shape == (ff, n)                 # feature mixing N -> ff -> N
    assert f.net_.blocks[0].norm_t is None
    assert hasattr(f.net_, "rev_scale") == revin
    assert f.net_.head.weight.shape == (32, context)
    assert f.predict(tiny, [0, 7]).shape == (2, 32, n)
    t = TimeMixBaseline(context, mode="zapbench", **FAST).fit(tiny)
    assert t.settings_["n_blocks"] == 5 and len(t.net_.blocks) == 5
    assert not hasattr(t.net_.blocks[0], "feat_in")
    assert hasattr(t.net_, "rev_scale") == revin


def test_revin_makes_the_forecast_equivariant_to_affine_maps():
    torch.manual_seed(0)
    net = TSMixerNet(16, 32, 5, ff_dim=8, instance_norm="revin").double()
    x = torch.randn(3, 16, 5, dtype=torch.float64)
    with torch.no_grad():
        net.rev_scale.uniform_(0.5, 2.0)
        net.rev_shift.normal_()
        y = net(x)
        y2 = net(2.5 * x - 1.0)                       # the same affine map on every series
    torch.testing.assert_close(y2, 2.5 * y - 1.0, rtol=1e-3, atol=1e-3)   # exact up to RevIN's eps
    # reference RevIN written out: normalise per (window, neuron) over time
    mean = x.mean(1, keepdim=True)
    std = torch.sqrt(((x - mean) ** 2).mean(1, keepdim=True) + 1e-6)
    z = (x - mean) / std * net.rev_scale + net.rev_shift
    with torch.no_grad():
        for b in net.blocks:
            z = b(z)
        ref = ((net.head.weight @ z + net.head.bias[:, None]) - net.rev_shift) / net.rev_scale * std + mean
    torch.testing.assert_close(y, ref)


def test_time_mix_and_tide_forecast_each_neuron_from_its_own_past():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6)
    x2 = x.clone()
    x2[:, :, 3] += 5.0                                 # another neuron's past changes
    cov = torch.randn(2, 32, 26)
    tm = TSMixerNet(4, 32, 6, n_blocks=5, time_mix_only=True).eval()
    td = TiDENet(4, 32, 26).eval()
    with torch.no_grad():
        for f in (lambda z: tm(z), lambda z: td(z, cov)):
            a, b = f(x), f(x2)
            keep = [0, 1, 2, 4, 5]
            torch.testing.assert_close(a[..., keep], b[..., keep])
            assert not torch.allclose(a[..., 3], b[..., 3])
        # TiDE reads the stimulus of the target frames
        assert not torch.allclose(td(x, cov), td(x, cov + 1.0))
        assert td(x, cov).shape == (2, 32, 6)


def test_tide_zapbench_settings_and_stimulus(tiny):
    f = TiDEBaseline(4, mode="zapbench", **FAST).fit(tiny)
    assert f.settings_["batch_size"] == 16 and f.requires == ("traces", "stimulus")
    s = np.array([3, 40])
    p = f.predict(tiny, s)
    other = tiny.copy(deep=True)
    other["stimulus"].values[:] += 1.0
    assert p.shape == (2, 32, tiny.sizes["neuron"]) and not np.allclose(p, f.predict(other, s))
    with pytest.raises(ValueError, match="stimulus"):
        TiDEBaseline(4, **FAST).fit(tiny.drop_vars("stimulus"))


def test_tsmixer_trains_with_early_stopping_and_beats_mean(tiny):
    kw = dict(mode="workbench", max_steps=100, check_every=25, batch_size=16, patience=2, max_val_windows=64,
              random_state=0, device="cpu")
    f = TSMixerBaseline(4, **kw).fit(tiny)
    h = f.history_
    assert h.sizes["check"] >= 2 and np.all(np.isfinite(h["val_mae"].values))
    assert f.best_val_mae_ == float(h["val_mae"].min())          # best weights restored
    assert h["train_mae"].values[-1] < h["train_mae"].values[0]
    starts = protocol.windows(tiny, "test", context=4)["start"].values[:40]
    pred = f.predict(tiny, starts)
    assert pred.shape == (40, 32, tiny.sizes["neuron"]) and pred.dtype == np.float32
    # deterministic from random_state; clone keeps the parameters
    np.testing.assert_allclose(clone(f).fit(tiny).predict(tiny, starts), pred, rtol=1e-5, atol=1e-6)
    e_mix, _ = score_forecaster(f, tiny, split="val")
    e_mean, _ = score_forecaster(MeanBaseline(4).fit(tiny), tiny, split="val")
    assert float(e_mix["abs_err"].mean()) < float(e_mean["abs_err"].mean())


def test_tsmixer_neuron_subsets_and_time_bottleneck(tiny):
    """Training on random neuron subsets with a C -> d -> C time mixer: learns, its scores equal the
    float64 per-window loop, and it survives pickling (the CLI stores fitted models)."""
    n = tiny.sizes["neuron"]
    kw = dict(mode="workbench", max_steps=75, check_every=25, batch_size=16, patience=2, max_val_windows=32,
              random_state=1, max_train_neurons=n // 3, time_dim=8, device="cpu")
    f = TSMixerBaseline(16, **kw).fit(tiny)
    assert f.net_.blocks[0].time[0].weight.shape == (8, 16)          # the bottleneck is in place
    h = f.history_
    assert np.all(np.isfinite(h["val_mae"].values)) and h["train_mae"].values[-1] < h["train_mae"].values[0]
    w = protocol.windows(tiny, "test", context=16).isel(window=slice(0, 60))
    e, _ = score_forecaster(f, tiny, windows=w)
    ref = evaluate_loop(f, tiny, windows=w)
    np.testing.assert_allclose(e["abs_err"].values, ref["abs_err"].values, rtol=1e-5)
    np.testing.assert_allclose(e["sq_err"].values, ref["sq_err"].values, rtol=1e-5)
    g = pickle.loads(pickle.dumps(f))
    np.testing.assert_array_equal(g.predict(tiny, w["start"].values[:5]), f.predict(tiny, w["start"].values[:5]))
    e_mean, _ = score_forecaster(MeanBaseline(16).fit(tiny), tiny, windows=w)
    assert float(e["abs_err"].mean()) < float(e_mean["abs_err"].mean())


def test_device_default_and_explicit(tiny):
    f = TSMixerBaseline(4, mode="workbench", max_steps=1, max_val_windows=2, n_threads=1).fit(tiny)
    assert f.device_.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert isinstance(f.predict(tiny, [0]), np.ndarray)
    with pytest.raises(ValueError, match="device"):
        TSMixerBaseline(4, device="nonsense").fit(tiny)


def test_old_argument_names_still_work_with_a_warning(tiny):
    with pytest.warns(FutureWarning, match="max_checks"), pytest.warns(FutureWarning, match="check_every"):
        f = TSMixerBaseline(4, mode="workbench", max_epochs=1, steps_per_epoch=3, device="cpu")
    assert f.get_params()["max_checks"] == 1 and "max_epochs" not in f.get_params()
    f.fit(tiny)
    assert f.history_.sizes["check"] == 1 and f.settings_["check_every"] == 3
    with pytest.warns(FutureWarning, match="n_threads"), pytest.warns(FutureWarning, match="random_state"):
        g = TSMixerBaseline(4, num_threads=1, seed=3)
    assert (g.n_threads, g.random_state) == (1, 3)
