"""Checks shared by the estimators of several capabilities: settings, labels, dtypes, tensors.

Each raises a ``ValueError`` / ``TypeError`` that names the argument and says what was expected;
capability modules build their validation layer from these (e.g.
:mod:`workbench.sparsify._validation`, :mod:`workbench.equivariance._validation`).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.multiclass import check_classification_targets

from workbench.laplace._validation import check_positive_float, check_positive_int

__all__ = ["check_int", "check_positive", "resolve_dtype", "check_labels", "encode_labels",
           "to_tensor"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# the Laplace core's checks of integers and positive numbers, shared rather than written twice
check_int = check_positive_int
check_positive = check_positive_float


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


def encode_labels(y, classes: np.ndarray, name: str = "y_val") -> np.ndarray:
    """Indices of ``y``'s labels in ``classes`` (fitted ``classes_``); unseen labels raise."""
    y = np.asarray(y)
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or inf; class labels must be finite")
    unseen = np.setdiff1d(np.unique(y), classes)
    if unseen.size:
        raise ValueError(f"{name} has labels {unseen.tolist()} that are not among the fitted "
                         f"classes_ {classes.tolist()}")
    return np.searchsorted(classes, y).astype(np.int64)


def to_tensor(X: np.ndarray, dtype: torch.dtype, device: torch.device, name: str = "X"):
    """``X`` as a tensor of ``dtype`` on ``device``; finite float64 values that overflow float32
    raise instead of becoming inf."""
    t = torch.as_tensor(np.ascontiguousarray(X)).to(device=device, dtype=dtype)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has values beyond the range of {dtype} (largest magnitude "
                         f"{float(np.abs(X).max()):.3g}); rescale the inputs or use "
                         "dtype=torch.float64")
    return t
