"""Shared machinery of the trace baselines (scikit-learn estimators following the Forecaster protocol).

Every baseline has a ``mode``: ``"zapbench"`` follows the definitions of the ZAPBench code
(google-research/zapbench, cited per baseline) so numbers on the real release mean what
ZAPBench's mean; ``"workbench"`` keeps this project's earlier choices where they suit other data
better (each baseline's docstring says why); ``"auto"`` (default) is ``"zapbench"`` when the data
come from the release (``ds.attrs["source"] == "zapbench-release"``) and ``"workbench"`` otherwise.
"""

from __future__ import annotations

import numbers

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator

from ...exceptions import check_fitted
from .. import protocol
from ..dataset import validate_dataset

__all__ = ["TraceForecaster", "training_windows", "resolve_mode", "MODES", "check_starts"]

MODES = ("zapbench", "workbench")


def resolve_mode(mode: str, ds: xr.Dataset) -> str:
    """``"auto"`` -> ``"zapbench"`` for the real release, else ``"workbench"``; validates the name."""
    if mode == "auto":
        return "zapbench" if ds.attrs.get("source") == "zapbench-release" else "workbench"
    if mode not in MODES:
        raise ValueError(f"mode must be 'auto' or one of {MODES}, got {mode!r}")
    return mode


def training_windows(ds: xr.Dataset, split: str, context: int, horizon: int = protocol.HORIZON,
                     max_windows: int | None = None, seed: int | None = 0) -> np.ndarray:
    """Start frames of the ``split`` windows of the non-held-out conditions (optionally subsampled)."""
    w = protocol.windows(ds, split=split, context=context, horizon=horizon)
    starts = w["start"].values
    if max_windows is not None and starts.size > max_windows:
        rng = np.random.default_rng(seed)
        starts = np.sort(rng.choice(starts, max_windows, replace=False))
    return starts


def check_starts(starts, n_frames: int, context: int, what: str = "starts") -> np.ndarray:
    """Window starts whose context frames lie in ``[0, n_frames)`` (see :func:`protocol.check_starts`)."""
    return protocol.check_starts(starts, n_frames, context, what)


def check_positive_int(value, name: str, allow_none: bool = False):
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


class TraceForecaster(BaseEstimator):
    """Base class: ``fit(ds) -> self``, ``predict(ds, starts) -> (window, lead, neuron)``.

    ``starts`` are positional indices of each window's first context frame in ``ds``.
    Subclasses implement ``_fit(ds)`` and ``_predict(ctx (W, C, N), ds, starts)``; a neuron with
    a NaN among its context frames gets a NaN forecast (a missing prediction), the others stay
    finite.
    """

    horizon = protocol.HORIZON
    requires = ("traces",)

    def _check_context(self):
        c = self.context
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 1 <= c <= protocol.MAX_CONTEXT:
            raise ValueError(f"context must be an int in [1, {protocol.MAX_CONTEXT}], got {c!r}")

    def fit(self, ds: xr.Dataset, y=None):
        self._check_context()
        validate_dataset(ds)
        if "mode" in self.get_params():
            self.mode_ = resolve_mode(self.mode, ds)
        n = int(ds.sizes["neuron"])
        if n < 1:
            raise ValueError("dataset has no neurons")
        self._fit(ds)
        self.n_neurons_ = n
        return self

    def _fit(self, ds):  # pragma: no cover - trivial default
        pass

    def _check_predict(self, ds, starts):
        check_fitted(self, "n_neurons_", "predict")
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"ds must be an xarray.Dataset, got {type(ds).__name__}")
        if "traces" not in ds:
            raise ValueError("dataset has no 'traces' variable")
        if ds.sizes["neuron"] != self.n_neurons_:
            raise ValueError(f"dataset has {ds.sizes['neuron']} neurons, model was fitted on {self.n_neurons_}")
        return check_starts(starts, ds.sizes["time"], self.context)

    def predict(self, ds: xr.Dataset, starts) -> np.ndarray:
        starts = self._check_predict(ds, starts)
        if starts.size == 0:
            return np.zeros((0, self.horizon, self.n_neurons_), np.float32)
        lo, hi = int(starts.min()), int(starts.max()) + self.context
        block = np.asarray(ds["traces"].isel(time=slice(lo, hi)).values)
        return self._predict_block(block, starts - lo, ds, starts)

    # bound on the gathered (window, C, neuron) context per call of _predict (bytes)
    context_budget = 2.5e8

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
