import numpy as np

from workbench.forecast import protocol
from workbench.forecast.baselines import MeanBaseline, TSMixerBaseline
from workbench.forecast.evaluate import score_forecaster


def test_tsmixer_trains_with_early_stopping_and_beats_mean(tiny):
    kw = dict(max_epochs=4, steps_per_epoch=25, batch_size=16, patience=2, max_val_windows=64, seed=0)
    f = TSMixerBaseline(4, **kw).fit(tiny)
    h = f.history_
    assert h.sizes["epoch"] >= 2 and np.all(np.isfinite(h["val_mae"].values))
    assert f.best_val_mae_ == float(h["val_mae"].min())          # best weights restored
    assert h["train_mae"].values[-1] < h["train_mae"].values[0]
    starts = protocol.windows(tiny, "test", context=4)["start"].values[:40]
    pred = f.predict(tiny, starts)
    assert pred.shape == (40, 32, tiny.sizes["neuron"]) and pred.dtype == np.float32
    # deterministic from the seed
    np.testing.assert_allclose(TSMixerBaseline(4, **kw).fit(tiny).predict(tiny, starts), pred, rtol=1e-5, atol=1e-6)
    e_mix, _ = score_forecaster(f, tiny, split="val")
    e_mean, _ = score_forecaster(MeanBaseline(4).fit(tiny), tiny, split="val")
    assert float(e_mix["abs_err"].mean()) < float(e_mean["abs_err"].mean())


def test_tsmixer_neuron_subsets_and_time_bottleneck(tiny):
    """Training on random neuron subsets with a C -> d -> C time mixer: learns, and its fused
    scores equal the float64 per-window loop."""
    from workbench.forecast.evaluate import evaluate_loop

    n = tiny.sizes["neuron"]
    kw = dict(max_epochs=3, steps_per_epoch=25, batch_size=16, patience=2, max_val_windows=32, seed=1,
              max_train_neurons=n // 3, time_dim=8)
    f = TSMixerBaseline(16, **kw).fit(tiny)
    assert f.net_.blocks[0].time[0].weight.shape == (8, 16)          # the bottleneck is in place
    h = f.history_
    assert np.all(np.isfinite(h["val_mae"].values)) and h["train_mae"].values[-1] < h["train_mae"].values[0]
    w = protocol.windows(tiny, "test", context=16).isel(window=slice(0, 60))
    e, _ = score_forecaster(f, tiny, windows=w)
    ref = evaluate_loop(f, tiny, windows=w)
    np.testing.assert_allclose(e["abs_err"].values, ref["abs_err"].values, rtol=1e-6)
    f.fused_head_max_context = 0                                     # the long-context path, same model
    e_long, _ = score_forecaster(f, tiny, windows=w)
    np.testing.assert_allclose(e_long["abs_err"].values, ref["abs_err"].values, rtol=1e-6)
    np.testing.assert_allclose(e_long["sq_err"].values, ref["sq_err"].values, rtol=1e-5)
    import pickle

    g = pickle.loads(pickle.dumps(f))                                 # the CLI pickles fitted models
    np.testing.assert_array_equal(g.predict(tiny, w["start"].values[:5]), f.predict(tiny, w["start"].values[:5]))
    e_mean, _ = score_forecaster(MeanBaseline(16).fit(tiny), tiny, windows=w)
    assert float(e["abs_err"].mean()) < float(e_mean["abs_err"].mean())
