"""Test metrics of a (pruned) network's own predictions, via the shared :mod:`workbench.metrics`."""

from __future__ import annotations

import torch
from torch import nn

from workbench.metrics import accuracy, expected_calibration_error, negative_log_likelihood

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> dict:
    """``{"accuracy", "nll", "ece"}`` of softmax(model(X)) (NLL mean per example, 15-bin ECE)."""
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat([model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])
    finally:
        model.train(was_training)
    probs = logits.double().softmax(1).cpu()
    return {"accuracy": accuracy(probs, y), "nll": negative_log_likelihood(probs, y),
            "ece": expected_calibration_error(probs, y)}
