"""Fused scoring kernels against the float64 per-window reference loop (with missing neurons)."""

import numpy as np
import pytest

from workbench.forecast import kernels, protocol
from workbench.forecast.baselines import (
    LinearBaseline,
    MeanBaseline,
    StimulusBaseline,
    TraceForecaster,
)
from workbench.forecast.evaluate import evaluate_loop, score_forecaster


class _PredictOnly:
    """A forecaster with ``predict`` only (like the video models): exercises the generic path."""

    def __init__(self, inner):
        self.inner = inner
        self.context = inner.context
        self.horizon = inner.horizon
        self.name = "predict-only"

    def predict(self, ds, starts):
        return self.inner.predict(ds, starts)


class _DefaultBlocks(LinearBaseline):
    """Linear forecasts scored through the base class' predict-then-score ``block_errors``."""

    block_errors = TraceForecaster.block_errors
    prediction_budget = 3e4                   # several batches of windows on the tiny set


def _poisoned(ds, seed=0):
    """A copy with NaN traces: single neurons at single frames, and one frame missing entirely."""
    out = ds.copy(deep=True)
    tr = out["traces"].values
    rng = np.random.default_rng(seed)
    test = np.flatnonzero(out["split"].values == "test")
    tr[rng.choice(test, 25, replace=False), rng.integers(0, tr.shape[1], 25)] = np.nan
    tr[test[40]] = np.nan
    return out


FORECASTERS = {
    "mean4": lambda: MeanBaseline(4),
    "mean1": lambda: MeanBaseline(1),
    "mean256": lambda: MeanBaseline(256),
    "stimulus": lambda: StimulusBaseline(4),
    "linear4": lambda: LinearBaseline(4),
    "linear7-nocenter": lambda: LinearBaseline(7, center=None),
    "linear64-blas": lambda: LinearBaseline(64),
    "predict-only": lambda: _PredictOnly(LinearBaseline(4)),
    "default-blocks": lambda: _DefaultBlocks(6),
}


@pytest.mark.parametrize("poison", [False, True], ids=["clean", "nan"])
@pytest.mark.parametrize("key", list(FORECASTERS))
def test_fused_scores_equal_float64_loop(tiny, key, poison):
    f = FORECASTERS[key]()
    (f.inner if isinstance(f, _PredictOnly) else f).fit(tiny)
    ds = _poisoned(tiny) if poison else tiny
    errors, w = score_forecaster(f, ds, block_frames=400, batch_size=5)
    ref = evaluate_loop(f, ds)
    np.testing.assert_array_equal(errors["n_missing"].values, ref["n_missing"].values)
    for v in ("abs_err", "sq_err"):
        np.testing.assert_allclose(errors[v].values, ref[v].values, rtol=2e-6, atol=1e-9)
    if poison:
        assert errors["n_missing"].values.sum() > 0
        assert np.isnan(errors["abs_err"].values).any()       # the fully missing frame: NaN, not 0
    assert np.isfinite(errors["abs_err"].values).sum() > 0.9 * errors["abs_err"].size


def test_kernels_against_numpy():
    rng = np.random.default_rng(3)
    tr = rng.normal(size=(90, 37)).astype(np.float32)
    tr[50, 3] = np.nan
    starts = np.array([0, 1, 2, 10, 11, 40])
    c, h = 5, 6
    ctx, tgt = protocol.gather(tr.astype(np.float64), starts, c, h)

    def ref(pred):
        d = pred - tgt
        miss = np.isnan(d)
        d[miss] = 0
        return np.abs(d).sum(-1), (d * d).sum(-1), miss.sum(-1)

    def check(got, want):
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)

    m = ctx.mean(1, keepdims=True).astype(np.float32).astype(np.float64)
    check(kernels.score_context_mean(tr, starts, c, h), ref(np.broadcast_to(m, tgt.shape).copy()))
    a, b = rng.normal(size=(c, h)), rng.normal(size=h)
    lin = (np.einsum("wcn,ch->whn", ctx, a) + b[:, None]).astype(np.float32).astype(np.float64)
    check(kernels.score_linear(tr, starts, a, b, chunk=8), ref(lin))
    check(kernels.score_linear(tr, starts, a, b, blas_above=2), ref(lin))
    check(kernels.score_linear_ctx(ctx, tr, starts + c, a, b, chunk=16), ref(lin))
    pred = rng.normal(size=tgt.shape).astype(np.float32)
    check(kernels.score_predictions(pred, tr, starts + c), ref(pred.astype(np.float64)))
    table = rng.normal(size=(3, 37)).astype(np.float32)
    frames = np.unique(starts[:, None] + c + np.arange(h))
    rows = frames % 3
    per_frame = kernels.frame_errors(table, tr, frames, rows=rows)
    got = kernels.windows_from_frames(per_frame, frames, starts + c, h)
    want = ref(table[(starts[:, None] + c + np.arange(h)) % 3].astype(np.float64))
    check(got, want)


def test_kernel_input_errors():
    tr = np.zeros((20, 4), np.float32)
    with pytest.raises(ValueError, match="outside"):
        kernels.score_context_mean(tr, [15], 4, 4)
    with pytest.raises(ValueError, match="do not fit"):
        kernels.score_predictions(np.zeros((2, 3, 5), np.float32), tr, [0, 1])
    with pytest.raises(ValueError, match="coef"):
        kernels.score_linear(tr, [0], np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="rows"):
        kernels.frame_errors(np.zeros((2, 4)), tr, [1, 2], rows=[0, 5])


@pytest.mark.parametrize("c", [4, 5])
@pytest.mark.parametrize("h", [5, 6])
def test_linear_four_row_context_against_numpy(c, h):
    """Four- and five-row contexts (C = 4; TSMixer's features + last value) score two leads per
    pass (odd horizons leave one lead to the single-lead path); NaNs in context or target rows
    fall back to explicit predictions with missing counted."""
    rng = np.random.default_rng(h + 10 * c)
    tr = rng.normal(size=(60, 700)).astype(np.float32)
    tr[20, 5] = np.nan                               # in some windows' context
    tr[30, 600] = np.nan                             # a target of some leads
    starts = np.array([0, 3, 4, 5, 17, 25, 40])
    ctx, tgt = protocol.gather(tr.astype(np.float64), starts, c, h)
    a, b = rng.normal(size=(c, h)), rng.normal(size=h)
    pred = (np.einsum("wcn,ch->whn", ctx, a) + b[:, None]).astype(np.float32).astype(np.float64)
    d = pred - tgt
    miss = np.isnan(d)
    d[miss] = 0
    want = np.abs(d).sum(-1), (d * d).sum(-1), miss.sum(-1)
    assert want[2].sum() > 0
    for chunk in (64, 300, 1024):
        for got in (kernels.score_linear(tr, starts, a, b, chunk=chunk),
                    kernels.score_linear_ctx(ctx, tr, starts + c, a, b, chunk=chunk)):
            np.testing.assert_array_equal(got[2], want[2])
            for g, r in zip(got[:2], want[:2]):
                np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("c", [1, 4, 6])
def test_threaded_kernels_equal_serial(c):
    """Neuron chunks split over threads give the serial sums (float64 rounding) and counts."""
    rng = np.random.default_rng(c)
    tr = rng.normal(size=(80, 500)).astype(np.float32)
    tr[30, 7] = np.nan
    tr[45, 420] = np.nan
    starts = np.array([0, 1, 2, 3, 10, 11, 30, 31, 32])
    a, b = rng.normal(size=(c, 8)), rng.normal(size=8)
    serial = kernels.score_context_mean(tr, starts, c, 8, chunk=64), kernels.score_linear(tr, starts, a, b, chunk=64)
    old = kernels.set_num_threads(2)
    try:
        threaded = kernels.score_context_mean(tr, starts, c, 8, chunk=64), kernels.score_linear(tr, starts, a, b, chunk=64)
    finally:
        kernels.set_num_threads(old)
    for got, want in zip(threaded, serial):
        np.testing.assert_array_equal(got[2], want[2])
        assert want[2].sum() > 0
        for g, r in zip(got[:2], want[:2]):
            np.testing.assert_allclose(g, r, rtol=1e-12)
