"""TSMixer-style MLP forecaster: alternating time-mixing and feature-mixing residual MLPs.

Input windows are channels-last ``(batch, C, neuron)``. Each block

- mixes along time with an MLP ``C -> C`` whose weights are shared across neurons;
- mixes across neurons with an MLP ``N -> ff -> N`` (the "feature" dimension);

both residual, after a LayerNorm over neurons. A linear head ``C -> H`` shared across neurons gives
the forecast. Inputs and outputs are relative to each window's last context value (the head
predicts changes, zero-initialised so training starts from the last-value forecast), as in
NLinear / RevIN. Trained with MAE on training windows of the
non-held-out conditions, early-stopped on the validation windows' MAE (best weights restored).
"""

from __future__ import annotations

import copy

import numpy as np
import xarray as xr

from .. import protocol
from .base import TraceForecaster, training_windows

__all__ = ["TSMixerBaseline", "TSMixerNet"]


def _torch():
    import torch

    return torch


def TSMixerNet(context: int, horizon: int, n_neurons: int, n_blocks: int = 2, ff_dim: int = 64,
               dropout: float = 0.1, time_dim: int | None = None):
    """The network as a ``torch.nn.Module`` (built lazily so importing the package needs no torch).

    ``forward(x, neurons=None)``: ``x`` is (batch, C, n); with ``neurons`` (an index of n of the
    ``n_neurons``) only those neurons' rows of the per-neuron parameters are used, so a training
    step can run on a random subset of neurons (the feature-mixing input is rescaled by
    ``n_neurons / n`` to keep its expected value). All products are channels-last matmuls, no
    transposes. ``time_dim``: ``None`` is TSMixer's ``C -> C`` time-mixing layer; an int makes
    it a ``C -> time_dim -> C`` bottleneck MLP (cost O(C * time_dim) per neuron instead of O(C^2)).
    """
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    def _mm(lin, x):                                                 # (out, in) @ (B, in, n) -> (B, out, n)
        # baddbmm on the expanded weight: one GEMM per window, no transposed copy of x
        return torch.baddbmm(lin.bias[:, None], lin.weight.expand(x.shape[0], -1, -1), x)

    def _norm(norm, x, neurons):
        if neurons is None:
            return norm(x)
        return F.layer_norm(x, (x.shape[-1],), norm.weight[neurons], norm.bias[neurons], norm.eps)

    class _Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm_t = nn.LayerNorm(n_neurons)
            dims = [context, context] if time_dim is None else [context, int(time_dim), context]
            self.time = nn.ModuleList([nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:])])
            self.norm_f = nn.LayerNorm(n_neurons)
            self.feat_in = nn.Linear(n_neurons, ff_dim)
            self.feat_out = nn.Linear(ff_dim, n_neurons)
            self.drop = nn.Dropout(dropout)

        def forward(self, x, neurons=None):                         # x: (B, C, n)
            y = _norm(self.norm_t, x, neurons)
            for i, lin in enumerate(self.time):                     # mixes along time, shared by neurons
                y = _mm(lin, y)
                if i == 0:
                    y = F.relu(y)
            x = x + self.drop(y)
            y = _norm(self.norm_f, x, neurons)                      # mixes across neurons
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
            nn.init.zeros_(self.head.weight)       # starts as the last-value forecast
            nn.init.zeros_(self.head.bias)

        def features(self, x, neurons=None):
            """``(z, last)``: the mixer's output (B, C, n) before the head, and the last frame."""
            last = x[:, -1:, :]
            z = x - last
            for b in self.blocks:
                z = b(z, neurons)
            return z, last

        def forward(self, x, neurons=None):                          # (B, C, n) -> (B, H, n)
            z, last = self.features(x, neurons)
            return _mm(self.head, z) + last

    return _Net()


class TSMixerBaseline(TraceForecaster):
    """TSMixer forecaster (see module docstring), scikit-learn style.

    ``max_epochs`` epochs of ``steps_per_epoch`` Adam steps on random mini-batches of
    ``batch_size`` training windows (default steps: one pass over the training windows), MAE
    loss; after each epoch the MAE on (at most ``max_val_windows``) validation windows, all
    neurons, decides early stopping with ``patience``. ``history_`` records both losses per epoch.

    For whole-brain sizes: ``max_train_neurons`` trains each step on a fresh random subset of
    that many neurons (the shared time-mixing and head weights see every step; each neuron's own
    feature-mixing and norm weights the steps that draw it), and ``time_dim`` replaces the
    ``C x C`` time-mixing layer by a ``C -> time_dim -> C`` bottleneck (see :func:`TSMixerNet`).
    Prediction runs a few windows at a time (``predict_budget`` bytes per activation).
    """

    name = "tsmixer"

    def __init__(self, context: int = 4, n_blocks: int = 2, ff_dim: int = 64, dropout: float = 0.1,
                 lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 16,
                 max_epochs: int = 20, steps_per_epoch: int | None = None, patience: int = 3,
                 max_val_windows: int | None = 256, seed: int = 0, device: str = "cpu",
                 num_threads: int | None = 1, progress: bool = False, time_dim: int | None = None,
                 max_train_neurons: int | None = None):
        self.context = context
        self.n_blocks = n_blocks
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.steps_per_epoch = steps_per_epoch
        self.patience = patience
        self.max_val_windows = max_val_windows
        self.seed = seed
        self.device = device
        self.num_threads = num_threads
        self.progress = progress
        self.time_dim = time_dim
        self.max_train_neurons = max_train_neurons

    # bytes of one (window, C, neuron) float32 activation batch at prediction / validation time
    predict_budget = 4e7

    def __getstate__(self):
        """Picklable (the CLI stores fitted models): the network travels as its state dict."""
        state = dict(super().__getstate__())           # a copy: sklearn may return __dict__ itself
        net = state.pop("net_", None)
        if net is not None:
            state["_net_state"] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        return state

    def __setstate__(self, state):
        net_state = state.pop("_net_state", None)
        super().__setstate__(state)
        if net_state is not None:
            net = TSMixerNet(self.context, self.horizon, int(self.n_neurons_), self.n_blocks, self.ff_dim,
                             self.dropout, getattr(self, "time_dim", None))
            net.load_state_dict(net_state)
            self.net_ = net.to(self.device).eval()

    def _threads(self):
        """Context manager: torch intra-op threads set to ``num_threads`` (None: unchanged).

        One thread by default: these small matmuls lose to thread oversubscription on shared CPUs.
        """
        import contextlib

        torch = _torch()

        @contextlib.contextmanager
        def ctx():
            old = torch.get_num_threads()
            if self.num_threads:
                torch.set_num_threads(int(self.num_threads))
            try:
                yield
            finally:
                torch.set_num_threads(old)
        return ctx()

    def fit(self, ds, y=None):
        torch = _torch()
        with self._threads(), torch.random.fork_rng(devices=[]):   # init + dropout seeded, global RNG untouched
            torch.manual_seed(self.seed)
            return super().fit(ds, y)

    def predict(self, ds, starts):
        with self._threads():
            return super().predict(ds, starts)

    def _fit(self, ds: xr.Dataset):
        torch = _torch()
        c, h = self.context, self.horizon
        traces = np.asarray(ds["traces"].values, dtype=np.float32)
        train = training_windows(ds, "train", c, h)
        val = training_windows(ds, "val", c, h, self.max_val_windows, self.seed)
        if train.size == 0:
            raise ValueError(f"no training windows for context={c}")
        rng = np.random.default_rng(self.seed)
        n = traces.shape[1]
        sub = self.max_train_neurons if self.max_train_neurons is not None and self.max_train_neurons < n else None
        net = TSMixerNet(c, h, n, self.n_blocks, self.ff_dim, self.dropout, self.time_dim).to(self.device)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = self.steps_per_epoch or max(1, train.size // self.batch_size)
        best, best_state, bad = np.inf, copy.deepcopy(net.state_dict()), 0
        history = {"epoch": [], "train_mae": [], "val_mae": []}
        epochs = range(self.max_epochs)
        if self.progress:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc=f"TSMixer C={c}", unit="epoch")
        for epoch in epochs:
            net.train()
            losses = []
            for _ in range(steps):
                s = rng.choice(train, size=min(self.batch_size, train.size), replace=False)
                if sub is None:
                    x, y = protocol.gather(traces, s, c, h)
                    neurons = None
                else:                                              # gather only the drawn neurons
                    neurons = np.sort(rng.choice(n, sub, replace=False))
                    xy = traces[(s[:, None] + np.arange(c + h))[:, :, None], neurons[None, None, :]]
                    x, y = xy[:, :c], xy[:, c:]
                    neurons = torch.from_numpy(neurons).to(self.device)
                x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
                y = torch.from_numpy(np.ascontiguousarray(y)).to(self.device)
                loss = (net(x, neurons) - y).abs().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            val_mae = self._score(net, traces, val) if val.size else float(np.mean(losses))
            history["epoch"].append(epoch)
            history["train_mae"].append(float(np.mean(losses)))
            history["val_mae"].append(val_mae)
            if val_mae < best - 1e-6:
                best, best_state, bad = val_mae, copy.deepcopy(net.state_dict()), 0
            else:
                bad += 1
                if bad >= self.patience:
                    break
        net.load_state_dict(best_state)
        net.eval()
        self.net_ = net
        self.best_val_mae_ = float(best)
        self.history_ = xr.Dataset({k: ("epoch", np.asarray(v)) for k, v in history.items() if k != "epoch"},
                                   coords={"epoch": np.asarray(history["epoch"])})

    def _score(self, net, traces, starts):
        torch = _torch()
        net.eval()
        tot = 0.0
        per = self._per_batch(traces.shape[1])
        with torch.no_grad():
            for b0 in range(0, starts.size, per):
                x, y = protocol.gather(traces, starts[b0:b0 + per], self.context, self.horizon)
                p = net(torch.from_numpy(x).to(self.device))
                tot += float((p - torch.from_numpy(y).to(self.device)).abs().mean(dim=(1, 2)).sum())
        return tot / starts.size

    def _predict(self, ctx, ds, starts):
        torch = _torch()
        out = np.empty((ctx.shape[0], self.horizon, ctx.shape[2]), np.float32)
        per = self._per_batch(ctx.shape[2])
        with torch.no_grad():
            for b0 in range(0, ctx.shape[0], per):
                x = torch.from_numpy(np.ascontiguousarray(ctx[b0:b0 + per], dtype=np.float32)).to(self.device)
                out[b0:b0 + per] = self.net_(x).cpu().numpy()
        return out

    # contexts up to this length have their linear head fused into the scoring kernel
    fused_head_max_context = 32

    def block_errors(self, ds, starts):
        """Batches of windows read as views of the traces (no gathered context copy). Short
        contexts: the network runs up to its head, and the head ``C -> H`` (plus the last value)
        is applied inside the scoring kernel, so the (window, lead, neuron) forecast is never
        formed. Long contexts (the mixer dominates): forecasts of a batch, then the kernel."""
        from ..kernels import score_linear_ctx, score_predictions

        torch = _torch()
        c, h = self.context, self.horizon
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        traces = np.ascontiguousarray(ds["traces"].values, dtype=np.float32)
        # (T - C + 1, C, N) view; writeable only to keep torch quiet, never written
        view = np.lib.stride_tricks.sliding_window_view(traces, c, axis=0, writeable=True).transpose(0, 2, 1)
        fused = c <= self.fused_head_max_context
        if fused:
            head = self.net_.head
            coef = np.concatenate([head.weight.detach().cpu().numpy().T,
                                   np.ones((1, h), np.float32)])     # (C + 1, H): z rows, then last
            bias = head.bias.detach().cpu().numpy()
        per = self._per_batch(traces.shape[1])
        out = [np.zeros((starts.size, h)), np.zeros((starts.size, h)), np.zeros((starts.size, h), np.int64)]
        with self._threads(), torch.no_grad():
            for b0 in range(0, starts.size, per):                     # batches of windows
                s = starts[b0:b0 + per]
                ctx = view[s[0]:s[-1] + 1] if np.all(np.diff(s) == 1) else view[s]
                x = torch.from_numpy(ctx).to(self.device)
                if fused:
                    z, last = self.net_.features(x)
                    part = score_linear_ctx(torch.cat([z, last], dim=1).cpu().numpy(), traces, s + c, coef, bias)
                else:
                    part = score_predictions(self.net_(x).cpu().numpy(), traces, s + c)
                for o, p in zip(out, part):
                    o[b0:b0 + per] = p
        return tuple(out)

    def _per_batch(self, n_neurons):
        return max(1, min(64, int(self.predict_budget // (self.context * n_neurons * 4))))
