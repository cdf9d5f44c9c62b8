"""Synthetic additive data with known shape functions, null features and a planted interaction.

``y = b + sum_i f_i(x_i) + gamma * x_a * x_b + noise`` (regression) or
``y ~ Bernoulli(sigmoid(...))`` (classification). Features have uniform marginals on [-1, 1]
(Gaussian copula); the two planted-pair features can be made dependent (``pair_correlation``),
all other features are independent. The ground truth (:class:`AdditiveTruth`) evaluates the true
shape functions on any grid, centred by their mean over a reference sample (the training data),
exactly as the fitted shape functions of :mod:`workbench.nam` are centred.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import expit, ndtr

from workbench._deprecation import renamed_arguments

SHAPES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: 1.2 * x,
    "sine": lambda x: np.sin(np.pi * x),
    "quadratic": lambda x: 2.0 * x**2,
    "sigmoid": lambda x: 2.0 * expit(8.0 * x),
    "exp": lambda x: 0.5 * np.exp(1.5 * x),
    "cosine": lambda x: np.cos(1.5 * np.pi * x),
}
"""Named true shape functions on [-1, 1] (each with standard deviation ~0.5-0.7 there)."""


def _grid_frame(grid, features: list[str]) -> xr.DataArray:
    """Normalise a grid (dict feature -> values, or DataArray (feature, x)) to a padded array."""
    if isinstance(grid, xr.DataArray):
        if set(grid.dims) != {"feature", "x"}:
            raise ValueError(f"grid must have dims ('feature', 'x'), got {grid.dims}")
        missing = [f for f in grid["feature"].values.tolist() if f not in features]
        if missing:
            raise ValueError(f"grid names unknown features {missing}; known: {features}")
        return grid.transpose("feature", "x").astype(float)
    if isinstance(grid, Mapping):
        missing = [f for f in grid if f not in features]
        if missing:
            raise ValueError(f"grid names unknown features {missing}; known: {features}")
        names = list(grid)
        arrays = [np.asarray(grid[f], dtype=float).ravel() for f in names]
        n = max(len(a) for a in arrays)
        values = np.full((len(names), n), np.nan)
        for k, a in enumerate(arrays):
            values[k, : len(a)] = a
        return xr.DataArray(values, dims=("feature", "x"), coords={"feature": names})
    raise TypeError(f"grid must be a dict or an xarray.DataArray (feature, x), got {type(grid).__name__}")


@dataclass
class AdditiveTruth:
    """Ground truth of :func:`make_additive`."""

    shapes: dict[str, str]
    """Feature name -> name of its true shape in :data:`SHAPES` (``"null"`` for null features)."""
    null_features: list[str]
    pair: tuple[str, str] | None
    """The planted interacting pair (``None`` when no interaction was planted)."""
    interaction_strength: float
    intercept: float
    noise: float
    task: str
    features: list[str] = field(default_factory=list)

    def f(self, feature: str, x) -> np.ndarray:
        """Uncentred true main effect of ``feature`` at ``x``."""
        if feature not in self.shapes:
            raise ValueError(f"unknown feature {feature!r}; known: {list(self.shapes)}")
        x = np.asarray(x, dtype=float)
        name = self.shapes[feature]
        return np.where(np.isnan(x), np.nan, 0.0) if name == "null" else SHAPES[name](x)

    def interaction(self, xa, xb) -> np.ndarray:
        """True pairwise term ``gamma * x_a * x_b`` (zero when none was planted)."""
        return self.interaction_strength * np.asarray(xa, float) * np.asarray(xb, float)

    def shape_functions(self, grid, X: pd.DataFrame, purified: bool = False) -> xr.DataArray:
        """True main effects on ``grid``, each centred by its mean over the reference data ``X``.

        ``grid`` is a dict ``{feature: values}`` or a DataArray ``(feature, x)`` (NaN-padded,
        e.g. ``est.shape_functions()["x_value"]``). Returns a DataArray ``(feature, x)``.

        ``purified``: the main effects of the functional-ANOVA decomposition of the whole true
        function under the product of the empirical marginals of ``X`` (the decomposition LA-NAM
        reports once it has pair subnetworks). Under the population marginals (uniform, mean 0)
        the planted term ``gamma x_a x_b`` is already a pure interaction; under the empirical ones
        it hands ``gamma x_a mean(x_b)`` to ``a`` (and symmetrically), which this adds.
        """
        g = _grid_frame(grid, self.features)
        names = g["feature"].values.tolist()
        values = g.values

        def main(f, x):
            out = self.f(f, x)
            if purified and self.pair is not None and f in self.pair:
                other = self.pair[1] if f == self.pair[0] else self.pair[0]
                out = out + self.interaction_strength * np.asarray(x, float) * float(X[other].mean())
            return out

        offsets = np.array([main(f, X[f].to_numpy()).mean() for f in names])
        out = np.stack([main(f, values[k]) for k, f in enumerate(names)]) - offsets[:, None]
        return xr.DataArray(
            out,
            dims=("feature", "x"),
            coords={"feature": names, "x_value": (("feature", "x"), values)},
            name="true_shape",
            attrs={"centred_by": "mean over the reference data", "purified": int(purified)},
        )


@dataclass
class AdditiveData:
    """Output of :func:`make_additive`: features, target and the ground truth."""

    X: pd.DataFrame
    y: pd.Series
    truth: AdditiveTruth


@renamed_arguments(seed="random_state")
def make_additive(
    n_samples: int = 1000,
    n_features: int = 4,
    n_null: int = 2,
    *,
    shapes: list[str] | None = None,
    interaction: tuple[int, int] | None = (0, 1),
    interaction_strength: float = 1.5,
    pair_correlation: float = 0.6,
    noise: float = 0.3,
    intercept: float = 0.5,
    task: str = "regression",
    random_state: int | None = 0,
) -> AdditiveData:
    """Draw an additive data set with known truth.

    Parameters
    ----------
    n_features, n_null : real (non-zero shape) and null (no effect) features; names ``x0 ...``,
        the null ones last.
    shapes : names from :data:`SHAPES` for the real features (default: cycle through them).
    interaction : indices (among the real features) of the planted pair, or ``None``.
    pair_correlation : Gaussian-copula correlation of the planted pair's inputs.
    noise : observation noise std (regression only).
    task : ``"regression"`` or ``"classification"`` (binary, labels 0/1).
    random_state : seed of the draw (None: fresh entropy). The old name ``seed`` still works for
        one release, with a FutureWarning.
    """
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    if n_features < 1 or n_null < 0:
        raise ValueError(f"need n_features >= 1 and n_null >= 0, got {n_features}, {n_null}")
    names = list(SHAPES)
    shapes = list(shapes) if shapes is not None else [names[i % len(names)] for i in range(n_features)]
    if len(shapes) != n_features:
        raise ValueError(f"shapes has {len(shapes)} entries but n_features={n_features}")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shapes {unknown}; choose from {names}")
    if interaction is not None:
        a, b = interaction
        if not (0 <= a < n_features and 0 <= b < n_features and a != b):
            raise ValueError(f"interaction {interaction} must be two distinct indices < n_features={n_features}")
    if not -1.0 < pair_correlation < 1.0:
        raise ValueError(f"pair_correlation must be in (-1, 1), got {pair_correlation}")

    rng = np.random.default_rng(random_state)
    d = n_features + n_null
    cov = np.eye(d)
    if interaction is not None:
        cov[a, b] = cov[b, a] = pair_correlation
    z = rng.standard_normal((n_samples, d)) @ np.linalg.cholesky(cov).T
    x = 2.0 * ndtr(z) - 1.0  # uniform marginals on [-1, 1]
    columns = [f"x{i}" for i in range(d)]
    X = pd.DataFrame(x, columns=columns)

    shape_map = {c: (shapes[i] if i < n_features else "null") for i, c in enumerate(columns)}
    pair = (columns[a], columns[b]) if interaction is not None else None
    truth = AdditiveTruth(
        shapes=shape_map,
        null_features=columns[n_features:],
        pair=pair,
        interaction_strength=float(interaction_strength) if pair else 0.0,
        intercept=float(intercept),
        noise=float(noise),
        task=task,
        features=columns,
    )
    f = intercept + sum(truth.f(c, x[:, i]) for i, c in enumerate(columns))
    if pair is not None:
        f = f + truth.interaction(x[:, a], x[:, b])
    if task == "regression":
        y = pd.Series(f + noise * rng.standard_normal(n_samples), name="y")
    else:
        y = pd.Series((rng.random(n_samples) < expit(f)).astype(int), name="y")
    return AdditiveData(X=X, y=y, truth=truth)
