"""Trace baselines: each ZAPBench definition against a value computed independently in the test."""

import numpy as np
import pytest
from sklearn.base import clone

from workbench.exceptions import NotFittedError
from workbench.forecast import build_dataset, protocol
from workbench.forecast.baselines import (
    ZAPBENCH_TRIAL_LENGTHS,
    ZAPBENCH_TRIALS_KEPT,
    LinearBaseline,
    MeanBaseline,
    StimulusBaseline,
)
from workbench.forecast.baselines.stimulus import kept_trials
from workbench.forecast.synthetic import condition_offsets


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
    f2 = MeanBaseline(4, window=2).fit(tiny)                  # the last 2 of the 4 context frames
    np.testing.assert_allclose(f2.predict(tiny, starts)[:, 5], tr[starts[:, None] + np.arange(2, 4)].mean(1),
                               rtol=1e-6)


def test_long_context_mean_picks_the_better_window_on_validation(tiny):
    f = MeanBaseline(256, mode="zapbench").fit(tiny)
    tr = tiny["traces"].values.astype(np.float64)
    val = protocol.windows(tiny, "val", context=256)["start"].values
    ref = {}
    for w in (256, 4):                                          # independent: explicit means
        m = np.stack([tr[s + 256 - w:s + 256].mean(0) for s in val])
        tgt = np.stack([tr[s + 256:s + 288] for s in val])
        ref[w] = np.abs(tgt - m[:, None]).mean()
    assert set(f.val_mae_by_window_) == {256, 4}
    for w in ref:
        np.testing.assert_allclose(f.val_mae_by_window_[w], ref[w], rtol=1e-5)
    assert f.window_ == min(ref, key=ref.get)
    assert MeanBaseline(256, mode="workbench").fit(tiny).window_ == 256


def _trial_dataset(lengths, n_neurons=6, seed=0, nan_neuron=None):
    """A recording whose conditions consist of trials of the given lengths (release-like)."""
    rng = np.random.default_rng(seed)
    sizes = [sum(r) if r else 120 for r in lengths]
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    x = rng.normal(size=(off[-1], n_neurons))
    if nan_neuron is not None:
        x[:, nan_neuron] = np.nan
    ds = build_dataset(traces=x, stimulus=np.zeros((off[-1], 26), np.float32), offsets=list(off),
                       frame_period_s=1.0, voxel_size_zyx_um=(1.0, 1.0, 1.0),
                       attrs={"trial_lengths": [list(r) for r in lengths]})
    return ds, x, off


def _evoked_reference(x, off, lengths, kept):
    """ZAPBench's evoked response, written out trial by trial (independent of the library)."""
    out = np.empty_like(x)
    for i, row in enumerate(lengths):
        lo, hi = off[i], off[i + 1]
        if not row:
            out[lo:hi] = np.nanmean(x[lo:hi], 0)
            continue
        n_max = max(row)
        trials, t = [], lo
        for n in row:                                  # right-aligned: pad short trials at their start
            pad = np.full((n_max - n, x.shape[1]), np.nan)
            trials.append(np.concatenate([pad, x[t:t + n]]))
            t += n
        tmpl = np.nanmean(np.stack(trials)[:kept[i]], 0)
        t = lo
        for n in row:
            out[t:t + n] = tmpl[n_max - n:]
            t += n
    return out


def test_stimulus_zapbench_alternating_trials_match_reference():
    lengths = [(58, 66, 66, 65, 66), (131, 132, 131), (), (65, 66, 65, 66), (197, 197, 197)]
    kept = [-2, -1, None, -2, -1]
    ds, x, off = _trial_dataset(lengths)
    ds.attrs["trials_kept"] = kept
    f = StimulusBaseline(4, mode="zapbench").fit(ds)
    assert f.source_ == "trial_lengths"
    ref = _evoked_reference(x, off, lengths, kept)
    starts = np.arange(0, off[-1] - 36, 7)
    pred = f.predict(ds, starts)
    tgt_frames = starts[:, None] + 4 + np.arange(32)
    np.testing.assert_allclose(pred, ref[tgt_frames], rtol=1e-5, atol=1e-6)


def test_stimulus_release_table_and_precomputed_array():
    assert [sum(r) for r in ZAPBENCH_TRIAL_LENGTHS if r] == [649, 1773, 656, 657, 1312, 591, 656]
    off = np.asarray(protocol.RELEASE_CONDITION_OFFSETS)
    n = np.diff(off)
    assert all(sum(r) == k for r, k in zip(ZAPBENCH_TRIAL_LENGTHS, n) if r)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(off[-1], 3)).astype(np.float32)
    ds = build_dataset(traces=x, stimulus=np.zeros((off[-1], 26), np.float32), offsets=list(off),
                       frame_period_s=1.0, voxel_size_zyx_um=(1.0, 1.0, 1.0))
    f = StimulusBaseline(4, mode="zapbench").fit(ds)       # the release's offsets: the table in the code
    ref = _evoked_reference(x.astype(np.float64), off, ZAPBENCH_TRIAL_LENGTHS, ZAPBENCH_TRIALS_KEPT)
    s = protocol.windows(ds, "test", context=4)["start"].values[::50]
    np.testing.assert_allclose(f.predict(ds, s), ref[s[:, None] + 4 + np.arange(32)], rtol=1e-5, atol=1e-6)
    # a precomputed stimulus_evoked_response is returned as is, read through `requires`
    ds2 = ds.assign(stimulus_evoked_response=(("time", "neuron"), ref.astype(np.float32) + 1))
    g = StimulusBaseline(4, mode="zapbench").fit(ds2)
    assert g.source_ == "release" and "stimulus_evoked_response" in g.requires
    np.testing.assert_allclose(g.predict(ds2, s), ref[s[:, None] + 4 + np.arange(32)] + 1, rtol=1e-6,
                               atol=1e-6)
    # the derived rule (trials reaching > 1 frame into the test split are left out) is ZAPBench's
    assert kept_trials(off, ZAPBENCH_TRIAL_LENGTHS) == list(ZAPBENCH_TRIALS_KEPT)


def test_stimulus_zapbench_needs_trial_lengths():
    ds, _, _ = _trial_dataset([(20, 20), (30,)])
    del ds.attrs["trial_lengths"]
    with pytest.raises(ValueError, match="trial lengths"):
        StimulusBaseline(4, mode="zapbench").fit(ds)
    ds.attrs["trial_lengths"] = [[20, 21], [30]]
    with pytest.raises(ValueError, match="sum to 41"):
        StimulusBaseline(4, mode="zapbench").fit(ds)


def test_stimulus_workbench_never_reads_test_frames(tiny):
    ref = StimulusBaseline(4, mode="workbench").fit(tiny)
    poisoned = tiny.copy(deep=True)
    split = tiny["split"].values
    tr = poisoned["traces"].values
    tr[split != "train"] = np.nan                # val, test, context, trim frames unusable
    poisoned["traces"].values[:] = tr
    f = StimulusBaseline(4, mode="workbench").fit(poisoned)
    np.testing.assert_array_equal(f.table_, ref.table_)
    assert np.all(np.isfinite(f.table_))
    w = protocol.windows(tiny, "test", context=4)
    assert np.all(np.isfinite(f.predict(tiny, w["start"].values)))
    assert np.all(split[f.train_frames_] == "train")


def test_stimulus_workbench_is_phase_average(tiny):
    f = StimulusBaseline(4, mode="workbench").fit(tiny)
    tr = tiny["traces"].values.astype(np.float64)
    ph = tiny["trial_phase"].values
    ci = tiny["condition_index"].values
    sel = (tiny["split"].values == "train") & (ci == 0) & (ph == 40)
    t = np.flatnonzero((ci == 0) & (ph == 40) & (tiny["split"].values == "test"))[0]
    pred = f.predict(tiny, np.array([t - 4]))[0, 0]
    np.testing.assert_allclose(pred, tr[sel].mean(0), rtol=1e-5)
    s = protocol.windows(tiny, "test", context=4)["start"].values
    for starts in (s[:50], s[::7]):                  # consecutive (view) and scattered (gather)
        np.testing.assert_array_equal(f.predict(tiny, starts), np.stack([f.predict(tiny, [v])[0] for v in starts]))


def _ar_dataset(coef, n_frames=3600, n_neurons=40, seed=0, noise=None):
    """Traces that follow a known shared AR(len(coef)) process (via lfilter, no loop)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n_frames, n_neurons)) if noise is None else noise(rng, (n_frames, n_neurons))
    x = lfilter([1.0], np.r_[1.0, -np.asarray(coef)], e, axis=0)
    return build_dataset(traces=x.astype(np.float64), stimulus=np.zeros((n_frames, 26), np.float32),
                         offsets=condition_offsets(n_frames), frame_period_s=1.0,
                         voxel_size_zyx_um=(1.0, 1.0, 1.0))


def test_linear_lstsq_recovers_ar_coefficients():
    coef = [0.5, -0.2, 0.1, 0.3]              # x_t = sum_k coef[k] x_{t-1-k} + noise
    ds = _ar_dataset(coef)
    f = LinearBaseline(4, mode="workbench", center=None, max_windows=None, max_neurons=None).fit(ds)
    # one-step-ahead weights on (x_{t-4}, .., x_{t-1}) are the AR coefficients reversed
    np.testing.assert_allclose(f.coef_[:, 0], coef[::-1], atol=0.02)
    assert abs(f.intercept_[0]) < 0.02


def test_linear_lstsq_normal_equations_match_lstsq(tiny):
    f = LinearBaseline(4, mode="workbench", alpha=0.0, max_windows=None, max_neurons=None).fit(tiny)
    starts = protocol.windows(tiny, "train", context=4)["start"].values
    ctx, tgt = protocol.gather(tiny["traces"].values.astype(np.float64), starts, 4, 32)
    last = ctx[:, -1:]
    x = np.concatenate([(ctx - last).transpose(0, 2, 1).reshape(-1, 4), np.ones((ctx.shape[0] * ctx.shape[2], 1))], 1)
    y = (tgt - last).transpose(0, 2, 1).reshape(-1, 32)
    ref = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(f.coef_, ref[:-1], rtol=1e-6, atol=1e-8)


def test_linear_zapbench_starts_as_the_mean_and_minimises_mae():
    # constant init: with a vanishing learning rate the fit is the mean of the context
    ds = _ar_dataset([0.6], n_neurons=8)
    f = LinearBaseline(4, mode="zapbench", lr=1e-12, max_steps=1, device="cpu").fit(ds)
    assert f.settings_["center"] is None and f.settings_["solver"] == "adamw"
    s = np.array([10, 500, 900])
    np.testing.assert_allclose(f.predict(ds, s), MeanBaseline(4).fit(ds).predict(ds, s), rtol=1e-5, atol=1e-6)
    # MAE loss: targets are iid exponential noise (independent of the context), so the MAE-optimal
    # forecast is its median (ln 2) and the least-squares one its mean (1)
    rng = np.random.default_rng(3)
    ds = ds.copy()
    ds["traces"] = (("time", "neuron"), rng.exponential(size=ds["traces"].shape))
    mae = LinearBaseline(1, mode="zapbench", max_steps=1500, check_every=250, patience=100,
                         batch_size=32, lr=1e-2, device="cpu").fit(ds)
    lsq = LinearBaseline(1, mode="workbench", center=None, max_windows=None, max_neurons=None).fit(ds)
    s = protocol.windows(ds, "test", context=1)["start"].values
    np.testing.assert_allclose(np.median(mae.predict(ds, s)), np.log(2), atol=0.06)
    np.testing.assert_allclose(np.mean(lsq.predict(ds, s)), 1.0, atol=0.06)


def test_estimator_api_errors(tiny):
    with pytest.raises(NotFittedError, match="not fitted"):
        MeanBaseline(4).predict(tiny, [0])
    with pytest.raises(ValueError, match="context"):
        MeanBaseline(0).fit(tiny)
    assert MeanBaseline(4).get_params() == {"context": 4, "window": None, "mode": "auto"}
    f = LinearBaseline(4, random_state=3)
    g = clone(f)
    assert g.get_params() == f.get_params() and g is not f
    with pytest.raises(ValueError, match="mode"):
        MeanBaseline(4, mode="zap").fit(tiny)
    with pytest.warns(FutureWarning, match="random_state"):
        LinearBaseline(4, seed=1).fit(tiny)
