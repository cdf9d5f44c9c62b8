"""Tabular data: a synthetic additive generator with known ground truth, and loaders for the
small data sets bundled with scikit-learn (returned as pandas objects)."""

from workbench.datasets.loaders import load_breast_cancer, load_diabetes
from workbench.datasets.synthetic import SHAPES, AdditiveData, AdditiveTruth, make_additive

__all__ = [
    "SHAPES",
    "AdditiveData",
    "AdditiveTruth",
    "make_additive",
    "load_diabetes",
    "load_breast_cancer",
]
