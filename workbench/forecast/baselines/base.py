"""Shared machinery of the trace baselines (scikit-learn style, Forecaster protocol)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator

from .. import protocol
from ..dataset import validate_dataset

__all__ = ["TraceForecaster", "training_windows"]


def training_windows(ds: xr.Dataset, split: str, context: int, horizon: int = protocol.HORIZON,
                     max_windows: int | None = None, seed: int | None = 0) -> np.ndarray:
    """Start frames of the ``split`` windows of the non-held-out conditions (optionally subsampled)."""
    w = protocol.windows(ds, split=split, context=context, horizon=horizon)
    starts = w["start"].values
    if max_windows is not None and starts.size > max_windows:
        rng = np.random.default_rng(seed)
        starts = np.sort(rng.choice(starts, max_windows, replace=False))
    return starts


class TraceForecaster(BaseEstimator):
    """Base class: ``fit(ds) -> self``, ``predict(ds, starts) -> (window, lead, neuron)``.

    ``starts`` are positional indices of each window's first context frame in ``ds``.
    Subclasses implement ``_fit(ds)`` and ``_predict(ctx (W, C, N), ds, starts)``.
    """

    horizon = protocol.HORIZON
    requires = ("traces",)

    def _check_context(self):
        c = self.context
        if not isinstance(c, int | np.integer) or not 1 <= c <= protocol.MAX_CONTEXT:
            raise ValueError(f"context must be an int in [1, {protocol.MAX_CONTEXT}], got {c!r}")

    def fit(self, ds: xr.Dataset, y=None):
        self._check_context()
        validate_dataset(ds)
        self.n_neurons_ = int(ds.sizes["neuron"])
        self._fit(ds)
        return self

    def _fit(self, ds):  # pragma: no cover - trivial default
        pass

    def predict(self, ds: xr.Dataset, starts) -> np.ndarray:
        if not hasattr(self, "n_neurons_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(ds) first")
        if ds.sizes["neuron"] != self.n_neurons_:
            raise ValueError(f"dataset has {ds.sizes['neuron']} neurons, model was fitted on {self.n_neurons_}")
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        if starts.size == 0:
            return np.zeros((0, self.horizon, self.n_neurons_), np.float32)
        lo, hi = int(starts.min()), int(starts.max()) + self.context
        if lo < 0 or hi > ds.sizes["time"]:
            raise ValueError(f"context frames [{lo}, {hi}) outside the dataset's {ds.sizes['time']} frames")
        block = np.asarray(ds["traces"].isel(time=slice(lo, hi)).values)
        return self._predict_block(block, starts - lo, ds, starts)

    # bound on the gathered (window, C, neuron) context per call of _predict (bytes)
    context_budget = 2.5e8
    # bound on the (window, lead, neuron) float32 predictions held at once by block_errors (bytes)
    prediction_budget = 3.2e7

    def block_errors(self, ds: xr.Dataset, starts):
        """Error sums ``(abs_sum, sq_sum, n_missing)``, each (window, lead), for windows at ``starts``.

        ``ds`` holds every frame of the windows (context and targets); ``starts`` are positional.
        Default: :meth:`predict` a few windows at a time (``prediction_budget`` bytes of float32
        predictions, cache-sized) and score them with the compiled kernel; subclasses fuse
        prediction and scoring where the forecast has structure.
        """
        from ..kernels import score_predictions

        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        traces = np.asarray(ds["traces"].values)
        per = max(1, int(self.prediction_budget // (self.horizon * traces.shape[1] * 4)))
        out = [np.zeros((starts.size, self.horizon)) for _ in range(2)]
        out.append(np.zeros((starts.size, self.horizon), np.int64))
        for b0 in range(0, starts.size, per):                         # batches of windows
            s = starts[b0:b0 + per]
            part = score_predictions(self.predict(ds, s), traces, s + self.context)
            for o, p in zip(out, part):
                o[b0:b0 + per] = p
        return tuple(out)

    def _predict_block(self, block, rel, ds, starts):
        """Predict from the traces ``block`` covering all context frames; sub-batched gathers."""
        if rel.size == 1:                                               # one window: a view, no copy
            r = int(rel[0])
            return self._predict(block[r:r + self.context][None], ds, starts)
        per = max(1, int(self.context_budget // (self.context * block.shape[1] * block.itemsize)))
        if rel.size <= per:
            ctx, _ = protocol.gather(block, rel, self.context, 0)
            return self._predict(ctx, ds, starts)
        out = np.empty((rel.size, self.horizon, block.shape[1]), np.float32)
        for b0 in range(0, rel.size, per):                            # batches of windows
            ctx, _ = protocol.gather(block, rel[b0:b0 + per], self.context, 0)
            out[b0:b0 + per] = self._predict(ctx, ds, starts[b0:b0 + per])
        return out
