"""ZAPBench evaluation protocol: conditions, splits and forecasting windows.

The rules (Lueckmann et al., ICLR 2025):

- a recording is cut into conditions by frame offsets; one frame is trimmed at each end of a
  condition (``CONDITION_PADDING``);
- each trimmed condition of length ``n`` is split in time into train / val / test with
  ``n_test = int(0.2 n)``, ``n_val = int(0.1 n)`` and ``n_train = n - n_val - n_test``;
- val and test windows may reach back ``C`` frames into the previous split for their context, so
  the number of windows of a split does not depend on ``C``: ``n_split - H + 1``;
- the held-out condition ("taxis") is never trained on; its first ``MAX_CONTEXT`` (256) frames are
  context only and windows may reach back ``C`` frames into them, so it also has a
  ``C``-independent count ``n - MAX_CONTEXT - H + 1`` of test windows.

With the release's offsets this gives 98, 323, 99, 368, 231, 86, 165, 99, 88 test windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

CONDITION_NAMES: tuple[str, ...] = (
    "gain", "dots", "flash", "taxis", "turning", "position", "open loop", "rotation", "dark",
)
RELEASE_CONDITION_OFFSETS: tuple[int, ...] = (0, 649, 2422, 3078, 3735, 5047, 5638, 6623, 7279, 7879)
HELDOUT: tuple[str, ...] = ("taxis",)
CONDITION_PADDING = 1
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2
MAX_CONTEXT = 256
HORIZON = 32
SPLITS = ("train", "val", "test")

# Trial lengths (frames) per condition of the release, in condition order (gain, dots, flash,
# taxis, turning, position, open loop, rotation, dark); each list sums to the condition's length.
# Source: google-research/zapbench processing/alignment_and_normalization.gin,
# AverageEvokedResponseFilter.condition_period_offsets.
RELEASE_TRIAL_LENGTHS: tuple[tuple[int, ...], ...] = (
    (58, 66, 66, 65, 66, 66, 65, 66, 66, 65),
    (591, 591, 591),
    (65, 66, 66, 65, 66, 65, 66, 66, 65, 66),
    (131, 132, 131, 131, 132),
    (262, 263, 262, 263, 262),
    (197, 197, 197),
    (),
    (66, 65, 66, 65, 66, 66, 65, 66, 66, 65),
    (),
)
# Trials averaged: a slice end over each condition's trials (-2: all but the last two; None: all).
# Source: the same gin file, AverageEvokedResponseFilter.condition_baselines_exclusive_max.
RELEASE_TRIALS_KEPT: tuple[int | None, ...] = (-2, -1, -2, -1, -1, -1, None, -2, None)

__all__ = [
    "CONDITION_NAMES", "RELEASE_CONDITION_OFFSETS", "HELDOUT", "CONDITION_PADDING", "VAL_FRACTION",
    "TEST_FRACTION", "MAX_CONTEXT", "HORIZON", "SPLITS", "condition_bounds", "split_bounds",
    "windows", "gather", "frame_labels", "protocol_from", "RELEASE_TRIAL_LENGTHS", "RELEASE_TRIALS_KEPT",
    "trial_phases", "check_starts",
]


def _check_offsets(offsets: Sequence[int]) -> np.ndarray:
    off = np.asarray(offsets, dtype=np.int64)
    if off.ndim != 1 or off.size < 2 or np.any(np.diff(off) <= 0) or off[0] < 0:
        raise ValueError(f"condition offsets must be a strictly increasing 1-d sequence of >= 2 "
                         f"non-negative frame indices, got {list(offsets)!r}")
    return off


def condition_bounds(offsets: Sequence[int], condition: int) -> tuple[int, int]:
    """``(inclusive_min, exclusive_max)`` of a condition after trimming one frame at each end."""
    off = _check_offsets(offsets)
    if not 0 <= condition < off.size - 1:
        raise ValueError(f"condition must be in [0, {off.size - 2}], got {condition}")
    return int(off[condition]) + CONDITION_PADDING, int(off[condition + 1]) - CONDITION_PADDING


def _split_sizes(n: int) -> tuple[int, int, int]:
    n_test = int(n * TEST_FRACTION)
    n_val = int(n * VAL_FRACTION)
    return n - n_val - n_test, n_val, n_test


def split_bounds(offsets: Sequence[int], condition: int, split: str, context: int,
                 heldout: bool = False, max_context: int = MAX_CONTEXT) -> tuple[int, int]:
    """Frames ``[lo, hi)`` that the windows of ``split`` may touch (context included).

    Val/test context never reaches before the condition's first frame (with the release's offsets
    this clip never binds for C <= 256; it drops some windows of very short synthetic recordings).
    For ``heldout=True`` only ``split="test"`` exists: frames after the first ``max_context`` of
    the condition are targets, the windows may reach back ``context`` frames for context.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    _check_int(context, "context")
    if context < 1 or context > max_context:
        raise ValueError(f"context must be in [1, {max_context}], got {context}")
    lo, hi = condition_bounds(offsets, condition)
    if heldout:
        if split != "test":
            raise ValueError(f"a held-out condition only has a 'test' split, got split={split!r}")
        return lo + max_context - context, hi
    n_train, n_val, _ = _split_sizes(hi - lo)
    if split == "train":
        return lo, lo + n_train
    # context never reaches before the condition's start (only matters for recordings much shorter
    # than the release, where the preceding splits are shorter than C)
    if split == "val":
        return max(lo, lo + n_train - context), lo + n_train + n_val
    return max(lo, lo + n_train + n_val - context), hi


def protocol_from(ds_or_offsets) -> dict:
    """Offsets, condition names, held-out names and limits from a Dataset (attrs) or offsets."""
    if isinstance(ds_or_offsets, xr.Dataset):
        a = ds_or_offsets.attrs
        missing = [k for k in ("condition_offsets", "condition_names") if k not in a]
        if missing:
            raise ValueError(f"dataset attrs lack {missing}; expected a workbench.forecast Dataset")
        return dict(offsets=[int(v) for v in a["condition_offsets"]],
                    names=[str(v) for v in a["condition_names"]],
                    heldout=tuple(str(v) for v in a.get("heldout_conditions", HELDOUT)),
                    max_context=int(a.get("max_context", MAX_CONTEXT)))
    off = [int(v) for v in _check_offsets(ds_or_offsets)]
    names = list(CONDITION_NAMES) if len(off) == len(CONDITION_NAMES) + 1 else [
        f"condition {i}" for i in range(len(off) - 1)]
    return dict(offsets=off, names=names, heldout=HELDOUT, max_context=MAX_CONTEXT)


def windows(ds_or_offsets, split: str = "test", context: int = 4, horizon: int = HORIZON,
            conditions: Sequence[str] | None = None, heldout: Sequence[str] | None = None,
            ) -> xr.Dataset:
    """All stride-1 windows of ``split``: an ``xr.Dataset`` over dim ``window``.

    ``start`` is the first context frame; the targets are frames ``start + context`` up to
    ``start + context + horizon - 1``. Held-out conditions only have ``split="test"`` windows.
    ``conditions`` restricts to some condition names (default: all).
    """
    p = protocol_from(ds_or_offsets)
    names = p["names"]
    conditions = _names(conditions, names, "conditions")
    held = set(_names(p["heldout"] if heldout is None else heldout, names, "heldout"))
    _check_int(context, "context")
    _check_int(horizon, "horizon")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    starts, cond_idx = [], []
    for i, name in enumerate(names):
        if conditions is not None and name not in conditions:
            continue
        is_held = name in held
        if is_held and split != "test":
            continue
        lo, hi = split_bounds(p["offsets"], i, split, context, heldout=is_held,
                              max_context=p["max_context"])
        n = hi - lo - context - horizon + 1
        if n <= 0:
            continue
        starts.append(np.arange(lo, lo + n, dtype=np.int64))
        cond_idx.append(np.full(n, i, dtype=np.int64))
    start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    ci = np.concatenate(cond_idx) if cond_idx else np.zeros(0, np.int64)
    return xr.Dataset(
        {"start": ("window", start)},
        coords={"window": np.arange(start.size),
                "condition": ("window", np.asarray(names, dtype=object)[ci].astype(str)
                              if ci.size else np.zeros(0, dtype="<U1")),
                "condition_index": ("window", ci)},
        attrs=dict(context=int(context), horizon=int(horizon), split=split,
                   heldout_conditions=sorted(held)),
    )


def _names(values, known, what):
    """A list of condition names (a single string is one name), each one of ``known``."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{what} must be a condition name or a sequence of them, got "
                        f"{type(values).__name__}") from None
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{what} must hold condition names (str), got {bad!r}")
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {list(known)}")
    return values


def check_starts(starts, n_frames: int, span: int, what: str = "starts") -> np.ndarray:
    """Window starts as a 1-d int64 array whose ``span`` frames lie in ``[0, n_frames)``."""
    arr = np.asarray(starts)
    if arr.dtype == bool or (arr.dtype.kind not in "iuf" and arr.size) or (
            arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (np.mod(arr, 1) == 0))):
        raise TypeError(f"{what} window starts must be integer frame indices, got {arr.dtype} {arr.ravel()[:5]}")
    arr = arr.astype(np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() + span > n_frames):
        raise ValueError(f"{what} frames [{arr.min()}, {arr.max() + span}) of the windows are outside "
                         f"the {n_frames} frames")
    return arr


def _check_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what} must be an int, got {value!r}")


def gather(traces, starts, context: int, horizon: int = HORIZON):
    """Context and target blocks for many windows at once (one fancy index, no loop).

    ``traces``: (time, neuron) numpy array (or anything ``np.asarray`` accepts, e.g. a dask array
    slice already computed). Returns ``(ctx (W, C, N), target (W, H, N))``.
    """
    arr = np.asarray(traces)
    if arr.ndim != 2:
        raise ValueError(f"traces must be 2-d (time, neuron), got shape {arr.shape}")
    _check_int(context, "context")
    _check_int(horizon, "horizon")
    if context < 0 or horizon < 0:
        raise ValueError(f"context and horizon must be >= 0, got {context} and {horizon}")
    s = check_starts(starts, arr.shape[0], context + horizon,
                     what=f"windows reach outside traces of length {arr.shape[0]} (C={context}, H={horizon}):")
    idx = s[:, None] + np.arange(context + horizon)[None, :]
    block = arr[idx]
    return block[:, :context], block[:, context:]


def frame_labels(offsets: Sequence[int], names: Sequence[str] | None = None,
                 heldout: Sequence[str] = HELDOUT, max_context: int = MAX_CONTEXT):
    """Per-frame ``condition`` names, ``condition_index`` and ``split`` labels.

    ``split`` is one of "train", "val", "test", "context" (held-out frames before its test part)
    and "trim" (the padding frames at condition ends). It does not depend on ``C``.
    """
    off = _check_offsets(offsets)
    names = list(names) if names is not None else protocol_from(list(off))["names"]
    if len(names) != off.size - 1:
        raise ValueError(f"{len(names)} condition names for {off.size - 1} conditions")
    n_frames = int(off[-1])
    cidx = np.repeat(np.arange(off.size - 1), np.diff(off))
    split = np.full(n_frames, "trim", dtype="<U7")
    for i, name in enumerate(names):  # loop over 9 conditions, not frames
        lo, hi = condition_bounds(off, i)
        if name in heldout:
            split[lo:lo + max_context] = "context"
            split[lo + max_context:hi] = "test"
            continue
        n_train, n_val, _ = _split_sizes(hi - lo)
        split[lo:lo + n_train] = "train"
        split[lo + n_train:lo + n_train + n_val] = "val"
        split[lo + n_train + n_val:hi] = "test"
    full_idx = np.zeros(n_frames, np.int64)
    full_idx[off[0]:] = cidx
    cond = np.asarray(names, dtype=object)[full_idx].astype(str)
    return cond, full_idx, split


def trial_phases(offsets: Sequence[int], lengths) -> np.ndarray:
    """Per-frame right-aligned trial phase from explicit trial lengths (-1: no trial).

    Trials of one condition are aligned at their last frame, as ZAPBench averages them
    (``pad_side='left'``): the last frame of every trial has phase ``max(lengths) - 1`` and a
    shorter trial starts at a later phase.
    """
    off = _check_offsets(offsets)
    if len(lengths) != off.size - 1:
        raise ValueError(f"{len(lengths)} rows of trial lengths for {off.size - 1} conditions")
    phase = np.full(int(off[-1]), -1, dtype=np.int64)
    for i, row in enumerate(lengths):                  # loop over conditions
        if not len(row):
            continue
        lo, hi = int(off[i]), int(off[i + 1])
        if sum(row) != hi - lo:
            raise ValueError(f"trial lengths of condition {i} sum to {sum(row)}, it has {hi - lo} frames")
        ends = lo + np.cumsum(row)
        trial = np.repeat(np.arange(len(row)), row)
        phase[lo:hi] = np.arange(lo, hi) - ends[trial] + max(row)
    return phase
