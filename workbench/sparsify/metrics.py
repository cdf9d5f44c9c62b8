"""Test metrics of a (pruned) network's own predictions, via the shared :mod:`workbench.metrics`.

:func:`score_network` was called ``evaluate`` (a name :mod:`workbench.forecast` uses for its
benchmark runner); the old name works for one release with a ``FutureWarning``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from workbench._deprecation import deprecated_alias
from workbench.metrics import accuracy, expected_calibration_error, negative_log_likelihood

__all__ = ["score_network"]


@torch.no_grad()
def score_network(model: nn.Module, X, y, batch_size: int = 1024) -> dict:
    """``{"accuracy", "nll", "ece"}`` of softmax(model(X)) (NLL mean per example, 15-bin ECE).

    ``X`` and ``y`` (tensors or arrays; ``y`` class indices) follow the model's device and dtype;
    the metrics are computed in float64 on the CPU."""
    ref = next(iter(model.parameters()), None)
    X = torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X)
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).cpu()
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if ref is not None:
        X = X.to(device=ref.device, dtype=ref.dtype if X.is_floating_point() else X.dtype)
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat([model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])
    finally:
        model.train(was_training)
    probs = logits.double().softmax(1).cpu()
    return {"accuracy": accuracy(probs, y), "nll": negative_log_likelihood(probs, y),
            "ece": expected_calibration_error(probs, y)}


evaluate = deprecated_alias(score_network, "evaluate")
