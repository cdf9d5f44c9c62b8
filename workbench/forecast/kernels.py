"""Compiled scoring kernels: predictions and errors fused, one pass over the data, O(neuron) scratch.

Every kernel returns, per (window, lead), the *sums* over neurons of ``|pred - target|`` and
``(pred - target)^2`` (float64) and the number of missing neurons (NaN prediction or target);
:func:`errors_from_sums` turns them into ZAPBench's per-window means. Differences are taken in
float64 from the float32 inputs (exact), and accumulated in float64, so the kernels agree with a
float64 reference loop to rounding.

Clean rows are summed in a vectorised loop in which NaNs propagate; only rows whose sum is NaN
are summed again neuron by neuron, counting and skipping the missing ones (clean data pays
nothing for missing-value handling).

The kernels exploit the structure of the forecasts instead of materialising a (window, lead,
neuron) prediction tensor:

- :func:`score_context_mean`: one prediction per window, the mean of its context, kept as a
  running float64 sum over consecutive windows (O(N) per window whatever the context length);
- :func:`frame_errors`: predictions that depend only on the target frame (stimulus-evoked):
  each frame is scored once; windows then index the per-frame sums;
- :func:`score_linear`: a linear filter over the context, evaluated neuron-chunk by chunk in cache;
- :func:`score_predictions`: any predictions (a batch of (window, lead, neuron)).
"""

from __future__ import annotations

import numba as nb
import numpy as np
import xarray as xr

__all__ = ["score_predictions", "score_context_mean", "frame_errors", "windows_from_frames",
           "score_linear", "errors_from_sums", "warm_up"]

# fast-math without 'nnan'/'ninf': reductions may be reordered (vectorised) but NaN still propagates
_FM = {"reassoc", "contract", "arcp", "nsz"}


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _row_sums(p, t):
    sa = 0.0
    ss = 0.0
    for i in range(t.size):
        d = np.float64(p[i]) - np.float64(t[i])
        sa += abs(d)
        ss += d * d
    return sa, ss


@nb.njit(cache=True, nogil=True)
def _row_sums_nan(p, t):
    sa = 0.0
    ss = 0.0
    m = 0
    for i in range(t.size):
        d = np.float64(p[i]) - np.float64(t[i])
        if np.isnan(d):
            m += 1
        else:
            sa += abs(d)
            ss += d * d
    return sa, ss, m


@nb.njit(cache=True, nogil=True)
def _store(p, t, sa, ss, out_abs, out_sq, out_miss, w, h):
    if np.isnan(sa):
        sa, ss, m = _row_sums_nan(p, t)
        out_miss[w, h] = m
    out_abs[w, h] = sa
    out_sq[w, h] = ss


@nb.njit(cache=True, nogil=True)
def _score_predictions(pred, traces, first, out_abs, out_sq, out_miss):
    for w in range(pred.shape[0]):
        for h in range(pred.shape[1]):
            t = traces[first[w] + h]
            sa, ss = _row_sums(pred[w, h], t)
            _store(pred[w, h], t, sa, ss, out_abs, out_sq, out_miss, w, h)


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _add_scaled(acc, x, a):
    for i in range(acc.size):
        acc[i] += a * np.float64(x[i])


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _add_diff(acc, x_in, x_out):
    for i in range(acc.size):
        acc[i] += np.float64(x_in[i]) - np.float64(x_out[i])


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _total(x):
    t = 0.0
    for i in range(x.size):
        t += x[i]
    return t


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _scale_to32(out, acc, a):
    for i in range(acc.size):
        out[i] = np.float32(acc[i] * a)


@nb.njit(cache=True, nogil=True)
def _score_context_mean(traces, starts, context, horizon, out_abs, out_sq, out_miss):
    n = traces.shape[1]
    run = np.zeros(n)                       # float64 running sum of the context frames
    m = np.empty(n, np.float32)             # the prediction, rounded like MeanBaseline.predict
    prev = -(2 ** 62)
    inv = 1.0 / context
    for w in range(starts.size):
        s = starts[w]
        if s == prev + 1:                   # slide by one frame: O(N)
            _add_diff(run, traces[s + context - 1], traces[s - 1])
        if s != prev + 1 or np.isnan(_total(run)):
            # restart: first window, a gap between conditions, or a NaN that sliding would keep
            run[:] = 0.0
            for c in range(context):
                _add_scaled(run, traces[s + c], 1.0)
        prev = s
        _scale_to32(m, run, inv)
        for h in range(horizon):
            t = traces[s + context + h]
            sa, ss = _row_sums(m, t)
            _store(m, t, sa, ss, out_abs, out_sq, out_miss, w, h)


@nb.njit(cache=True, nogil=True)
def _frame_errors(table, rows, traces, frames, out_abs, out_sq, out_miss):
    for k in range(frames.size):
        t = traces[frames[k]]
        p = table[rows[k]]
        sa, ss = _row_sums(p, t)
        _store(p, t, sa, ss, out_abs, out_sq, out_miss, k, 0)


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _axpy4(acc, xs, coef, r, h, n0, k):
    """acc[i] += sum_{j<4} coef[r + j, h] xs[r + j, n0 + i]: four context rows in one pass."""
    a0, a1, a2, a3 = coef[r, h], coef[r + 1, h], coef[r + 2, h], coef[r + 3, h]
    x0, x1, x2, x3 = xs[r, n0:n0 + k], xs[r + 1, n0:n0 + k], xs[r + 2, n0:n0 + k], xs[r + 3, n0:n0 + k]
    for i in range(k):
        acc[i] += a0 * x0[i] + a1 * x1[i] + a2 * x2[i] + a3 * x3[i]


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _axpy1(acc, xs, coef, r, h, n0, k):
    a0 = coef[r, h]
    x0 = xs[r, n0:n0 + k]
    for i in range(k):
        acc[i] += a0 * x0[i]


@nb.njit(cache=True, nogil=True)
def _score_linear(traces, starts, coef, intercept, chunk, out_abs, out_sq, out_miss):
    context, horizon = coef.shape
    n = traces.shape[1]
    acc = np.empty(chunk, np.float32)       # float32 accumulation, like a float32 BLAS forecast
    n4 = context - context % 4
    for w in range(starts.size):
        s = starts[w]
        xs = traces[s:s + context]
        for n0 in range(0, n, chunk):       # a chunk of neurons: its context rows stay in cache
            k = min(n, n0 + chunk) - n0
            for h in range(horizon):
                acc[:k] = intercept[h]
                for r in range(0, n4, 4):
                    _axpy4(acc, xs, coef, r, h, n0, k)
                for r in range(n4, context):
                    _axpy1(acc, xs, coef, r, h, n0, k)
                p = acc[:k]
                t = traces[s + context + h, n0:n0 + k]
                sa, ss = _row_sums(p, t)
                if np.isnan(sa):
                    sa, ss, mm = _row_sums_nan(p, t)
                    out_miss[w, h] += mm
                out_abs[w, h] += sa
                out_sq[w, h] += ss


def _outputs(w, h):
    return np.zeros((w, h)), np.zeros((w, h)), np.zeros((w, h), np.int64)


def _f32(x, name):
    a = np.asarray(x)
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a


def _idx(x):
    return np.ascontiguousarray(np.asarray(x, dtype=np.int64).reshape(-1))


def score_predictions(pred, traces, first_target):
    """Sums for predictions ``pred`` (window, lead, neuron); ``traces[first_target[w] + h]`` is the target."""
    p = _f32(pred, "pred")
    tr = _f32(traces, "traces")
    first = _idx(first_target)
    if p.ndim != 3 or tr.ndim != 2 or p.shape[2] != tr.shape[1] or first.size != p.shape[0]:
        raise ValueError(f"pred (window, lead, neuron) {p.shape}, traces (time, neuron) {tr.shape} and "
                         f"first_target ({first.size},) do not fit together")
    if first.size and (first.min() < 0 or first.max() + p.shape[1] > tr.shape[0]):
        raise ValueError(f"targets reach outside the {tr.shape[0]} frames of traces")
    out = _outputs(p.shape[0], p.shape[1])
    _score_predictions(p, tr, first, *out)
    return out


def score_context_mean(traces, starts, context: int, horizon: int):
    """Sums for the mean-of-context forecast of windows starting (first context frame) at ``starts``."""
    tr = _f32(traces, "traces")
    s = _idx(starts)
    if s.size and (s.min() < 0 or s.max() + context + horizon > tr.shape[0]):
        raise ValueError(f"windows reach outside the {tr.shape[0]} frames of traces")
    out = _outputs(s.size, horizon)
    _score_context_mean(tr, s, int(context), int(horizon), *out)
    return out


def frame_errors(table, traces, frames, rows=None):
    """Per-frame sums (frame,): target frame ``traces[frames[k]]`` is predicted by ``table[rows[k]]``.

    ``table`` (row, neuron) holds the distinct predictions (e.g. one per condition and trial
    phase); ``rows=None`` means one row per frame. No (frame, neuron) prediction is gathered.
    """
    p = _f32(table, "table")
    tr = _f32(traces, "traces")
    f = _idx(frames)
    r = np.arange(f.size, dtype=np.int64) if rows is None else _idx(rows)
    if p.ndim != 2 or p.shape[1] != tr.shape[1] or r.size != f.size:
        raise ValueError(f"table {p.shape} must be (row, neuron) with {tr.shape[1]} neurons and rows "
                         f"({r.size},) one per frame ({f.size},)")
    if r.size and (r.min() < 0 or r.max() >= p.shape[0]):
        raise ValueError(f"rows index outside the table's {p.shape[0]} rows")
    if f.size and (f.min() < 0 or f.max() >= tr.shape[0]):
        raise ValueError(f"frames index outside the {tr.shape[0]} frames of traces")
    out = _outputs(f.size, 1)
    _frame_errors(p, r, tr, f, *out)
    return tuple(o[:, 0] for o in out)


def windows_from_frames(sums, frames, first_target, horizon: int):
    """Per-(window, lead) sums from per-frame sums: window w, lead h scores frame ``first_target[w] + h``."""
    pos = np.searchsorted(frames, np.asarray(first_target)[:, None] + np.arange(horizon)[None, :])
    return tuple(np.asarray(s)[pos] for s in sums)


def score_linear(traces, starts, coef, intercept, chunk: int = 1024):
    """Sums for ``pred[w, h, n] = sum_c coef[c, h] traces[starts[w] + c, n] + intercept[h]``.

    Predictions are accumulated in float32 (as a float32 BLAS forecast would be), ``chunk``
    neurons at a time so that the chunk's context rows stay in cache while all leads are formed
    and scored; nothing of size (window, lead, neuron) is allocated.
    """
    tr = _f32(traces, "traces")
    s = _idx(starts)
    a = np.ascontiguousarray(coef, dtype=np.float32)
    b = np.ascontiguousarray(intercept, dtype=np.float32).reshape(-1)
    if a.ndim != 2 or b.size != a.shape[1]:
        raise ValueError(f"coef must be (context, horizon) and intercept (horizon,), got {a.shape} and {b.shape}")
    c, h = a.shape
    if s.size and (s.min() < 0 or s.max() + c + h > tr.shape[0]):
        raise ValueError(f"windows reach outside the {tr.shape[0]} frames of traces")
    out = _outputs(s.size, h)
    _score_linear(tr, s, a, b, int(min(chunk, max(1, tr.shape[1]))), *out)
    return out


def errors_from_sums(abs_sum, sq_sum, n_miss, n_neurons: int) -> xr.Dataset:
    """Per-window means over the non-missing neurons -> ``xr.Dataset`` (window, lead), NaN if none."""
    n_ok = n_neurons - n_miss
    with np.errstate(invalid="ignore", divide="ignore"):
        abs_err = np.where(n_ok > 0, abs_sum / np.maximum(n_ok, 1), np.nan)
        sq_err = np.where(n_ok > 0, sq_sum / np.maximum(n_ok, 1), np.nan)
    dims = ("window", "lead")
    return xr.Dataset({"abs_err": (dims, abs_err), "sq_err": (dims, sq_err), "n_missing": (dims, n_miss)},
                      coords={"lead": np.arange(1, abs_sum.shape[1] + 1)}, attrs={"n_neurons": int(n_neurons)})


def warm_up():
    """Compile (or load from the on-disk cache) every kernel on a tiny input."""
    tr = np.zeros((12, 3), np.float32)
    score_predictions(np.zeros((1, 2, 3), np.float32), tr, [1])
    score_context_mean(tr, [0, 1, 5], 2, 2)
    f, fr = frame_errors(np.zeros((2, 3), np.float32), tr, [3, 4])[0], np.array([3, 4])
    windows_from_frames((f,), fr, [3], 2)
    score_linear(tr, [0, 1], np.zeros((2, 2)), np.zeros(2))
