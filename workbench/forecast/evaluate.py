"""Score forecasters on every window of a split, streamed over time blocks, no loop over windows.

A forecaster follows the :class:`Forecaster` protocol (trace baselines here, the video model in
``forecast/video``). Scoring is one path for all of them: the recording is read in time blocks,
each block's traces go once to the forecaster's device, ``predict`` (or ``predict_tensor``) runs
on batches of windows sized to a memory budget, and :func:`workbench.forecast.metrics.error_means`
scores each batch against a view of the block's traces (no (window, lead, neuron) tensor of the
whole split is ever formed, and none for the targets).

Cost (benchmarks/bench_forecast_baselines.py, 1557 test windows, 1024 neurons, one CPU core):
scoring adds 13-27 % to the prediction time of TSMixer, 25 % for linear at C = 256, under 50 %
for time-mix and TiDE, 67 % for linear at C = 4. It cannot stay under 50 % for the mean and the
stimulus baseline whatever the implementation: their forecasts cost O(window x neuron) or a table
lookup, while any scoring must read the O(window x lead x neuron) targets (190-390 % there, about
0.2 s per context). The numba kernels this path replaced were 5-20x faster on those cheap
baselines on CPU (e.g. 0.04 vs 0.8 s for the mean at 4096 neurons) but 574 lines of
hardware-specific code and a compiled dependency for under a second per baseline; on a GPU the
same torch path runs on the forecaster's device.
"""

from __future__ import annotations

import time as _time
import warnings
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import xarray as xr

from . import protocol
from .metrics import aggregate, error_means, errors_dataset, resolve_missing

__all__ = ["evaluate", "score_forecaster", "evaluate_loop", "forecaster_name", "results_from_errors",
           "Forecaster"]


@runtime_checkable
class Forecaster(Protocol):
    """What :func:`evaluate` needs from a forecaster (a ``typing.Protocol``; no base class needed).

    - ``context`` (int): frames of context per window; ``horizon`` (int, 32 in ZAPBench);
    - ``fit(ds) -> self``: train on the ``"train"`` split (``"val"`` for early stopping);
    - ``predict(ds, starts) -> (len(starts), horizon, n_neuron)`` float array: ``starts`` are
      *positional* indices (into ``ds.time``) of each window's first context frame. :func:`evaluate`
      calls it with an in-memory time slice ``ds.isel(time=slice(lo, hi))`` holding the variables
      in ``requires`` and starts relative to that slice. NaN marks a missing prediction.

    Optional: ``requires`` (tuple of variable names, default ``("traces",)``), ``name`` (str),
    ``predict_tensor(ds, starts)`` (the same forecasts as a ``torch.Tensor`` on the model's device,
    so scoring runs there without a round trip through the host) and ``device_`` (that device).
    """

    context: int
    horizon: int

    def fit(self, ds: xr.Dataset, y=None): ...

    def predict(self, ds: xr.Dataset, starts) -> np.ndarray: ...


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


def _check_forecaster(f):
    missing = [a for a in ("context", "fit", "predict") if not hasattr(f, a)]
    if missing:
        raise TypeError(f"{type(f).__name__} is not a Forecaster: it lacks {missing} "
                        "(see workbench.forecast.evaluate.Forecaster)")
    from sklearn.base import BaseEstimator
    from sklearn.utils.validation import check_is_fitted

    if isinstance(f, BaseEstimator):               # scikit-learn's NotFittedError, naming the class
        check_is_fitted(f)


def _device_of(f):
    import torch

    dev = getattr(f, "device_", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")


def _predict_tensor(f, block, rel, device):
    """One batch of forecasts as a tensor on ``device`` (numpy forecasts are wrapped, not copied)."""
    import torch

    if hasattr(f, "predict_tensor"):
        pred = f.predict_tensor(block, rel)
    else:
        pred = f.predict(block, rel)
    if not isinstance(pred, torch.Tensor):
        arr = np.asarray(pred)
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float32)
        with warnings.catch_warnings():            # read-only broadcast views are read, never written
            warnings.filterwarnings("ignore", message=".*not writable.*")
            pred = torch.as_tensor(arr)
    return pred.to(device)


def score_forecaster(forecaster, ds: xr.Dataset, split: str = "test", windows: xr.Dataset | None = None,
                     batch_size: int | None = None, block_frames: int = 1024, missing: str = "auto",
                     memory_budget: float = 1e7, progress: bool = False) -> tuple[xr.Dataset, xr.Dataset]:
    """Per-window errors of one forecaster: ``(errors (window, lead), windows)``.

    The recording is read in time blocks of about ``block_frames`` frames (one read per block,
    dask/zarr friendly); each block's traces go once to the forecaster's device (``device_``,
    default CPU). Forecasts come in batches of ``batch_size`` windows (default: ``memory_budget``
    bytes of float32 forecasts, a cache-sized amount) and are scored on that device against views
    of the block's traces. ``missing``: the NaN rule (``"auto"``, ``"zapbench"``, ``"exclude"``;
    see :func:`workbench.forecast.metrics.resolve_missing`).
    """
    import torch

    from .._torch_utils import to_numpy

    _check_forecaster(forecaster)
    rule = resolve_missing(missing, ds)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    c = int(forecaster.context)
    h = int(getattr(forecaster, "horizon", protocol.HORIZON))
    w = protocol.windows(ds, split=split, context=c, horizon=h) if windows is None else windows
    starts = np.asarray(w["start"].values, dtype=np.int64)
    order = np.argsort(starts, kind="stable")
    sorted_starts = starts[order]
    n = ds.sizes["neuron"]
    span = c + h
    if batch_size is None:
        batch_size = max(1, int(memory_budget // (h * n * 4)))
    need = tuple(getattr(forecaster, "requires", ("traces",)))
    keep = sorted(set(need) | {"traces"})
    absent = [v for v in keep if v not in ds]
    if absent:
        raise ValueError(f"dataset lacks variables {absent} needed by {forecaster_name(forecaster)}")
    device = _device_of(forecaster)
    out = [np.zeros((starts.size, h)), np.zeros((starts.size, h)), np.zeros((starts.size, h), np.int64)]
    plan = _block_plan(sorted_starts, span, max(block_frames, span + 1))
    it = plan
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(plan, desc=f"score {forecaster_name(forecaster)} C={c}", unit="block")
    for i0, i1, lo, hi in it:
        block = ds[keep].isel(time=slice(lo, hi)).load()
        tr = torch.as_tensor(np.ascontiguousarray(block["traces"].values)).to(device)
        # (frame, lead, neuron) view of the targets: row t holds frames t .. t + h - 1
        tv = tr.as_strided((tr.shape[0] - h + 1, h, n), (n, n, 1))
        for b0 in range(i0, i1, batch_size):                          # batches of windows
            rel = sorted_starts[b0:min(i1, b0 + batch_size)] - lo
            pred = _predict_tensor(forecaster, block, rel, device)
            if tuple(pred.shape) != (rel.size, h, n):
                raise ValueError(f"{forecaster_name(forecaster)}.predict returned shape {tuple(pred.shape)}, "
                                 f"expected (window, lead, neuron) = {(rel.size, h, n)}")
            first = rel + c
            consecutive = rel.size == 1 or bool(np.all(np.diff(first) == 1))
            tgt = tv[int(first[0]):int(first[-1]) + 1] if consecutive else tv[torch.as_tensor(first)]
            if pred.dtype != tgt.dtype:
                dt = torch.promote_types(pred.dtype, tgt.dtype)
                pred, tgt = pred.to(dt), tgt.to(dt)
            for o, part in zip(out, error_means(pred, tgt, rule)):
                o[order[b0:b0 + rel.size]] = to_numpy(part)
    errors = errors_dataset(*out, n, rule)
    errors = errors.assign_coords(window=w["window"].values, condition=("window", w["condition"].values))
    return errors, w


def evaluate(forecasters, ds: xr.Dataset, split: str = "test", n_boot: int = 1000,
             block_length: int = 16, ci: float = 0.95, seed: int | None = 0,
             batch_size: int | None = None, block_frames: int = 1024, missing: str = "auto",
             progress: bool = False) -> xr.Dataset:
    """Score fitted forecasters -> ``xr.Dataset`` over (model, context, condition, lead).

    ``forecasters``: one forecaster, a list, or ``{name: forecaster}``; several forecasters may
    share a name if their contexts differ. Variables: ``mae``, ``mse``, ``mae_lower``,
    ``mae_upper``, ``n_windows``, ``n_missing``, ``mae_train_conditions(_lower/_upper)`` and
    ``seconds`` (scoring wall time per model and context). ``missing``: the NaN rule
    (``"auto"``: ZAPBench's for the real release, else ``"exclude"``), stored in the attribute
    ``missing_rule``. Select a model with ``r.sel(model="mean")``.
    """
    rule = resolve_missing(missing, ds)
    if isinstance(forecasters, list | tuple):
        fs = [(forecaster_name(f), f) for f in forecasters]
    else:
        fs = list(_as_dict(forecasters).items())
    if not fs:
        raise ValueError("no forecasters given")
    for _, f in fs:
        _check_forecaster(f)
    scored = []
    for name, f in fs:
        t0 = _time.perf_counter()
        errors, w = score_forecaster(f, ds, split=split, batch_size=batch_size,
                                     block_frames=block_frames, missing=rule, progress=progress)
        scored.append((name, int(f.context), errors, w, _time.perf_counter() - t0))
    return results_from_errors(scored, ds, n_boot=n_boot, block_length=block_length, ci=ci, seed=seed)


def results_from_errors(scored, ds: xr.Dataset, n_boot: int = 1000, block_length: int = 16,
                        ci: float = 0.95, seed: int | None = 0) -> xr.Dataset:
    """Combine ``[(model, context, errors, windows, seconds), ...]`` into the results Dataset."""
    p = protocol.protocol_from(ds)
    items = []
    for name, context, errors, w, seconds in scored:
        res = aggregate(errors, w, n_boot=n_boot, block_length=block_length, ci=ci, seed=seed,
                        condition_order=p["names"])
        res["seconds"] = ((), float(seconds))
        items.append(res.expand_dims(model=[name], context=[int(context)]))
    if not items:
        raise ValueError("no forecasters given")
    keys = [(str(i["model"].item()), int(i["context"].item())) for i in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate (model, context) pairs among the forecasters: {keys}")
    rules = sorted({str(i.attrs.get("missing_rule", "exclude")) for i in items})
    out = xr.merge(items, join="outer", combine_attrs="drop_conflicts", compat="no_conflicts")
    out["heldout"] = ("condition", np.isin(out["condition"].values, list(p["heldout"])))
    out = out.set_coords("heldout")
    out["model"] = out["model"].astype(str)
    out.attrs.update(split=str(scored[0][3].attrs.get("split", "test")),
                     metric="ZAPBench MAE: mean over neurons, then windows, per condition",
                     missing_rule=rules[0] if len(rules) == 1 else rules)
    return out


def evaluate_loop(forecaster, ds: xr.Dataset, split: str = "test", windows: xr.Dataset | None = None,
                  in_memory: bool = False, dtype=np.float64, missing: str = "auto") -> xr.Dataset:
    """Reference: a straightforward loop over windows, one ``predict`` per window.

    For each window: ``predict`` it (``in_memory=False``: frames read lazily from ``ds``, as a
    naive script would; ``True``: from traces loaded once), take its target frames, and compute
    the per-lead mean absolute and squared errors with whole-array numpy operations in ``dtype``
    (float64: the exactness reference of the tests), NaNs by the ``missing`` rule. Returns
    per-window errors like :func:`score_forecaster`.
    """
    rule = resolve_missing(missing, ds)
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
        tgt = np.asarray(traces[s + c:s + c + h], dtype=dtype)
        d = pred - tgt
        miss = np.isnan(d)
        n_miss[i] = miss.sum(1)
        if rule == "zapbench":
            d = np.nan_to_num(pred) - np.nan_to_num(tgt)
        elif n_miss[i].any():
            d[miss] = 0.0
        n_ok = np.full(h, n) if rule == "zapbench" else n - n_miss[i]
        with np.errstate(invalid="ignore", divide="ignore"):
            abs_err[i] = np.where(n_ok > 0, np.abs(d).sum(1) / n_ok, np.nan)
            sq_err[i] = np.where(n_ok > 0, np.square(d).sum(1) / n_ok, np.nan)
    return xr.Dataset({"abs_err": (("window", "lead"), abs_err), "sq_err": (("window", "lead"), sq_err),
                       "n_missing": (("window", "lead"), n_miss)},
                      coords={"window": w["window"].values, "lead": np.arange(1, h + 1),
                              "condition": ("window", w["condition"].values)},
                      attrs={"n_neurons": n, "missing_rule": rule})
