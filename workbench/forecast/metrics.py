"""ZAPBench metrics: MAE / MSE per lead step and condition, with missing neurons counted.

Definition (ZAPBench): for every window and lead step, average the error over neurons; average
those over the windows of a condition; average conditions afterwards (held-out reported apart).
A neuron whose prediction or target is NaN is *missing*: it is left out of that window's mean
and counted in ``n_missing`` - never scored as zero error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from .bootstrap import block_bootstrap_means

__all__ = ["window_errors", "lead_errors", "aggregate", "summarize"]


def window_errors(pred, target) -> xr.Dataset:
    """Per-window, per-lead errors averaged over the non-missing neurons.

    ``pred``, ``target``: (window, lead, neuron). Returns an ``xr.Dataset`` over (window, lead):
    ``abs_err``, ``sq_err`` (float64; NaN where every neuron is missing) and ``n_missing`` (int64).
    """
    p = np.asarray(pred)
    t = np.asarray(target)
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"pred and target must both be (window, lead, neuron); got {p.shape} and {t.shape}")
    return lead_errors(p, lambda h: t[:, h])


def lead_errors(pred, target_at) -> xr.Dataset:
    """Kernel of :func:`window_errors`: ``target_at(h)`` gives the (window, neuron) targets of lead h.

    Loops over the lead steps only (32); each step is one batched pass over all windows and
    neurons in float32 with pairwise sums (accurate to ~1e-6 relative). NaNs are handled on a
    second pass only for the rows that contain them, so clean data pays nothing for them.
    """
    w, h, n = pred.shape
    abs_err = np.empty((w, h))
    sq_err = np.empty((w, h))
    n_miss = np.zeros((w, h), dtype=np.int64)
    d = np.empty((w, n), np.float32)
    a = np.empty((w, n), np.float32)
    for j in range(h):                                   # loop over lead steps, batched over windows
        tgt = target_at(j)
        np.subtract(pred[:, j], tgt, out=d, casting="unsafe")
        np.abs(d, out=a)
        s_abs = a.sum(-1, dtype=np.float32).astype(np.float64)
        np.multiply(a, a, out=a)
        s_sq = a.sum(-1, dtype=np.float32).astype(np.float64)
        bad = np.flatnonzero(np.isnan(s_abs))
        if bad.size:                                     # rows with missing neurons
            db = pred[bad, j].astype(np.float64) - tgt[bad]
            miss = np.isnan(db)
            n_miss[bad, j] = miss.sum(-1)
            db[miss] = 0.0
            s_abs[bad] = np.abs(db).sum(-1)
            s_sq[bad] = (db * db).sum(-1)
        n_ok = n - n_miss[:, j]
        with np.errstate(invalid="ignore", divide="ignore"):
            abs_err[:, j] = np.where(n_ok > 0, s_abs / np.maximum(n_ok, 1), np.nan)
            sq_err[:, j] = np.where(n_ok > 0, s_sq / np.maximum(n_ok, 1), np.nan)
    dims = ("window", "lead")
    return xr.Dataset({"abs_err": (dims, abs_err), "sq_err": (dims, sq_err), "n_missing": (dims, n_miss)},
                      coords={"lead": np.arange(1, h + 1)}, attrs={"n_neurons": int(n)})


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
               "n_neurons": int(errors.attrs.get("n_neurons", -1))})
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


def summarize(results: xr.Dataset, leads: Sequence[int] = (1, 4, 8, 16, 32)):
    """A tidy pandas table: one row per (method, context), columns MAE at some leads and the mean.

    Uses ``mae_train_conditions`` (conditions averaged, held-out excluded) and adds the held-out
    condition's MAE averaged over leads.
    """
    import pandas as pd

    rows = []
    methods = results["method"].values if "method" in results.dims else [results.attrs.get("method", "?")]
    contexts = results["context"].values if "context" in results.dims else [results.attrs.get("context", -1)]
    for m in methods:
        for c in contexts:
            r = results
            if "method" in r.dims:
                r = r.sel({"method": m})      # dict form: .sel(method=...) is sel's fill method
            if "context" in r.dims:
                r = r.sel({"context": c})
            tc = r["mae_train_conditions"]
            if np.all(np.isnan(tc.values)):
                continue
            row = {"method": str(m), "context": int(c), "mae_mean": float(tc.mean())}
            for ld in leads:
                if ld in r["lead"].values:
                    row[f"mae_lead{ld}"] = float(tc.sel(lead=ld))
            held = r["mae"].isel(condition=np.flatnonzero(r["heldout"].values))
            row["mae_heldout_mean"] = float(held.mean()) if held.size else float("nan")
            row["n_missing"] = int(r["n_missing"].sum())
            rows.append(row)
    return pd.DataFrame(rows)
