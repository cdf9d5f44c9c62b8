"""Distributed data parallel helpers: process-group set-up from ``torchrun`` or local spawning.

This module knows nothing of the estimator (:mod:`.distributed_fit` holds
:func:`~.distributed_fit.fit_distributed`, which uses both). ``VideoForecaster.fit`` uses DDP by
itself whenever ``torch.distributed`` is initialised, so the
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

__all__ = ["rank_world", "init_from_env", "spawn", "free_port", "default_backend"]


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
