import numpy as np
import pytest

from workbench.forecast.dff import delta_f_over_f, radius_for_length, sliding_percentile


def brute_force_percentile(x, q, radius):
    n = x.shape[0]
    out = np.empty_like(x, dtype=np.float64)
    for t in range(n):
        idx = np.arange(t - radius, t + radius + 1)
        idx = np.where(idx < 0, -idx - 1, idx)                    # symmetric reflection
        idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
        out[t] = np.percentile(x[idx], q, axis=0)
    return out


def test_exact_sliding_percentile_matches_loop():
    x = np.random.default_rng(0).normal(size=(120, 5)).cumsum(0)
    np.testing.assert_allclose(sliding_percentile(x, 8, radius=15), brute_force_percentile(x, 8, 15))
    np.testing.assert_allclose(sliding_percentile(x, 50, radius=7, max_elements=100),
                               brute_force_percentile(x, 50, 7))


def test_decimated_percentile_is_close_for_slow_baselines():
    rng = np.random.default_rng(1)
    t = np.arange(3000)[:, None]
    x = 2.0 + np.sin(t / 400.0) + 0.1 * rng.normal(size=(3000, 8))
    exact = brute_force_percentile(x, 8, 150)
    approx = sliding_percentile(x, 8, radius=150, step=6, stride=6)
    err = np.abs(approx - exact)
    assert err.mean() < 0.035 and err.max() < 0.15         # noise sd is 0.1: subsampling error only


def test_dff_clipped_and_radius_scaled():
    assert radius_for_length(7879) == 400 and radius_for_length(3940) == 200
    rng = np.random.default_rng(2)
    f = 1.0 + 0.05 * rng.normal(size=(2000, 4))
    f[1000:1010] += 10.0                                          # a huge transient
    d = delta_f_over_f(f.astype(np.float32))
    assert d.dtype == np.float32 and d.max() == pytest.approx(1.5) and d.min() >= -0.25
    assert abs(np.median(d)) < 0.1                                # F0 tracks the baseline
    with pytest.raises(ValueError, match="2-d"):
        sliding_percentile(np.zeros(5))
