"""The one training loop of the trained trace baselines (linear, TSMixer, time-mix, TiDE).

ZAPBench's recipe (``zapbench/ts_forecasting/configs/common.py`` and ``train.py``): AdamW with a
constant learning rate 1e-3 and weight decay 1e-4, MAE loss, batches of 8 training windows (all
neurons of a window at once), the validation MAE every 250 steps, early stopping after 20 checks
without an improvement of at least 1e-4, and the weights of the best check restored
(``checkpoint_selection='best_val_loss'`` in ``configs/infer.py``). The same loop runs the
workbench settings (checks once per pass over the training windows, patience 3).

Missing neurons (NaN traces) are data, not poison: a window's inputs are NaN-filled with 0, the
loss skips target entries that are NaN or whose neuron has a NaN in its context, and the network
sees a per-(window, neuron) mask through :func:`masked_inputs`.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import xarray as xr

from .. import protocol

__all__ = ["TrainSettings", "fit_network", "masked_inputs", "window_batch"]


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Optimiser and early stopping (defaults: ZAPBench's, ``configs/common.py``)."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 8
    check_every: int | None = 250          # steps between validation checks; None: one pass
    patience: int = 20                     # checks without improvement before stopping
    min_delta: float = 1e-4
    max_steps: int = 100_000               # ZAPBench: unbounded (2 days of runtime at most)
    max_val_windows: int | None = None     # None: every validation window
    max_checks: int | None = None          # stop after this many checks (None: max_steps decides)

    def validate(self):
        for k in ("batch_size", "patience", "max_steps"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if self.max_checks is not None and (not isinstance(self.max_checks, int | np.integer)
                                            or self.max_checks < 1):
            raise ValueError(f"max_checks must be a positive integer or None, got {self.max_checks!r}")
        if self.check_every is not None and (not isinstance(self.check_every, int | np.integer)
                                             or self.check_every < 1):
            raise ValueError(f"check_every must be a positive integer or None, got {self.check_every!r}")
        if self.max_val_windows is not None and (not isinstance(self.max_val_windows, int | np.integer)
                                                 or self.max_val_windows < 1):
            raise ValueError(f"max_val_windows must be a positive integer or None, got {self.max_val_windows!r}")
        for k in ("lr", "weight_decay", "min_delta"):
            v = getattr(self, k)
            if not np.isfinite(v) or v < 0 or (k == "lr" and v == 0):
                raise ValueError(f"{k} must be a finite {'positive' if k == 'lr' else 'non-negative'} "
                                 f"number, got {v!r}")
        return self


def masked_inputs(x):
    """``(x with NaN -> 0, missing (B, 1, N) bool)``: a neuron is missing in a window when any of
    its context frames is NaN."""
    import torch

    missing = torch.isnan(x).any(dim=1, keepdim=True)
    return torch.nan_to_num(x, nan=0.0), missing


def window_batch(traces, starts, context: int, horizon: int):
    """``(x (B, C, N), y (B, H, N))`` gathered from a (time, neuron) tensor (one fancy index)."""
    import torch

    idx = torch.as_tensor(starts, device=traces.device)[:, None] + torch.arange(context + horizon,
                                                                                device=traces.device)
    xy = traces[idx]
    return xy[:, :context], xy[:, context:]


def _loss(pred, y, missing):
    import torch

    ok = ~(torch.isnan(y) | missing)
    n = ok.sum()
    if n == 0:
        return pred.sum() * 0.0
    d = torch.where(ok, pred - torch.nan_to_num(y, nan=0.0), 0.0)     # no NaN reaches abs' gradient
    return d.abs().sum() / n


def _val_mae(model, forward, traces, starts, context, horizon, per):
    """Mean over validation windows of the per-window MAE (missing entries skipped)."""
    import torch

    if starts.size == 0:
        return float("nan")
    model.eval()
    tot, k = 0.0, 0
    with torch.no_grad():
        for b0 in range(0, starts.size, per):
            s = starts[b0:b0 + per]
            x, y = window_batch(traces, s, context, horizon)
            pred = forward(model, x, s)
            ok = ~torch.isnan(pred) & ~torch.isnan(y)
            err = torch.where(ok, (pred - torch.nan_to_num(y)).abs(), 0.0).sum((1, 2))
            cnt = ok.sum((1, 2))
            good = cnt > 0
            tot += float((err[good] / cnt[good]).sum())
            k += int(good.sum())
    return tot / k if k else float("nan")


def fit_network(model, forward, ds: xr.Dataset, context: int, horizon: int, settings: TrainSettings,
                traces, random_state: int, device, progress: bool = False, callback=None,
                name: str = "model", neuron_subset=None):
    """Train ``model`` by AdamW on the MAE of ``forward(model, x, starts) -> (B, H, N)``.

    ``traces``: the (time, neuron) float32 tensor on ``device``. ``neuron_subset`` (optional int):
    each step draws that many neurons and calls ``forward(model, x, starts, neurons=idx)``.
    Returns ``(best_val_mae, history)`` with ``history`` an ``xr.Dataset`` over ``check``
    (``step``, ``train_mae``, ``val_mae``); the model holds the best check's weights.
    """
    import torch

    from ...progress import report

    train = _windows(ds, "train", context, horizon, None, random_state)
    if train.size == 0:
        raise ValueError(f"no training windows for context={context}")
    val = _windows(ds, "val", context, horizon, settings.max_val_windows, random_state)
    rng = np.random.default_rng(random_state)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    check_every = settings.check_every or max(1, train.size // settings.batch_size)
    n = int(traces.shape[1])
    per = max(1, min(64, int(4e7 // ((context + horizon) * n * 4))))
    best, best_state, bad = np.inf, copy.deepcopy(model.state_dict()), 0
    hist = {"step": [], "train_mae": [], "val_mae": []}
    n_checks = -(-settings.max_steps // check_every)
    if settings.max_checks is not None:
        n_checks = min(n_checks, settings.max_checks)
    checks = range(n_checks)
    if progress:
        from tqdm.auto import tqdm

        checks = tqdm(checks, desc=f"{name} C={context}", unit="check")
    step = 0
    for _ in checks:
        model.train()
        losses = []
        for _ in range(min(check_every, settings.max_steps - step)):
            s = rng.choice(train, size=min(settings.batch_size, train.size), replace=False)
            x, y = window_batch(traces, s, context, horizon)
            if neuron_subset is not None and neuron_subset < n:
                idx = torch.as_tensor(np.sort(rng.choice(n, neuron_subset, replace=False)), device=device)
                x, y = x[..., idx], y[..., idx]
                pred = forward(model, x, s, neurons=idx)
            else:
                pred = forward(model, x, s)
            loss = _loss(pred, y, torch.isnan(x).any(1, keepdim=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        val_mae = _val_mae(model, forward, traces, val, context, horizon, per) if val.size else float(np.mean(losses))
        hist["step"].append(step)
        hist["train_mae"].append(float(np.mean(losses)))
        hist["val_mae"].append(val_mae)
        if val_mae < best - settings.min_delta or not np.isfinite(best):
            best, best_state, bad = val_mae, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
        stop = report(callback, step, settings.max_steps, "train",
                      f"{name} C={context}: step {step}, val MAE {val_mae:.5f}",
                      metrics={"train_mae": hist["train_mae"][-1], "val_mae": val_mae})
        if bad >= settings.patience or stop or step >= settings.max_steps:
            break
    model.load_state_dict(best_state)
    model.eval()
    history = xr.Dataset({k: ("check", np.asarray(v)) for k, v in hist.items()},
                         coords={"check": np.arange(len(hist["step"]))})
    return float(best), history


def _windows(ds, split, context, horizon, max_windows, random_state):
    w = protocol.windows(ds, split=split, context=context, horizon=horizon)
    starts = w["start"].values
    if max_windows is not None and starts.size > max_windows:
        rng = np.random.default_rng(random_state)
        starts = np.sort(rng.choice(starts, max_windows, replace=False))
    return starts
