"""Soft-equivariant layers and network: exact references in float64."""

import pytest
import torch

from workbench.equivariance.layers import CircularConv2d, FactoredFreeMap, SoftEquivariantConv2d
from workbench.equivariance.models import SoftEquivariantNet


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_free_pathway_equals_dense_kronecker_map():
    torch.manual_seed(0)
    free = FactoredFreeMap(3, 4, (6, 5), stride=1).double()
    h = torch.randn(7, 3, 6, 5)
    dense = free.dense_weight()
    assert dense.shape == (4 * 6 * 5, 3 * 6 * 5)
    ref = (h.reshape(7, -1) @ dense.T).reshape(7, 4, 6, 5)
    torch.testing.assert_close(free(h), ref, rtol=1e-12, atol=1e-12)
    # dense matrix is kron(A, B) over ((c, y), x)
    torch.testing.assert_close(
        dense.reshape(4 * 6, 5, 3 * 6, 5).permute(0, 2, 1, 3).reshape(24 * 18, 25),
        torch.einsum("ij,kl->ijkl", free.rows.weight, free.cols.weight).reshape(24 * 18, 25))


def test_free_pathway_strided_maps_to_subsampled_grid():
    free = FactoredFreeMap(2, 3, (8, 8), stride=2).double()
    h = torch.randn(4, 2, 8, 8)
    out = free(h)
    assert out.shape == (4, 3, 4, 4)
    ref = (h.reshape(4, -1) @ free.dense_weight().T).reshape(4, 3, 4, 4)
    torch.testing.assert_close(out, ref)


def test_free_pathway_is_not_translation_equivariant():
    torch.manual_seed(1)
    free = FactoredFreeMap(1, 2, (8, 8)).double()
    h = torch.randn(2, 1, 8, 8)
    shifted = torch.roll(free(h), (1, 2), (2, 3))
    assert (free(torch.roll(h, (1, 2), (2, 3))) - shifted).abs().max() > 1e-3


def test_circular_conv_matches_unfold_reference_and_is_equivariant():
    torch.manual_seed(2)
    conv = CircularConv2d(2, 3, 3).double()
    h = torch.randn(2, 2, 6, 7)
    # brute force: explicit sum over kernel offsets with wrap-around indexing
    w, b = conv.conv.weight, conv.conv.bias
    ref = b[None, :, None, None].expand(2, 3, 6, 7).clone()
    for dy in range(3):
        for dx in range(3):
            shifted = torch.roll(h, (1 - dy, 1 - dx), (2, 3))
            ref = ref + torch.einsum("oc,nchw->nohw", w[:, :, dy, dx], shifted)
    torch.testing.assert_close(conv(h), ref)
    for shift in [(1, 0), (0, 3), (-2, 5)]:
        torch.testing.assert_close(conv(torch.roll(h, shift, (2, 3))),
                                   torch.roll(conv(h), shift, (2, 3)))


def test_strided_conv_is_subsampled_stride_one_conv():
    torch.manual_seed(3)
    c1 = CircularConv2d(2, 2, 3, stride=1).double()
    c2 = CircularConv2d(2, 2, 3, stride=2).double()
    c2.load_state_dict(c1.state_dict())
    h = torch.randn(3, 2, 8, 8)
    torch.testing.assert_close(c2(h), c1(h)[:, :, ::2, ::2])
    # equivariant to shifts by multiples of the stride
    torch.testing.assert_close(c2(torch.roll(h, (2, 4), (2, 3))),
                               torch.roll(c2(h), (1, 2), (2, 3)))


def test_soft_layer_is_sum_of_pathways():
    torch.manual_seed(4)
    layer = SoftEquivariantConv2d(2, 3, (8, 8), stride=2, free_init=0.5).double()
    h = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(layer(h), layer.conv(h) + layer.free(h))
    parts = layer.pathway_outputs(h)
    assert set(parts) == {"conv", "free"}
    assert parts["free"].abs().max() > 1e-3
    pure = SoftEquivariantConv2d(2, 3, (8, 8), pathways="conv").double()
    assert not hasattr(pure, "free")
    torch.testing.assert_close(pure(h), pure.conv(h))


def test_soft_net_starts_as_the_cnn():
    """free_init=0 (default): the free row factor is zero, so with the same seed the soft net
    computes exactly the pure CNN, and the free factor A still receives gradients."""
    x = torch.randn(3, 1, 16, 16)
    torch.manual_seed(7)
    cnn = SoftEquivariantNet(pathways="conv").double()
    torch.manual_seed(7)
    soft = SoftEquivariantNet().double()
    # the free pathways draw from their own stream: same conv and head weights as the CNN
    for lc, ls in zip(cnn.layers, soft.layers):
        torch.testing.assert_close(ls.conv.conv.weight, lc.conv.conv.weight, rtol=0, atol=0)
        assert ls.free.rows.weight.abs().max() == 0 and ls.free.cols.weight.abs().max() > 0
    torch.testing.assert_close(soft.head.weight, cnn.head.weight, rtol=0, atol=0)
    torch.testing.assert_close(soft(x), cnn(x), rtol=0, atol=0)
    torch.manual_seed(7)
    again = SoftEquivariantNet().double()  # and deterministic given the seed
    torch.testing.assert_close(again.layers[1].free.cols.weight, soft.layers[1].free.cols.weight)
    soft(x).sum().backward()
    assert soft.layers[-1].free.rows.weight.grad.abs().max() > 0
    with pytest.raises(ValueError, match="free_init"):
        SoftEquivariantConv2d(1, 2, (8, 8), free_init=-1.0)


def test_pure_cnn_is_invariant_pure_fc_is_not():
    torch.manual_seed(5)
    x = torch.randn(4, 1, 16, 16)
    cnn = SoftEquivariantNet(pathways="conv").double()
    torch.testing.assert_close(cnn(torch.roll(x, (4, 8), (2, 3))), cnn(x))
    fc = SoftEquivariantNet(pathways="free").double()
    assert (fc(torch.roll(x, (4, 8), (2, 3))) - fc(x)).abs().max() > 1e-4
    soft = SoftEquivariantNet(pathways=["conv", "conv", ("conv", "free"), "free"]).double()
    assert soft.layers[0].pathways == ("conv",) and soft.layers[2].pathways == ("conv", "free")
    assert soft(x).shape == (4, 10)


def test_float64_in_float64_out_and_output_norms():
    net = SoftEquivariantNet(channels=(4, 4), strides=(1, 2), free_init=1.0).double()
    x = torch.randn(3, 1, 16, 16)
    assert net(x).dtype == torch.float64
    norms = net.pathway_output_norms(x)
    assert norms.shape == (2, 2) and (norms > 0).all()
    # default free_init=0: the free pathways start silent
    assert (SoftEquivariantNet(channels=(4, 4), strides=(1, 2)).double()
            .pathway_output_norms(x)[:, 1] == 0).all()
    assert (SoftEquivariantNet(channels=(4, 4), strides=(1, 2), pathways="conv").double()
            .pathway_output_norms(x)[:, 1] == 0).all()


@pytest.mark.parametrize("bad", [
    dict(pathways="dense"), dict(pathways=("conv", "conv")), dict(pathways=[]),
    dict(pathways=["conv"]), dict(channels=(4, 4), strides=(1,)), dict(image_shape=(16, 16)),
    dict(strides=(1, 3, 1, 2)),
])
def test_bad_construction_raises(bad):
    with pytest.raises(ValueError):
        SoftEquivariantNet(**bad)


def test_wrong_image_shape_raises_naming_shape():
    net = SoftEquivariantNet(channels=(4,), strides=(1,))
    with pytest.raises(ValueError, match=r"\(N, 1, 16, 16\).*\(2, 1, 12, 12\)"):
        net(torch.randn(2, 1, 12, 12))
    with pytest.raises(ValueError, match="expected images"):
        net(torch.randn(16, 16))
    with pytest.raises(ValueError, match="kernel_size"):
        CircularConv2d(1, 1, 2)


def test_saved_run_keeps_int64_coordinates(tmp_path):
    import numpy as np
    import xarray as xr

    from workbench.equivariance.runs import load_run, save_run

    ds = xr.Dataset({"score": (("epoch", "layer"), np.zeros((2, 3)))},
                    coords={"epoch": np.arange(2), "layer": np.arange(3)})
    back = load_run(save_run(ds, tmp_path / "run.nc"))
    assert back.layer.dtype == np.int64 and back.epoch.dtype == np.int64
    xr.testing.assert_identical(back, ds)


def test_cache_key_holds_the_format_version(tmp_path, monkeypatch):
    """A run cached under an older format version is not reused."""
    from workbench.equivariance import runs

    calls = []

    def fake_run(**settings):
        import xarray as xr

        calls.append(settings)
        return xr.Dataset(attrs={"n": len(calls)})

    monkeypatch.setattr(runs, "run_equivariance", fake_run)
    first = runs.cached_run("equivariance", directory=tmp_path, random_state=0)
    again = runs.cached_run("equivariance", directory=tmp_path, random_state=0)
    assert len(calls) == 1 and again.attrs["n"] == 1
    assert first.attrs["format_version"] == runs.RUN_FORMAT_VERSION
    monkeypatch.setattr(runs, "RUN_FORMAT_VERSION", runs.RUN_FORMAT_VERSION + 1)
    newer = runs.cached_run("equivariance", directory=tmp_path, random_state=0)
    assert len(calls) == 2 and newer.attrs["n"] == 2
    assert len(list(tmp_path.glob("equivariance_*.nc"))) == 2
