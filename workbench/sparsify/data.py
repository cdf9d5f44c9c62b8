"""The two small classification tasks SpaM is demonstrated on (CPU, minutes).

* ``"breast_cancer"``: scikit-learn's Wisconsin breast cancer table (569 x 30, 2 classes);
  inputs standardised with statistics of the training split only.
* ``"digits"``: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), pixel
  intensities scaled to [0, 1] and shaped ``(N, 1, 8, 8)`` for a small CNN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader

from workbench._deprecation import deprecated_alias, renamed_arguments
from workbench._torch_utils import batch_loader, seed_from

__all__ = ["TASKS", "Task", "make_task"]

TASKS = ("breast_cancer", "digits")


@dataclass(frozen=True)
class Task:
    """A train/test split as tensors, plus what a model for it needs to know."""

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @renamed_arguments(seed="random_state")
    def train_loader(self, batch_size: int = 64, shuffle: bool = True,
                     random_state=0) -> DataLoader:
        """Batches of the training split (seeded order with ``shuffle``)."""
        return batch_loader(self.X_train, self.y_train, batch_size=batch_size, shuffle=shuffle,
                            random_state=random_state)


@renamed_arguments(seed="random_state")
def make_task(name: str, random_state=0, test_size: float = 0.3,
              dtype: torch.dtype = torch.float32) -> Task:
    """Make the task ``name`` (one of :data:`TASKS`) with a stratified train/test split seeded by
    ``random_state`` (``seed`` is its deprecated name). Data factories are ``make_*`` across the
    project (``load_task`` is this function's deprecated name)."""
    seed = seed_from(random_state)
    if name not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {name!r}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must lie in (0, 1), got {test_size}")
    from sklearn import datasets

    if name == "breast_cancer":
        X, y = datasets.load_breast_cancer(return_X_y=True)
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, stratify=y,
                                                  random_state=seed)
        mu, sd = X_tr.mean(0), X_tr.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        X_tr, X_te = (X_tr - mu) / sd, (X_te - mu) / sd
        n_classes = 2
    else:
        X, y = datasets.load_digits(return_X_y=True)
        X = (X / 16.0).reshape(-1, 1, 8, 8)
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, stratify=y,
                                                  random_state=seed)
        n_classes = 10

    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    def lab(a):
        return torch.as_tensor(a, dtype=torch.long)

    return Task(name, t(X_tr), lab(y_tr), t(X_te), lab(y_te), n_classes)


load_task = deprecated_alias(make_task, "load_task")
