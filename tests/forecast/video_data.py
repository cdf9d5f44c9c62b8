"""The small random-walk volume the video-forecaster tests share (one place for its recipe)."""

import numpy as np

SHAPE = (3, 8, 10)


def random_walk_volume(t: int = 80, seed: int = 0):
    """(volume (t, z, y, x) float32, segmentation (z, y, x) with labels 1..5 and 0, window starts)."""
    rng = np.random.default_rng(seed)
    vol = (np.cumsum(rng.normal(size=(t, *SHAPE)), 0) * 0.1).astype(np.float32)
    seg = (rng.random(SHAPE) > 0.4).astype(np.int32) * rng.integers(1, 6, SHAPE)
    return vol, seg, np.arange(0, t - 12)
