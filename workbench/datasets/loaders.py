"""Loaders for the tabular data sets bundled with scikit-learn, as pandas objects."""

from __future__ import annotations

import pandas as pd
from sklearn import datasets as _skd


def load_diabetes() -> tuple[pd.DataFrame, pd.Series]:
    """Diabetes progression (442 patients, 10 baseline variables; regression).

    Returns the *unscaled* variables (age in years, BMI, blood pressure, six serum
    measurements) with ``sex`` as a categorical column (levels ``"1"``/``"2"``), and the
    target (a quantitative disease-progression score one year after baseline).
    """
    bunch = _skd.load_diabetes(as_frame=True, scaled=False)
    X = bunch.data.copy()
    X["sex"] = pd.Categorical(X["sex"].astype(int).astype(str))
    y = bunch.target.rename("progression").astype(float)
    return X, y


def load_breast_cancer() -> tuple[pd.DataFrame, pd.Series]:
    """Wisconsin breast cancer (569 samples, 30 numeric features; binary classification).

    The target is 1 for benign and 0 for malignant (scikit-learn's coding).
    """
    bunch = _skd.load_breast_cancer(as_frame=True)
    return bunch.data.copy(), bunch.target.rename("benign").astype(int)
