"""Volumetric video forecaster: lead-conditioned 3-D UNet, DDP training, checkpoints, Laplace
uncertainty over the last layer, zarr forecast stores and the spatial/temporal context sweep."""

from .estimator import VideoForecaster
from .model import UNet3D, plan_strides

__all__ = ["VideoForecaster", "UNet3D", "plan_strides"]
