"""Predictive-quality metrics shared by every capability (classification and regression).

All functions accept numpy arrays or torch tensors and return Python floats.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "negative_log_likelihood", "expected_calibration_error", "gaussian_nll", "rmse"]


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _check_probs(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = _np(probs).astype(np.float64), _np(labels).astype(np.int64).reshape(-1)
    if probs.ndim == 1:  # binary: probability of class 1
        probs = np.stack([1.0 - probs, probs], axis=1)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs of shape {probs.shape} do not match labels of shape {labels.shape}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), got [{labels.min()}, {labels.max()}]")
    return probs, labels


def accuracy(probs, labels) -> float:
    probs, labels = _check_probs(probs, labels)
    return float(np.mean(probs.argmax(1) == labels))


def negative_log_likelihood(probs, labels, eps: float = 1e-12) -> float:
    """Mean negative log predictive probability of the true class."""
    probs, labels = _check_probs(probs, labels)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, None))))


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum_b |B_b|/N * |acc(B_b) - conf(B_b)|."""
    probs, labels = _check_probs(probs, labels)
    conf, pred = probs.max(1), probs.argmax(1)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    correct = (pred == labels).astype(np.float64)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, correct, n_bins) - np.bincount(bins, conf, n_bins))
    return float(gap.sum() / max(count.sum(), 1))


def gaussian_nll(mean, var, y) -> float:
    """Mean negative log density of y under N(mean, var) (elementwise variances)."""
    mean, var, y = (_np(a).astype(np.float64) for a in (mean, var, y))
    if np.any(var <= 0):
        raise ValueError("predictive variances must be positive")
    return float(np.mean(0.5 * (np.log(2 * np.pi * var) + (y - mean) ** 2 / var)))


def rmse(pred, y) -> float:
    return float(np.sqrt(np.mean((_np(pred).astype(np.float64) - _np(y).astype(np.float64)) ** 2)))
