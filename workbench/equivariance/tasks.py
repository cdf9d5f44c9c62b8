"""Small image tasks built from scikit-learn's 8x8 digits, sized to train on a CPU in minutes.

Every task splits the 1797 digit images into disjoint train and test *digit images* first (so a
test image never shares its digit with a training image) and then places them on a larger canvas:

``"translated"``
    each digit at a uniformly random position on the canvas; label = digit class. The label is
    invariant to translations, so translation-equivariant layers (convolutions) are the right
    inductive bias.
``"quadrant"``
    each digit in one of the four canvas quadrants (chosen at random, with a small jitter inside
    the quadrant when the canvas is larger than twice the digit); label = (digit + quadrant) mod 10
    with the quadrants numbered 0 (top left), 1 (top right), 2 (bottom left), 3 (bottom right). The
    same digit means a different class in a different place, so a network has to know *where* the
    digit sits: a translation-invariant network cannot exceed chance on the position part.
``"rotated"``
    each digit, enlarged, centred on the canvas and rotated by an angle drawn uniformly from
    ``[-max_rotation, max_rotation]`` (radians); label = digit class. Used for learned invariance.

Images are float arrays shaped ``(N, 1, canvas, canvas)`` with values in ``[0, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from workbench._deprecation import renamed_arguments
from workbench._torch_utils import seed_from
from workbench.equivariance.augmentation import affine_matrices, apply_affine

TASKS = ("translated", "quadrant", "rotated")
DIGIT_SIZE = 8


@dataclass
class DigitTask:
    """Train/test arrays of one task plus what generated them."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int = 10
    attrs: dict = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.X_train.shape[1:])


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float64), d.target.astype(np.int64)


def _split_digits(n_train: int, n_test: int, rng: np.random.Generator):
    images, labels = _load_digits()
    n_avail = len(images)
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got n_train={n_train}, n_test={n_test}")
    perm = rng.permutation(n_avail)
    n_train_img = min(n_train, n_avail - min(n_test, n_avail // 3))
    train_idx, test_idx = perm[:n_train_img], perm[n_train_img:]
    # more samples than digit images: reuse images (at other positions / angles)
    tr = rng.choice(train_idx, size=n_train, replace=n_train > len(train_idx))
    te = rng.choice(test_idx, size=n_test, replace=n_test > len(test_idx))
    return images[tr], labels[tr], images[te], labels[te]


def _paste(digits: np.ndarray, canvas: int, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Place ``digits`` (N, 8, 8) at (top, left) on empty canvases, vectorised with fancy indexing."""
    n = len(digits)
    out = np.zeros((n, canvas, canvas), dtype=digits.dtype)
    r = np.arange(DIGIT_SIZE)
    rows = (top[:, None] + r[None, :])[:, :, None]  # (N, 8, 1)
    cols = (left[:, None] + r[None, :])[:, None, :]  # (N, 1, 8)
    out[np.arange(n)[:, None, None], rows, cols] = digits
    return out


def _translated(digits, labels, canvas, rng):
    top = rng.integers(0, canvas - DIGIT_SIZE + 1, size=len(digits))
    left = rng.integers(0, canvas - DIGIT_SIZE + 1, size=len(digits))
    return _paste(digits, canvas, top, left), labels


def _quadrant(digits, labels, canvas, rng):
    half = canvas // 2
    q = rng.integers(0, 4, size=len(digits))
    slack = half - DIGIT_SIZE
    top = (q // 2) * half + rng.integers(0, slack + 1, size=len(digits))
    left = (q % 2) * half + rng.integers(0, slack + 1, size=len(digits))
    return _paste(digits, canvas, top, left), (labels + q) % 10, q


def rotate_images(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate ``images`` (N, C, H, W) by ``angles`` (N,) radians about the centre (bilinear)."""
    theta = affine_matrices(angles[:, None], ("rotate",))
    return apply_affine(images, theta)


def _rotated(digits, labels, canvas, rng, max_rotation):
    size = max(DIGIT_SIZE, int(round(canvas * 0.75)))
    big = F.interpolate(torch.from_numpy(digits)[:, None], size=(size, size), mode="bilinear",
                        align_corners=False)
    pad = canvas - size
    big = F.pad(big, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    angles = rng.uniform(-max_rotation, max_rotation, size=len(digits))
    out = rotate_images(big, torch.from_numpy(angles).to(big.dtype))
    return out[:, 0].numpy().clip(0.0, 1.0), labels, angles


@renamed_arguments(seed="random_state")
def make_task(name: str, n_train: int = 1000, n_test: int = 500, canvas: int = 16,
              random_state=0, max_rotation: float = math.pi / 2, dtype=np.float32) -> DigitTask:
    """Build one of :data:`TASKS` (see the module docstring), seeded by ``random_state`` (an
    int; ``seed`` is its deprecated name)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")
    if not isinstance(canvas, int | np.integer) or canvas < DIGIT_SIZE:
        raise ValueError(f"canvas must be an integer >= {DIGIT_SIZE}, got {canvas!r}")
    if name == "quadrant" and canvas < 2 * DIGIT_SIZE:
        raise ValueError(f"the quadrant task needs canvas >= {2 * DIGIT_SIZE}, got {canvas}")
    if name == "rotated" and not 0.0 <= max_rotation <= math.pi:
        raise ValueError(f"max_rotation must lie in [0, pi] radians, got {max_rotation}")
    seed = seed_from(random_state)
    rng = np.random.default_rng(seed)
    dtr, ltr, dte, lte = _split_digits(n_train, n_test, rng)
    attrs = {"task": name, "canvas": canvas, "seed": seed, "n_train": n_train, "n_test": n_test}
    if name == "translated":
        Xtr, ytr = _translated(dtr, ltr, canvas, rng)
        Xte, yte = _translated(dte, lte, canvas, rng)
    elif name == "quadrant":
        Xtr, ytr, _ = _quadrant(dtr, ltr, canvas, rng)
        Xte, yte, _ = _quadrant(dte, lte, canvas, rng)
    else:
        Xtr, ytr, _ = _rotated(dtr, ltr, canvas, rng, max_rotation)
        Xte, yte, _ = _rotated(dte, lte, canvas, rng, max_rotation)
        attrs["max_rotation"] = float(max_rotation)
    return DigitTask(name, Xtr[:, None].astype(dtype), ytr, Xte[:, None].astype(dtype), yte,
                     attrs=attrs)
