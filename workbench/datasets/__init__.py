"""Tabular data: a synthetic additive generator with known ground truth, and loaders for the
small data sets bundled with scikit-learn (returned as pandas objects), and :data:`REAL_TABLES`:
real tables shipped inside PyPI packages (:mod:`workbench.datasets.real`)."""

from workbench.datasets.loaders import load_breast_cancer, load_diabetes
from workbench.datasets.real import REAL_TABLES, RealTable, available_tables, load_real
from workbench.datasets.synthetic import SHAPES, AdditiveData, AdditiveTruth, make_additive

__all__ = [
    "SHAPES",
    "AdditiveData",
    "AdditiveTruth",
    "make_additive",
    "load_diabetes",
    "load_breast_cancer",
    "REAL_TABLES",
    "RealTable",
    "available_tables",
    "load_real",
]
