"""Volumetric video forecaster: lead-conditioned 3-D UNet, DDP training, checkpoints, Laplace
uncertainty over the last layer, zarr forecast stores and the spatial/temporal context sweep."""

from .compare import score_methods
from .distributed_fit import fit_distributed
from .estimator import VideoForecaster
from .model import UNet3D, plan_strides
from .store import open_forecast_store, paint_traces, read_plane, write_forecast_store
from .sweep import context_sweep, forward_cost
from .uncertainty import LastLayerLaplace
from .zapbench import center_crop, score_video

__all__ = ["VideoForecaster", "UNet3D", "plan_strides", "LastLayerLaplace", "write_forecast_store",
           "open_forecast_store", "read_plane", "paint_traces", "context_sweep", "forward_cost",
           "score_methods", "fit_distributed", "score_video", "center_crop"]
