"""Base class of the baselines trained with torch (linear by AdamW, TSMixer, time-mix, TiDE).

Conventions (docs/architecture.md): ``device=None`` is CUDA when available, else CPU; the
recording goes to the device once per ``fit``; ``n_threads`` sets torch's intra-op threads while
working; ``random_state`` seeds initialisation and batch order without touching the global RNG;
forecasts come back as numpy on the CPU from ``predict`` and stay on the device from
``predict_tensor`` (what :func:`workbench.forecast.evaluate.score_forecaster` uses).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ...exceptions import check_fitted
from ._training import TrainSettings, fit_network, masked_inputs
from .base import TraceForecaster, check_positive_int

__all__ = ["TorchForecaster", "finite_or_nan"]


def finite_or_nan(values, name: str) -> np.ndarray:
    """``values`` as float32, rejecting +-inf (including float64 values beyond float32's range);
    NaN (missing) is allowed."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name!r} must be numeric, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if np.isinf(out).any():
        big = np.isinf(out) & np.isfinite(arr) if arr.dtype.kind == "f" else np.zeros_like(out, bool)
        why = "values beyond float32's range" if big.any() else "+-inf"
        raise ValueError(f"{name!r} holds {why} at {int(np.isinf(out).sum())} entries; a trained "
                         "forecaster needs finite values (NaN marks missing ones)")
    return out


class TorchForecaster(TraceForecaster):
    """Subclasses define ``_settings(ds) -> dict`` (resolved hyper-parameters, incl. the training
    ones of :class:`TrainSettings`), ``_build(n_neurons) -> torch.nn.Module`` and optionally
    ``uses_stimulus = True`` (the network's ``forward(x, cov)`` then gets the stimulus features of
    the target frames, (B, H, F))."""

    uses_stimulus = False
    train_fields = tuple(f.name for f in TrainSettings.__dataclass_fields__.values())
    # bytes of one (window, C, neuron) float32 input batch at prediction time
    predict_budget = 4e7

    @property
    def requires(self):
        return ("traces", "stimulus") if self.uses_stimulus else ("traces",)

    # -- conventions ------------------------------------------------------------------------
    def _random_state(self) -> int:
        from ..._torch_utils import seed_from

        return seed_from(self.random_state)

    def fit(self, ds: xr.Dataset, y=None):
        import torch

        from ..._torch_utils import resolve_device, torch_threads

        n_threads = self.n_threads
        check_positive_int(n_threads, "n_threads", allow_none=True)
        self.device_ = resolve_device(self.device)
        rs = self._random_state()
        devices = [self.device_] if self.device_.type == "cuda" else []
        with torch_threads(n_threads), torch.random.fork_rng(devices=devices):
            torch.manual_seed(rs)
            self.random_state_ = rs
            return super().fit(ds, y)

    def _fit(self, ds: xr.Dataset):
        import torch

        settings = self._settings(ds)
        self.settings_ = settings
        train = self._train_settings(settings)
        n = int(ds.sizes["neuron"])
        traces = torch.as_tensor(finite_or_nan(ds["traces"].values, "traces")).to(self.device_)
        stim = None
        if self.uses_stimulus:
            stim = finite_or_nan(ds["stimulus"].values, "stimulus")
            if np.isnan(stim).any():
                raise ValueError("the 'stimulus' variable holds NaN; TiDE needs every stimulus feature")
            stim = torch.as_tensor(stim).to(self.device_)
        net = self._build(n).to(self.device_)
        c, h = self.context, self.horizon

        def forward(model, x, starts, neurons=None):
            return self._forward(model, x, self._covariates(stim, starts), neurons)

        self.best_val_mae_, self.history_ = fit_network(
            net, forward, ds, c, h, train, traces, self.random_state_, self.device_,
            progress=self.progress, callback=self.callback, name=self.name,
            neuron_subset=settings.get("max_train_neurons"))
        self.net_ = net

    def _train_settings(self, settings) -> TrainSettings:
        check_positive_int(settings.get("max_train_neurons"), "max_train_neurons", allow_none=True)
        return TrainSettings(**{k: settings[k] for k in self.train_fields if k in settings}).validate()

    def _covariates(self, stim, starts):
        import torch

        if stim is None:
            return None
        idx = torch.as_tensor(np.asarray(starts) + self.context, device=stim.device)[:, None] + \
            torch.arange(self.horizon, device=stim.device)
        return stim[idx]                                                # (B, H, F)

    def _raw_forward(self, model, x, cov, neurons=None):
        return model(x, cov, neurons) if self.uses_stimulus else model(x, neurons)

    def _forward(self, model, x, cov, neurons=None):
        """Masked forward: NaN inputs -> 0, and a NaN forecast for a neuron whose context had one."""
        import torch

        x, missing = masked_inputs(x)
        out = self._raw_forward(model, x, cov, neurons)
        return torch.where(missing, torch.full_like(out, float("nan")), out)

    # -- prediction -------------------------------------------------------------------------
    def predict_tensor(self, ds: xr.Dataset, starts):
        """Forecasts (len(starts), horizon, n_neuron) float32 as a tensor on ``device_``."""
        import torch

        from ..._torch_utils import torch_threads

        starts = self._check_predict(ds, starts)
        check_fitted(self, "net_", "predict")
        n = self.n_neurons_
        if starts.size == 0:
            return torch.zeros((0, self.horizon, n), device=self.device_)
        lo, hi = int(starts.min()), int(starts.max()) + self.context
        tr = torch.as_tensor(np.asarray(ds["traces"].isel(time=slice(lo, hi)).values, np.float32))
        tr = tr.to(self.device_)
        stim = None
        if self.uses_stimulus:
            t1 = int(starts.max()) + self.context + self.horizon
            if t1 > ds.sizes["time"]:
                raise ValueError("target frames reach past the end of the dataset (TiDE reads their stimulus)")
            stim = torch.as_tensor(np.asarray(ds["stimulus"].isel(time=slice(lo, t1)).values, np.float32))
            stim = stim.to(self.device_)
        rel = starts - lo
        # missing neurons once per block (not per window): NaN -> 0, and a running NaN count
        # marks the (window, neuron) pairs whose context holds a NaN
        nan = torch.isnan(tr)
        cnt = None
        if bool(nan.any()):
            cnt = torch.zeros((tr.shape[0] + 1, n), dtype=torch.int32, device=tr.device)
            cnt[1:] = nan.cumsum(0, dtype=torch.int32)
            tr = torch.nan_to_num(tr, nan=0.0)
        view = tr.unfold(0, self.context, 1).transpose(1, 2)             # (frames - C + 1, C, N)
        per = max(1, int(self.predict_budget // (self.context * n * 4)))
        out = []
        with torch_threads(self.n_threads), torch.no_grad():
            for b0 in range(0, rel.size, per):                          # batches of windows
                r = rel[b0:b0 + per]
                x = view[int(r[0]):int(r[-1]) + 1] if np.all(np.diff(r) == 1) else view[torch.as_tensor(r)]
                y = self._raw_forward(self.net_, x, self._covariates(stim, r))
                if cnt is not None:
                    ri = torch.as_tensor(r, device=tr.device)
                    miss = (cnt[ri + self.context] - cnt[ri]) > 0       # (B, N)
                    y = y.masked_fill(miss[:, None, :], float("nan"))
                out.append(y)
        return torch.cat(out)

    def predict(self, ds: xr.Dataset, starts) -> np.ndarray:
        from ..._torch_utils import to_numpy

        return to_numpy(self.predict_tensor(ds, starts))

    # -- pickling (the CLI stores fitted models) --------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())           # a copy: sklearn may return __dict__ itself
        net = state.pop("net_", None)
        if net is not None:
            state["_net_state"] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        if "device_" in state:
            state["device_"] = str(state["device_"])
        return state

    def __setstate__(self, state):
        import torch

        net_state = state.pop("_net_state", None)
        super().__setstate__(state)
        if "device_" in state:
            dev = torch.device(state["device_"])
            if dev.type == "cuda" and not torch.cuda.is_available():
                dev = torch.device("cpu")                 # saved on a GPU, opened without one
            self.device_ = dev
        if net_state is not None:
            net = self._build(int(self.n_neurons_))
            net.load_state_dict(net_state)
            self.net_ = net.to(self.device_).eval()
