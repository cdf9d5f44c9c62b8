"""Score several forecasters on the same (optionally thinned) windows with part 1's metrics.

``evaluate`` scores every window of a split; for quick comparisons (notebooks, dashboards) this
scores an evenly spaced subset, with the same per-window errors (``score_forecaster``) and
aggregation (``aggregate``), and stacks the models into one ``xr.Dataset(model, condition, lead)``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..evaluate import forecaster_name, score_forecaster
from ..metrics import aggregate
from ..protocol import protocol_from
from ..protocol import windows as make_windows

__all__ = ["score_methods"]


def score_methods(forecasters, ds: xr.Dataset, split: str = "test", max_windows: int | None = None,
                  n_boot: int = 0, seed: int = 0) -> xr.Dataset:
    """MAE by (model, condition, lead) and over the training conditions (model, lead).

    ``forecasters``: ``{name: fitted forecaster}`` or a list; all must share one context so they
    are scored on identical windows.
    """
    fs = dict(forecasters) if isinstance(forecasters, dict) else {forecaster_name(f): f for f in forecasters}
    if not fs:
        raise ValueError("no forecasters given")
    contexts = {int(f.context) for f in fs.values()}
    if len(contexts) != 1:
        raise ValueError(f"forecasters must share one context to be compared window by window, got {sorted(contexts)}")
    c = contexts.pop()
    h = min(int(getattr(f, "horizon", 32)) for f in fs.values())
    w = make_windows(ds, split, context=c, horizon=h)
    if max_windows is not None and w.sizes["window"] > max_windows:
        w = w.isel(window=np.unique(np.linspace(0, w.sizes["window"] - 1, int(max_windows)).round().astype(int)))
    names = protocol_from(ds)["names"]
    out = []
    for name, f in fs.items():
        errors, ww = score_forecaster(f, ds, split=split, windows=w)
        res = aggregate(errors, ww, n_boot=n_boot, seed=seed, condition_order=names)
        out.append(res.expand_dims(model=[name]))
    res = xr.concat(out, "model", combine_attrs="drop")
    res.attrs.update(split=split, context=c, n_windows=int(w.sizes["window"]))
    return res
