"""Classification metrics of a (pruned) network's own predictions: accuracy, NLL, ECE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["expected_calibration_error", "evaluate"]


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> float:
    """Top-label ECE with ``n_bins`` equal-width confidence bins (weighted by bin mass)."""
    conf, pred = probs.max(1)
    correct = (pred == y).to(probs.dtype)
    idx = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    n = torch.bincount(idx, minlength=n_bins).to(probs.dtype)
    s_conf = torch.zeros(n_bins, dtype=probs.dtype).index_add_(0, idx, conf)
    s_acc = torch.zeros(n_bins, dtype=probs.dtype).index_add_(0, idx, correct)
    return float((s_conf - s_acc).abs().sum() / len(y))


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> dict:
    """``{"accuracy", "nll", "ece"}`` (NLL is the mean per example)."""
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat([model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])
    finally:
        model.train(was_training)
    logits = logits.double().cpu()
    y = y.cpu()
    probs = logits.softmax(1)
    return {"accuracy": float((probs.argmax(1) == y).double().mean()),
            "nll": float(F.cross_entropy(logits, y)),
            "ece": expected_calibration_error(probs, y)}
