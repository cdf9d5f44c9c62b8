"""Input validation and the tabular preprocessing of LA-NAM (fitted only inside ``fit``).

Numeric columns are standardised (mean / std of the training data); categorical columns
(pandas ``category``/``object``/``string``/``bool`` dtypes) are mapped to integer codes of the
levels seen in training. Every error names the offending column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types as ptypes


def _is_categorical(s: pd.Series) -> bool:
    return (
        isinstance(s.dtype, pd.CategoricalDtype)
        or ptypes.is_object_dtype(s.dtype)
        or ptypes.is_string_dtype(s.dtype)
        or ptypes.is_bool_dtype(s.dtype)
    )


def _as_frame(X, feature_names: list[str] | None, what: str = "X") -> tuple[pd.DataFrame, bool]:
    """DataFrame view of X; the flag says whether X came as a DataFrame."""
    if isinstance(X, pd.DataFrame):
        bad = [c for c in X.columns if not isinstance(c, str)]
        if bad:
            X = X.rename(columns={c: str(c) for c in bad})
        if X.columns.duplicated().any():
            dup = X.columns[X.columns.duplicated()].tolist()
            raise ValueError(f"{what} has duplicated column names {dup}")
        return X, True
    if isinstance(X, pd.Series):
        raise TypeError(f"{what} must be 2-D (n_samples, n_features); got a pandas Series")
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, n_features); got shape {arr.shape}")
    names = feature_names or [f"x{i}" for i in range(arr.shape[1])]
    if len(names) != arr.shape[1]:
        raise ValueError(f"{what} has {arr.shape[1]} columns but the model was fitted on {len(names)}")
    frame = pd.DataFrame(arr, columns=names)
    if arr.dtype == object:  # numpy object arrays: every column must parse as numbers
        for c in names:
            converted = pd.to_numeric(frame[c], errors="coerce")
            bad = frame[c][converted.isna() & frame[c].notna()]
            if len(bad):
                raise ValueError(
                    f"column {c!r} of {what} contains non-numeric values (e.g. {bad.iloc[0]!r}); "
                    "pass a pandas DataFrame with a categorical dtype for categorical features"
                )
            frame[c] = converted
    return frame, False


class TabularPreprocessor:
    """Validate and encode tabular input: standardised numerics, integer-coded categoricals."""

    def fit(self, X) -> TabularPreprocessor:
        frame, self.from_frame_ = _as_frame(X, None)
        if len(frame) < 2:
            raise ValueError(f"X needs at least 2 samples, got {len(frame)}")
        self.feature_names_ = [str(c) for c in frame.columns]
        self.categorical_ = [c for c in self.feature_names_ if _is_categorical(frame[c])]
        self.numeric_ = [c for c in self.feature_names_ if c not in self.categorical_]
        self._check_missing(frame, "X")
        num = frame[self.numeric_].to_numpy(dtype=np.float64) if self.numeric_ else np.zeros((len(frame), 0))
        if not np.isfinite(num).all():
            bad = [c for k, c in enumerate(self.numeric_) if not np.isfinite(num[:, k]).all()]
            raise ValueError(f"X has infinite values in column(s) {bad}")
        self.mean_ = num.mean(0)
        self.scale_ = num.std(0)
        const = [c for k, c in enumerate(self.numeric_) if not self.scale_[k] > 1e-12 * max(1.0, abs(self.mean_[k]))]
        self.categories_: dict[str, list] = {}
        for c in self.categorical_:
            s = frame[c]
            levels = list(s.cat.categories) if isinstance(s.dtype, pd.CategoricalDtype) else sorted(s.unique().tolist(), key=str)
            used = set(s.unique().tolist())
            self.categories_[c] = [v for v in levels if v in used]
            if len(self.categories_[c]) < 2:
                const.append(c)
        if const:
            raise ValueError(f"X has constant column(s) {const}: they carry no information; drop them")
        self.dtypes_ = {c: ("categorical" if c in self.categorical_ else "numeric") for c in self.feature_names_}
        return self

    @staticmethod
    def _check_missing(frame: pd.DataFrame, what: str) -> None:
        na = frame.isna().any()
        if na.any():
            raise ValueError(f"{what} has missing values (NaN) in column(s) {na[na].index.tolist()}")

    @property
    def n_categories_(self) -> list[int]:
        return [len(self.categories_[c]) for c in self.categorical_]

    def frame(self, X) -> pd.DataFrame:
        """Validate X against the fitted columns; returns it as a DataFrame in fitted order."""
        frame, is_frame = _as_frame(X, self.feature_names_ if not isinstance(X, pd.DataFrame) else None)
        if is_frame:
            cols = [str(c) for c in frame.columns]
            missing = [c for c in self.feature_names_ if c not in cols]
            extra = [c for c in cols if c not in self.feature_names_]
            if missing or extra:
                raise ValueError(
                    f"X columns do not match the fitted feature names: missing {missing}, unexpected {extra}"
                )
            frame = frame[self.feature_names_]
        elif self.categorical_:
            raise TypeError(
                f"the model was fitted with categorical column(s) {self.categorical_}; pass a pandas DataFrame"
            )
        self._check_missing(frame, "X")
        for c in self.numeric_:
            s = frame[c]
            if not (ptypes.is_numeric_dtype(s.dtype) and not ptypes.is_bool_dtype(s.dtype)):
                raise ValueError(f"column {c!r} was numeric when fitted but now has dtype {s.dtype}")
        return frame

    def transform(self, X) -> tuple[np.ndarray, np.ndarray]:
        """-> (standardised numerics (N, F_num) float64, category codes (N, F_cat) int64)."""
        frame = self.frame(X)
        num = frame[self.numeric_].to_numpy(dtype=np.float64) if self.numeric_ else np.zeros((len(frame), 0))
        if not np.isfinite(num).all():
            bad = [c for k, c in enumerate(self.numeric_) if not np.isfinite(num[:, k]).all()]
            raise ValueError(f"X has infinite values in column(s) {bad}")
        num = (num - self.mean_) / self.scale_
        codes = np.zeros((len(frame), len(self.categorical_)), dtype=np.int64)
        for k, c in enumerate(self.categorical_):
            lookup = {v: i for i, v in enumerate(self.categories_[c])}
            col = frame[c].astype(object)
            unseen = sorted({v for v in col.unique().tolist() if v not in lookup}, key=str)
            if unseen:
                raise ValueError(f"column {c!r} has categories not seen in fit: {unseen[:5]}")
            codes[:, k] = col.map(lookup).to_numpy(dtype=np.int64)
        return num, codes

    def to_original(self, feature: str, z: np.ndarray) -> np.ndarray:
        k = self.numeric_.index(feature)
        return z * self.scale_[k] + self.mean_[k]

    def to_standard(self, feature: str, x: np.ndarray) -> np.ndarray:
        k = self.numeric_.index(feature)
        return (np.asarray(x, float) - self.mean_[k]) / self.scale_[k]


def check_target(y, n_samples: int, task: str) -> np.ndarray:
    """Validate y (length, NaN, type); returns a 1-D array."""
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValueError(f"y must be 1-D; got a DataFrame with {y.shape[1]} columns")
        y = y.iloc[:, 0]
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-D; got shape {arr.shape}")
    if len(arr) != n_samples:
        raise ValueError(f"y has {len(arr)} samples but X has {n_samples}")
    if task == "regression":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"y must be numeric for regression: {err}") from None
        if not np.isfinite(arr).all():
            raise ValueError(f"y has {int((~np.isfinite(arr)).sum())} missing or infinite value(s)")
        if arr.std() == 0:
            raise ValueError("y is constant")
    else:
        if pd.isna(pd.Series(arr)).any():
            raise ValueError(f"y has {int(pd.isna(pd.Series(arr)).sum())} missing value(s)")
    return arr
