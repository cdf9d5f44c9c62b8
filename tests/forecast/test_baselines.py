import numpy as np
import pytest

from workbench.forecast import build_dataset, protocol
from workbench.forecast.baselines import LinearBaseline, MeanBaseline, StimulusBaseline


def test_mean_context_one_is_last_value(tiny):
    f = MeanBaseline(1).fit(tiny)
    starts = np.array([5, 100, 2000])
    pred = f.predict(tiny, starts)
    tr = tiny["traces"].values
    assert pred.shape == (3, 32, tiny.sizes["neuron"])
    np.testing.assert_array_equal(pred[:, 7], tr[starts])
    f4 = MeanBaseline(4).fit(tiny)
    np.testing.assert_allclose(f4.predict(tiny, starts)[:, 0], tr[starts[:, None] + np.arange(4)].mean(1),
                               rtol=1e-6)


def test_stimulus_baseline_never_reads_test_frames(tiny):
    ref = StimulusBaseline(4).fit(tiny)
    poisoned = tiny.copy(deep=True)
    split = tiny["split"].values
    tr = poisoned["traces"].values
    tr[split != "train"] = np.nan                # val, test, context, trim frames unusable
    poisoned["traces"].values[:] = tr
    f = StimulusBaseline(4).fit(poisoned)
    np.testing.assert_array_equal(f.table_, ref.table_)
    assert np.all(np.isfinite(f.table_))
    w = protocol.windows(tiny, "test", context=4)
    assert np.all(np.isfinite(f.predict(tiny, w["start"].values)))
    assert np.all(split[f.train_frames_] == "train")


def test_stimulus_baseline_is_phase_average(tiny):
    f = StimulusBaseline(4).fit(tiny)
    tr = tiny["traces"].values.astype(np.float64)
    ph = tiny["trial_phase"].values
    ci = tiny["condition_index"].values
    sel = (tiny["split"].values == "train") & (ci == 1) & (ph == 7)
    t = np.flatnonzero((ci == 1) & (ph == 7) & (tiny["split"].values == "test"))[0]
    pred = f.predict(tiny, np.array([t - 4]))[0, 0]
    np.testing.assert_allclose(pred, tr[sel].mean(0), rtol=1e-5)


def _ar_dataset(coef, n_frames=3600, n_neurons=40, seed=0):
    """Traces that follow a known shared AR(len(coef)) process (via lfilter, no loop)."""
    from scipy.signal import lfilter

    from workbench.forecast.synthetic import condition_offsets

    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n_frames, n_neurons))
    x = lfilter([1.0], np.r_[1.0, -np.asarray(coef)], noise, axis=0)
    return build_dataset(traces=x.astype(np.float64), stimulus=np.zeros((n_frames, 26), np.float32),
                         offsets=condition_offsets(n_frames), frame_period_s=1.0,
                         voxel_size_zyx_um=(1.0, 1.0, 1.0))


def test_linear_recovers_ar_coefficients():
    coef = [0.5, -0.2, 0.1, 0.3]              # x_t = sum_k coef[k] x_{t-1-k} + noise
    ds = _ar_dataset(coef)
    f = LinearBaseline(4, center=None, max_windows=None, max_neurons=None).fit(ds)
    # one-step-ahead weights on (x_{t-4}, .., x_{t-1}) are the AR coefficients reversed
    np.testing.assert_allclose(f.coef_[:, 0], coef[::-1], atol=0.02)
    assert abs(f.intercept_[0]) < 0.02


def test_linear_normal_equations_match_lstsq(tiny):
    f = LinearBaseline(4, center="last", alpha=0.0, max_windows=None, max_neurons=None).fit(tiny)
    starts = protocol.windows(tiny, "train", context=4)["start"].values
    ctx, tgt = protocol.gather(tiny["traces"].values.astype(np.float64), starts, 4, 32)
    last = ctx[:, -1:]
    x = np.concatenate([(ctx - last).transpose(0, 2, 1).reshape(-1, 4), np.ones((ctx.shape[0] * ctx.shape[2], 1))], 1)
    y = (tgt - last).transpose(0, 2, 1).reshape(-1, 32)
    ref = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(f.coef_, ref[:-1], rtol=1e-6, atol=1e-8)


def test_estimator_api_errors(tiny):
    with pytest.raises(RuntimeError, match="not fitted"):
        MeanBaseline(4).predict(tiny, [0])
    with pytest.raises(ValueError, match="context"):
        MeanBaseline(0).fit(tiny)
    assert MeanBaseline(4).get_params() == {"context": 4}


def test_stimulus_block_path_equals_per_window_lookup(tiny):
    f = StimulusBaseline(4).fit(tiny)
    s = protocol.windows(tiny, "test", context=4)["start"].values
    for starts in (s[:50], s[::7]):                  # consecutive (view) and scattered (gather)
        np.testing.assert_array_equal(f.predict(tiny, starts), f._predict(None, tiny, starts))
