"""Data and fits behind the LA-NAM explorer: data-set choices, CSV checks, a bounded fit cache.

A CSV upload is treated like spreadsheet tools treat it: the user names the target column (there is
no silent default), a numeric column holding a few text cells is reported with the offending rows
instead of silently becoming a categorical with hundreds of levels, and any column can be marked
categorical (numeric columns with few distinct values are suggested). Every problem is a
``ValueError`` whose message says what to do.

Fits are memoised with ``pn.cache(max_items=...)`` on the data-set choice and the settings (bounded,
so a long-running server does not grow), and each fit carries the interaction rankings it needs,
so changing the feature or the credible level never re-ranks the pairs.
"""

from __future__ import annotations

import io
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import panel as pn

from workbench.datasets import (
    available_tables,
    load_breast_cancer,
    load_diabetes,
    load_real,
    make_additive,
)
from workbench.nam import LaplaceAdditiveClassifier, LaplaceAdditiveRegressor

__all__ = [
    "DATASETS", "CHOOSE_TARGET", "LanamFit", "read_table", "numeric_text_cells", "suggest_categorical",
    "load_dataset", "fit_lanam", "epoch_hook",
]

#: the real tables of workbench.datasets.REAL_TABLES whose package is installed (#20.6)
REAL = [f"real: {n}" for n in available_tables() if n not in ("diabetes", "breast_cancer")]
DATASETS = ["synthetic", "diabetes", "breast cancer", *REAL, "uploaded CSV"]
#: the target selector's value until the user picks a column
CHOOSE_TARGET = "(choose the target column)"
#: numeric columns with at most this many distinct values are suggested as categorical
SUGGEST_LEVELS = 5
#: a numeric target with at most this many distinct values is a classification target
CLASS_LEVELS = 10


def read_table(csv: bytes) -> pd.DataFrame:
    """Parse an uploaded CSV; ``ValueError`` saying what is wrong when it cannot be used."""
    if not csv:
        raise ValueError("upload a CSV file first (header row, one column per feature and the target)")
    try:
        df = pd.read_csv(io.BytesIO(csv))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"could not read the CSV file ({err}); save it as comma-separated UTF-8 text "
                         "with a header row") from None
    if df.shape[1] < 2:
        raise ValueError(f"the CSV has {df.shape[1]} column(s) {list(df.columns)}; it needs a target "
                         "column and at least one feature column (is it comma-separated?)")
    if len(df) < 20:
        raise ValueError(f"the CSV has {len(df)} data rows; a fit needs at least 20")
    return df


def numeric_text_cells(df: pd.DataFrame, columns=None) -> dict[str, list[tuple[int, str]]]:
    """Columns that are numeric except for a few text cells -> [(row, text), ...].

    Rows count the first data row as 1 (the header is not a row). A column counts as numeric when
    at least half of its non-empty cells parse as numbers.
    """
    out = {}
    for col in columns if columns is not None else df.columns:
        s = df[col]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        filled = s.notna() & (s.astype(str).str.strip() != "")
        number = pd.to_numeric(s.where(filled), errors="coerce").notna()
        text = filled & ~number
        if text.any() and number.sum() >= text.sum():
            out[col] = [(int(i) + 1, str(v)) for i, v in s[text].items()]
    return out


def suggest_categorical(df: pd.DataFrame, target: str | None = None) -> list[str]:
    """Numeric feature columns with at most ``SUGGEST_LEVELS`` distinct values (e.g. 0/1 flags)."""
    return [c for c in df.columns if c != target and pd.api.types.is_numeric_dtype(df[c])
            and not pd.api.types.is_bool_dtype(df[c]) and df[c].nunique() <= SUGGEST_LEVELS]


def _csv_dataset(csv: bytes, target: str | None, categorical=()):
    df = read_table(csv)
    if target in (None, "", CHOOSE_TARGET):
        raise ValueError(f"choose the target column (one of {list(df.columns)}) under "
                         "'Target column (CSV)'")
    if target not in df.columns:
        raise ValueError(f"target column {target!r} is not in the CSV; its columns are {list(df.columns)}")
    unknown = [c for c in categorical if c not in df.columns]
    if unknown:
        raise ValueError(f"'Treat as categorical' names columns the CSV lacks: {unknown}")
    categorical = [c for c in categorical if c != target]
    bad = numeric_text_cells(df, [c for c in df.columns if c not in categorical])
    if bad:
        lines = []
        for col, cells in bad.items():
            shown = ", ".join(f"row {r}: {v!r}" for r, v in cells[:8])
            more = f" and {len(cells) - 8} more" if len(cells) > 8 else ""
            lines.append(f"column {col!r} is numeric but has text in {shown}{more}")
        raise ValueError("; ".join(lines) + ". Fix or empty those cells, or tick the column under "
                         "'Treat as categorical' if it really is one.")
    y = df[target]
    if y.isna().any():
        rows = (np.flatnonzero(y.isna().to_numpy()) + 1).tolist()
        raise ValueError(f"target column {target!r} is empty in rows {rows[:10]}; drop those rows")
    X = df.drop(columns=[target])
    for c in X.columns:
        if c in categorical or not pd.api.types.is_numeric_dtype(X[c]):
            X[c] = X[c].astype(str).astype("category")
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    if target in categorical or not numeric or y.nunique() <= CLASS_LEVELS:
        return X, y.astype(str), "classification"
    return X, y, "regression"


def load_dataset(name: str, csv: bytes | None = None, target: str | None = None, categorical=()):
    """-> (X, y, task) for a data-set choice of the dashboard (``ValueError`` saying what to do)."""
    if name == "synthetic":
        d = make_additive(600, 4, 2, interaction=(0, 1), pair_correlation=0.6, random_state=0)
        return d.X, d.y, "regression"
    if name == "diabetes":
        X, y = load_diabetes()
        return X, y, "regression"
    if name == "breast cancer":
        X, y = load_breast_cancer()
        return X, y, "classification"
    if name in REAL:
        return load_real(name.removeprefix("real: "))
    if name == "uploaded CSV":
        return _csv_dataset(csv, target, categorical)
    raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")


# -- fitting ------------------------------------------------------------------------------------
_HOOK = threading.local()


@contextmanager
def epoch_hook(fn):
    """Within this block, fits in this thread call ``fn(progress)`` after every epoch, with the
    estimator's :class:`workbench.progress.Progress` (``done``/``total``: epochs of the stage).

    The hook is not an argument of :func:`fit_lanam`, so it is not part of the cache key.
    """
    _HOOK.fn = fn
    try:
        yield
    finally:
        _HOOK.fn = None


def _on_epoch(progress):
    fn = getattr(_HOOK, "fn", None)
    if fn is not None:
        fn(progress)  # its return value is ignored: a stopped fit must not enter the cache


@dataclass
class LanamFit:
    """A fitted estimator plus the read-outs every view needs (computed once per fit)."""

    estimator: object
    task: str
    n_rows: int
    ranking: object  #: pairs ranked on the main-effects model (what chose the fitted pairs)
    final_ranking: object  #: pairs ranked on the final model (fitted pairs are now explained)
    report: pd.DataFrame
    note: str = ""
    _shapes: dict = field(default_factory=dict, repr=False)

    def shapes(self, level: float):
        """``shape_functions(level)`` (first class of a classifier), memoised per level."""
        if level not in self._shapes:
            sf = self.estimator.shape_functions(level=level)
            if "class" in sf.dims:
                sf = sf.isel({"class": -1})
            self._shapes[level] = sf
        return self._shapes[level]


@pn.cache(max_items=8)
def fit_lanam(dataset: str, csv: bytes | None, target: str | None, categorical: tuple,
              settings: tuple) -> LanamFit:
    """Fit an LA-NAM for a data-set choice and settings (memoised, at most 8 fits kept).

    ``settings`` is a sorted tuple of estimator arguments including ``interactions`` (pairs of the
    second stage). The first stage is fitted alone so its interaction ranking -- the one that picks
    the pairs -- can be shown next to the ranking of the final model.
    """
    X, y, task = load_dataset(dataset, csv, target, categorical)
    kwargs = dict(settings)
    k = int(kwargs.pop("interactions"))
    cls = LaplaceAdditiveRegressor if task == "regression" else LaplaceAdditiveClassifier
    est = cls(**kwargs, interactions=0, n_threads=1, callback=_on_epoch).fit(X, y)
    ranking = est.rank_interactions()
    note = ""
    if k:
        try:
            est.fit_interactions(k)
        except ValueError as err:  # e.g. fewer than two numeric features
            note = f"no interaction stage: {err}"
        else:
            est.set_params(interactions=k)
    est.set_params(callback=None)  # do not keep a page's callback alive in the cache
    final = est.rank_interactions() if est.interaction_pairs_ else ranking
    return LanamFit(est, task, len(X), ranking, final, est.feature_selection_report(), note)
