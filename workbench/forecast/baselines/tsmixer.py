"""TSMixer and time-mix forecasters over neuron traces (Chen et al., 2023; ZAPBench's versions).

The network maps (batch, C, neurons) to (batch, H, neurons). A block

- mixes along time: ``x + ReLU(Dense_{C -> C}(norm(x)))`` per neuron, weights shared by neurons
  (with ``time_dim`` a ``C -> time_dim -> C`` bottleneck instead);
- mixes across neurons (TSMixer only; time-mix stops after the time mixing):
  ``x + Dense_{ff -> N}(ReLU(Dense_{N -> ff}(norm(x))))``;

a linear head ``C -> H`` shared across neurons gives the forecast. ``instance_norm``:
``"revin"`` (reversible instance normalisation: each window's series standardised over time, a
learned per-neuron scale and shift, undone after the head), ``"last"`` (subtract the last value,
add it back) or ``None``. ``block_norm``: ``None`` or ``"layer"`` (LayerNorm over neurons before
each mixing step). Dense layers start as Flax's defaults (LeCun-normal weights, zero biases) in
mode ``"zapbench"`` and as torch's in mode ``"workbench"``.

Mode ``"zapbench"`` (``zapbench/ts_forecasting/configs/tsmixer.py``, ``configs/timemix.py``,
``zapbench/models/tsmixer.py``): TSMixer at C = 4 has 2 blocks, width 256, no instance norm; at
C = 256 width 128 and reversible instance norm; time-mix has 5 blocks, no instance norm at C = 4
and reversible instance norm at C = 256; no norm inside blocks, dropout 0; AdamW lr 1e-3 (weight
decay 1e-4), batches of 8, early stopping with patience 20 checks of 250 steps. Other contexts
take the C = 4 settings below C = 128, the C = 256 ones from there.

Mode ``"workbench"`` (this project's earlier TSMixer, kept for small synthetic recordings where it
trains in seconds): width 64, LayerNorm over neurons in each block, dropout 0.1, last-value
centring, a zero-initialised head (training starts from the last-value forecast), batches of 16,
a check per pass over the training windows, patience 3, at most 20 checks.
"""

from __future__ import annotations

import math

import xarray as xr

from ..._deprecation import renamed_arguments
from .torch_base import TorchForecaster

__all__ = ["TSMixerBaseline", "TimeMixBaseline", "TSMixerNet"]

_SHORT_CONTEXT_BELOW = 128                                      # C < 128: ZAPBench's C = 4 settings


def _flax_init(lin):
    """Flax ``Dense`` defaults: LeCun-normal (truncated at 2 std) weights, zero bias."""
    import torch

    fan_in = lin.weight.shape[1]
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    torch.nn.init.trunc_normal_(lin.weight, std=std, a=-2 * std, b=2 * std)
    torch.nn.init.zeros_(lin.bias)


def TSMixerNet(context: int, horizon: int, n_neurons: int, n_blocks: int = 2, ff_dim: int = 256,
               dropout: float = 0.0, instance_norm: str | None = None, block_norm: str | None = None,
               time_mix_only: bool = False, time_dim: int | None = None, zero_head: bool = False,
               init: str = "flax"):
    """The network as a ``torch.nn.Module`` (built lazily so importing the package needs no torch).

    ``forward(x, neurons=None)``: ``x`` is (batch, C, n); with ``neurons`` (an index of n of the
    ``n_neurons``) only those neurons' rows of the per-neuron parameters are used, so a training
    step can run on a subset of neurons (the feature-mixing input is rescaled by ``n_neurons / n``).
    ``init``: ``"flax"`` (ZAPBench's Flax defaults) or ``"torch"`` (torch's ``nn.Linear`` default).
    """
    import torch

    nn = torch.nn
    F = torch.nn.functional

    def _mm(lin, x):                                  # (out, in) applied along dim 1 of (B, in, n)
        return torch.matmul(lin.weight, x) + lin.bias[:, None]

    def _lnorm(norm, x, neurons):
        if norm is None:
            return x
        if neurons is None:
            return norm(x)
        return F.layer_norm(x, (x.shape[-1],), norm.weight[neurons], norm.bias[neurons], norm.eps)

    class _Block(nn.Module):
        def __init__(self):
            super().__init__()
            dims = [context, context] if time_dim is None else [context, int(time_dim), context]
            self.time = nn.ModuleList([nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:])])
            self.norm_t = nn.LayerNorm(n_neurons) if block_norm == "layer" else None
            if not time_mix_only:
                self.norm_f = nn.LayerNorm(n_neurons) if block_norm == "layer" else None
                self.feat_in = nn.Linear(n_neurons, ff_dim)
                self.feat_out = nn.Linear(ff_dim, n_neurons)
            self.drop = nn.Dropout(dropout)

        def forward(self, x, neurons=None):                         # x: (B, C, n)
            y = _lnorm(self.norm_t, x, neurons)
            for i, lin in enumerate(self.time):                     # mixes along time
                y = _mm(lin, y)
                if i == 0:
                    y = F.relu(y)
            x = x + self.drop(y)
            if time_mix_only:
                return x
            y = _lnorm(self.norm_f, x, neurons)                     # mixes across neurons
            if neurons is None:
                z = F.relu(self.feat_in(y))
                y = self.feat_out(self.drop(z))
            else:
                scale = n_neurons / len(neurons)
                z = F.relu(F.linear(y, self.feat_in.weight[:, neurons]) * scale + self.feat_in.bias)
                y = F.linear(self.drop(z), self.feat_out.weight[neurons], self.feat_out.bias[neurons])
            return x + self.drop(y)

    class _Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([_Block() for _ in range(n_blocks)])
            self.head = nn.Linear(context, horizon)
            for m in self.modules():
                if isinstance(m, nn.Linear) and init == "flax":
                    _flax_init(m)
            if zero_head:
                nn.init.zeros_(self.head.weight)
                nn.init.zeros_(self.head.bias)
            if instance_norm == "revin":                            # per-neuron affine of RevIN
                self.rev_scale = nn.Parameter(torch.ones(n_neurons))
                self.rev_shift = nn.Parameter(torch.zeros(n_neurons))

        def forward(self, x, neurons=None):                          # (B, C, n) -> (B, H, n)
            if instance_norm == "revin":
                # Kim et al. (2022); connectomics.jax.models.normalization.ReversibleInstanceNorm:
                # per (window, neuron) mean and variance over time, eps 1e-6
                g = self.rev_scale if neurons is None else self.rev_scale[neurons]
                b = self.rev_shift if neurons is None else self.rev_shift[neurons]
                mean = x.mean(1, keepdim=True)
                std = torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-6)
                z = (x - mean) / std * g + b
            elif instance_norm == "last":
                last = x[:, -1:]
                z = x - last
            else:
                z = x
            for blk in self.blocks:
                z = blk(z, neurons)
            y = _mm(self.head, z)
            if instance_norm == "revin":
                return (y - b) / g * std + mean
            if instance_norm == "last":
                return y + last
            return y

    if instance_norm not in (None, "revin", "last"):
        raise ValueError(f"instance_norm must be None, 'revin' or 'last', got {instance_norm!r}")
    if block_norm not in (None, "layer"):
        raise ValueError(f"block_norm must be None or 'layer', got {block_norm!r}")
    return _Net()


_ARCH = ("n_blocks", "ff_dim", "dropout", "instance_norm", "block_norm", "time_dim", "zero_head", "init")
_TRAIN = ("lr", "weight_decay", "batch_size", "check_every", "patience", "max_steps", "max_checks",
          "max_val_windows", "max_train_neurons")


class TSMixerBaseline(TorchForecaster):
    """TSMixer forecaster (see the module docstring), a scikit-learn estimator.

    Architecture and training arguments left at ``None`` come from ``mode`` and the context
    (``settings_`` holds the resolved values); ``"auto"`` for ``instance_norm`` / ``block_norm``
    likewise. ``max_train_neurons``: train each step on a random subset of that many neurons
    (whole-brain sizes on a small machine); ``time_dim``: a ``C -> time_dim -> C`` time-mixing
    bottleneck. ``history_`` holds the train and validation MAE per check, ``best_val_mae_`` the
    restored check's.
    """

    name = "tsmixer"
    time_mix_only = False

    # old names keep working one release (FutureWarning); an epoch was one pass = one check
    @renamed_arguments(seed="random_state", num_threads="n_threads", max_epochs="max_checks",
                       steps_per_epoch="check_every")
    def __init__(self, context: int = 4, mode: str = "auto", n_blocks: int | None = None,
                 ff_dim: int | None = None, dropout: float | None = None, instance_norm="auto",
                 block_norm="auto", time_dim: int | None = None, zero_head: bool | None = None,
                 lr: float | None = None, weight_decay: float | None = None, batch_size: int | None = None,
                 check_every: int | None = None, patience: int | None = None, max_steps: int | None = None,
                 max_checks: int | None = None, max_val_windows: int | None = None,
                 max_train_neurons: int | None = None, random_state=0, device=None,
                 n_threads: int | None = None, progress: bool = False, callback=None):
        self.context = context
        self.mode = mode
        self.n_blocks = n_blocks
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.instance_norm = instance_norm
        self.block_norm = block_norm
        self.time_dim = time_dim
        self.zero_head = zero_head
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

    def _defaults(self, ds: xr.Dataset) -> dict:
        long = self.context >= _SHORT_CONTEXT_BELOW
        if self.mode_ == "zapbench":
            arch = dict(n_blocks=5 if self.time_mix_only else 2, ff_dim=128 if long else 256, dropout=0.0,
                        instance_norm="revin" if long else None, block_norm=None, time_dim=None,
                        zero_head=False, init="flax")
            train = dict(lr=1e-3, weight_decay=1e-4, batch_size=8, check_every=250, patience=20,
                         max_steps=100_000, max_checks=None, max_val_windows=None, max_train_neurons=None)
        else:
            arch = dict(n_blocks=5 if self.time_mix_only else 2, ff_dim=64, dropout=0.1,
                        instance_norm="last", block_norm="layer",
                        time_dim=None, zero_head=True, init="torch")
            train = dict(lr=1e-3, weight_decay=1e-4, batch_size=16, check_every=None, patience=3,
                         max_steps=100_000, max_checks=20, max_val_windows=256, max_train_neurons=None)
        return {**arch, **train, "min_delta": 1e-4 if self.mode_ == "zapbench" else 1e-6}

    def _settings(self, ds: xr.Dataset) -> dict:
        s = self._defaults(ds)
        for k in _ARCH + _TRAIN:
            v = getattr(self, k, None)
            if v is not None and not (k in ("instance_norm", "block_norm") and v == "auto"):
                s[k] = v
            elif k in ("instance_norm", "block_norm") and v is None:
                s[k] = None
        return s

    def _build(self, n_neurons):
        s = self.settings_
        return TSMixerNet(self.context, self.horizon, n_neurons, s["n_blocks"], s["ff_dim"], s["dropout"],
                          s["instance_norm"], s["block_norm"], self.time_mix_only, s["time_dim"],
                          s["zero_head"], s["init"])


class TimeMixBaseline(TSMixerBaseline):
    """Time-mix forecaster: TSMixer's time-mixing blocks only (5 in ZAPBench), every neuron
    forecast from its own past with weights shared by all neurons (``configs/timemix.py``:
    ``time_mix_only=True``)."""

    name = "time-mix"
    time_mix_only = True

