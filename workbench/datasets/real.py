"""Real tables that ship inside PyPI packages (nothing is downloaded at run time).

:data:`REAL_TABLES` maps a name to a :class:`RealTable`: its ``load()`` returns ``(X, y, task)``
with ``X`` a DataFrame (categorical columns as pandas ``category``, missing values as NaN), ``y``
a Series and ``task`` ``"regression"`` or ``"classification"``. The scikit-learn tables are always
available; the others need the ``benchmarks`` extra (``statsmodels``, ``palmerpenguins``), and
their loaders raise an ``ImportError`` naming the package otherwise (``available_tables()`` lists
what loads here).

    >>> from workbench.datasets import REAL_TABLES
    >>> X, y, task = REAL_TABLES["penguins"].load()              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.datasets.loaders import load_breast_cancer, load_diabetes


@dataclass(frozen=True)
class RealTable:
    """One real table: where it comes from and how to load it."""

    name: str
    task: str  # "regression" | "classification"
    source: str  # the package (and data set) it ships in
    description: str
    loader: Callable[[], tuple[pd.DataFrame, pd.Series]]
    package: str | None = None  # the optional package it needs (None: scikit-learn)

    def load(self) -> tuple[pd.DataFrame, pd.Series, str]:
        X, y = self.loader()
        return X, y, self.task


def _require(package: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ImportError(f"this table ships with the {package!r} package: pip install 'workbench[benchmarks]' "
                          f"(or pip install {package}); {err}") from None


def _diabetes():
    return load_diabetes()


def _breast_cancer():
    return load_breast_cancer()


def _fair():
    sm = _require("statsmodels.api")
    df = sm.datasets.fair.load_pandas().data
    y = (df["affairs"] > 0).astype(int).rename("had_affair")
    return df.drop(columns="affairs").reset_index(drop=True), y.reset_index(drop=True)


def _randhie():
    sm = _require("statsmodels.api")
    df = sm.datasets.randhie.load_pandas().data
    y = np.log1p(df["mdvis"]).rename("log1p_mdvis")
    return df.drop(columns="mdvis").reset_index(drop=True), y.reset_index(drop=True)


def _anes96():
    sm = _require("statsmodels.api")
    df = sm.datasets.anes96.load_pandas().data
    X = df.drop(columns=["vote", "popul"])  # logpopul carries popul
    return X.reset_index(drop=True), df["vote"].astype(int).rename("vote_dole").reset_index(drop=True)


def _fertility():
    sm = _require("statsmodels.api")
    df = sm.datasets.fertility.load_pandas().data
    years = ["1960", "1970", "1980", "1990"]
    df = df[df["2010"].notna()].reset_index(drop=True)
    X = df[years].rename(columns=lambda c: f"fertility_{c}")
    return X, df["2010"].astype(float).rename("fertility_2010")


def _penguins():
    pp = _require("palmerpenguins")
    df = pp.load_penguins()
    df = df[df["body_mass_g"].notna()].reset_index(drop=True)
    X = df.drop(columns="body_mass_g")
    for c in ("species", "island", "sex"):
        X[c] = pd.Categorical(X[c].astype(object).where(X[c].notna(), None))
    return X, df["body_mass_g"].astype(float)


REAL_TABLES: dict[str, RealTable] = {t.name: t for t in [
    RealTable("diabetes", "regression", "scikit-learn (load_diabetes)",
              "442 patients, 10 baseline variables (sex categorical); disease progression after one year",
              _diabetes),
    RealTable("breast_cancer", "classification", "scikit-learn (load_breast_cancer)",
              "569 tumours, 30 numeric features; benign (1) vs malignant", _breast_cancer),
    RealTable("penguins", "regression", "palmerpenguins (load_penguins)",
              "342 penguins: body mass from bill/flipper sizes, species, island, sex (11 sex values missing)",
              _penguins, "palmerpenguins"),
    RealTable("fertility", "regression", "statsmodels (datasets.fertility, World Bank)",
              "countries' fertility rate in 2010 from 1960-1990 (8-11 % missing per year)",
              _fertility, "statsmodels"),
    RealTable("fair", "classification", "statsmodels (datasets.fair, Fair 1978)",
              "6366 women: any extramarital affair from 8 survey answers (all few-valued)", _fair, "statsmodels"),
    RealTable("anes96", "classification", "statsmodels (datasets.anes96)",
              "944 voters in 1996: Dole vs Clinton from party id, left-right scales, age, education, income",
              _anes96, "statsmodels"),
    RealTable("randhie", "regression", "statsmodels (datasets.randhie, RAND health insurance experiment)",
              "20190 person-years: log(1 + doctor visits) from insurance and health variables", _randhie,
              "statsmodels"),
]}


def available_tables() -> list[str]:
    """Names of the real tables whose package is importable here."""
    import importlib.util

    return [n for n, t in REAL_TABLES.items()
            if t.package is None or importlib.util.find_spec(t.package.split(".")[0]) is not None]


def load_real(name: str) -> tuple[pd.DataFrame, pd.Series, str]:
    """``REAL_TABLES[name].load()`` with the valid names in the error."""
    if name not in REAL_TABLES:
        raise ValueError(f"unknown real table {name!r}; choose from {list(REAL_TABLES)}")
    return REAL_TABLES[name].load()
