"""The one validation layer of :mod:`workbench.sparsify`: estimator settings, inputs and labels.

Every public entry point of :class:`~workbench.sparsify.SpaM` goes through these functions, so a
bad value gets the same ``ValueError`` / ``TypeError`` naming the argument wherever it is passed,
and nothing reaches torch that would turn into a silent NaN or a truncated label.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d, validate_data

from workbench._torch_utils import to_numpy

__all__ = ["check_int", "check_positive", "resolve_dtype", "check_inputs", "check_training_data",
           "check_labels", "to_tensor"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_int(name: str, value, low: int = 1) -> int:
    """``value`` as an int ``>= low`` (bools and non-integral numbers are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    """``value`` as a finite float ``> 0`` (``>= 0`` with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def resolve_dtype(dtype, model: torch.nn.Module | None, X: np.ndarray) -> torch.dtype:
    """``dtype`` (None, ``torch.float32/64``, "float32"/"float64", numpy float types) resolved:
    None takes the given model's parameter dtype, else float64 for float64 input, else float32."""
    if dtype is None:
        if model is not None:
            p = next(iter(model.parameters()), None)
            if p is not None and p.is_floating_point():
                return p.dtype
        return torch.float64 if X.dtype == np.float64 else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"dtype must be None, a torch dtype or a numpy float type, got {dtype!r}") \
            from None
    if name not in _DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return _DTYPES[name]


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


def check_labels(y) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, y as indices into classes)``; continuous labels (e.g. 0.3 / 0.7), NaN labels,
    multi-output and single-class ``y`` raise."""
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y contains NaN or inf; class labels must be finite")
    check_classification_targets(y)
    classes, idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y has one class only ({classes[0]!r}); a classifier needs at least two")
    return classes, idx.astype(np.int64)


def to_tensor(X: np.ndarray, dtype: torch.dtype, device: torch.device, name: str = "X"):
    """``X`` as a tensor of ``dtype`` on ``device``; finite float64 values that overflow float32
    raise instead of becoming inf."""
    t = torch.as_tensor(np.ascontiguousarray(X)).to(device=device, dtype=dtype)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has values beyond the range of {dtype} (largest magnitude "
                         f"{float(np.abs(X).max()):.3g}); rescale the inputs or use "
                         "dtype=torch.float64")
    return t
