"""Validation of :class:`~.estimator.VideoForecaster`'s hyper-parameters: each error names the
argument and what was expected (#15.4)."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ..._torch_utils import resolve_device, seed_from

__all__ = ["validate_params"]


def _check_int(name, value, low, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def _check_positive(name, value, allow_zero=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def validate_params(est, dtypes) -> None:
    """Raise ``ValueError`` / ``TypeError`` naming the first bad hyper-parameter of ``est``."""
    for name, low in (("context", 1), ("horizon", 1), ("input_downsample", 1), ("batch_size", 1),
                      ("n_steps", 0), ("blocks_per_level", 1), ("emb_dim", 1), ("checkpoint_every", 0)):
        _check_int(name, getattr(est, name), low)
    _check_int("warmup_steps", est.warmup_steps, 1, allow_none=True)
    _check_int("n_threads", est.n_threads, 1, allow_none=True)
    _check_positive("lr", est.lr)
    _check_positive("weight_decay", est.weight_decay, allow_zero=True)
    _check_positive("grad_clip", est.grad_clip or 0, allow_zero=True)
    if len(tuple(est.widths)) < 1 or any(isinstance(w, bool) or not isinstance(w, numbers.Integral)
                                          or w < 1 for w in est.widths):
        raise ValueError(f"widths must be a non-empty sequence of positive integers, got {est.widths!r}")
    seed_from(est.random_state)                  # type / range of random_state
    resolve_device(est.device)
    if est.lead_sampling not in ("auto", "inverse", "uniform"):
        raise ValueError(f"lead_sampling must be 'auto', 'inverse' or 'uniform', got {est.lead_sampling!r}")
    _check_int("num_workers", est.num_workers, 0)
    _check_int("prefetch_factor", est.prefetch_factor, 1)
    if est.precision not in ("float32", "bf16"):
        raise ValueError(f"precision must be 'float32' or 'bf16', got {est.precision!r}")
    if est.precision == "bf16" and est.dtype not in ("float32", torch.float32):
        raise ValueError(f"precision='bf16' keeps float32 master weights: needs dtype='float32', "
                         f"got {est.dtype!r}")
    for name in ("channels_last", "compile", "stimulus", "attention"):
        if not isinstance(getattr(est, name), bool | np.bool_):
            raise TypeError(f"{name} must be True or False, got {getattr(est, name)!r}")
    if est.dtype not in dtypes:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {est.dtype!r}")
