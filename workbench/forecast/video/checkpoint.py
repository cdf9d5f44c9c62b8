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

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "cpu_rng_state",
           "atomic_torch_save"]


def rng_state(generator: torch.Generator | None = None) -> dict:
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["sampler"] = generator.get_state()
    return state


def _cpu_bytes(state) -> torch.Tensor:
    """An RNG state as the CPU ``ByteTensor`` torch's setters require.

    ``torch.load(..., map_location="cuda")`` moves *every* tensor of a checkpoint, the saved RNG
    states included; the setters (CPU, CUDA and generator alike) only accept CPU byte tensors.
    """
    return torch.as_tensor(state).detach().to(device="cpu", dtype=torch.uint8)


def cpu_rng_state(state: dict) -> dict:
    """A copy of a saved RNG state dict with every torch state back on the CPU as bytes."""
    out = dict(state)
    for key in ("torch", "sampler"):
        if key in out:
            out[key] = _cpu_bytes(out[key])
    if "cuda" in out:
        out["cuda"] = [_cpu_bytes(s) for s in out["cuda"]]
    return out


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Restore :func:`rng_state`'s states, wherever ``torch.load`` put the tensors."""
    state = cpu_rng_state(state)
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if len(state["cuda"]) == n:
            torch.cuda.set_rng_state_all(state["cuda"])
        else:  # saved on a machine with another GPU count: restore the devices both have
            for i, s in enumerate(state["cuda"][:n]):
                torch.cuda.set_rng_state(s, i)
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
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated / corrupt pickle: name the file, not the unpickler's state
        raise ValueError(f"checkpoint file {str(path)!r} cannot be read (truncated or corrupt?): "
                         f"{type(err).__name__}: {err}") from err
    missing = [k for k in ("model", "optimizer", "step", "rng") if k not in obj] \
        if isinstance(obj, dict) else ["model", "optimizer", "step", "rng"]
    if missing:
        raise ValueError(f"{str(path)!r} is not a video-forecaster checkpoint (missing {missing})")
    # RNG states stay CPU byte tensors whatever ``map_location`` moved the rest to
    obj["rng"] = cpu_rng_state(obj["rng"])
    return obj
