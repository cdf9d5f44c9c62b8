"""What both image classifiers share: scikit-learn's estimator shell around a torch network.

Fit-time data preparation (validation, ``classes_``, device, dtype, seeding) and prediction
(``decision_function`` / ``predict_proba`` / ``predict`` / ``score``) live here, so the two
estimators differ only in their networks and training loops.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from workbench._checks import check_labels, encode_labels, resolve_dtype, to_tensor
from workbench._deprecation import warn_renamed
from workbench._torch_utils import resolve_device, seed_from, to_numpy, torch_threads
from workbench.exceptions import check_fitted
from workbench.progress import Progress, check_callback, legacy_callback, report

from ._validation import check_images, check_targets

__all__ = ["ImageClassifier", "TrainingData"]


class TrainingData:
    """Validated training (and optional validation) tensors on the estimator's device."""

    def __init__(self, X, y, X_val, y_val):
        self.X, self.y, self.X_val, self.y_val = X, y, X_val, y_val


class ImageClassifier(ClassifierMixin, BaseEstimator):
    """Shell of a torch image classifier (subclasses define ``__init__`` and ``fit``)."""

    @property
    def seed(self):
        """Deprecated name of :attr:`random_state`."""
        warn_renamed(f"{type(self).__name__}.seed", f"{type(self).__name__}.random_state")
        return self.random_state

    # ------------------------------------------------------------------ fit helpers
    def _prepare(self, X, y, X_val=None, y_val=None) -> TrainingData:
        """Validate the data, set ``classes_``, ``image_shape_``, ``device_``, ``dtype_`` and the
        seed, and move the data to the device once (labels as indices into ``classes_``)."""
        check_callback(self.callback)
        self._seed = seed_from(self.random_state)
        device = resolve_device(self.device)
        X = check_images(X)
        y = check_targets(y, len(X))
        classes, y_idx = check_labels(y)
        if (X_val is None) != (y_val is None):
            raise ValueError("pass both X_val and y_val, or neither")
        if X_val is not None:
            X_val = check_images(X_val, X.shape[1:], name="X_val")
            y_val = encode_labels(check_targets(y_val, len(X_val), "y_val"), classes)
        dtype = resolve_dtype(self.dtype, None, X)
        self.classes_, self.image_shape_ = classes, tuple(X.shape[1:])
        self.device_, self.dtype_ = device, dtype
        data = TrainingData(to_tensor(X, dtype, device), torch.as_tensor(y_idx, device=device),
                            None, None)
        if X_val is not None:
            data.X_val = to_tensor(X_val, dtype, device, "X_val")
            data.y_val = torch.as_tensor(y_val, device=device)
        return data

    @contextlib.contextmanager
    def _rng_scope(self):
        """torch seeded from ``random_state`` inside the block; the global RNG (and the device's,
        on CUDA) restored afterwards."""
        dev = self.device_
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()] \
            if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self._seed)
            yield

    def _epoch_callback(self):
        """The user's callback as a Progress callback (old ``(epoch, n_epochs, history)`` ones
        are wrapped, with a FutureWarning)."""
        return legacy_callback(self.callback, 3, _legacy_args, f"{type(self).__name__}.fit")

    def _report_epoch(self, callback, rec: dict, history_fn) -> bool:
        """Report one finished epoch (metrics and the history so far); True when asked to stop."""
        if callback is None:
            return False
        epoch = rec["epoch"]
        metrics = {k: rec[k] for k in ("loss", "log_marglik", "train_accuracy", "val_accuracy")}
        return report(callback, epoch + 1, self.n_epochs, "train",
                      f"epoch {epoch + 1}/{self.n_epochs}", metrics,
                      {"epoch": epoch, "history": history_fn()})

    # ------------------------------------------------------------------ predict
    def _logits(self, X) -> torch.Tensor:
        check_fitted(self, "model_", "prediction")
        X = check_images(X, self.image_shape_)
        with torch_threads(self.n_threads), torch.no_grad():
            Xt = to_tensor(X, self.dtype_, self.device_)
            self.model_.eval()
            return torch.cat([self.model_(Xt[i:i + 1000]) for i in range(0, len(Xt), 1000)])

    def decision_function(self, X) -> np.ndarray:
        """Logits (n_images, n_classes) in the order of ``classes_``, numpy on the CPU."""
        return to_numpy(self._logits(X))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_images, n_classes) in the order of ``classes_``."""
        return to_numpy(self._logits(X).softmax(-1))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each image, a value of ``classes_``."""
        idx = to_numpy(self._logits(X).argmax(-1))
        return self.classes_[idx]

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy on ``(X, y)``."""
        y = check_targets(y, len(X) if hasattr(X, "__len__") else -1)
        return float(super().score(X, y, sample_weight=sample_weight))


def _legacy_args(p: Progress):
    return p.state["epoch"], p.total, p.state["history"]


def accuracy(model, X, y) -> float:
    """Training-time accuracy of ``model`` on device tensors (labels as class indices)."""
    if X is None:
        return float("nan")
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(X[i:i + 1000]).argmax(-1) for i in range(0, len(X), 1000)])
    return float((pred == y).double().mean())
