"""dF/F with a sliding-percentile baseline, vectorised over pixels (voxels or neurons).

``F0(t)`` is the ``q``-th percentile (ZAPBench: 8th) of ``F`` in a window of ``±radius`` frames
around ``t`` (ZAPBench: 400 frames for a 7879-frame recording), then
``dF/F = (F - F0) / F0`` clipped to ``[-0.25, 1.5]``.

For speed, the percentile is evaluated on a decimated grid of centres (every ``step`` frames), each
from window samples taken every ``stride`` frames, and linearly interpolated back to every frame.
``step = stride = 1`` is the exact sliding percentile. Window edges use reflection.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sliding_percentile", "delta_f_over_f", "radius_for_length", "CLIP_RANGE",
           "RELEASE_RADIUS", "RELEASE_N_FRAMES"]

CLIP_RANGE = (-0.25, 1.5)
RELEASE_RADIUS = 400
RELEASE_N_FRAMES = 7879


def radius_for_length(n_frames: int) -> int:
    """Window radius scaled to the recording length (400 frames at the release's 7879)."""
    return max(8, int(round(RELEASE_RADIUS * n_frames / RELEASE_N_FRAMES)))


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Reflect indices into [0, n) ("symmetric" padding: -1 -> 0, n -> n - 1)."""
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - 1 - idx, idx)


def sliding_percentile(x: np.ndarray, q: float = 8.0, radius: int = 400, step: int = 1,
                       stride: int = 1, max_elements: int = 8_000_000) -> np.ndarray:
    """Sliding ``q``-th percentile along axis 0 of ``x`` (time, pixels).

    Vectorised: one gather of shape (centres, samples, pixel block) per block of pixels (blocks are
    sized so that at most ``max_elements`` values are held), ``np.percentile`` along the window
    axis, then linear interpolation from the centres to every frame.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-d (time, pixels), got shape {x.shape}")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    if radius < 0 or step < 1 or stride < 1:
        raise ValueError(f"need radius >= 0, step >= 1, stride >= 1; got {radius}, {step}, {stride}")
    n_t, n_p = x.shape
    centres = np.arange(0, n_t, step)
    if centres[-1] != n_t - 1:
        centres = np.append(centres, n_t - 1)
    offsets = np.arange(-radius, radius + 1, stride)
    idx = _reflect(centres[:, None] + offsets[None, :], n_t)          # (G, S)
    block = max(1, int(max_elements // idx.size))
    out = np.empty_like(x, dtype=np.result_type(x.dtype, np.float32))
    for p0 in range(0, n_p, block):                                  # loop over pixel blocks only
        sl = slice(p0, min(n_p, p0 + block))
        vals = np.ascontiguousarray(x[:, sl].T)[:, idx]               # (B, G, S): window axis last
        f0 = np.percentile(vals, q, axis=-1).T                        # (G, B)
        if step == 1:
            out[:, sl] = f0
        else:
            out[:, sl] = _interp_rows(centres, f0, n_t)
    return out


def _interp_rows(centres: np.ndarray, values: np.ndarray, n_t: int) -> np.ndarray:
    """Linear interpolation of ``values`` (G, B) given at ``centres`` to frames 0..n_t-1."""
    t = np.arange(n_t)
    j = np.clip(np.searchsorted(centres, t, side="right") - 1, 0, centres.size - 2)
    w = ((t - centres[j]) / (centres[j + 1] - centres[j]))[:, None]
    return (1.0 - w) * values[j] + w * values[j + 1]


def delta_f_over_f(f: np.ndarray, q: float = 8.0, radius: int | None = None, step: int | None = None,
                   stride: int | None = None, clip=CLIP_RANGE, eps: float = 1e-6) -> np.ndarray:
    """dF/F of ``f`` (time, pixels) against its sliding ``q``-th percentile, clipped.

    Defaults: ``radius`` scaled to the length (:func:`radius_for_length`), ``step`` and
    ``stride`` about radius / 16 (at least 1) - about 33 samples per window.
    """
    f = np.asarray(f)
    radius = radius_for_length(f.shape[0]) if radius is None else int(radius)
    auto = max(1, radius // 16)
    step = auto if step is None else int(step)
    stride = auto if stride is None else int(stride)
    f0 = sliding_percentile(f, q=q, radius=radius, step=step, stride=stride)
    f0 = np.maximum(f0, eps)
    out = (f - f0) / f0
    if clip is not None:
        np.clip(out, clip[0], clip[1], out=out)
    return out.astype(f.dtype if np.issubdtype(f.dtype, np.floating) else np.float32, copy=False)
