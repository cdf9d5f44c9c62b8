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
               dropout: float = 0.1):
    """The network as a ``torch.nn.Module`` (built lazily so importing the package needs no torch)."""
    torch = _torch()
    nn = torch.nn

    class _Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm_t = nn.LayerNorm(n_neurons)
            self.time = nn.Sequential(nn.Linear(context, context), nn.ReLU(), nn.Dropout(dropout))
            self.norm_f = nn.LayerNorm(n_neurons)
            self.feat = nn.Sequential(nn.Linear(n_neurons, ff_dim), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(ff_dim, n_neurons), nn.Dropout(dropout))

        def forward(self, x):                                       # x: (B, C, N)
            y = self.time(self.norm_t(x).transpose(1, 2)).transpose(1, 2)
            x = x + y
            return x + self.feat(self.norm_f(x))

    class _Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([_Block() for _ in range(n_blocks)])
            self.head = nn.Linear(context, horizon)
            nn.init.zeros_(self.head.weight)       # starts as the last-value forecast
            nn.init.zeros_(self.head.bias)

        def forward(self, x):                                       # (B, C, N) -> (B, H, N)
            last = x[:, -1:, :]
            z = x - last
            for b in self.blocks:
                z = b(z)
            return self.head(z.transpose(1, 2)).transpose(1, 2) + last

    return _Net()


class TSMixerBaseline(TraceForecaster):
    """TSMixer forecaster (see module docstring), scikit-learn style.

    ``max_epochs`` epochs of ``steps_per_epoch`` Adam steps on random mini-batches of
    ``batch_size`` training windows (default steps: one pass over the training windows), MAE
    loss; after each epoch the MAE on (at most ``max_val_windows``) validation windows decides
    early stopping with ``patience``. ``history_`` records both losses per epoch.
    """

    name = "tsmixer"

    def __init__(self, context: int = 4, n_blocks: int = 2, ff_dim: int = 64, dropout: float = 0.1,
                 lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 16,
                 max_epochs: int = 20, steps_per_epoch: int | None = None, patience: int = 3,
                 max_val_windows: int | None = 256, seed: int = 0, device: str = "cpu",
                 num_threads: int | None = 1, progress: bool = False):
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
        net = TSMixerNet(c, h, traces.shape[1], self.n_blocks, self.ff_dim, self.dropout).to(self.device)
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
                x, y = protocol.gather(traces, s, c, h)
                x = torch.from_numpy(x).to(self.device)
                y = torch.from_numpy(y).to(self.device)
                loss = (net(x) - y).abs().mean()
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
        with torch.no_grad():
            for b0 in range(0, starts.size, 64):
                x, y = protocol.gather(traces, starts[b0:b0 + 64], self.context, self.horizon)
                p = net(torch.from_numpy(x).to(self.device))
                tot += float((p - torch.from_numpy(y).to(self.device)).abs().mean(dim=(1, 2)).sum())
        return tot / starts.size

    def _predict(self, ctx, ds, starts):
        torch = _torch()
        out = np.empty((ctx.shape[0], self.horizon, ctx.shape[2]), np.float32)
        with torch.no_grad():
            for b0 in range(0, ctx.shape[0], 64):
                x = torch.from_numpy(np.ascontiguousarray(ctx[b0:b0 + 64], dtype=np.float32)).to(self.device)
                out[b0:b0 + 64] = self.net_(x).cpu().numpy()
        return out
