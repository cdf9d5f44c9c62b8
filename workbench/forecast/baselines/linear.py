"""Linear baseline shared across neurons: ``y[h] = sum_c W[c, h] x[c] + b[h]`` for every neuron.

Mode ``"zapbench"`` (``zapbench/ts_forecasting/configs/linear.py`` with ``zapbench/models/nlinear.py``):
a plain linear map over the context (``normalization=False``: no last-value centring), weights
initialised to ``1 / C`` and bias 0 (``constant_init=True``: it starts as the mean baseline),
trained on the MAE by AdamW (lr 1e-3, weight decay 1e-4, batches of 8 windows) with early
stopping on the validation MAE (every 250 steps, patience 20; ``configs/common.py``).

Mode ``"workbench"``: least squares by the normal equations on (a subsample of) the training
windows, inputs and targets centred on each window's last value (NLinear), a tiny ridge. It is
exact, deterministic and takes seconds where AdamW takes thousands of steps; for Gaussian-like
errors it is the better fit, for ZAPBench's MAE the AdamW fit is the faithful one.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..._deprecation import renamed_arguments
from .. import protocol
from .base import training_windows
from .torch_base import TorchForecaster

__all__ = ["LinearBaseline", "LinearNet"]


def LinearNet(context: int, horizon: int, center: bool):
    """``torch.nn.Module``: (B, C, N) -> (B, H, N), one (H, C) weight and (H,) bias for all neurons."""
    import torch

    class _Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.full((horizon, context), 1.0 / context))
            self.bias = torch.nn.Parameter(torch.zeros(horizon))

        def forward(self, x, neurons=None):
            # one (H, C) @ (C, N) product per window: each window of a strided (frame, C, N) view is
            # contiguous, while a batched matmul over the overlapping windows copies them all first
            y = torch.stack([torch.mm(self.weight, xb) for xb in x]) + self.bias[:, None]
            if center:                                  # W (x - last) + last, without forming x - last
                y = y + (1.0 - self.weight.sum(1))[:, None] * x[:, -1:]
            return y

    return _Linear()


class LinearBaseline(TorchForecaster):
    """Linear forecaster (see the module docstring for the two modes).

    ``solver``: ``"adamw"`` (ZAPBench) or ``"lstsq"`` (workbench); ``center``: subtract each
    window's last value first (``"last"``) or not (``None``); both default from ``mode``.
    ``lstsq`` options: ``alpha`` (ridge relative to the mean diagonal of ``X^T X``),
    ``max_windows`` / ``max_neurons`` (random training rows, ``None``: all). ``adamw`` options:
    ``lr``, ``weight_decay``, ``batch_size``, ``check_every``, ``patience``, ``max_steps``,
    ``max_val_windows`` (``None``: the mode's value). Fitted: ``coef_`` (C, H), ``intercept_`` (H,).
    """

    name = "linear"

    @renamed_arguments(seed="random_state")
    def __init__(self, context: int = 4, mode: str = "auto", solver: str | None = None,
                 center: str | None = "auto", alpha: float = 1e-6, max_windows: int | None = 2048,
                 max_neurons: int | None = 1024, lr: float | None = None, weight_decay: float | None = None,
                 batch_size: int | None = None, check_every: int | None = None, patience: int | None = None,
                 max_steps: int | None = None, max_checks: int | None = None,
                 max_val_windows: int | None = None, random_state=0,
                 device=None, n_threads: int | None = None, progress: bool = False, callback=None):
        self.context = context
        self.mode = mode
        self.solver = solver
        self.center = center
        self.alpha = alpha
        self.max_windows = max_windows
        self.max_neurons = max_neurons
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.check_every = check_every
        self.patience = patience
        self.max_steps = max_steps
        self.max_checks = max_checks
        self.max_val_windows = max_val_windows
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.progress = progress
        self.callback = callback

    def _settings(self, ds):
        zap = self.mode_ == "zapbench"
        solver = self.solver or ("adamw" if zap else "lstsq")
        if solver not in ("adamw", "lstsq"):
            raise ValueError(f"solver must be 'adamw' or 'lstsq', got {self.solver!r}")
        center = self.center if self.center != "auto" else (None if zap else "last")
        if center not in (None, "last"):
            raise ValueError(f"center must be None, 'last' or 'auto', got {self.center!r}")
        s = dict(solver=solver, center=center, lr=1e-3, weight_decay=1e-4, batch_size=8, check_every=250,
                 patience=20, min_delta=1e-4, max_steps=100_000, max_checks=None, max_val_windows=None)
        for k in ("lr", "weight_decay", "batch_size", "check_every", "patience", "max_steps", "max_checks",
                  "max_val_windows"):
            if getattr(self, k) is not None:
                s[k] = getattr(self, k)
        return s

    def _build(self, n_neurons):
        return LinearNet(self.context, self.horizon, self.settings_["center"] == "last")

    def _fit(self, ds: xr.Dataset):
        if self._settings(ds)["solver"] == "adamw":
            super()._fit(ds)
            w = self.net_.weight.detach().cpu().numpy().astype(np.float64)
            self.coef_ = w.T.copy()                                       # (C, H)
            self.intercept_ = self.net_.bias.detach().cpu().numpy().astype(np.float64)
            return
        import torch

        self.settings_ = self._settings(ds)
        self._train_settings(self.settings_)                # the same arguments are checked
        self._fit_lstsq(ds)
        net = self._build(int(ds.sizes["neuron"]))
        with torch.no_grad():                       # the solution as the network predict runs
            net.weight.copy_(torch.as_tensor(self.coef_.T))
            net.bias.copy_(torch.as_tensor(self.intercept_))
        self.net_ = net.to(self.device_).eval()

    def _fit_lstsq(self, ds):
        c, h = self.context, self.horizon
        starts = training_windows(ds, "train", c, h, self.max_windows, self.random_state_)
        if starts.size == 0:
            raise ValueError(f"no training windows for context={c}")
        n = ds.sizes["neuron"]
        rng = np.random.default_rng(self.random_state_)
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
            if self.settings_["center"] == "last":
                last = x[:, -1:, :]
                x = x - last
                y = y - last
            rows = np.concatenate([x, np.ones((x.shape[0], 1, x.shape[2]))], axis=1)
            rows = rows.transpose(0, 2, 1).reshape(-1, c + 1)          # (W * N, C + 1)
            yr = y.transpose(0, 2, 1).reshape(-1, h)
            ok = np.isfinite(rows).all(1) & np.isfinite(yr).all(1)   # missing neurons left out
            rows, yr = rows[ok], yr[ok]
            xtx += rows.T @ rows                                       # BLAS
            xty += rows.T @ yr
        if xtx[-1, -1] == 0:
            raise ValueError("no finite training rows: every training window has a NaN neuron value")
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
        if self.settings_["center"] == "last":
            a[-1] += 1.0 - self.coef_.sum(0)
        return a, np.asarray(self.intercept_, dtype=np.float64)
