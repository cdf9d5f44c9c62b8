"""laplace-torch 0.3 compatibility: replace ``from laplace import Laplace, marglik_training`` by
``from workbench.laplace.compat import Laplace, marglik_training`` and the rest of the code runs.

A thin translation over the native :mod:`workbench.laplace` API (which keeps its own defaults:
``Laplace(model, likelihood)`` there is a full Laplace over all weights). laplace-torch's
defaults, keyword names, return values and read-outs are kept here — including a few behaviours
we consider wrong, documented in the README's "Coming from laplace-torch" section. The subnetwork
masks and backend names of ``laplace.utils`` / ``laplace.curvature`` are importable from here too.
"""

from ._base import EF_BACKENDS, GGN_BACKENDS
from ._classes import (
    BaseLaplace,
    DiagLaplace,
    DiagLLLaplace,
    FullLaplace,
    FullLLLaplace,
    KronLaplace,
    KronLLLaplace,
    Laplace,
    ParametricLaplace,
)
from ._structures import (
    DiagSubnetLaplace,
    FullSubnetLaplace,
    FunctionalLaplace,
    FunctionalLLLaplace,
    LargestMagnitudeSubnetMask,
    LargestVarianceDiagLaplaceSubnetMask,
    LastLayerSubnetMask,
    LowRankLaplace,
    ModuleNameSubnetMask,
    ParamNameSubnetMask,
    RandomSubnetMask,
    SubnetLaplace,
    SubnetMask,
)
from .training import marglik_training

globals().update(GGN_BACKENDS)
globals().update(EF_BACKENDS)

__all__ = [
    "Laplace",
    "marglik_training",
    "BaseLaplace",
    "ParametricLaplace",
    "FullLaplace",
    "DiagLaplace",
    "KronLaplace",
    "FullLLLaplace",
    "DiagLLLaplace",
    "KronLLLaplace",
    "LowRankLaplace",
    "FunctionalLaplace",
    "FunctionalLLLaplace",
    "SubnetLaplace",
    "FullSubnetLaplace",
    "DiagSubnetLaplace",
    "SubnetMask",
    "RandomSubnetMask",
    "LargestMagnitudeSubnetMask",
    "LargestVarianceDiagLaplaceSubnetMask",
    "ParamNameSubnetMask",
    "ModuleNameSubnetMask",
    "LastLayerSubnetMask",
    *GGN_BACKENDS,
    *EF_BACKENDS,
]
