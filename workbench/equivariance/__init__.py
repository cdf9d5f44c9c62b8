"""Learned layer-wise equivariance and learned invariance (LILA) with the Laplace marglik.

- :mod:`.layers`        soft-equivariant layer: circular convolution + factored free map
- :mod:`.models`        ``SoftEquivariantNet`` (about 4 such layers) and its pure CNN / FC forms
- :mod:`.readout`       per-layer (layer, pathway) xarray readouts and the equivariance score
- :mod:`.training`      ``LearnedEquivarianceClassifier``: online KFAC-marglik training
- :mod:`.augmentation`  differentiable affine augmentation and the averaged invariant model
- :mod:`.invariance`    ``LearnedInvarianceClassifier``: amplitudes learned by differentiable marglik
- :mod:`.tasks`         digits tasks: translated, quadrant, rotated
- :mod:`.runs`          run experiments, save / load them as netCDF
"""

from workbench.equivariance.augmentation import (
    MAX_AMPLITUDE,
    TRANSFORMS,
    AffineAugmentation,
    InvariantModel,
)
from workbench.equivariance.invariance import LearnedInvarianceClassifier
from workbench.equivariance.layers import (
    PATHWAYS,
    CircularConv2d,
    FactoredFreeMap,
    SoftEquivariantConv2d,
)
from workbench.equivariance.models import SoftEquivariantNet
from workbench.equivariance.readout import MEASURES, equivariance_score, layer_readout
from workbench.equivariance.runs import (
    MODELS,
    list_runs,
    load_run,
    run_equivariance,
    run_invariance,
    save_run,
)
from workbench.equivariance.tasks import TASKS, DigitTask, make_task
from workbench.equivariance.training import LearnedEquivarianceClassifier

__all__ = [
    "PATHWAYS", "TRANSFORMS", "MAX_AMPLITUDE", "MEASURES", "MODELS", "TASKS",
    "CircularConv2d", "FactoredFreeMap", "SoftEquivariantConv2d", "SoftEquivariantNet",
    "AffineAugmentation", "InvariantModel", "LearnedEquivarianceClassifier",
    "LearnedInvarianceClassifier", "layer_readout", "equivariance_score", "make_task",
    "DigitTask", "run_equivariance", "run_invariance", "save_run", "load_run", "list_runs",
]
