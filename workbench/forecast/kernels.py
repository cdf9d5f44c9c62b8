"""Compiled scoring kernels: predictions and errors fused, one pass over the data, O(neuron) scratch.

Every kernel returns, per (window, lead), the *sums* over neurons of ``|pred - target|`` and
``(pred - target)^2`` (float64) and the number of missing neurons (NaN prediction or target);
:func:`errors_from_sums` turns them into ZAPBench's per-window means. Differences are taken in
float32 (the predictions' precision) and summed in float32 over blocks of ``_BLOCK`` neurons
(SIMD lanes, so each lane adds a few dozen terms), the blocks in float64: the kernels agree with
a float64 reference loop to ~1e-7 relative.

Inner loops run over neurons with unsigned indices from a row and an offset (not slices): numba
then omits its negative-index wraparound and LLVM sees unit-stride loads it vectorises (with
signed ``range(i0, i1)`` indices it emitted AVX-512 gathers, ~10x slower). Where one loaded
value serves several (window, lead) pairs, a pass scores two leads at once (the mean's
prediction, the linear context rows); more leads per pass spilled registers.

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
           "score_linear", "score_linear_ctx", "errors_from_sums", "warm_up", "set_num_threads"]

# fast-math without 'nnan'/'ninf': reductions may be reordered (vectorised) but NaN still propagates
_FM = {"reassoc", "contract", "arcp", "nsz"}


_BLOCK = 1024      # float32 partial sums over this many neurons, then added in float64
_U = np.uint64     # unsigned indices: numba then drops its negative-index wraparound, so LLVM sees
                   # unit-stride loads and vectorises (signed range(i0, i1) indices became gathers)


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _row_sums(p, po, t, to, k):
    """``(sum |d|, sum d^2)`` of ``d = p[po:po+k] - t[to:to+k]``: float32 blocks, float64 total."""
    sa = 0.0
    ss = 0.0
    for b in range((k + _BLOCK - 1) // _BLOCK):
        i0 = b * _BLOCK
        ba = np.float32(0.0)
        bs = np.float32(0.0)
        for j in range(min(k - i0, _BLOCK)):
            d = p[_U(po + i0 + j)] - t[_U(to + i0 + j)]
            ba += abs(d)
            bs += d * d
        sa += ba
        ss += bs
    return sa, ss


@nb.njit(cache=True, nogil=True)
def _row_sums_nan(p, po, t, to, k):
    sa = 0.0
    ss = 0.0
    m = 0
    for j in range(k):
        d = np.float64(p[_U(po + j)]) - np.float64(t[_U(to + j)])
        if np.isnan(d):
            m += 1
        else:
            sa += abs(d)
            ss += d * d
    return sa, ss, m


@nb.njit(cache=True, nogil=True)
def _store(p, po, t, to, k, sa, ss, out_abs, out_sq, out_miss, w, h):
    if np.isnan(sa):
        sa, ss, m = _row_sums_nan(p, po, t, to, k)
        out_miss[w, h] += m
    out_abs[w, h] += sa
    out_sq[w, h] += ss


@nb.njit(cache=True, nogil=True)
def _score_predictions(pred, traces, first, out_abs, out_sq, out_miss):
    n = traces.shape[1]
    for w in range(pred.shape[0]):
        for h in range(pred.shape[1]):
            t = traces[first[w] + h]
            p = pred[w, h]
            sa, ss = _row_sums(p, 0, t, 0, n)
            _store(p, 0, t, 0, n, sa, ss, out_abs, out_sq, out_miss, w, h)


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _slide(run, m, k, x_in, x_out, o, inv):
    """Slide the float64 context sum by one frame, write the float32 mean; returns the sum's
    total (NaN if any neuron's sum is NaN). One pass over the chunk."""
    tot = 0.0
    for j in range(k):
        r = run[_U(j)] + (np.float64(x_in[_U(o + j)]) - np.float64(x_out[_U(o + j)]))
        run[_U(j)] = r
        tot += r
        m[_U(j)] = np.float32(r * inv)
    return tot


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _add_row(acc, k, x, o):
    for j in range(k):
        acc[_U(j)] += np.float64(x[_U(o + j)])


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _scale_to32(out, acc, k, a):
    for j in range(k):
        out[_U(j)] = np.float32(acc[_U(j)] * a)


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _row_sums2(p, t0, t1, o, k):
    """:func:`_row_sums` of one prediction ``p[:k]`` against two target rows (at offset ``o``):
    each loaded prediction value serves two leads."""
    sa0 = sa1 = ss0 = ss1 = 0.0
    for b in range((k + _BLOCK - 1) // _BLOCK):
        i0 = b * _BLOCK
        ba0 = ba1 = bs0 = bs1 = np.float32(0.0)
        for j in range(min(k - i0, _BLOCK)):
            p_ = p[_U(i0 + j)]
            d0 = p_ - t0[_U(o + i0 + j)]
            d1 = p_ - t1[_U(o + i0 + j)]
            ba0 += abs(d0)
            ba1 += abs(d1)
            bs0 += d0 * d0
            bs1 += d1 * d1
        sa0 += ba0
        sa1 += ba1
        ss0 += bs0
        ss1 += bs1
    return sa0, sa1, ss0, ss1


@nb.njit(cache=True, nogil=True)
def _score_context_mean(traces, starts, context, horizon, chunk, c0, cstep, out_abs, out_sq, out_miss):
    n = traces.shape[1]
    run = np.zeros(chunk)                   # float64 running sum of the context frames
    m = np.empty(chunk, np.float32)         # the prediction, rounded like MeanBaseline.predict
    inv = 1.0 / context
    h2 = horizon - horizon % 2
    for n0 in range(c0 * chunk, n, cstep * chunk):  # neuron chunks outermost: consecutive windows
        k = min(n, n0 + chunk) - n0         # then reuse the chunk's target rows from cache
        prev = -(2 ** 62)
        for w in range(starts.size):
            s = starts[w]
            # slide by one frame (O(chunk)); restart at the first window, at a gap between
            # conditions, or when a NaN entered the running sum (sliding would keep it)
            if s != prev + 1 or np.isnan(_slide(run, m, k, traces[s + context - 1], traces[s - 1], n0, inv)):
                run[:k] = 0.0
                for c in range(context):
                    _add_row(run, k, traces[s + c], n0)
                _scale_to32(m, run, k, inv)
            prev = s
            t1 = s + context
            for h in range(0, h2, 2):       # two leads per pass
                sa0, sa1, ss0, ss1 = _row_sums2(m, traces[t1 + h], traces[t1 + h + 1], n0, k)
                _store(m, 0, traces[t1 + h], n0, k, sa0, ss0, out_abs, out_sq, out_miss, w, h)
                _store(m, 0, traces[t1 + h + 1], n0, k, sa1, ss1, out_abs, out_sq, out_miss, w, h + 1)
            for h in range(h2, horizon):
                t = traces[t1 + h]
                sa, ss = _row_sums(m, 0, t, n0, k)
                _store(m, 0, t, n0, k, sa, ss, out_abs, out_sq, out_miss, w, h)


@nb.njit(cache=True, nogil=True)
def _frame_errors(table, rows, traces, frames, out_abs, out_sq, out_miss):
    n = traces.shape[1]
    for k in range(frames.size):
        t = traces[frames[k]]
        p = table[rows[k]]
        sa, ss = _row_sums(p, 0, t, 0, n)
        _store(p, 0, t, 0, n, sa, ss, out_abs, out_sq, out_miss, k, 0)


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _axpy4(acc, xs, xr, coef, r, h, n0, k):
    """acc[j] += sum_{i<4} coef[r + i, h] xs[xr + r + i, n0 + j]: four context rows in one pass."""
    a0, a1, a2, a3 = coef[r, h], coef[r + 1, h], coef[r + 2, h], coef[r + 3, h]
    x0, x1, x2, x3 = xs[xr + r], xs[xr + r + 1], xs[xr + r + 2], xs[xr + r + 3]
    for j in range(k):
        i = _U(n0 + j)
        acc[_U(j)] += a0 * x0[i] + a1 * x1[i] + a2 * x2[i] + a3 * x3[i]


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _axpy1(acc, xs, xr, coef, r, h, n0, k):
    a0 = coef[r, h]
    x0 = xs[xr + r]
    for j in range(k):
        acc[_U(j)] += a0 * x0[_U(n0 + j)]


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _final4(acc, b, xs, xr, coef, r, h, n0, k, t):
    """Error sums of ``p = b + acc + (four context rows r..r+3)`` against ``t``, in one pass
    (``acc=None``: no accumulated part, contexts of exactly four rows)."""
    a0, a1, a2, a3 = coef[r, h], coef[r + 1, h], coef[r + 2, h], coef[r + 3, h]
    x0, x1, x2, x3 = xs[xr + r], xs[xr + r + 1], xs[xr + r + 2], xs[xr + r + 3]
    sa = 0.0
    ss = 0.0
    for bl in range((k + _BLOCK - 1) // _BLOCK):
        j0 = bl * _BLOCK
        ba = np.float32(0.0)
        bs = np.float32(0.0)
        for jj in range(min(k - j0, _BLOCK)):
            j = j0 + jj
            i = _U(n0 + j)
            p = b + a0 * x0[i] + a1 * x1[i] + a2 * x2[i] + a3 * x3[i]
            if acc is not None:
                p += acc[_U(j)]
            d = p - t[i]
            ba += abs(d)
            bs += d * d
        sa += ba
        ss += bs
    return sa, ss


@nb.njit(fastmath=_FM, cache=True, nogil=True)
def _final4_leads2(b, xs, xr, coef, h, n0, k, traces, t0, x4):
    """Error sums of leads ``h, h+1`` of a four-row context (``p = b[h] + sum_c coef[c, h] x[c]``)
    against ``traces[t0 + h]``, ``traces[t0 + h + 1]`` in one pass: each loaded context value
    serves two leads (more leads per pass spill registers). ``x4`` (not None): a fifth row
    ``xs[xr + 4]`` with ``coef[4]`` (e.g. TSMixer's features and last value)."""
    a00, a10, a20, a30 = coef[0, h], coef[1, h], coef[2, h], coef[3, h]
    a01, a11, a21, a31 = coef[0, h + 1], coef[1, h + 1], coef[2, h + 1], coef[3, h + 1]
    a40 = a41 = np.float32(0.0)
    if x4 is not None:
        a40, a41 = coef[4, h], coef[4, h + 1]
    b0, b1 = b[h], b[h + 1]
    x0, x1, x2, x3 = xs[xr], xs[xr + 1], xs[xr + 2], xs[xr + 3]
    u0, u1 = traces[t0 + h], traces[t0 + h + 1]
    sa0 = sa1 = ss0 = ss1 = 0.0
    for bl in range((k + _BLOCK - 1) // _BLOCK):
        j0 = n0 + bl * _BLOCK
        ba0 = ba1 = bs0 = bs1 = np.float32(0.0)
        for jj in range(min(n0 + k - j0, _BLOCK)):
            i = _U(j0 + jj)
            v0, v1, v2, v3 = x0[i], x1[i], x2[i], x3[i]
            p0 = b0 + a00 * v0 + a10 * v1 + a20 * v2 + a30 * v3
            p1 = b1 + a01 * v0 + a11 * v1 + a21 * v2 + a31 * v3
            if x4 is not None:
                v4 = x4[i]
                p0 += a40 * v4
                p1 += a41 * v4
            d0 = p0 - u0[i]
            d1 = p1 - u1[i]
            ba0 += abs(d0)
            ba1 += abs(d1)
            bs0 += d0 * d0
            bs1 += d1 * d1
        sa0 += ba0
        sa1 += ba1
        ss0 += bs0
        ss1 += bs1
    return sa0, sa1, ss0, ss1


@nb.njit(cache=True, nogil=True)
def _linear_chunk(xs, r0, traces, t0, coef, intercept, w, n0, k, acc, out_abs, out_sq, out_miss):
    """Predict (``sum_c coef[c, h] xs[r0 + c] + intercept[h]``) and score one window on neurons
    n0:n0+k against ``traces[t0 + h]``; ``xs`` rows are indexed at ``n0``, like the traces."""
    context, horizon = coef.shape
    rem = context % 4
    fused = context >= 4
    last = context - 4
    h2 = horizon - horizon % 2 if context == 4 or context == 5 else 0
    for h in range(0, h2, 2):               # two leads per pass over the context rows
        if context == 4:
            sa0, sa1, ss0, ss1 = _final4_leads2(intercept, xs, r0, coef, h, n0, k, traces, t0, None)
        else:
            sa0, sa1, ss0, ss1 = _final4_leads2(intercept, xs, r0, coef, h, n0, k, traces, t0, xs[r0 + 4])
        for q, sa, ss in ((0, sa0, ss0), (1, sa1, ss1)):
            if np.isnan(sa):
                _linear_nan(xs, r0, traces, t0, coef, intercept, w, h + q, n0, k, acc, out_abs, out_sq, out_miss)
            else:
                out_abs[w, h + q] += sa
                out_sq[w, h + q] += ss
    for h in range(h2, horizon):
        t = traces[t0 + h]
        b = intercept[h]
        if fused and context == 4:          # one pass: predict and score
            sa, ss = _final4(None, b, xs, r0, coef, 0, h, n0, k, t)
        else:
            acc[:k] = 0.0
            for r in range(rem):
                _axpy1(acc, xs, r0, coef, r, h, n0, k)
            for r in range(rem, last if fused else context, 4):
                _axpy4(acc, xs, r0, coef, r, h, n0, k)
            if fused:                       # the last four rows fused with scoring
                sa, ss = _final4(acc, b, xs, r0, coef, last, h, n0, k, t)
            else:
                acc[:k] += b
                sa, ss = _row_sums(acc, 0, t, n0, k)
        if np.isnan(sa):
            _linear_nan(xs, r0, traces, t0, coef, intercept, w, h, n0, k, acc, out_abs, out_sq, out_miss)
        else:
            out_abs[w, h] += sa
            out_sq[w, h] += ss


@nb.njit(cache=True, nogil=True)
def _linear_nan(xs, r0, traces, t0, coef, intercept, w, h, n0, k, acc, out_abs, out_sq, out_miss):
    """Lead ``h`` with a NaN among its inputs: form the predictions, count and skip the missing."""
    context = coef.shape[0]
    rem = context % 4
    acc[:k] = intercept[h]
    for r in range(rem):
        _axpy1(acc, xs, r0, coef, r, h, n0, k)
    for r in range(rem, context, 4):
        _axpy4(acc, xs, r0, coef, r, h, n0, k)
    sa, ss, mm = _row_sums_nan(acc, 0, traces[t0 + h], n0, k)
    out_miss[w, h] += mm
    out_abs[w, h] += sa
    out_sq[w, h] += ss


@nb.njit(cache=True, nogil=True)
def _score_linear(traces, starts, coef, intercept, chunk, c0, cstep, out_abs, out_sq, out_miss):
    context = coef.shape[0]
    n = traces.shape[1]
    acc = np.empty(chunk, np.float32)       # float32 accumulation, like a float32 BLAS forecast
    for n0 in range(c0 * chunk, n, cstep * chunk):  # neuron chunks outermost: consecutive windows reuse
        k = min(n, n0 + chunk) - n0         # the chunk's context and target rows from cache
        for w in range(starts.size):
            _linear_chunk(traces, starts[w], traces, starts[w] + context, coef, intercept, w, n0, k, acc,
                          out_abs, out_sq, out_miss)


@nb.njit(cache=True, nogil=True)
def _score_linear_ctx(ctx, traces, first, coef, intercept, chunk, out_abs, out_sq, out_miss):
    n = traces.shape[1]
    acc = np.empty(chunk, np.float32)
    for n0 in range(0, n, chunk):
        k = min(n, n0 + chunk) - n0
        for w in range(ctx.shape[0]):
            _linear_chunk(ctx[w], 0, traces, first[w], coef, intercept, w, n0, k, acc, out_abs, out_sq, out_miss)


@nb.njit(cache=True, nogil=True)
def _score_rows(buf, intercept, traces, t0, w, out_abs, out_sq, out_miss):
    """Score the (lead, neuron) products ``buf`` (+ ``intercept[h]``) of window ``w`` against
    ``traces[t0 + h]``."""
    n = traces.shape[1]
    for h in range(buf.shape[0]):
        p = buf[h]
        p += intercept[h]
        t = traces[t0 + h]
        sa, ss = _row_sums(p, 0, t, 0, n)
        _store(p, 0, t, 0, n, sa, ss, out_abs, out_sq, out_miss, w, h)


@nb.njit(cache=True, parallel=True)
def _par_mean(traces, starts, context, horizon, chunk, nt, out_abs, out_sq, out_miss):
    """:func:`_score_context_mean` with thread ``t`` scoring chunks t, t + nt, ... into its own
    sums (no races), added in thread order (deterministic)."""
    pa = np.zeros((nt,) + out_abs.shape)
    ps = np.zeros((nt,) + out_abs.shape)
    pm = np.zeros((nt,) + out_abs.shape, np.int64)
    for t in nb.prange(nt):
        _score_context_mean(traces, starts, context, horizon, chunk, t, nt, pa[t], ps[t], pm[t])
    for t in range(nt):
        out_abs += pa[t]
        out_sq += ps[t]
        out_miss += pm[t]


@nb.njit(cache=True, parallel=True)
def _par_linear(traces, starts, coef, intercept, chunk, nt, out_abs, out_sq, out_miss):
    """:func:`_score_linear` over neuron chunks in ``nt`` threads, like :func:`_par_mean`."""
    pa = np.zeros((nt,) + out_abs.shape)
    ps = np.zeros((nt,) + out_abs.shape)
    pm = np.zeros((nt,) + out_abs.shape, np.int64)
    for t in nb.prange(nt):
        _score_linear(traces, starts, coef, intercept, chunk, t, nt, pa[t], ps[t], pm[t])
    for t in range(nt):
        out_abs += pa[t]
        out_sq += ps[t]
        out_miss += pm[t]


_THREADS = 1


def set_num_threads(n: int | None = 1) -> int:
    """Threads of the mean and short-context linear kernels (parallel over neuron chunks; the
    results do not depend on the thread count beyond float64 rounding). Default 1 (the CPUs are
    usually shared: test workers, torch); ``None``: numba's thread count. Returns the previous."""
    global _THREADS
    old = _THREADS
    _THREADS = max(1, int(nb.config.NUMBA_NUM_THREADS if n is None else n))
    return old


def _nthreads(n_chunks):
    return max(1, min(_THREADS, nb.config.NUMBA_NUM_THREADS, n_chunks))


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


def score_context_mean(traces, starts, context: int, horizon: int, chunk: int = 2048):
    """Sums for the mean-of-context forecast of windows starting (first context frame) at ``starts``."""
    tr = _f32(traces, "traces")
    s = _idx(starts)
    if s.size and (s.min() < 0 or s.max() + context + horizon > tr.shape[0]):
        raise ValueError(f"windows reach outside the {tr.shape[0]} frames of traces")
    out = _outputs(s.size, horizon)
    ch = int(min(chunk, max(1, tr.shape[1])))
    nt = _nthreads(-(-tr.shape[1] // ch))
    if nt > 1:
        _par_mean(tr, s, int(context), int(horizon), ch, nt, *out)
    else:
        _score_context_mean(tr, s, int(context), int(horizon), ch, 0, 1, *out)
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


def score_linear(traces, starts, coef, intercept, chunk: int = 1024, blas_above: int = 32):
    """Sums for ``pred[w, h, n] = sum_c coef[c, h] traces[starts[w] + c, n] + intercept[h]``.

    Predictions are accumulated in float32 (as a float32 BLAS forecast would be). Contexts up
    to ``blas_above`` frames: ``chunk`` neurons at a time, so the chunk's context rows stay in
    cache while all leads are formed and scored in one pass each. Longer contexts (the product
    is then compute-bound): one BLAS product per window straight from the traces (no gathered
    copy) into an (H, N) buffer that is scored at once. Nothing of size (window, lead, neuron)
    is allocated.
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
    if c > blas_above:
        at = np.ascontiguousarray(a.T)
        buf = np.empty((h, tr.shape[1]), np.float32)
        for i, s0 in enumerate(s.tolist()):
            # one (H, C) @ (C, N) product per window straight from the traces, by numpy's BLAS
            # (numba's np.dot goes through scipy's, ~1.5x slower here); a batched matmul over
            # sliding views was not faster, so the window loop stays (its overhead is ~us/window)
            np.matmul(at, tr[s0:s0 + c], out=buf)
            _score_rows(buf, b, tr, s0 + c, i, *out)
    else:
        ch = int(min(chunk, max(1, tr.shape[1])))
        nt = _nthreads(-(-tr.shape[1] // ch))
        if nt > 1:
            _par_linear(tr, s, a, b, ch, nt, *out)
        else:
            _score_linear(tr, s, a, b, ch, 0, 1, *out)
    return out


def score_linear_ctx(ctx, traces, first_target, coef, intercept, chunk: int = 1024):
    """As :func:`score_linear` with each window's inputs given: ``ctx`` (window, row, neuron), e.g.
    a network's features; ``pred[w, h] = sum_r coef[r, h] ctx[w, r] + intercept[h]`` is scored
    against ``traces[first_target[w] + h]``."""
    x = _f32(ctx, "ctx")
    tr = _f32(traces, "traces")
    first = _idx(first_target)
    a = np.ascontiguousarray(coef, dtype=np.float32)
    b = np.ascontiguousarray(intercept, dtype=np.float32).reshape(-1)
    if x.ndim != 3 or a.ndim != 2 or x.shape[1] != a.shape[0] or b.size != a.shape[1] \
            or x.shape[2] != tr.shape[1] or first.size != x.shape[0]:
        raise ValueError(f"ctx (window, row, neuron) {x.shape}, coef (row, horizon) {a.shape}, intercept "
                         f"{b.shape}, traces {tr.shape} and first_target ({first.size},) do not fit together")
    if first.size and (first.min() < 0 or first.max() + a.shape[1] > tr.shape[0]):
        raise ValueError(f"targets reach outside the {tr.shape[0]} frames of traces")
    out = _outputs(x.shape[0], a.shape[1])
    _score_linear_ctx(x, tr, first, a, b, int(min(chunk, max(1, tr.shape[1]))), *out)
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
    for c in (2, 4, 6):
        score_linear(tr, [0, 1], np.zeros((c, 2)), np.zeros(2))
    score_linear(tr, [0, 1], np.zeros((6, 2)), np.zeros(2), blas_above=4)
    score_linear_ctx(np.zeros((1, 5, 3)), tr, [4], np.zeros((5, 2)), np.zeros(2))
    if _THREADS > 1:                        # the threaded variants (compiled only when used)
        score_context_mean(tr, [0, 1, 5], 2, 2, chunk=1)
        score_linear(tr, [0, 1], np.zeros((4, 2)), np.zeros(2), chunk=1)
