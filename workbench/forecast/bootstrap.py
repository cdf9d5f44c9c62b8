"""Block bootstrap over forecasting windows (consecutive windows overlap, so resample blocks)."""

from __future__ import annotations

import numpy as np

__all__ = ["block_bootstrap_indices", "block_bootstrap_means", "block_bootstrap_ci"]


def block_bootstrap_indices(n: int, n_boot: int = 1000, block_length: int = 16, circular: bool = True,
                            rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """(n_boot, n) resampled indices from blocks of ``block_length`` consecutive windows.

    ``circular=True``: circular block bootstrap (blocks wrap around, every index equally likely);
    ``False``: moving block bootstrap (block starts uniform in ``[0, n - block_length]``).
    """
    if n < 1:
        raise ValueError(f"need at least one window, got n={n}")
    if block_length < 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}")
    rng = np.random.default_rng(rng)
    b = min(int(block_length), n)
    n_blocks = -(-n // b)
    high = n if circular else n - b + 1
    starts = rng.integers(0, high, size=(n_boot, n_blocks))
    idx = starts[:, :, None] + np.arange(b)[None, None, :]
    if circular:
        idx %= n
    return idx.reshape(n_boot, -1)[:, :n]


def block_bootstrap_means(values, n_boot: int = 1000, block_length: int = 16, circular: bool = True,
                          seed: int | None = 0) -> np.ndarray:
    """Bootstrap replicates of the mean over axis 0 of ``values`` (n, ...) -> (n_boot, ...).

    NaN entries (e.g. a window whose neurons were all missing) are ignored by the mean.
    """
    v = np.asarray(values, dtype=np.float64)
    idx = block_bootstrap_indices(v.shape[0], n_boot, block_length, circular, seed)
    sample = v[idx]                                                 # (n_boot, n, ...)
    with np.errstate(invalid="ignore"):
        return np.nanmean(sample, axis=1) if np.isnan(v).any() else sample.mean(axis=1)


def block_bootstrap_ci(values, n_boot: int = 1000, block_length: int = 16, ci: float = 0.95,
                       seed: int | None = 0, circular: bool = True):
    """Percentile interval ``(lower, upper)`` of the mean over axis 0, each shaped ``values.shape[1:]``."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    reps = block_bootstrap_means(values, n_boot, block_length, circular, seed)
    alpha = (1.0 - ci) / 2.0
    return np.quantile(reps, alpha, axis=0), np.quantile(reps, 1.0 - alpha, axis=0)
