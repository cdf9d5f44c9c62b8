"""Spatial vs temporal context: sweep input down-sampling and context length (Immer et al., 2025).

For every (input down-sampling ``s``, context ``C``) a :class:`~.estimator.VideoForecaster` is
trained with otherwise equal settings and scored with part 1's protocol (segment-mean traces,
MAE per lead over windows, averaged over the training conditions). Cost is reported next to
accuracy: forward FLOPs per (window, lead) (``torch.utils.flop_counter``), the bytes of
activations autograd saves for the backward pass of one training sample (the memory that limits
batch size and context on an accelerator; counted exactly with ``saved_tensors_hooks``), the
parameter count and the training wall time. On CUDA the peak allocated memory is recorded too.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import xarray as xr
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ..._torch_utils import torch_threads
from ..evaluate import score_forecaster
from ..metrics import aggregate
from ..protocol import windows as make_windows
from .estimator import VideoForecaster

__all__ = ["forward_cost", "context_sweep"]


def forward_cost(est: VideoForecaster) -> dict:
    """FLOPs of one forward (one window, one lead) and activation bytes saved for one backward."""
    est_dev = next(est.model_.parameters())
    z, y, x = est.spatial_shape_
    ctx = torch.zeros(1, int(est.context), z, y, x, dtype=est_dev.dtype, device=est_dev.device)
    lead = torch.ones(1, dtype=torch.long, device=est_dev.device)
    stim = (torch.zeros(1, (int(est.context) + 1) * est.n_stimulus_features_, dtype=est_dev.dtype,
                        device=est_dev.device) if est.stimulus else None)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        est._forward(est.model_, ctx, lead, stim)
    seen: dict[int, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter):
            st = t.untyped_storage()
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t

    est.model_.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = est._forward(est.model_, ctx, lead, stim)
        out.sum().backward()
    finally:
        est.model_.zero_grad(set_to_none=True)
        est.model_.eval()
    params = {p.untyped_storage().data_ptr() for p in est.model_.parameters()}
    act = sum(v for k, v in seen.items() if k not in params)
    return dict(flops=float(fc.get_total_flops()), activation_bytes=float(act),
                n_params=float(sum(p.numel() for p in est.model_.parameters())))


def context_sweep(ds: xr.Dataset, downsample=(1, 2, 4), contexts=(1, 4, 8), split: str = "test",
                  max_windows: int | None = 64, n_boot: int = 0, progress: bool = False,
                  **estimator_params) -> xr.Dataset:
    """Train and score one forecaster per (downsample, context); returns an ``xr.Dataset``.

    Variables: ``mae`` (downsample, context, lead) over the training conditions, ``mae_condition``
    (downsample, context, condition, lead), ``flops``, ``activation_bytes``, ``n_params``,
    ``train_seconds`` and (CUDA only) ``peak_memory_bytes`` over (downsample, context).
    ``max_windows`` scores an evenly spaced subset of the split's windows (all with ``None``).
    """
    downsample = [int(s) for s in downsample]
    contexts = [int(c) for c in contexts]
    if not downsample or not contexts or min(downsample) < 1 or min(contexts) < 1:
        raise ValueError(f"downsample and contexts must be non-empty lists of ints >= 1, got "
                         f"{downsample}, {contexts}")
    rows = []
    grid = [(s, c) for s in downsample for c in contexts]
    for s, c in tqdm(grid, disable=not progress, desc="context sweep"):
        est = VideoForecaster(**{**estimator_params, "input_downsample": s, "context": c})
        cuda = torch.cuda.is_available() and (est.device is None or "cuda" in str(est.device))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        est.fit(ds)
        secs = time.perf_counter() - t0
        peak = float(torch.cuda.max_memory_allocated()) if cuda else np.nan
        w = make_windows(ds, split, context=c, horizon=int(est.horizon))
        if max_windows is not None and w.sizes["window"] > max_windows:
            w = w.isel(window=np.unique(np.linspace(0, w.sizes["window"] - 1, max_windows).astype(int)))
        with torch_threads(est.n_threads):
            errors, w = score_forecaster(est, ds, split=split, windows=w)
            cost = forward_cost(est)
        agg = aggregate(errors, w, n_boot=n_boot, seed=0)
        rows.append(dict(s=s, c=c, mae=agg["mae_train_conditions"].values, mae_c=agg["mae"],
                         train_seconds=secs, peak=peak, **cost))
    lead = np.arange(1, int(rows[0]["mae"].shape[-1]) + 1)
    shape = (len(downsample), len(contexts))
    out = xr.Dataset(coords={"downsample": downsample, "context": contexts, "lead": lead})
    mae = np.full(shape + (lead.size,), np.nan)
    scal = {k: np.full(shape, np.nan) for k in ("flops", "activation_bytes", "n_params", "train_seconds", "peak")}
    conds = list(dict.fromkeys(str(v) for r in rows for v in r["mae_c"]["condition"].values))
    mae_c = np.full(shape + (len(conds), lead.size), np.nan)
    for r in rows:
        i, j = downsample.index(r["s"]), contexts.index(r["c"])
        mae[i, j] = r["mae"]
        for k in scal:
            scal[k][i, j] = r[k]
        m = r["mae_c"]
        for ci, cname in enumerate(m["condition"].values):
            mae_c[i, j, conds.index(str(cname))] = m.values[ci]
    out["mae"] = (("downsample", "context", "lead"), mae)
    out["mae_condition"] = (("downsample", "context", "condition", "lead"), mae_c)
    out = out.assign_coords(condition=conds)
    out["flops"] = (("downsample", "context"), scal["flops"])
    out["activation_bytes"] = (("downsample", "context"), scal["activation_bytes"])
    out["n_params"] = (("downsample", "context"), scal["n_params"])
    out["train_seconds"] = (("downsample", "context"), scal["train_seconds"])
    out["peak_memory_bytes"] = (("downsample", "context"), scal["peak"])
    out["flops"].attrs["description"] = "forward FLOPs for one window and one lead"
    out["activation_bytes"].attrs["description"] = "activation bytes saved for backward, one training sample"
    out.attrs.update(split=split, description="spatial (input down-sampling) vs temporal (context) trade-off")
    return out
