"""Exact, atomic training checkpoints: model, optimiser, schedule, step and every RNG state.

Resuming from a checkpoint continues bit for bit: the batch sampler draws from its own
``torch.Generator`` whose state is saved, as are the global torch / numpy / python RNG states.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from workbench._atomic import atomic_file

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "atomic_torch_save"]


def rng_state(generator: torch.Generator | None = None) -> dict:
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["sampler"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None:
        if "sampler" not in state:
            raise ValueError("checkpoint has no sampler RNG state")
        generator.set_state(state["sampler"])


def atomic_torch_save(obj, path) -> Path:
    """``torch.save`` into a temporary sibling, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)
    return path


def save_checkpoint(path, *, model, optimizer, scheduler, step: int, generator, extra: dict | None = None):
    """Write a resumable checkpoint atomically; ``model`` may be wrapped in DDP."""
    model = getattr(model, "module", model)
    obj = dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
               scheduler=scheduler.state_dict() if scheduler is not None else None,
               step=int(step), rng=rng_state(generator), extra=extra or {})
    return atomic_torch_save(obj, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    obj = torch.load(path, map_location=map_location, weights_only=False)
    missing = [k for k in ("model", "optimizer", "step", "rng") if k not in obj]
    if missing:
        raise ValueError(f"{str(path)!r} is not a video-forecaster checkpoint (missing {missing})")
    return obj
