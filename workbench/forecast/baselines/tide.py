"""TiDE forecaster over neuron traces (Das et al., 2023; ZAPBench's configuration).

Each neuron is forecast from its own context and the stimulus features of the target frames
(future covariates), by MLPs whose weights all neurons share (``zapbench/models/tide.py``,
``zapbench/ts_forecasting/configs/tide.py``):

- the stimulus features of each target frame -> residual MLP (hidden 128) -> 32 numbers;
- encoder: residual MLP (hidden 128, out 128) on [context, flattened projected covariates];
- decoder: residual MLP (hidden 128, out H x 32), reshaped to 32 numbers per lead;
- temporal decoder per lead: residual MLP (hidden 128, out 1) on [decoder output, that lead's
  projected covariates];
- plus a linear map ``C -> H`` of the context (the global residual).

A residual MLP is ``Dense_out(ReLU(Dense_hidden(x))) + Dense_out'(x)`` (no layer norm, dropout 0).
ZAPBench ablates the static (position embedding) and past covariates by feeding zeros: zero
inputs add nothing, so they are left out here, but the first layers are initialised with the
fan-in of ZAPBench's full input. Terms that only depend on the stimulus are computed once per
window and broadcast over neurons (the same numbers as ZAPBench's per-neuron tiling).
ZAPBench trained it with batch 1 on each of 16 devices (batch 16), AdamW lr 1e-3, early stopping
as for the other models; mode ``"workbench"`` checks once per pass with patience 3 instead.
"""

from __future__ import annotations

import math

from .torch_base import TorchForecaster
from .tsmixer import _flax_init

__all__ = ["TiDEBaseline", "TiDENet"]

_POSITION_EMBEDDING_DIM = 192        # ZAPBench's static covariates (ablated): neuron x 192


def TiDENet(context: int, horizon: int, n_features: int, hidden: int = 128, cov_dim: int = 32,
            decoder_dim: int = 32, temporal_hidden: int = 128, neuron_chunk_bytes: float = 6.4e7):
    """The network: ``forward(x (B, C, N), cov (B, H, F), neurons=None) -> (B, H, N)``."""
    import torch

    nn = torch.nn
    F = torch.nn.functional
    enc_fan_in = context + _POSITION_EMBEDDING_DIM + cov_dim * context + cov_dim * horizon

    def lin(i, o, fan_in=None):
        m = nn.Linear(i, o)
        _flax_init(m)
        if fan_in is not None:                            # ZAPBench's fan-in (zeros included)
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
        return m

    class _Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.cov_h, self.cov_o, self.cov_s = lin(n_features, hidden), lin(hidden, cov_dim), lin(n_features, cov_dim)
            # encoder: input [context (C), projected covariates (H * cov_dim)], weights split by part
            self.enc_h_x = lin(context, hidden, enc_fan_in)
            self.enc_h_c = lin(cov_dim * horizon, hidden, enc_fan_in)
            self.enc_o = lin(hidden, hidden)
            self.enc_s_x = lin(context, hidden, enc_fan_in)
            self.enc_s_c = lin(cov_dim * horizon, hidden, enc_fan_in)
            self.dec_h, self.dec_o, self.dec_s = lin(hidden, hidden), lin(hidden, horizon * decoder_dim), \
                lin(hidden, horizon * decoder_dim)
            td_in = decoder_dim + cov_dim
            self.td_h_d = lin(decoder_dim, temporal_hidden, td_in)
            self.td_h_c = lin(cov_dim, temporal_hidden, td_in)
            self.td_o = lin(temporal_hidden, 1)
            self.td_s_d = lin(decoder_dim, 1, td_in)
            self.td_s_c = lin(cov_dim, 1, td_in)
            self.res = lin(context, horizon)

        def _rows(self, past, fut):                       # past (B, n, C), fut (B, H, cov_dim)
            b = past.shape[0]
            ff = fut.reshape(b, 1, -1)
            e = self.enc_o(F.relu(self.enc_h_x(past) + self.enc_h_c(ff))) + self.enc_s_x(past) + self.enc_s_c(ff)
            d = self.dec_o(F.relu(self.dec_h(e))) + self.dec_s(e)             # (B, n, H * D)
            d = d.reshape(b, past.shape[1], horizon, -1)                      # (B, n, H, D)
            fc = fut[:, None]                                                 # (B, 1, H, cov_dim)
            t = self.td_o(F.relu(self.td_h_d(d) + self.td_h_c(fc))) + self.td_s_d(d) + self.td_s_c(fc)
            return t[..., 0] + self.res(past)                                 # (B, n, H)

        def forward(self, x, cov, neurons=None):
            fut = self.cov_o(F.relu(self.cov_h(cov))) + self.cov_s(cov)       # (B, H, cov_dim), once
            past = x.transpose(1, 2)                                          # (B, N, C)
            n = past.shape[1]
            per = n if self.training else max(1, int(neuron_chunk_bytes // (
                x.shape[0] * horizon * max(temporal_hidden, decoder_dim) * 4)))
            parts = [self._rows(past[:, i:i + per], fut) for i in range(0, n, per)]   # neuron chunks
            return torch.cat(parts, 1).transpose(1, 2)

    return _Net()


class TiDEBaseline(TorchForecaster):
    """TiDE forecaster (see the module docstring), a scikit-learn estimator.

    Reads the ``stimulus`` variable (its features at the target frames). Training arguments left
    at ``None`` come from ``mode`` (``settings_``); ``max_train_neurons`` trains each step on a
    random subset of neurons (TiDE is per neuron, so this only thins the batch).
    """

    name = "tide"
    uses_stimulus = True

    def __init__(self, context: int = 4, mode: str = "auto", hidden: int = 128, cov_dim: int = 32,
                 decoder_dim: int = 32, temporal_hidden: int = 128, lr: float | None = None,
                 weight_decay: float | None = None, batch_size: int | None = None,
                 check_every: int | None = None, patience: int | None = None, max_steps: int | None = None,
                 max_checks: int | None = None, max_val_windows: int | None = None,
                 max_train_neurons: int | None = None,
                 random_state=0, device=None, n_threads: int | None = None, progress: bool = False,
                 callback=None):
        self.context = context
        self.mode = mode
        self.hidden = hidden
        self.cov_dim = cov_dim
        self.decoder_dim = decoder_dim
        self.temporal_hidden = temporal_hidden
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.check_every = check_every
        self.patience = patience
        self.max_steps = max_steps
        self.max_checks = max_checks
        self.max_val_windows = max_val_windows
        self.max_train_neurons = max_train_neurons
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.progress = progress
        self.callback = callback

    def _settings(self, ds):
        if "stimulus" not in ds:
            raise ValueError("TiDEBaseline needs the dataset's 'stimulus' variable (its future covariates)")
        if self.mode_ == "zapbench":
            s = dict(lr=1e-3, weight_decay=1e-4, batch_size=16, check_every=250, patience=20, min_delta=1e-4,
                     max_steps=100_000, max_checks=None, max_val_windows=None, max_train_neurons=None)
        else:
            s = dict(lr=1e-3, weight_decay=1e-4, batch_size=16, check_every=None, patience=3, min_delta=1e-6,
                     max_steps=100_000, max_checks=20, max_val_windows=256, max_train_neurons=None)
        for k in ("lr", "weight_decay", "batch_size", "check_every", "patience", "max_steps", "max_checks",
                  "max_val_windows", "max_train_neurons"):
            if getattr(self, k) is not None:
                s[k] = getattr(self, k)
        s["n_features"] = int(ds.sizes["feature"])
        return s

    def _build(self, n_neurons):
        return TiDENet(self.context, self.horizon, self.settings_["n_features"], self.hidden, self.cov_dim,
                       self.decoder_dim, self.temporal_hidden)
