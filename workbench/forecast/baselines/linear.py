"""Linear baseline shared across neurons, fitted by (ridge-regularised) least squares."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .. import protocol
from .base import TraceForecaster, training_windows

__all__ = ["LinearBaseline"]


class LinearBaseline(TraceForecaster):
    """``y[h] = sum_c W[c, h] x[c] + b[h]`` per neuron, one ``W`` shared by all neurons.

    Fitted on the training windows of the non-held-out conditions by least squares via the normal
    equations, accumulated over batches of windows (one BLAS product per batch). ``center="last"``
    subtracts each window's last context value from inputs and targets first (NLinear).
    ``max_windows`` / ``max_neurons`` subsample the training rows (random, ``seed``) for large
    recordings; ``None`` uses all of them. ``alpha`` is a ridge penalty relative to the mean
    diagonal of ``X^T X``.
    """

    name = "linear"

    def __init__(self, context: int = 4, center: str | None = "last", alpha: float = 1e-6,
                 max_windows: int | None = 2048, max_neurons: int | None = 1024, seed: int = 0):
        self.context = context
        self.center = center
        self.alpha = alpha
        self.max_windows = max_windows
        self.max_neurons = max_neurons
        self.seed = seed

    def _fit(self, ds: xr.Dataset):
        if self.center not in (None, "last"):
            raise ValueError(f"center must be None or 'last', got {self.center!r}")
        c, h = self.context, self.horizon
        starts = training_windows(ds, "train", c, h, self.max_windows, self.seed)
        if starts.size == 0:
            raise ValueError(f"no training windows for context={c}")
        n = ds.sizes["neuron"]
        rng = np.random.default_rng(self.seed)
        neurons = (np.sort(rng.choice(n, self.max_neurons, replace=False))
                   if self.max_neurons is not None and n > self.max_neurons else slice(None))
        traces = ds["traces"]
        xtx = np.zeros((c + 1, c + 1))
        xty = np.zeros((c + 1, h))
        batch = max(1, int(2e7 // ((c + h) * (n if isinstance(neurons, slice) else neurons.size))))
        for b0 in range(0, starts.size, batch):                       # batches of windows
            s = starts[b0:b0 + batch]
            lo, hi = int(s.min()), int(s.max()) + c + h
            block = np.asarray(traces.isel(time=slice(lo, hi)).values[:, neurons], dtype=np.float64)
            x, y = protocol.gather(block, s - lo, c, h)               # (W, C, N), (W, H, N)
            if self.center == "last":
                last = x[:, -1:, :]
                x = x - last
                y = y - last
            rows = np.concatenate([x, np.ones((x.shape[0], 1, x.shape[2]))], axis=1)
            rows = rows.transpose(0, 2, 1).reshape(-1, c + 1)          # (W * N, C + 1)
            xtx += rows.T @ rows                                       # BLAS
            xty += rows.T @ y.transpose(0, 2, 1).reshape(-1, h)
        ridge = self.alpha * np.trace(xtx) / (c + 1) * np.eye(c + 1)
        ridge[-1, -1] = 0.0
        coef = np.linalg.lstsq(xtx + ridge, xty, rcond=None)[0]
        self.coef_ = coef[:-1]                                         # (C, H)
        self.intercept_ = coef[-1]                                     # (H,)
        self.n_train_windows_ = int(starts.size)

    def folded_coef(self):
        """``(A, b)`` with ``pred[h] = sum_c A[c, h] x[c] + b[h]``: the centring folded into ``A``.

        ``center="last"``: ``x[-1] + sum_c coef[c, h] (x[c] - x[-1])`` puts ``1 - sum_c coef[c, h]``
        on the last context frame.
        """
        a = np.array(self.coef_, dtype=np.float64)
        if self.center == "last":
            a[-1] += 1.0 - self.coef_.sum(0)
        return a, np.asarray(self.intercept_, dtype=np.float64)

    def _predict(self, ctx, ds, starts):
        # one float32 (H, C) @ (C, N) product per window, batched; no transposes or temporaries
        a, b = self.folded_coef()
        x = np.asarray(ctx, dtype=np.float32)
        y = np.matmul(a.T.astype(np.float32), x)                        # (W, H, N)
        y += b.astype(np.float32)[:, None]
        return y

    def block_errors(self, ds, starts):
        """Prediction fused with scoring in one compiled pass (``kernels.score_linear``)."""
        from ..kernels import score_linear

        a, b = self.folded_coef()
        return score_linear(np.asarray(ds["traces"].values), starts, a, b)
