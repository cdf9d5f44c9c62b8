"""Score forecasters on every window of a split, streamed over time blocks, no loop over windows.

Forecaster protocol (trace baselines here, the video model in ``forecast/video``):

- ``context`` (int) and ``horizon`` (int, 32) attributes; optional ``requires`` (tuple of variable
  names the forecaster reads, default ``("traces",)``) and ``name``;
- ``fit(ds) -> self``;
- ``predict(ds, starts) -> (len(starts), horizon, n_neuron)`` where ``starts`` are *positional*
  indices (into ``ds.time``) of each window's first context frame. :func:`evaluate` calls it with
  an in-memory time slice of the recording and starts relative to that slice;
- optional ``block_errors(ds, starts) -> (abs_sum, sq_sum, n_missing)``, each (window, lead): the
  error sums over neurons, prediction fused with scoring (the trace baselines have it).
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping

import numpy as np
import xarray as xr

from . import protocol
from .kernels import errors_from_sums, score_predictions
from .metrics import aggregate

__all__ = ["evaluate", "score_forecaster", "evaluate_loop", "forecaster_name", "results_from_errors"]


def forecaster_name(f) -> str:
    return str(getattr(f, "name", None) or type(f).__name__.replace("Baseline", "").lower())


def _as_dict(forecasters) -> dict:
    if isinstance(forecasters, Mapping):
        return dict(forecasters)
    if isinstance(forecasters, list | tuple):
        return {f"{forecaster_name(f)}": f for f in forecasters}
    return {forecaster_name(forecasters): forecasters}


def _block_plan(starts: np.ndarray, span: int, block_frames: int):
    """Group sorted window starts into runs whose frames fit a block of ``block_frames``."""
    groups, i = [], 0
    while i < starts.size:                     # loop over time blocks (a handful), not windows
        lo = starts[i]
        j = np.searchsorted(starts, lo + max(1, block_frames - span), side="left")
        j = max(j, i + 1)
        groups.append((i, j, int(lo), int(starts[j - 1] + span)))
        i = j
    return groups


def score_forecaster(forecaster, ds: xr.Dataset, split: str = "test", windows: xr.Dataset | None = None,
                     batch_size: int | None = None, block_frames: int = 1024,
                     memory_budget: float = 3.2e7, progress: bool = False) -> tuple[xr.Dataset, xr.Dataset]:
    """Per-window errors of one forecaster: ``(errors (window, lead), windows)``.

    The recording is read in time blocks of about ``block_frames`` frames (one read per block,
    dask/zarr friendly). A forecaster with a ``block_errors(block, starts)`` method (the trace
    baselines) predicts and scores a whole block in one fused pass that never holds a (window,
    lead, neuron) tensor (see :mod:`.kernels`). Others are asked to ``predict`` batches of
    ``batch_size`` windows (default: ``memory_budget`` bytes of float32 predictions, a cache-sized
    amount), each scored by the compiled kernel against the block's traces.
    """
    c = int(forecaster.context)
    h = int(getattr(forecaster, "horizon", protocol.HORIZON))
    w = protocol.windows(ds, split=split, context=c, horizon=h) if windows is None else windows
    starts = w["start"].values
    order = np.argsort(starts, kind="stable")
    sorted_starts = starts[order]
    n = ds.sizes["neuron"]
    span = c + h
    if batch_size is None:
        batch_size = max(1, int(memory_budget // (h * n * 4)))
    need = tuple(getattr(forecaster, "requires", ("traces",)))
    keep = sorted(set(need) | {"traces"})
    missing = [v for v in keep if v not in ds]
    if missing:
        raise ValueError(f"dataset lacks variables {missing} needed by {forecaster_name(forecaster)}")
    parts_abs, parts_sq, parts_miss = [], [], []
    plan = _block_plan(sorted_starts, span, max(block_frames, span + 1))
    it = plan
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(plan, desc=f"score {forecaster_name(forecaster)} C={c}", unit="block")
    fused = getattr(forecaster, "block_errors", None)
    for i0, i1, lo, hi in it:
        block = ds[keep].isel(time=slice(lo, hi)).load()
        traces = np.asarray(block["traces"].values)
        if fused is not None:                                         # prediction fused with scoring
            parts = fused(block, sorted_starts[i0:i1] - lo)
            if any(np.shape(p) != (i1 - i0, h) for p in parts):
                raise ValueError(f"{forecaster_name(forecaster)}.block_errors returned shapes "
                                 f"{[np.shape(p) for p in parts]}, expected (window, lead) = {(i1 - i0, h)}")
            parts_abs.append(parts[0])
            parts_sq.append(parts[1])
            parts_miss.append(parts[2])
            continue
        for b0 in range(i0, i1, batch_size):                          # batches of windows
            rel = sorted_starts[b0:min(i1, b0 + batch_size)] - lo
            pred = np.asarray(forecaster.predict(block, rel))
            if pred.shape != (rel.size, h, n):
                raise ValueError(f"{forecaster_name(forecaster)}.predict returned shape {pred.shape}, "
                                 f"expected (window, lead, neuron) = {(rel.size, h, n)}")
            for parts, p in zip((parts_abs, parts_sq, parts_miss), score_predictions(pred, traces, rel + c)):
                parts.append(p)
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    def cat(parts, dt):
        return np.concatenate(parts)[inv] if parts else np.zeros((0, h), dt)

    errors = errors_from_sums(cat(parts_abs, float), cat(parts_sq, float), cat(parts_miss, np.int64), n)
    errors = errors.assign_coords(window=w["window"].values, condition=("window", w["condition"].values))
    return errors, w


def evaluate(forecasters, ds: xr.Dataset, split: str = "test", n_boot: int = 1000,
             block_length: int = 16, ci: float = 0.95, seed: int | None = 0,
             batch_size: int | None = None, block_frames: int = 1024, progress: bool = False) -> xr.Dataset:
    """Score fitted forecasters -> ``xr.Dataset`` over (method, context, condition, lead).

    ``forecasters``: one forecaster, a list, or ``{name: forecaster}``; several forecasters may
    share a name if their contexts differ. Variables: ``mae``, ``mse``, ``mae_lower``,
    ``mae_upper``, ``n_windows``, ``n_missing``, ``mae_train_conditions(_lower/_upper)`` and
    ``seconds`` (scoring wall time per method and context).
    """
    fs = forecasters if isinstance(forecasters, list | tuple) else _as_dict(forecasters).items()
    if isinstance(forecasters, list | tuple):
        fs = [(forecaster_name(f), f) for f in forecasters]
    scored = []
    for name, f in fs:
        t0 = _time.perf_counter()
        errors, w = score_forecaster(f, ds, split=split, batch_size=batch_size,
                                     block_frames=block_frames, progress=progress)
        scored.append((name, int(f.context), errors, w, _time.perf_counter() - t0))
    return results_from_errors(scored, ds, n_boot=n_boot, block_length=block_length, ci=ci, seed=seed)


def results_from_errors(scored, ds: xr.Dataset, n_boot: int = 1000, block_length: int = 16,
                        ci: float = 0.95, seed: int | None = 0) -> xr.Dataset:
    """Combine ``[(method, context, errors, windows, seconds), ...]`` into the results Dataset."""
    p = protocol.protocol_from(ds)
    items = []
    for name, context, errors, w, seconds in scored:
        res = aggregate(errors, w, n_boot=n_boot, block_length=block_length, ci=ci, seed=seed,
                        condition_order=p["names"])
        res["seconds"] = ((), float(seconds))
        items.append(res.expand_dims(method=[name], context=[int(context)]))
    if not items:
        raise ValueError("no forecasters given")
    keys = [(str(i["method"].item()), int(i["context"].item())) for i in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate (method, context) pairs among the forecasters: {keys}")
    out = xr.merge(items, join="outer", combine_attrs="drop_conflicts", compat="no_conflicts")
    out["heldout"] = ("condition", np.isin(out["condition"].values, list(p["heldout"])))
    out = out.set_coords("heldout")
    out.attrs.update(split=str(scored[0][3].attrs.get("split", "test")),
                     metric="ZAPBench MAE: mean over neurons, then windows, per condition")
    return out


def evaluate_loop(forecaster, ds: xr.Dataset, split: str = "test", windows: xr.Dataset | None = None,
                  in_memory: bool = False, dtype=np.float64) -> xr.Dataset:
    """Reference: a straightforward loop over windows, one ``predict`` per window.

    For each window: ``predict`` it (``in_memory=False``: frames read lazily from ``ds``, as a
    naive script would; ``True``: from traces loaded once), take its target frames, and compute
    the per-lead mean absolute and squared errors over the non-missing neurons with whole-array
    numpy operations in ``dtype`` (float64: the exactness reference of the tests). Returns
    per-window errors like :func:`score_forecaster`.
    """
    c = int(forecaster.context)
    h = int(getattr(forecaster, "horizon", protocol.HORIZON))
    w = protocol.windows(ds, split=split, context=c, horizon=h) if windows is None else windows
    need = sorted(set(getattr(forecaster, "requires", ("traces",))) | {"traces"})
    sub_ds = ds[need].load() if in_memory else ds[need]
    starts = w["start"].values
    n = int(ds.sizes["neuron"])
    abs_err = np.zeros((starts.size, h))
    sq_err = np.zeros((starts.size, h))
    n_miss = np.zeros((starts.size, h), dtype=np.int64)
    traces = sub_ds["traces"].data                                    # numpy, or dask when lazy
    for i, s in enumerate(starts):                                    # one window at a time
        s = int(s)
        pred = np.asarray(forecaster.predict(sub_ds, np.array([s]))[0], dtype=dtype)    # (H, N)
        d = pred - np.asarray(traces[s + c:s + c + h], dtype=dtype)
        miss = np.isnan(d)
        n_miss[i] = miss.sum(1)
        if n_miss[i].any():
            d[miss] = 0.0
        n_ok = n - n_miss[i]
        with np.errstate(invalid="ignore", divide="ignore"):
            abs_err[i] = np.where(n_ok > 0, np.abs(d).sum(1) / n_ok, np.nan)
            sq_err[i] = np.where(n_ok > 0, np.square(d).sum(1) / n_ok, np.nan)
    return xr.Dataset({"abs_err": (("window", "lead"), abs_err), "sq_err": (("window", "lead"), sq_err),
                       "n_missing": (("window", "lead"), n_miss)},
                      coords={"window": w["window"].values, "lead": np.arange(1, h + 1),
                              "condition": ("window", w["condition"].values)},
                      attrs={"n_neurons": n})
