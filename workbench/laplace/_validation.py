"""Argument checks shared by the Laplace core; every error names the argument and what was expected."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from workbench.exceptions import NotFittedError

LIKELIHOODS = ("regression", "classification", "binary", "heteroscedastic")
SUBSETS = ("all", "last_layer", "subnetwork")
PRIOR_STRUCTURES = ("scalar", "layerwise", "unitwise", "diagonal", "group")
CURVATURES = ("ggn", "ef")
KFAC_FLAVOURS = ("expand", "reduce")
KFAC_FALLBACKS = ("diag", "error")
PRED_TYPES = ("glm", "nn")
LINK_APPROX = ("probit", "mc", "bridge", "bridge_norm")
OPTIMIZERS = ("adam", "sgd")

__all__ = ["NotFittedError"]


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(choices)}")
    return value


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """An int >= ``minimum`` (bools and non-integral numbers are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_float(name: str, value, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value)
        else:
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be finite and {'>=' if allow_zero else '>'} 0, got {value}")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_names(name: str, value):
    """None or a non-empty list/tuple of parameter-name strings."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of parameter names, got {type(value).__name__}")
    bad = [v for v in value if not isinstance(v, str)]
    if bad or not value:
        raise ValueError(
            f"{name} must be a non-empty list of parameter names (strings), got {value!r}"
        )
    return list(value)


def check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )


def where(what: str, batch_index) -> str:
    return what if batch_index is None else f"{what} of batch {batch_index}"


def check_finite(tensor: torch.Tensor, what: str, batch_index=None) -> None:
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        if tensor.ndim == 0:
            raise ValueError(f"{where(what, batch_index)} is NaN or inf")
        bad = (~torch.isfinite(tensor)).reshape(tensor.shape[0], -1).any(1).nonzero().flatten()
        scope = "" if batch_index is None else " of that batch"
        raise ValueError(
            f"{where(what, batch_index)} contains NaN or inf "
            f"(rows {bad[:5].tolist()}{'...' if len(bad) > 5 else ''}{scope})"
        )


def unpack_batch(batch, batch_index: int):
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            f"train_loader must yield (X, y) pairs; batch {batch_index} is a {type(batch).__name__}"
            + (
                " (dict batches: wrap the loader to yield (X, y) tuples)"
                if isinstance(batch, dict)
                else ""
            )
        )
    return batch[0], batch[1]


def positive_tensor(name: str, value, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor of ``like``'s dtype/device, every entry finite and > 0, and its square
    representable in that dtype (σ² underflowing to 0 would make the likelihood infinite)."""
    if isinstance(value, (bool, str, bytes, dict)):
        raise TypeError(f"{name} must be a number or a tensor of numbers, got {value!r}")
    try:
        t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a number or a tensor of numbers, got {value!r}") from err
    td = t.detach()
    if td.numel() == 0:
        raise ValueError(f"{name} is empty; pass a number or one value per output")
    if not torch.isfinite(td).all() or (td <= 0).any():
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    if not torch.isfinite(1 / td**2).all():
        raise ValueError(
            f"{name}={value!r} is too small for {like.dtype}: its square underflows to 0; use a "
            "float64 model or a larger value"
        )
    return t


def check_hyper(name: str, t: torch.Tensor) -> torch.Tensor:
    """Hyperparameter tensor (possibly requiring grad): every entry finite and > 0."""
    td = t.detach()
    if not torch.isfinite(td).all() or (td <= 0).any():
        bad = td[~(torch.isfinite(td) & (td > 0))]
        raise ValueError(f"{name} must be finite and > 0, got {bad[:3].tolist()} among its values")
    return t


def check_prior_values(value, name="prior_precision"):
    """prior_precision values (its shape is checked against the prior layout at fit)."""
    if isinstance(value, (bool, str, bytes, dict)):
        raise TypeError(f"{name} must be a number or a tensor, got {value!r}")
    try:
        t = torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a number or a tensor, got {value!r}") from err
    if not t.is_floating_point() and t.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must be a real number or tensor, got dtype {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty; pass a number or one value per prior hyperparameter")
    check_hyper(name, t)


def prior_mean_vector(value, ref, P):
    """prior_mean as a (P,) tensor; finite, scalar or one value per parameter."""
    if isinstance(value, (bool, str, bytes, dict)):
        raise TypeError(f"prior_mean must be a number or a tensor, got {value!r}")
    try:
        pm = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"prior_mean must be a number or a tensor, got {value!r}") from err
    if not torch.isfinite(pm.detach()).all():
        raise ValueError("prior_mean must be finite (it contains NaN or inf)")
    if P is None:
        return pm
    if pm.ndim > 0 and tuple(pm.shape) != (P,):
        raise ValueError(f"prior_mean has shape {tuple(pm.shape)}, expected () or ({P},)")
    return pm.expand(P).clone()


def check_groups(param_groups, group_structure, structures):
    if param_groups is not None:
        if not isinstance(param_groups, dict):
            raise TypeError(
                f"param_groups must be a dict {{group name: [param names]}}, got {type(param_groups).__name__}"
            )
        for g, names in param_groups.items():
            if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
                raise TypeError(
                    f"param_groups[{g!r}] must be a list of parameter names, got {type(names).__name__}"
                )
            if not all(isinstance(n, str) for n in names):
                raise TypeError(f"param_groups[{g!r}] must hold parameter names (strings)")
    if group_structure is not None:
        if not isinstance(group_structure, dict):
            raise TypeError(
                f"group_structure must be a dict {{group name: structure}}, got {type(group_structure).__name__}"
            )
        for g, s in group_structure.items():
            check_choice(f"group_structure[{g!r}]", s, structures)
