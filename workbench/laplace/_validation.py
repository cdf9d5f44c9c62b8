"""Argument checks shared by the Laplace core; every error names the argument and what was expected."""

from __future__ import annotations

import torch

LIKELIHOODS = ("regression", "classification", "binary", "heteroscedastic")
HESSIAN_STRUCTURES = ("full", "diag", "kron")
SUBSETS = ("all", "last_layer")
PRIOR_STRUCTURES = ("scalar", "layerwise", "unitwise", "diagonal", "group")
CURVATURES = ("ggn", "ef")
KFAC_FLAVOURS = ("expand", "reduce")
KFAC_FALLBACKS = ("diag", "error")
PRED_TYPES = ("glm", "nn")
LINK_APPROX = ("probit", "mc", "bridge", "bridge_norm")


class NotFittedError(ValueError, AttributeError):
    """Raised when a Laplace approximation is used before ``fit`` (or ``load_state_dict``)."""


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(choices)}")
    return value


def check_finite(tensor: torch.Tensor, what: str, batch_index: int) -> None:
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).reshape(tensor.shape[0], -1).any(1).nonzero().flatten()
        raise ValueError(
            f"{what} of batch {batch_index} contains NaN or inf "
            f"(rows {bad[:5].tolist()}{'...' if len(bad) > 5 else ''} of that batch)"
        )


def unpack_batch(batch, batch_index: int):
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            f"train_loader must yield (X, y) pairs; batch {batch_index} is a {type(batch).__name__}"
        )
    return batch[0], batch[1]


def positive_tensor(name: str, value, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return t
