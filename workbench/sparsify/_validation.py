"""The one validation layer of :mod:`workbench.sparsify`: estimator settings, inputs and labels.

Every public entry point of :class:`~workbench.sparsify.SpaM` goes through these functions, so a
bad value gets the same ``ValueError`` / ``TypeError`` naming the argument wherever it is passed,
and nothing reaches torch that would turn into a silent NaN or a truncated label.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import column_or_1d, validate_data

from workbench._checks import check_int, check_labels, check_positive, resolve_dtype, to_tensor
from workbench._torch_utils import to_numpy

__all__ = ["check_int", "check_positive", "resolve_dtype", "check_inputs", "check_training_data",
           "check_labels", "to_tensor"]

def _as_array(X):
    return to_numpy(X) if isinstance(X, torch.Tensor) else X


def check_inputs(est, X, *, reset: bool):
    """Validated numpy ``X``: 2-d tables or (N, C, H, W) images of finite real numbers.

    ``reset=True`` (fit) records ``n_features_in_`` and ``input_shape_``; ``reset=False``
    (predict) checks ``X`` against them. NaN / inf, complex, object and empty inputs raise.
    """
    X = validate_data(est, _as_array(X), reset=reset, allow_nd=True,
                      dtype=(np.float64, np.float32), ensure_min_samples=1)
    if X.ndim not in (2, 4):
        raise ValueError(f"X must be (n_samples, n_features) or (n_samples, C, H, W) images, got "
                         f"shape {X.shape}")
    if reset:
        est.input_shape_ = tuple(X.shape[1:])
    elif tuple(X.shape[1:]) != est.input_shape_:
        raise ValueError(f"X has rows shaped {tuple(X.shape[1:])}, but {type(est).__name__} was "
                         f"fitted on rows shaped {est.input_shape_}")
    return X


def check_training_data(est, X, y):
    """:func:`check_inputs` for ``fit`` plus ``y`` as a 1-d array with one label per row."""
    if y is None:
        raise ValueError(f"{type(est).__name__} requires y to be passed, but the target y is None")
    X = check_inputs(est, X, reset=True)
    y = column_or_1d(np.asarray(_as_array(y)), warn=True)
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
    return X, y
