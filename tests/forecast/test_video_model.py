"""3-D UNet building blocks and frame gathering."""

import numpy as np
import pytest
import torch
import xarray as xr

from workbench.forecast.video import UNet3D, plan_strides
from workbench.forecast.video.frames import gather_video, take_frames


def _randomise(m):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m


def test_plan_strides_keeps_thin_axes():
    assert plan_strides((4, 20, 28), 2) == [(2, 2, 2), (1, 2, 2)]
    assert plan_strides((1, 8, 8), 2) == [(1, 2, 2), (1, 2, 2)]
    with pytest.raises(ValueError, match="shape"):
        plan_strides((4, 4), 1)


@pytest.mark.parametrize("shape", [(4, 20, 28), (3, 7, 9)])
@pytest.mark.parametrize("attention", [True, False])
def test_output_shape_any_volume_and_identity_at_init(shape, attention):
    m = UNet3D(3, (4, 8, 8), plan_strides(shape, 2), attention=attention, emb_dim=8)
    x = torch.randn(2, 3, *shape)
    out = m(x, torch.tensor([1, 5]))
    assert out.shape == (2, *shape)
    # zero-initialised read-out: an untrained network predicts a zero residual (persistence)
    assert torch.count_nonzero(out) == 0
    assert m.features(x, torch.tensor([1, 5])).shape == (2, 4, *shape)


def test_lead_and_stimulus_condition_the_output():
    m = _randomise(UNet3D(2, (4, 8), [(1, 2, 2)], emb_dim=8, n_stimulus=6))
    x = torch.randn(1, 2, 2, 8, 8).expand(2, -1, -1, -1, -1)
    stim = torch.zeros(2, 6)
    out = m(x, torch.tensor([1, 9]), stim)
    assert not torch.allclose(out[0], out[1])               # one network, different leads
    same = m(x, torch.tensor([3, 3]), stim)
    torch.testing.assert_close(same[0], same[1])
    stim2 = stim.clone()
    stim2[1, 0] = 1.0
    out2 = m(x, torch.tensor([3, 3]), stim2)
    assert not torch.allclose(out2[0], out2[1])
    with pytest.raises(ValueError, match="n_stimulus"):
        m(x, torch.tensor([1, 2]))


def test_bad_shapes_raise_clear_errors():
    m = UNet3D(2, (4, 8), [(1, 2, 2)], emb_dim=8)
    with pytest.raises(ValueError, match="frames must be"):
        m(torch.randn(1, 3, 2, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="lead"):
        m(torch.randn(2, 2, 2, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="strides"):
        UNet3D(2, (4, 8, 16), [(1, 2, 2)])


def test_gather_matches_loop_for_every_volume_type():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(30, 2, 3, 4)).astype(np.float32)
    starts, leads = np.array([0, 5, 5, 20]), np.array([1, 3, 2, 6])
    ctx_ref = np.stack([vol[s:s + 3] for s in starts])
    tgt_ref = np.stack([vol[s + 2 + ld] for s, ld in zip(starts, leads)])
    lazy = xr.DataArray(vol, dims=("time", "z", "y", "x")).chunk({"time": 7})
    for v in (vol, torch.as_tensor(vol), lazy):
        ctx, tgt = gather_video(v, starts, leads, 3)
        np.testing.assert_array_equal(ctx.numpy(), ctx_ref)
        np.testing.assert_array_equal(tgt.numpy(), tgt_ref)
    np.testing.assert_array_equal(take_frames(lazy, [[3, 3], [1, 0]]).numpy(), vol[[[3, 3], [1, 0]]])
    with pytest.raises(ValueError, match="outside the volume"):
        gather_video(vol, [25], [4], 3)
