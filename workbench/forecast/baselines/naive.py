"""The mean baseline: the average of the last frames of the context, for every lead."""

from __future__ import annotations

import numbers

import numpy as np
import xarray as xr

from .. import protocol
from .base import TraceForecaster

__all__ = ["MeanBaseline", "LONG_CONTEXT_MEAN_WINDOWS"]

# ZAPBench reports its long-context (C = 256) mean baseline from two runs with two window lengths
# (colabs/metrics.ipynb: "The mean baseline for long context has two associated IDs since we used
# two different window lengths"); the lengths are not in the public code. We use the full context
# and the short-context window and keep the one with the lower validation MAE (val split only).
LONG_CONTEXT_MEAN_WINDOWS = (256, 4)


class MeanBaseline(TraceForecaster):
    """Predict the mean of the last ``window`` context frames for every lead (ZAPBench's
    ``naive.MeanBaseline``, ``zapbench/models/naive.py``, ``configs/mean.py``).

    ``window``: an int (1 .. ``context``), ``None`` (mode ``"workbench"``: the whole context; mode
    ``"zapbench"``: the whole context for C < 256, and for C = 256 the better on the validation
    windows of :data:`LONG_CONTEXT_MEAN_WINDOWS`), or a sequence of ints to choose from by
    validation MAE. ``window=1`` is the last value. The fitted window is ``window_``.
    """

    name = "mean"

    def __init__(self, context: int = 4, window=None, mode: str = "auto"):
        self.context = context
        self.window = window
        self.mode = mode

    def _candidates(self):
        c = self.context
        if self.window is None:
            if self.mode_ == "zapbench" and c == protocol.MAX_CONTEXT:
                return [w for w in LONG_CONTEXT_MEAN_WINDOWS if w <= c]
            return [c]
        cands = [self.window] if isinstance(self.window, numbers.Integral) else list(self.window)
        for w in cands:
            if isinstance(w, bool) or not isinstance(w, numbers.Integral) or not 1 <= w <= c:
                raise ValueError(f"window must be an int in [1, context={c}] (or a sequence of them), "
                                 f"got {self.window!r}")
        if not cands:
            raise ValueError("window must not be an empty sequence")
        return cands

    def _fit(self, ds: xr.Dataset):
        cands = self._candidates()
        self.val_mae_by_window_ = {}
        if len(cands) == 1:
            self.window_ = int(cands[0])
            return
        val = protocol.windows(ds, "val", context=self.context)["start"].values
        if val.size == 0:
            raise ValueError(f"no validation windows to choose the mean window at context={self.context}")
        tr = np.asarray(ds["traces"].values)
        for w in cands:
            self.window_ = int(w)
            pred = self._predict_block(tr, val, ds, val)[:, :1]             # lead-constant forecast
            tgt = tr[val[:, None] + self.context + np.arange(self.horizon)]
            with np.errstate(invalid="ignore"):
                self.val_mae_by_window_[int(w)] = float(np.nanmean(np.abs(tgt - pred)))
        self.window_ = int(min(self.val_mae_by_window_, key=self.val_mae_by_window_.get))

    def _predict_block(self, block, rel, ds, starts):
        """Window means from one cumulative sum over the block (O(frames x N), not O(W C N)),
        returned as a lead-broadcast view (W, H, N) of the (W, N) means.

        NaNs are summed as zeros and counted apart, so a NaN makes only the windows whose averaged
        frames hold it NaN (not every later window, as a plain cumulative sum would).
        """
        k = self.window_
        r = rel + self.context - k                                     # first averaged frame
        lo, hi = int(r.min()), int(r.max()) + k
        x = np.asarray(block[lo:hi])
        nan = np.isnan(x)
        cs = np.zeros((hi - lo + 1, block.shape[1]))
        np.cumsum(np.where(nan, 0.0, x) if nan.any() else x, axis=0, dtype=np.float64, out=cs[1:])
        r = r - lo
        m = (cs[r + k] - cs[r]) / k
        if nan.any():
            cn = np.zeros((hi - lo + 1, block.shape[1]), np.int64)
            np.cumsum(nan, axis=0, out=cn[1:])
            m[(cn[r + k] - cn[r]) > 0] = np.nan
        m = m.astype(np.float64 if block.dtype == np.float64 else np.float32)
        return np.broadcast_to(m[:, None, :], (rel.size, self.horizon, block.shape[1]))
