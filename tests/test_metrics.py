"""Shared metrics against brute-force definitions."""

import numpy as np
import pytest
import torch

from workbench.metrics import (
    accuracy,
    expected_calibration_error,
    gaussian_nll,
    negative_log_likelihood,
    rmse,
)


def _ece_loop(probs, labels, n_bins):
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if b else (conf >= 0) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    return total


def test_ece_matches_a_loop_over_bins():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 4)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 4, 500)
    assert expected_calibration_error(probs, labels, 10) == pytest.approx(_ece_loop(probs, labels, 10), abs=1e-12)


def test_nll_accuracy_and_binary_form():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    assert accuracy(probs, labels) == pytest.approx(2 / 3)
    assert negative_log_likelihood(probs, labels) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4])))
    assert negative_log_likelihood(probs[:, 1], labels) == pytest.approx(negative_log_likelihood(probs, labels))
    with pytest.raises(ValueError, match="labels must lie"):
        accuracy(probs, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="do not match"):
        accuracy(probs, torch.tensor([0, 1]))


def test_gaussian_nll_and_rmse():
    y, m, v = np.array([0.0, 1.0]), np.array([0.5, 1.0]), np.array([1.0, 4.0])
    ref = np.mean([0.5 * np.log(2 * np.pi) + 0.125, 0.5 * np.log(8 * np.pi)])
    assert gaussian_nll(m, v, y) == pytest.approx(ref)
    assert rmse(m, y) == pytest.approx(np.sqrt(0.125))
    with pytest.raises(ValueError, match="positive"):
        gaussian_nll(m, np.zeros(2), y)
