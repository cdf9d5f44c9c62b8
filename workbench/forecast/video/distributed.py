"""Distributed data parallel helpers: process-group set-up from ``torchrun`` or local spawning.

``VideoForecaster.fit`` uses DDP by itself whenever ``torch.distributed`` is initialised, so the
same script trains on one CPU, one GPU or ``torchrun --nproc_per_node=N`` processes. Every rank
draws the same global batch from the shared-seed sampler and takes its own slice, so a run on N
ranks with ``batch_size=b`` sees exactly the samples of a single-process run with batch ``N b``.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["rank_world", "init_from_env", "spawn", "free_port", "default_backend", "fit_distributed"]


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment (RANK, WORLD_SIZE, ...).

    Does nothing (returns ``(0, 1)``) when the variables are absent; on CUDA each local rank gets
    its own device.
    """
    if dist.is_initialized():
        return rank_world()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return rank_world()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, backend, port, threads, fn, args):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    if threads:
        torch.set_num_threads(threads)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn, nprocs: int, *args, backend: str | None = None, threads_per_process: int | None = 1):
    """Run ``fn(rank, world, *args)`` in ``nprocs`` local processes inside a process group.

    ``fn`` must be importable (a module-level function) because the processes are spawned.
    """
    if nprocs < 1:
        raise ValueError(f"nprocs must be >= 1, got {nprocs}")
    backend = backend or default_backend()
    mp.spawn(_entry, args=(nprocs, backend, free_port(), threads_per_process, fn, args),
             nprocs=nprocs, join=True)


def _fit_worker(rank, world, params, volume, segmentation, starts, stimulus, out_dir):
    import warnings

    from .estimator import VideoForecaster
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
    import tempfile

    import numpy as np

    from .estimator import VideoForecaster
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
