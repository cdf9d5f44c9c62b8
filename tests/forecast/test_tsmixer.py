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
