"""Toy problems and studies behind the Laplace playground (dashboard and tutorial).

Everything returns xarray objects so the dashboard and the notebook plot the same results.
"""

from .problems import PROBLEMS, ToyProblem, make_problem
from .study import PlaygroundResult, fit_playground, make_mlp, marglik_curve, predictive_grid

__all__ = [
    "PROBLEMS",
    "ToyProblem",
    "make_problem",
    "PlaygroundResult",
    "fit_playground",
    "make_mlp",
    "marglik_curve",
    "predictive_grid",
]
