"""Small regression and classification problems with a known generating process."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workbench._deprecation import renamed_arguments

__all__ = ["PROBLEMS", "ToyProblem", "make_problem"]

PROBLEMS = {
    "sine": "1-D regression: sin(2x) with noise 0.3 and a gap in the inputs",
    "cubic": "1-D regression: x^3 / 4 with noise 0.3, data only on [-2, 2]",
    "moons": "2-D classification: two interleaving half-moons",
    "circles": "2-D classification: a disc inside a ring",
}


@dataclass(frozen=True)
class ToyProblem:
    """Training data plus the box on which predictions are drawn."""

    name: str
    task: str  # "regression" | "classification"
    X: torch.Tensor
    y: torch.Tensor
    bounds: tuple[tuple[float, float], ...]  # per input dimension
    noise_std: float | None = None

    @property
    def n_inputs(self) -> int:
        return self.X.shape[1]

    @property
    def n_outputs(self) -> int:
        return 1 if self.task == "regression" else int(self.y.max()) + 1


@renamed_arguments(seed="random_state")
def make_problem(name: str, n: int = 150, random_state: int = 0,
                 dtype: torch.dtype = torch.float32) -> ToyProblem:
    """Draw ``n`` training points of the named problem (see :data:`PROBLEMS`), deterministically."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; choose one of {sorted(PROBLEMS)}")
    if n < 10:
        raise ValueError(f"n must be at least 10, got {n}")
    rng = np.random.default_rng(random_state)
    if name == "sine":
        x = np.concatenate([rng.uniform(-3.0, -0.7, n // 2), rng.uniform(0.9, 3.0, n - n // 2)])
        y = np.sin(2.0 * x) + 0.3 * rng.standard_normal(n)
        return ToyProblem(name, "regression", _t(x[:, None], dtype), _t(y[:, None], dtype), ((-4.5, 4.5),), 0.3)
    if name == "cubic":
        x = rng.uniform(-2.0, 2.0, n)
        y = x**3 / 4.0 + 0.3 * rng.standard_normal(n)
        return ToyProblem(name, "regression", _t(x[:, None], dtype), _t(y[:, None], dtype), ((-3.5, 3.5),), 0.3)
    from sklearn.datasets import make_circles, make_moons

    if name == "moons":
        X, y = make_moons(n, noise=0.2, random_state=random_state)
        bounds = ((-2.0, 3.0), (-1.5, 2.0))
    else:
        X, y = make_circles(n, noise=0.1, factor=0.4, random_state=random_state)
        bounds = ((-2.0, 2.0), (-2.0, 2.0))
    return ToyProblem(name, "classification", _t(X, dtype), torch.as_tensor(y, dtype=torch.long), bounds)


def _t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)
