"""ZAPBench metrics: MAE / MSE per lead step and condition, with missing neurons counted.

Definition (ZAPBench): for every window and lead step, average the error over neurons; average
those over the windows of a condition; average conditions afterwards (held-out reported apart).
Missing values follow a named rule (:func:`resolve_missing`): ``"zapbench"`` (NaN -> 0 on both
sides, every neuron in the denominator, as ZAPBench scores) or ``"exclude"`` (the neuron-step is
left out of its window's mean); either way they are counted in ``n_missing`` and results say in
their ``missing_rule`` attribute which rule was used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from .bootstrap import block_bootstrap_means

__all__ = ["window_errors", "error_means", "errors_dataset", "resolve_missing", "MISSING_RULES",
           "aggregate", "summarize"]


MISSING_RULES = ("zapbench", "exclude")


def resolve_missing(missing: str, ds: xr.Dataset | None = None) -> str:
    """The missing-value rule: ``"auto"`` is ``"zapbench"`` for the real release, else ``"exclude"``.

    - ``"zapbench"``: NaN predictions and NaN targets are replaced by 0 before the error is taken
      and every neuron stays in the denominator (the ZAPBench metrics colab, ``colabs/metrics.ipynb``,
      computes ``nan_to_num(targets) - nan_to_num(predictions)``; video scoring uses
      ``nan_to_zero``), so a neuron missing on both sides counts as zero error;
    - ``"exclude"``: a neuron-step whose prediction or target is NaN is left out of that window's
      mean (the mean is over the present neurons). Better for data where a few neurons are
      missing: the score is not pulled towards 0 (or towards ``|target|``) by them.

    Both rules count the missing neuron-steps in ``n_missing``.
    """
    if missing == "auto":
        src = None if ds is None else ds.attrs.get("source")
        return "zapbench" if src == "zapbench-release" else "exclude"
    if missing not in MISSING_RULES:
        raise ValueError(f"missing must be 'auto' or one of {MISSING_RULES}, got {missing!r}")
    return missing


def error_means(pred, target, missing: str = "exclude"):
    """Per-(window, lead) mean |error|, mean squared error and missing count over neurons (torch).

    ``pred`` and ``target`` are tensors (window, lead, neuron) on one device (``pred`` may be an
    expanded view, e.g. a lead-constant forecast); the work is one subtraction and two fused
    reductions (``vector_norm``) in the inputs' dtype, so no second (window, lead, neuron) temporary
    is formed (sum of squares by ``vector_norm``, then ``|d|`` in place and a sum: ~1 ns per
    element on one CPU core). Rows with a NaN are redone on their own (clean data pays nothing for
    the rule).
    Returns float64 ``abs_err``, ``sq_err`` and int64 ``n_missing``, each (window, lead), on the
    same device; under ``"exclude"`` a row whose neurons are all missing gives NaN.
    """
    import torch

    if missing not in MISSING_RULES:
        raise ValueError(f"missing must be one of {MISSING_RULES}, got {missing!r}")
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"pred and target must both be (window, lead, neuron); got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    n = pred.shape[-1]
    if _frame_aligned(pred) and _frame_aligned(target):
        # forecasts of frame t shared by every window that targets it (a sliding view, e.g. the
        # stimulus-evoked response): each frame is scored once, windows index the frames
        w, h = pred.shape[:2]
        frames = [x.as_strided((w + h - 1, 1, n), (n, n, 1), x.storage_offset()) for x in (pred, target)]
        idx = (torch.arange(w, device=pred.device)[:, None] + torch.arange(h, device=pred.device))
        return tuple(v[:, 0][idx] for v in error_means(*frames, missing))
    d = pred - target
    sq_sum = torch.linalg.vector_norm(d, 2, dim=-1).double().square()
    abs_sum = d.abs_().sum(-1).double()                            # in place: d is ours
    n_miss = torch.zeros(abs_sum.shape, dtype=torch.int64, device=abs_sum.device)
    bad = torch.isnan(abs_sum).nonzero(as_tuple=True)
    if bad[0].numel():                                              # rows with missing neurons
        p, t = pred[bad], target[bad]
        miss = torch.isnan(p) | torch.isnan(t)
        n_miss[bad] = miss.sum(-1)
        if missing == "zapbench":
            db = torch.nan_to_num(t, nan=0.0) - torch.nan_to_num(p, nan=0.0)
        else:
            db = torch.where(miss, torch.zeros((), dtype=d.dtype, device=d.device), p - t)
        abs_sum[bad] = db.abs().sum(-1).double()
        sq_sum[bad] = db.square().sum(-1).double()
    n_ok = torch.full_like(abs_sum, float(n)) if missing == "zapbench" else (n - n_miss).double()
    nan = torch.full_like(abs_sum, float("nan"))
    return (torch.where(n_ok > 0, abs_sum / n_ok.clamp(min=1), nan),
            torch.where(n_ok > 0, sq_sum / n_ok.clamp(min=1), nan), n_miss)


def _frame_aligned(x) -> bool:
    """Whether (window, lead, neuron) ``x`` is a sliding view over frames: x[w, h] = frames[w + h]."""
    return (x.dim() == 3 and x.shape[0] > 1 and x.shape[1] > 1 and x.stride(2) == 1
            and x.stride(0) == x.stride(1) == x.shape[2])


def errors_dataset(abs_err, sq_err, n_missing, n_neurons: int, missing: str) -> xr.Dataset:
    """Per-window errors as ``xr.Dataset(window, lead)`` (numpy arrays in)."""
    dims = ("window", "lead")
    return xr.Dataset({"abs_err": (dims, np.asarray(abs_err, np.float64)),
                       "sq_err": (dims, np.asarray(sq_err, np.float64)),
                       "n_missing": (dims, np.asarray(n_missing, np.int64))},
                      coords={"lead": np.arange(1, np.shape(abs_err)[1] + 1)},
                      attrs={"n_neurons": int(n_neurons), "missing_rule": missing})


def window_errors(pred, target, missing: str = "exclude") -> xr.Dataset:
    """Per-window, per-lead errors of ``pred`` against ``target``, both (window, lead, neuron).

    numpy arrays or torch tensors; ``missing`` is the rule for NaNs (see :func:`resolve_missing`).
    Returns an ``xr.Dataset`` over (window, lead): ``abs_err``, ``sq_err`` (float64) and
    ``n_missing`` (int64).
    """
    import torch

    from .._torch_utils import to_numpy

    p = pred if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred))
    t = target if isinstance(target, torch.Tensor) else torch.as_tensor(np.asarray(target))
    if p.shape != t.shape or p.dim() != 3:
        raise ValueError(f"pred and target must both be (window, lead, neuron); got {tuple(p.shape)} "
                         f"and {tuple(t.shape)}")
    if p.dtype != t.dtype:
        dt = torch.promote_types(p.dtype, t.dtype)
        p, t = p.to(dt), t.to(dt)
    a, s, m = error_means(p, t.to(p.device), missing)
    return errors_dataset(to_numpy(a), to_numpy(s), to_numpy(m), p.shape[-1], missing)


def aggregate(errors: xr.Dataset, windows: xr.Dataset, n_boot: int = 1000, block_length: int = 16,
              ci: float = 0.95, seed: int | None = 0, heldout: Sequence[str] | None = None,
              condition_order: Sequence[str] | None = None) -> xr.Dataset:
    """Per-condition scores (condition, lead) from per-window errors, with bootstrap intervals.

    Returns ``mae``, ``mse``, ``mae_lower``, ``mae_upper`` (block bootstrap over the windows of each
    condition), ``n_windows``, ``n_missing`` (missing neuron-steps summed over windows) and
    ``mae_train_conditions`` (lead) with its interval: the mean over non-held-out conditions.
    """
    if errors.sizes["window"] != windows.sizes["window"]:
        raise ValueError(f"errors have {errors.sizes['window']} windows, windows has {windows.sizes['window']}")
    held = set(windows.attrs.get("heldout_conditions", ()) if heldout is None else heldout)
    conds = np.asarray(windows["condition"].values).astype(str)
    order = list(condition_order) if condition_order is not None else list(dict.fromkeys(conds))
    lead = errors["lead"].values
    abs_err = errors["abs_err"].values
    sq_err = errors["sq_err"].values
    miss = errors["n_missing"].values
    k, h = len(order), lead.size
    mae = np.full((k, h), np.nan)
    mse = np.full((k, h), np.nan)
    lo = np.full((k, h), np.nan)
    hi = np.full((k, h), np.nan)
    n_win = np.zeros(k, dtype=np.int64)
    n_missing = np.zeros((k, h), dtype=np.int64)
    reps = np.full((n_boot, k, h), np.nan) if n_boot else None
    alpha = (1.0 - ci) / 2.0
    for i, c in enumerate(order):                                     # loop over the 9 conditions
        sel = conds == c
        n_win[i] = sel.sum()
        if not n_win[i]:
            continue
        with np.errstate(invalid="ignore"):
            mae[i] = np.nanmean(abs_err[sel], axis=0)
            mse[i] = np.nanmean(sq_err[sel], axis=0)
        n_missing[i] = miss[sel].sum(0)
        if n_boot:
            reps[:, i] = block_bootstrap_means(abs_err[sel], n_boot, block_length, seed=_sub(seed, i))
            lo[i], hi[i] = np.nanquantile(reps[:, i], [alpha, 1 - alpha], axis=0)
    train = np.array([c not in held and n > 0 for c, n in zip(order, n_win)])
    out = xr.Dataset(
        {"mae": (("condition", "lead"), mae), "mse": (("condition", "lead"), mse),
         "mae_lower": (("condition", "lead"), lo), "mae_upper": (("condition", "lead"), hi),
         "n_windows": ("condition", n_win), "n_missing": (("condition", "lead"), n_missing)},
        coords={"condition": np.asarray(order, dtype=str), "lead": lead,
                "heldout": ("condition", np.array([c in held for c in order]))},
        attrs={"ci": ci, "n_boot": n_boot, "block_length": block_length,
               "n_neurons": int(errors.attrs.get("n_neurons", -1)),
               "missing_rule": str(errors.attrs.get("missing_rule", "exclude"))})
    with np.errstate(invalid="ignore"):
        out["mae_train_conditions"] = ("lead", mae[train].mean(0) if train.any() else np.full(h, np.nan))
        if n_boot and train.any():
            m = reps[:, train].mean(1)
            out["mae_train_conditions_lower"] = ("lead", np.nanquantile(m, alpha, axis=0))
            out["mae_train_conditions_upper"] = ("lead", np.nanquantile(m, 1 - alpha, axis=0))
        else:
            out["mae_train_conditions_lower"] = ("lead", np.full(h, np.nan))
            out["mae_train_conditions_upper"] = ("lead", np.full(h, np.nan))
    return out


def _sub(seed, i):
    return None if seed is None else [int(seed), int(i)]


def summarize(results: xr.Dataset, leads: Sequence[int] = (1, 4, 8, 16, 32), reference=None):
    """A tidy pandas table: one row per (model, context), columns MAE at some leads and the mean.

    Uses ``mae_train_conditions`` (conditions averaged, held-out excluded) and adds the held-out
    condition's MAE averaged over leads. ``reference``: ZAPBench's published table (a DataFrame
    from :func:`workbench.forecast.zapbench_results.load_zapbench_results`, or a path to it); its
    numbers for the same (model, context) are added as ``zapbench_mae_lead<k>`` columns.
    """
    import pandas as pd

    rows = []
    dim = "model" if "model" in results.dims else None
    models = results["model"].values if dim else [results.attrs.get("model", "?")]
    contexts = results["context"].values if "context" in results.dims else [results.attrs.get("context", -1)]
    for m in models:
        for c in contexts:
            r = results
            if dim:
                r = r.sel(model=m)
            if "context" in r.dims:
                r = r.sel(context=c)
            tc = r["mae_train_conditions"]
            if np.all(np.isnan(tc.values)):
                continue
            row = {"model": str(m), "context": int(c), "mae_mean": float(tc.mean())}
            for ld in leads:
                if ld in r["lead"].values:
                    row[f"mae_lead{ld}"] = float(tc.sel(lead=ld))
            held = r["mae"].isel(condition=np.flatnonzero(r["heldout"].values))
            row["mae_heldout_mean"] = float(held.mean()) if held.size else float("nan")
            row["n_missing"] = int(r["n_missing"].sum())
            rows.append(row)
    table = pd.DataFrame(rows)
    if reference is not None and len(table):
        from .zapbench_results import reference_columns

        table = reference_columns(table, reference, leads)
    return table
