"""Training batches of (context frames, target frame) pairs, in the main process or streamed.

:class:`StepSampler` draws every step's global batch of (window, lead) pairs from one seeded
``torch.Generator`` (the same draws on every DDP rank; each rank keeps its slice) and remembers the
generator state before each step, so a checkpoint written after step ``k`` stores the state that
draws step ``k + 1`` even when a ``DataLoader`` has already prefetched later steps. Resuming is
therefore exact with or without workers, and streamed training sees exactly the batches of
in-memory training.

:func:`frame_loader` wraps it in a ``torch.utils.data.DataLoader`` whose workers read only the
frames of each batch from the volume (a zarr-backed ``xarray.DataArray``, a zarr / dask array or
a numpy array; one orthogonal read of the unique frames per batch), with pinned memory and
prefetching, so the whole volume is never in memory: the release's s2 volumes are hundreds of GB.
"""

from __future__ import annotations

import numpy as np
import torch

from .frames import gather_video

__all__ = ["StepSampler", "WindowBatches", "frame_loader", "lead_probabilities"]


def lead_probabilities(horizon: int, lead_sampling: str) -> torch.Tensor:
    """Sampling weights of leads 1..H: "uniform" (ZAPBench) or "inverse" (proportional to 1/lead)."""
    if lead_sampling == "uniform":
        return torch.ones(int(horizon), dtype=torch.float64)
    if lead_sampling == "inverse":
        return 1.0 / torch.arange(1, int(horizon) + 1, dtype=torch.float64)
    raise ValueError(f"lead_sampling must be 'inverse' or 'uniform', got {lead_sampling!r}")


class StepSampler:
    """Iterable over ``(step, window indices, leads)`` for steps ``first .. stop - 1`` (this rank's slice)."""

    def __init__(self, generator: torch.Generator, n_windows: int, lead_p: torch.Tensor,
                 batch_size: int, first: int, stop: int, rank: int = 0, world: int = 1):
        self.gen, self.n, self.lead_p = generator, int(n_windows), lead_p
        self.b, self.first, self.stop, self.rank, self.world = int(batch_size), int(first), int(stop), rank, world
        self._states: dict[int, torch.Tensor] = {}

    def __len__(self):
        return max(0, self.stop - self.first)

    def __iter__(self):
        b, bg = self.b, self.b * self.world
        lo, hi = self.rank * b, (self.rank + 1) * b
        for step in range(self.first, self.stop):
            self._states[step] = self.gen.get_state()
            i = torch.randint(self.n, (bg,), generator=self.gen)[lo:hi].numpy()
            lead = (torch.multinomial(self.lead_p, bg, replacement=True, generator=self.gen) + 1)[lo:hi]
            yield step, i, lead.numpy()

    def state_before(self, step: int) -> torch.Tensor:
        """The generator state that draws ``step`` (what a checkpoint after ``step - 1`` stores)."""
        for k in [k for k in self._states if k < step]:
            del self._states[k]
        return self._states.get(step, self.gen.get_state())


class WindowBatches(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches ``(step, i, lead)`` -> frames on the CPU."""

    def __init__(self, volume, starts, context: int, dtype=torch.float32):
        self.volume, self.starts, self.context, self.dtype = volume, np.asarray(starts, np.int64), int(context), dtype

    def __len__(self):
        return int(self.starts.size)

    def __getitem__(self, item):
        step, i, lead = item
        ctx, target = gather_video(self.volume, self.starts[i], lead, self.context, None, self.dtype)
        return int(step), torch.as_tensor(i), torch.as_tensor(lead), ctx, target


def _worker_init(_):
    torch.set_num_threads(1)
    try:                        # dask's thread pool must not run inside forked workers
        import dask

        dask.config.set(scheduler="synchronous")
    except ImportError:
        pass


def frame_loader(volume, starts, context: int, sampler: StepSampler, dtype=torch.float32,
                 num_workers: int = 2, pin_memory: bool = False, prefetch_factor: int = 2):
    """A ``DataLoader`` yielding ``(step, i, lead, ctx (B, C, z, y, x), target (B, z, y, x))``.

    ``num_workers=0`` reads in the main process (no prefetch). Batches come in step order.
    """
    kw = dict(num_workers=int(num_workers), pin_memory=bool(pin_memory), worker_init_fn=_worker_init)
    if num_workers > 0:
        kw.update(prefetch_factor=int(prefetch_factor))
    return torch.utils.data.DataLoader(WindowBatches(volume, starts, context, dtype), batch_size=None,
                                       sampler=sampler, **kw)
