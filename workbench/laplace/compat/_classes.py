"""The concrete laplace-torch classes and the ``Laplace(...)`` factory that picks one."""

from __future__ import annotations

from ._base import ParametricLaplace
from ._predictive import PredictiveMixin

__all__ = [
    "Laplace",
    "BaseLaplace",
    "ParametricLaplace",
    "FullLaplace",
    "DiagLaplace",
    "KronLaplace",
    "FullLLLaplace",
    "DiagLLLaplace",
    "KronLLLaplace",
]


class BaseLaplace(PredictiveMixin, ParametricLaplace):
    """Common base of every class here (``isinstance(la, BaseLaplace)`` holds for all)."""


class FullLaplace(BaseLaplace):
    _key, _structure, _subset = ("all", "full"), "full", "all"


class DiagLaplace(BaseLaplace):
    _key, _structure, _subset = ("all", "diag"), "diag", "all"


class KronLaplace(BaseLaplace):
    _key, _structure, _subset = ("all", "kron"), "kron", "all"


class FullLLLaplace(BaseLaplace):
    _key, _structure, _subset = ("last_layer", "full"), "full", "last_layer"


class DiagLLLaplace(BaseLaplace):
    _key, _structure, _subset = ("last_layer", "diag"), "diag", "last_layer"


class KronLLLaplace(BaseLaplace):
    _key, _structure, _subset = ("last_layer", "kron"), "kron", "last_layer"


_CLASSES = {}


def register(cls):
    _CLASSES[cls._key] = cls
    return cls


for _c in (FullLaplace, DiagLaplace, KronLaplace, FullLLLaplace, DiagLLLaplace, KronLLLaplace):
    register(_c)


def Laplace(  # noqa: N802 (laplace-torch's name)
    model,
    likelihood,
    subset_of_weights="last_layer",
    hessian_structure="kron",
    *args,
    functional_approximation="sod",
    **kwargs,
):
    """laplace-torch 0.3's factory: the class for (``subset_of_weights``, ``hessian_structure``),
    by default last-layer KFAC. Extra arguments go to that class (``sigma_noise``,
    ``prior_precision``, ``prior_mean``, ``temperature``, ``backend``, ``subnetwork_indices``, ...)."""
    if subset_of_weights == "subnetwork" and hessian_structure not in ["full", "diag"]:
        raise ValueError("Subnetwork Laplace requires a full or diagonal Hessian approximation!")
    if functional_approximation not in ("sod", "nystrom", "variational"):
        raise ValueError("functional_approximation must be 'sod', 'nystrom', or 'variational'.")
    if hessian_structure != "gp" and functional_approximation != "sod":
        raise ValueError("functional_approximation requires hessian_structure='gp'.")
    if functional_approximation != "sod":
        raise NotImplementedError(
            f"functional_approximation={functional_approximation!r} (ELLA / VaLLA) is not available; "
            "hessian_structure='gp' uses a subset of the training data as context points"
        )
    try:
        cls = _CLASSES[(subset_of_weights, hessian_structure)]
    except KeyError:
        raise ValueError(
            f"Unsupported Laplace combination: {subset_of_weights}, {hessian_structure}."
        ) from None
    return cls(model, likelihood, *args, **kwargs)
