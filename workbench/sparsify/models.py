"""Small networks for the two tasks, and which of their parameters can be pruned.

Pruning acts on the *weights* of ``nn.Linear`` and ``nn.Conv2d`` layers (biases are kept and
counted as parameters). Structured pruning additionally needs a plain feed-forward chain
(``nn.Sequential``, nested ones allowed) so that a unit's consumers are known.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench._deprecation import renamed_arguments
from workbench._torch_utils import seed_from

__all__ = ["PRUNABLE_TYPES", "make_model", "mlp", "small_cnn", "prunable_parameters",
           "prunable_layers"]

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)


def mlp(in_features: int = 30, n_classes: int = 2, width: int = 64, depth: int = 2) -> nn.Sequential:
    """ReLU MLP ``in -> width x depth -> n_classes``."""
    layers: list[nn.Module] = []
    d = in_features
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, n_classes))
    return nn.Sequential(*layers)


def small_cnn(n_classes: int = 10, channels: tuple[int, int] = (16, 32), hidden: int = 64) -> nn.Sequential:
    """LeNet-like CNN for 1x8x8 inputs: two conv(3x3)+ReLU+maxpool(2) blocks, an MLP head."""
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # c1 x 4 x 4
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # c2 x 2 x 2
        nn.Flatten(), nn.Linear(c2 * 4, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


@renamed_arguments(seed="random_state")
def make_model(task: str, random_state=0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """The reference architecture for ``task``, initialised from ``random_state`` (``seed`` is its
    deprecated name) without touching the global torch RNG."""
    if task not in ("breast_cancer", "digits"):
        raise ValueError(f"task must be 'breast_cancer' or 'digits', got {task!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_from(random_state))
        model = mlp(30, 2) if task == "breast_cancer" else small_cnn(10)
    return model.to(dtype)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{module name: module}`` of the Linear/Conv2d layers, in registration order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{parameter name: weight}`` of every prunable layer; raises if there is none."""
    out = {}
    for name, mod in prunable_layers(model).items():
        out[f"{name}.weight" if name else "weight"] = mod.weight
    if not out:
        raise ValueError(
            f"model {type(model).__name__} has no prunable layers (nn.Linear / nn.Conv2d)")
    return out
