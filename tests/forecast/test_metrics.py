import numpy as np
import pytest
import xarray as xr

from workbench.forecast import segment_means
from workbench.forecast.baselines import LinearBaseline, MeanBaseline, StimulusBaseline
from workbench.forecast.bootstrap import block_bootstrap_ci, block_bootstrap_indices
from workbench.forecast.evaluate import evaluate, evaluate_loop, score_forecaster
from workbench.forecast.metrics import aggregate, summarize, window_errors


def brute_force_condition_mae(errors_loop, windows):
    """Per-condition mean of per-window errors with an explicit loop (float64 reference)."""
    out = {}
    for c in dict.fromkeys(windows["condition"].values):
        rows = [errors_loop["abs_err"].values[i] for i in range(windows.sizes["window"])
                if windows["condition"].values[i] == c]
        out[c] = np.mean(np.stack(rows), axis=0)
    return out


@pytest.mark.parametrize("make", [lambda: MeanBaseline(4), lambda: LinearBaseline(4), lambda: MeanBaseline(256),
                                  lambda: StimulusBaseline(4)])
def test_vectorised_scores_equal_per_window_loop(tiny, make):
    f = make().fit(tiny)
    errors, w = score_forecaster(f, tiny, block_frames=300, batch_size=7)   # several blocks/batches
    ref = evaluate_loop(f, tiny)
    np.testing.assert_allclose(errors["abs_err"].values, ref["abs_err"].values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(errors["sq_err"].values, ref["sq_err"].values, rtol=1e-5, atol=1e-8)
    agg = aggregate(errors, w, n_boot=0)
    for c, v in brute_force_condition_mae(ref, w).items():
        np.testing.assert_allclose(agg["mae"].sel(condition=c).values, v, rtol=1e-5)


@pytest.mark.parametrize("missing", ["exclude", "zapbench"])
def test_frame_aligned_forecasts_scored_once_per_frame_equal_the_full_tensor(missing):
    import torch

    from workbench.forecast.metrics import error_means

    frames, n, h, w = 50, 7, 5, 20
    g = torch.Generator().manual_seed(0)
    fr = torch.randn(frames, n, dtype=torch.float64, generator=g)
    tg = torch.randn(frames, n, dtype=torch.float64, generator=g)
    fr[10, 3] = float("nan")
    p = fr.as_strided((w, h, n), (n, n, 1))                   # forecast of frame w + h, shared
    t = tg.as_strided((w, h, n), (n, n, 1), 2 * n)
    for got, ref in zip(error_means(p, t, missing), error_means(p.contiguous(), t.contiguous(), missing)):
        torch.testing.assert_close(got, ref, equal_nan=True)


def test_missing_neurons_counted_not_zero():
    """The "exclude" rule: missing neuron-steps leave the mean and are counted."""
    rng = np.random.default_rng(0)
    target = rng.normal(size=(5, 3, 4))
    pred = target + 1.0
    pred[0, 0, 1] = np.nan
    pred[2, :, :] = np.nan                      # everything missing in window 2
    e = window_errors(pred, target, missing="exclude")
    assert e.attrs["missing_rule"] == "exclude"
    assert e["n_missing"].values[0, 0] == 1 and e["n_missing"].values[2].tolist() == [4, 4, 4]
    np.testing.assert_allclose(e["abs_err"].values[0, 0], 1.0)         # mean over the 3 present
    assert np.all(np.isnan(e["abs_err"].values[2]))
    w = xr.Dataset({"start": ("window", np.arange(5))},
                   coords={"condition": ("window", ["a"] * 5)}, attrs={"heldout_conditions": []})
    agg = aggregate(e, w, n_boot=50)
    np.testing.assert_allclose(agg["mae"].values, 1.0)                 # not pulled towards 0
    assert int(agg["n_missing"].sum()) == 1 + 12


def test_missing_neurons_zapbench_rule():
    """ZAPBench's rule: nan_to_num on both sides, every neuron in the denominator."""
    rng = np.random.default_rng(0)
    target = rng.normal(size=(4, 3, 5))
    pred = target + 0.5
    pred[0, 0, 1] = np.nan                      # missing prediction: scored against 0, i.e. |target|
    target[1, 2, 3] = np.nan                    # missing target: |pred|
    pred[2, :, 4] = np.nan
    target[2, :, 4] = np.nan                    # missing neuron on both sides: zero error
    e = window_errors(pred, target, missing="zapbench")
    ref = np.abs(np.nan_to_num(target) - np.nan_to_num(pred)).mean(-1)     # the colab's definition
    np.testing.assert_allclose(e["abs_err"].values, ref, rtol=1e-12)
    np.testing.assert_allclose(e["sq_err"].values, ((np.nan_to_num(target) - np.nan_to_num(pred)) ** 2).mean(-1))
    assert e["n_missing"].values[0, 0] == 1 and e["n_missing"].values[2].tolist() == [1, 1, 1]
    assert e.attrs["missing_rule"] == "zapbench"
    with pytest.raises(ValueError, match="missing"):
        window_errors(pred, target, missing="drop")


@pytest.mark.parametrize("missing", ["zapbench", "exclude"])
def test_scoring_with_a_missing_neuron_equals_the_loop(tiny, missing):
    ds = tiny.copy(deep=True)
    ds["traces"].values[:, 5] = np.nan                # neuron 5 missing in the whole recording
    ds["traces"].values[2000:2010, 7] = np.nan
    f = LinearBaseline(4).fit(ds)
    errors, w = score_forecaster(f, ds, missing=missing, batch_size=5)
    ref = evaluate_loop(f, ds, missing=missing)
    np.testing.assert_allclose(errors["abs_err"].values, ref["abs_err"].values, rtol=1e-5)
    np.testing.assert_array_equal(errors["n_missing"].values, ref["n_missing"].values)
    assert np.all(errors["n_missing"].values >= 1) and np.all(np.isfinite(errors["abs_err"].values))
    r = evaluate({"linear": f}, ds, n_boot=0, missing=missing)
    assert r.attrs["missing_rule"] == missing


def test_evaluate_result_layout_and_summary(tiny):
    fs = {"mean": MeanBaseline(4).fit(tiny), "stimulus": StimulusBaseline(4).fit(tiny)}
    r = evaluate(fs, tiny, n_boot=100)
    assert r["mae"].dims == ("model", "context", "condition", "lead")
    assert r.attrs["missing_rule"] == "exclude"              # synthetic data: "auto" -> "exclude"
    assert list(r["lead"].values) == list(range(1, 33))
    assert r["heldout"].sel(condition="taxis").item() and int(r["heldout"].sum()) == 1
    m = r["mae"].sel(model="mean", context=4)
    assert np.all((r["mae_lower"] <= r["mae"] + 1e-12).values[np.isfinite(r["mae"].values)])
    assert np.all((r["mae_upper"] >= r["mae"] - 1e-12).values[np.isfinite(r["mae"].values)])
    train = ~r["heldout"].values
    np.testing.assert_allclose(r["mae_train_conditions"].sel(model="mean", context=4).values,
                               m.values[train].mean(0))
    table = summarize(r)
    assert set(table["model"]) == {"mean", "stimulus"} and "mae_lead1" in table


def test_segment_means_against_loop():
    rng = np.random.default_rng(1)
    seg = rng.integers(0, 30, (3, 5, 6))
    seg[seg > 20] = 0
    vol = rng.normal(size=(4, 3, 5, 6))
    out = segment_means(vol, seg, 25)                     # labels 21..25 have no voxels
    for n in range(25):
        m = seg == n + 1
        if m.any():
            np.testing.assert_allclose(out[:, n], vol[:, m].mean(-1))
        else:
            assert np.all(np.isnan(out[:, n]))
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(segment_means(torch.tensor(vol), seg, 25).numpy(), out, equal_nan=True)
    with pytest.raises(ValueError, match="segmentation shape"):
        segment_means(vol[..., :5], seg, 25)


def test_block_bootstrap():
    idx = block_bootstrap_indices(10, n_boot=3, block_length=4, rng=0)
    assert idx.shape == (3, 10)
    d = np.diff(idx, axis=1)
    assert np.all((d == 1) | (d == -9) | (np.arange(1, 10) % 4 == 0))   # runs of consecutive windows
    x = np.random.default_rng(0).normal(size=(400, 2))
    lo, hi = block_bootstrap_ci(x, n_boot=500, block_length=8, seed=1)
    assert np.all(lo < x.mean(0)) and np.all(hi > x.mean(0))
    lo2, hi2 = block_bootstrap_ci(x, n_boot=500, block_length=8, seed=1)
    np.testing.assert_array_equal(lo, lo2)
    # width ~ 2 * 1.96 / sqrt(n) for white noise
    assert np.all(np.abs((hi - lo) - 2 * 1.96 / np.sqrt(400)) < 0.06)
    moving = block_bootstrap_indices(10, n_boot=50, block_length=4, circular=False, rng=0)
    assert moving.max() <= 9
