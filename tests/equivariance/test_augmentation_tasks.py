"""Differentiable augmentation and the digits tasks."""

import math

import numpy as np
import pytest
import torch

from workbench.equivariance import make_task
from workbench.equivariance.augmentation import (
    AffineAugmentation,
    InvariantModel,
    affine_matrices,
    apply_affine,
)


def test_zero_parameters_are_identity_and_quarter_turn_is_rot90():
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    ident = affine_matrices(torch.zeros(3, 4, dtype=torch.float64),
                            ("translate_x", "translate_y", "rotate", "scale"))
    torch.testing.assert_close(apply_affine(x, ident), x)
    quarter = affine_matrices(torch.full((3, 1), math.pi / 2, dtype=torch.float64), "rotate")
    out = apply_affine(x, quarter)
    # exact reference: a quarter turn on a square pixel grid permutes pixels
    ref = torch.rot90(x, k=1, dims=(2, 3))
    alt = torch.rot90(x, k=-1, dims=(2, 3))
    err = min((out - ref).abs().max(), (out - alt).abs().max())
    assert err < 1e-10


def test_translation_by_whole_pixels_shifts_image():
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    # 2/8 of the half-width... one pixel = 2 / W in normalised coordinates
    theta = affine_matrices(torch.tensor([[2 * 2 / 8]], dtype=torch.float64), "translate_x")
    out = apply_affine(x, theta)
    torch.testing.assert_close(out[..., :6], x[..., 2:])  # sampling at x + 2 pixels
    assert out[..., 6:].abs().max() == 0  # zero padding


def test_augmentation_gradients_reach_amplitudes():
    torch.manual_seed(0)
    aug = AffineAugmentation(("rotate", "scale"), n_samples=4, init_amplitude=0.3).double()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    out = aug(x)
    assert out.shape == (20, 1, 8, 8)
    out.pow(2).sum().backward()
    assert aug.raw_amplitude.grad is not None and (aug.raw_amplitude.grad.abs() > 0).all()
    aug.set_amplitudes([1.0, 0.2])
    torch.testing.assert_close(aug.amplitudes, torch.tensor([1.0, 0.2], dtype=torch.float64))


def test_invariant_model_averages_over_samples():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(start_dim=-3), torch.nn.Linear(64, 3)).double()
    aug = AffineAugmentation("rotate", n_samples=6).double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    torch.manual_seed(5)
    ref = net(aug(x)).reshape(4, 6, 3).mean(1)
    for sample_dim in (True, False):  # samples as a shared dimension, or folded into the batch
        model = InvariantModel(net, aug, sample_dim=sample_dim)
        torch.manual_seed(5)
        torch.testing.assert_close(model(x), ref)
    assert InvariantModel(net)(x).shape == (4, 3)


@pytest.mark.parametrize("bad", ["shear", ("rotate", "rotate"), ()])
def test_unknown_transform_raises(bad):
    with pytest.raises(ValueError, match="transforms"):
        AffineAugmentation(bad)


def test_bad_amplitudes_raise():
    with pytest.raises(ValueError, match="init_amplitude"):
        AffineAugmentation(init_amplitude=1.5)
    aug = AffineAugmentation("rotate")
    with pytest.raises(ValueError, match="amplitudes"):
        aug.set_amplitudes([4.0])
    with pytest.raises(ValueError, match="expected images"):
        aug(torch.zeros(8, 8))


def test_tasks_shapes_labels_and_determinism():
    a = make_task("translated", 200, 100, random_state=3)
    b = make_task("translated", 200, 100, random_state=3)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert a.X_train.shape == (200, 1, 16, 16) and a.X_test.shape == (100, 1, 16, 16)
    assert a.X_train.min() >= 0 and a.X_train.max() <= 1
    # every digit keeps its total ink when pasted
    q = make_task("quadrant", 300, 50, random_state=0)
    assert set(np.unique(q.y_train)) <= set(range(10))
    # the quadrant holding the ink determines the label shift
    ink = q.X_train[:, 0].reshape(300, 2, 8, 2, 8).sum((2, 4)).reshape(300, 4)
    quad = ink.argmax(1)
    assert np.all(ink.max(1) == ink.sum(1))  # all ink in one quadrant
    r = make_task("rotated", 100, 50, random_state=0, max_rotation=math.pi / 3)
    assert r.attrs["max_rotation"] == pytest.approx(math.pi / 3)
    assert quad.shape == (300,)


def test_quadrant_label_is_digit_plus_quadrant():
    from workbench.equivariance.tasks import _load_digits

    q = make_task("quadrant", 300, 50, random_state=1)
    images, labels = _load_digits()
    flat = images.reshape(len(images), -1)
    ink = q.X_train[:, 0].reshape(300, 2, 8, 2, 8).sum((2, 4)).reshape(300, 4)
    quad = ink.argmax(1)
    crops = q.X_train[:, 0].reshape(300, 2, 8, 2, 8).transpose(0, 1, 3, 2, 4).reshape(300, 4, 64)
    crop = crops[np.arange(300), quad]
    idx = np.abs(crop[:, None, :] - flat[None].astype(np.float32)).sum(-1).argmin(1)
    np.testing.assert_array_equal(q.y_train, (labels[idx] + quad) % 10)


def test_large_test_set_holds_distinct_images_disjoint_from_training():
    """The benchmark's 500 / 800 split: on an 8x8 canvas the images are the digits themselves,
    so distinct rows are distinct digit images (all 1797 digits differ)."""
    t = make_task("translated", 500, 800, canvas=8, random_state=0)
    tr, te = t.X_train.reshape(500, -1), t.X_test.reshape(800, -1)
    assert len(np.unique(te, axis=0)) == 800 and len(np.unique(tr, axis=0)) == 500
    assert len(np.unique(np.concatenate([tr, te]), axis=0)) == 1300


@pytest.mark.parametrize("kw, match", [
    (dict(name="mnist"), "unknown task"), (dict(name="translated", canvas=4), "canvas"),
    (dict(name="quadrant", canvas=12), "quadrant"), (dict(name="rotated", max_rotation=4.0),
                                                      "max_rotation"),
    (dict(name="translated", n_train=0), "n_train"),
])
def test_bad_task_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        make_task(**kw)
