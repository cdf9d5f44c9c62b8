"""Torch conventions shared by every estimator: device resolution, thread counts, seeding.

One way to do each thing (docs/architecture.md, "Conventions"):

* ``device``: ``None`` = CUDA when available, else CPU; or a string / ``torch.device``.
  Estimators move their data once, train there, and return numpy / xarray results on the CPU.
* ``n_threads``: torch intra-op threads while an estimator works; ``None`` leaves torch's setting.
* ``random_state``: an int (or ``None`` for fresh entropy); torch work is seeded from it without
  touching the global RNG.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np
import torch

__all__ = ["resolve_device", "torch_threads", "seed_from", "torch_generator", "to_numpy",
           "batch_loader"]


def resolve_device(device=None) -> torch.device:
    """``None`` -> ``cuda`` when available else ``cpu``; strings and devices are validated."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"device={device!r} is not a valid torch device: {err}") from None
    else:
        raise TypeError(f"device must be None, a string or a torch.device, got {type(device).__name__}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available on this machine")
    return dev


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Temporarily set torch's intra-op thread count; ``None`` leaves it alone."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n_threads must be a positive integer or None, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def seed_from(random_state) -> int:
    """An int seed from ``random_state`` (int, None or ``np.random.Generator``/``RandomState``)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, bool):
        raise TypeError("random_state must be an int, None or a numpy Generator, got a bool")
    if isinstance(random_state, numbers.Integral):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    raise TypeError(
        f"random_state must be an int, None or a numpy Generator, got {type(random_state).__name__}"
    )


def torch_generator(random_state, device=None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``random_state`` (global RNG untouched)."""
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    g = torch.Generator(device=dev)
    g.manual_seed(seed_from(random_state))
    return g


def to_numpy(t) -> np.ndarray:
    """A CPU numpy copy of a tensor (detached), or ``np.asarray`` of anything else."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def batch_loader(*tensors: torch.Tensor, batch_size: int, shuffle: bool = False,
                 random_state=0) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over same-length tensors (on any device) that gathers a whole batch
    with one index operation instead of stacking single rows.

    With ``shuffle=True`` the batches come in the same order as
    ``DataLoader(TensorDataset(*tensors), batch_size, shuffle=True, generator=g)`` with ``g``
    seeded from ``random_state`` (the permutation is drawn on the CPU), so switching to it keeps
    seeded runs bit for bit. ``len(loader.dataset)`` is the number of rows.
    """
    from torch.utils.data import (
        BatchSampler,
        DataLoader,
        RandomSampler,
        SequentialSampler,
        TensorDataset,
    )

    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    data = TensorDataset(*tensors)
    gen = None
    if shuffle:  # the loader draws its base seed from ``gen`` too, as DataLoader(shuffle=True) does
        gen = torch.Generator().manual_seed(seed_from(random_state))
        sampler = RandomSampler(data, generator=gen)
    else:
        sampler = SequentialSampler(data)
    return DataLoader(data, sampler=BatchSampler(sampler, int(batch_size), drop_last=False),
                      batch_size=None, collate_fn=_as_tuple, generator=gen)


def _as_tuple(batch):
    return tuple(batch)
