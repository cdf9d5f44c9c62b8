"""Spatial/temporal context sweep: MAE by lead, FLOPs and activation memory per configuration."""

import numpy as np
import torch

from workbench.forecast.video import UNet3D, VideoForecaster
from workbench.forecast.video.sweep import context_sweep, forward_cost


def test_sweep_reports_cost_and_accuracy_per_configuration(tiny):
    res = context_sweep(tiny, downsample=(1, 2), contexts=(1, 3), max_windows=4, horizon=3,
                        widths=(4, 8), emb_dim=8, n_steps=2, batch_size=2, n_threads=1)
    assert res["mae"].dims == ("downsample", "context", "lead")
    assert res["mae"].shape == (2, 2, 3) and np.isfinite(res["mae"].values).all()
    assert "condition" in res["mae_condition"].dims
    f = res["flops"].values
    # more context costs more (stem conv), coarser input costs less
    assert np.all(f[:, 1] > f[:, 0]) and np.all(f[1] < f[0])
    a = res["activation_bytes"].values
    assert np.all(a[1] < a[0]) and np.all(a > 0)


def test_flop_count_of_a_conv_matches_hand_count():
    est = VideoForecaster(context=2, horizon=2, widths=(4,), attention=False, emb_dim=4)
    est.spatial_shape_, est.n_stimulus_features_ = (2, 3, 4), 0
    est.offset_, est.scale_ = 0.0, 1.0
    est.model_ = est._build_model()
    cost = forward_cost(est)
    m: UNet3D = est.model_
    v = 2 * 3 * 4
    # stem, 3 residual blocks (level, mid1, mid2) of two 3x3x3 convs each, 1x1x1 read-out
    convs = [(2, 4, 27)] + [(4, 4, 27)] * 6 + [(4, 1, 1)]
    expect = sum(2 * v * ci * co * k for ci, co, k in convs)
    expect += 2 * (m.emb_dim * m.emb_dim * 2 + 3 * m.emb_dim * 2 * 4)  # lead MLP and 3 FiLM linears
    assert cost["flops"] == expect
    assert cost["n_params"] == sum(p.numel() for p in m.parameters())
    assert cost["activation_bytes"] > 0 and torch.is_grad_enabled()
