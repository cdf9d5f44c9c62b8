"""Batch preparation shared by the curvature fit, the MAP training loop and the predictive.

Every batch goes through the same steps: unpack ``(X, y)``, move to the model's device and
floating dtype (refusing values that are finite as given but overflow the model's dtype), refuse
NaN/inf, run the model with an error that names the input's shape, and bring outputs and targets
to the ``(N, M, K)`` layout of :mod:`~workbench.laplace.likelihoods`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import numpy as np
import torch

from ._validation import check_finite, unpack_batch, where


def as_loader(train_loader, name="train_loader"):
    """An iterable of batches: one ``(X, y)`` tuple of tensors becomes a one-batch list."""
    if (
        isinstance(train_loader, tuple)
        and len(train_loader) == 2
        and all(isinstance(t, torch.Tensor) for t in train_loader)
    ):
        return [train_loader]
    if isinstance(train_loader, (torch.Tensor, np.ndarray, str, bytes, dict)) or not hasattr(
        train_loader, "__iter__"
    ):
        raise TypeError(
            f"{name} must be an iterable of (X, y) batches (a DataLoader, a list of tuples) or "
            f"one (X, y) tuple of tensors, got {type(train_loader).__name__}"
        )
    return train_loader


def is_one_shot(loader) -> bool:
    """True for iterators (generators, ``iter(...)``) that can be consumed only once (checked
    without calling ``iter``, which would draw from a shuffling DataLoader's generator)."""
    return isinstance(loader, Iterator)


def peek(loader, name="train_loader"):
    """(first batch, loader that still yields every batch) — also for one-shot iterators."""
    if is_one_shot(loader):
        first = next(loader, None)
        if first is None:
            raise ValueError(
                f"{name} is empty (an exhausted iterator or a generator with no batches)"
            )
        return first, itertools.chain([first], loader)
    first = next(iter(loader), None)
    if first is None:
        raise ValueError(f"{name} is empty")
    return first, loader


def to_model_dtype(t, ref, what, batch_index=None):
    """``t`` on ``ref``'s device, floating tensors in ``ref``'s dtype; NaN/inf refused, and a value
    that only becomes inf by the dtype conversion is reported as an overflow."""
    if isinstance(t, (str, bytes, dict)) or t is None:
        raise TypeError(
            f"{where(what, batch_index)} must be a tensor or array, got {type(t).__name__}"
        )
    try:
        t = torch.as_tensor(t, device=ref.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"{where(what, batch_index)} must be a tensor or array of numbers, got {type(t).__name__}"
        ) from err
    if t.is_floating_point() and t.dtype != ref.dtype:
        conv = t.to(ref.dtype)
        if not torch.isfinite(conv).all() and torch.isfinite(t).all():
            raise ValueError(
                f"{where(what, batch_index)} is finite as {t.dtype} but overflows the model's "
                f"{ref.dtype} (largest magnitude {float(t.abs().max()):.3g}); rescale it or use a "
                f"{t.dtype} model"
            )
        t = conv
    check_finite(t, what, batch_index)
    return t


def prepare_batch(batch, batch_index, ref):
    """``(X, y)`` of one training batch on the model's device, X in its dtype, both finite."""
    X, y = unpack_batch(batch, batch_index)
    X = to_model_dtype(X, ref, "X", batch_index)
    if isinstance(y, (str, bytes, dict)) or y is None:
        raise TypeError(
            f"y of batch {batch_index} must be a tensor or array, got {type(y).__name__}"
        )
    try:
        y = torch.as_tensor(y, device=ref.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"y of batch {batch_index} must be a tensor or array of numbers") from err
    check_finite(y, "y", batch_index)
    return X, y


@contextlib.contextmanager
def forward_errors(X, what="X"):
    """Turn the forward pass's shape/dtype RuntimeErrors into a ValueError naming ``what``."""
    try:
        yield
    except RuntimeError as err:
        msg = str(err)
        if any(k in msg for k in ("shape", "size", "dimension", "mat1", "expected", "dtype")):
            raise ValueError(
                f"the model cannot be applied to {what} of shape {tuple(X.shape)} and dtype "
                f"{X.dtype} (wrong number of features, rank or dtype?): {msg}"
            ) from err
        raise


def run_model(model, X, fn=None, what="X"):
    """``fn()`` (default ``model(X)``), with shape errors of the forward pass named."""
    with forward_errors(X, what):
        out = model(X) if fn is None else fn()
    if not isinstance(out, torch.Tensor) or out.ndim < 2:
        raise ValueError(
            "the model must return a tensor shaped (N, K) or (N, ..., K); got "
            f"{getattr(out, 'shape', type(out))}"
        )
    return out


def shape_outputs(lik, eta, y, batch_index):
    """Linked outputs and targets as ``(N, M, K)`` and ``(N, M)`` / ``(N, M, K')``."""
    yy = lik.prepare_targets(eta, y, batch_index)
    N = eta.shape[0]
    eta3 = eta.reshape(N, -1, eta.shape[-1])
    y3 = (
        yy.reshape(N, eta3.shape[1])
        if lik.name == "classification"
        else yy.reshape(N, eta3.shape[1], -1)
    )
    return eta3, y3
