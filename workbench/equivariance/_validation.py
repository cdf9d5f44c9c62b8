"""The one validation layer of :mod:`workbench.equivariance`: images, labels and settings.

Both classifiers (:class:`~workbench.equivariance.LearnedEquivarianceClassifier`,
:class:`~workbench.equivariance.LearnedInvarianceClassifier`) validate through these functions,
so bad input gets the same ``ValueError`` / ``TypeError`` naming the argument everywhere.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench._checks import check_int, check_positive
from workbench._torch_utils import to_numpy

__all__ = ["check_images", "check_targets", "check_settings"]


def check_images(X, image_shape=None, name: str = "X") -> np.ndarray:
    """``X`` as a numpy float array of (N, C, H, W) images with finite values.

    ``image_shape`` (fitted ``image_shape_``) checks ``(C, H, W)``; float64 stays float64,
    other real types become float32."""
    if X is None:
        raise ValueError(f"{name} is None; pass (N, C, H, W) images")
    X = to_numpy(X) if isinstance(X, torch.Tensor) else np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.ndim == 3:
        raise ValueError(f"{name} must be (N, C, H, W) images; got {X.shape} - add the "
                         "channel axis, e.g. X[:, None]")
    if X.ndim != 4:
        raise ValueError(f"{name} must be (N, C, H, W) images, got shape {X.shape}")
    if len(X) == 0:
        raise ValueError(f"{name} has 0 images; at least one is needed")
    if image_shape is not None and tuple(X.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name} has image shape {tuple(X.shape[1:])}, the model was fitted on "
                         f"{tuple(image_shape)}")
    if X.dtype != np.float64:
        X = X.astype(np.float32)
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X).reshape(len(X), -1).all(1)).ravel()
        raise ValueError(f"{name} contains NaN or inf (images {bad[:5].tolist()}"
                         f"{' ...' if bad.size > 5 else ''})")
    return X


def check_targets(y, n: int, name: str = "y") -> np.ndarray:
    """``y`` as a 1-d numpy array of ``n`` labels."""
    if y is None:
        raise ValueError(f"{name} is None; fit needs one class label per image")
    y = to_numpy(y) if isinstance(y, torch.Tensor) else np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be a vector of {n} labels, got shape {y.shape}")
    return y


def check_settings(est, ints=(), non_negative=(), positive=()) -> None:
    """Integers >= 1 (``ints``), integers >= 0 (``non_negative``), finite numbers > 0."""
    for name in ints:
        check_int(name, getattr(est, name), 1)
    for name in non_negative:
        check_int(name, getattr(est, name), 0)
    for name in positive:
        check_positive(name, getattr(est, name))
