"""Fitting a :class:`~.estimator.VideoForecaster` with DDP on local processes.

Separate from :mod:`.distributed` (process-group helpers, which the estimator imports) so that
no module imports one that imports it back.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import torch

from .distributed import default_backend, spawn
from .estimator import VideoForecaster

__all__ = ["fit_distributed"]


def _fit_worker(rank, world, params, volume, segmentation, starts, stimulus, out_dir):
    # 1x1x1 conv weights in channels_last_3d have ambiguous strides; DDP warns but is exact
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    est = VideoForecaster(**params).fit_arrays(volume, segmentation, starts, stimulus)
    torch.save({k: v.detach().cpu() for k, v in est.model_.state_dict().items()},
               os.path.join(out_dir, f"rank{rank}.pt"))
    if rank == 0:
        est.save_checkpoint(os.path.join(out_dir, "checkpoint.pt"))


def fit_distributed(estimator, volume, segmentation, starts, stimulus=None, nprocs: int = 2,
                    out_dir=None, backend: str | None = None):
    """Fit ``estimator``'s configuration with DDP on ``nprocs`` local processes.

    Returns ``(fitted, rank_states)``: a forecaster loaded from rank 0's checkpoint and the list of
    each rank's final ``state_dict`` (they are identical when DDP works). ``out_dir`` keeps the
    files (default: a temporary folder).
    """
    backend = backend or default_backend()
    params = {**estimator.get_params(), "checkpoint_path": None, "checkpoint_every": 0, "progress": False}
    if backend == "gloo" and params.get("device") is None:
        params["device"] = "cpu"    # gloo ranks train on the CPU; say so rather than pick CUDA per rank
    with tempfile.TemporaryDirectory() as tmp:
        out = out_dir or tmp
        os.makedirs(out, exist_ok=True)
        spawn(_fit_worker, nprocs, params, np.asarray(volume), np.asarray(segmentation),
              np.asarray(starts), None if stimulus is None else np.asarray(stimulus), out, backend=backend)
        states = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(nprocs)]
        fitted = VideoForecaster.from_checkpoint(os.path.join(out, "checkpoint.pt"), device=params["device"])
    return fitted, states
