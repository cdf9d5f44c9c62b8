"""Input validation and the tabular preprocessing of LA-NAM (fitted only inside ``fit``).

Every column gets one of three kinds (reported in ``TabularPreprocessor.dtypes_``):

* ``"numeric"``: standardised by the mean / std of its observed training values; a missing value
  (NaN) stays NaN, and the model imputes the training mean inside the subnetwork and adds the
  feature's learned missing-value offset (:class:`workbench.nam.modules.MissingGroup`).
* ``"categorical"`` (pandas ``category``/``object``/``string``/``bool`` dtypes): integer codes of
  the levels seen in training, plus one extra ``missing`` level (the last code) for NaN.
* ``"ordinal"``: a numeric column with few distinct values (at most ``max_ordinal_levels`` and at
  least two rows per value on average, e.g. a 0/1 flag or a count of children) is an ordered
  categorical: one table entry per value (sorted), so no continuous shape with a band across the
  empty gaps between the values. ``feature_types`` overrides the choice per column.

Every error names the offending column (and rows where it helps). Statistics are computed so
that columns of any float64 magnitude (e.g. 1e200) standardise exactly; only inputs whose
*standardised* value would overflow the float32 the model computes in are rejected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

FEATURE_TYPES = ("numeric", "categorical", "ordinal")
F32_MAX = float(np.finfo(np.float32).max)
#: standardised inputs beyond this are rejected: the subnetworks' products would overflow float32
Z_MAX = 1e30


def _is_categorical(s: pd.Series) -> bool:
    return (
        isinstance(s.dtype, pd.CategoricalDtype)
        or ptypes.is_object_dtype(s.dtype)
        or ptypes.is_string_dtype(s.dtype)
        or ptypes.is_bool_dtype(s.dtype)
    )


def _rows(mask, limit: int = 10) -> list:
    idx = np.flatnonzero(np.asarray(mask))
    return idx[:limit].tolist() + (["..."] if len(idx) > limit else [])


def stray_text(s: pd.Series) -> tuple[pd.Series, np.ndarray] | None:
    """For a text column that is mostly numbers: (the values that are not, their row mask)."""
    if isinstance(s.dtype, pd.CategoricalDtype) or ptypes.is_bool_dtype(s.dtype):
        return None
    if not (ptypes.is_object_dtype(s.dtype) or ptypes.is_string_dtype(s.dtype)):
        return None
    present = s.notna().to_numpy()
    converted = pd.to_numeric(s.where(present), errors="coerce")
    bad = present & converted.isna().to_numpy()
    n_good = int((present & ~bad).sum())
    if bad.any() and n_good >= bad.sum() and n_good >= 0.5 * present.sum():
        return s[bad], bad
    return None


def _as_frame(X, feature_names: list[str] | None, what: str = "X",
              owner: str = "the model") -> tuple[pd.DataFrame, bool]:
    """DataFrame view of X; the flag says whether X came as a DataFrame."""
    if X is None:
        raise TypeError(f"{what} must be a 2-D array or DataFrame, got None")
    try:
        from scipy import sparse

        if sparse.issparse(X):
            raise TypeError(f"{what} is a sparse matrix; LA-NAM needs dense input (e.g. X.toarray())")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(X, pd.DataFrame):
        bad = [c for c in X.columns if not isinstance(c, str)]
        if bad:
            X = X.rename(columns={c: str(c) for c in bad})
        if X.columns.duplicated().any():
            dup = X.columns[X.columns.duplicated()].tolist()
            raise ValueError(f"{what} has duplicated column names {dup}")
        complex_cols = [c for c in X.columns if ptypes.is_complex_dtype(X[c].dtype)]
        if complex_cols:
            raise ValueError(f"Complex data not supported: {what} has complex values in column(s) {complex_cols}")
        return X, True
    if isinstance(X, pd.Series):
        raise TypeError(f"{what} must be 2-D (n_samples, n_features); got a pandas Series")
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, n_features); got shape {arr.shape}. "
                         "Reshape your data with X.reshape(-1, 1) for a single feature")
    if np.iscomplexobj(arr):
        raise ValueError(f"Complex data not supported: {what} has complex values")
    names = feature_names or [f"x{i}" for i in range(arr.shape[1])]
    if len(names) != arr.shape[1]:
        raise ValueError(f"{what} has {arr.shape[1]} features, but {owner} is expecting {len(names)} features "
                         "as input")
    frame = pd.DataFrame(arr, columns=names)
    if arr.dtype == object:  # numpy object arrays: every column must parse as numbers
        for c in names:
            odd = frame[c].map(lambda v: not isinstance(v, (str, bytes, int, float, np.number, type(None))))
            if odd.any():
                raise TypeError(f"argument must be a string or a number: column {c!r} of {what} holds "
                                f"{type(frame[c][odd].iloc[0]).__name__} values in rows {_rows(odd)}")
            converted = pd.to_numeric(frame[c], errors="coerce")
            bad = converted.isna() & frame[c].notna()
            if bad.any():
                raise ValueError(
                    f"column {c!r} of {what} contains non-numeric values {frame[c][bad].unique()[:5].tolist()} "
                    f"in rows {_rows(bad)}; pass a pandas DataFrame with a categorical dtype for "
                    "categorical features"
                )
            frame[c] = converted
    elif not (ptypes.is_numeric_dtype(arr.dtype) or ptypes.is_bool_dtype(arr.dtype)):
        raise ValueError(f"{what} has dtype {arr.dtype}; pass numbers, or a DataFrame for categorical columns")
    return frame, False


def _stats(x: np.ndarray) -> tuple[float, float]:
    """Mean and std of the finite values of ``x``, exact for any float64 magnitude."""
    m = float(np.abs(x).max())
    if m == 0:
        return 0.0, 0.0
    u = x / m
    return float(u.mean() * m), float(u.std() * m)


class TabularPreprocessor:
    """Validate and encode tabular input: standardised numerics (NaN kept), integer-coded
    categoricals and ordinals (with a ``missing`` code)."""

    def __init__(self, max_ordinal_levels: int = 10, feature_types: dict | None = None,
                 owner: str = "the model"):
        self.max_ordinal_levels = max_ordinal_levels
        self.feature_types = feature_types
        self.owner = owner  # the estimator's name, for messages

    def _kinds(self, frame: pd.DataFrame) -> dict[str, str]:
        given = dict(self.feature_types or {})
        unknown = [c for c in given if c not in frame.columns]
        if unknown:
            raise ValueError(f"feature_types names unknown column(s) {unknown}; columns: {list(frame.columns)}")
        bad = {c: t for c, t in given.items() if t not in FEATURE_TYPES}
        if bad:
            raise ValueError(f"feature_types values must be one of {FEATURE_TYPES}, got {bad}")
        kinds = {}
        for c in frame.columns:
            s = frame[c]
            if s.isna().all():
                raise ValueError(f"column {c!r} of X has no observed values (all NaN); drop it")
            if c in given:
                kinds[c] = given[c]
                if kinds[c] != "categorical" and _is_categorical(s) and not ptypes.is_bool_dtype(s.dtype):
                    conv = pd.to_numeric(s, errors="coerce")
                    if (conv.isna() & s.notna()).any():
                        raise ValueError(f"column {c!r} is {kinds[c]} by feature_types but has non-numeric values")
                continue
            stray = stray_text(s)
            if stray is not None:
                values, mask = stray
                raise ValueError(
                    f"column {c!r} is numeric except for {int(mask.sum())} value(s) "
                    f"{sorted(map(str, values.unique()))[:5]} in rows {_rows(mask)}: "
                    f"convert them to NaN (missing, e.g. pd.to_numeric(X[{c!r}], errors='coerce')) or set "
                    f"feature_types={{{c!r}: 'categorical'}} to treat the column as categorical"
                )
            if _is_categorical(s):
                kinds[c] = "categorical"
                continue
            observed = s.dropna()
            n_unique = observed.nunique()
            few = n_unique <= self.max_ordinal_levels and 2 * n_unique <= len(observed)
            kinds[c] = "ordinal" if (few or (n_unique == 1 and s.isna().any())) else "numeric"
        return kinds

    def fit(self, X) -> TabularPreprocessor:
        m = self.max_ordinal_levels
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
            raise ValueError(f"max_ordinal_levels must be a non-negative integer, got {m!r}")
        if self.feature_types is not None and not isinstance(self.feature_types, dict):
            raise TypeError(f"feature_types must be a dict {{column: kind}} or None, got {type(self.feature_types).__name__}")
        frame, self.from_frame_ = _as_frame(X, None, owner=self.owner)
        if frame.shape[1] == 0:
            raise ValueError(f"Found array with 0 feature(s) (shape={frame.shape}) while a minimum of 1 is required.")
        if len(frame) < 2:
            raise ValueError(f"X has n_samples={len(frame)}; at least 2 samples are needed")
        self.feature_names_ = [str(c) for c in frame.columns]
        self.dtypes_ = self._kinds(frame)
        self.categorical_ = [c for c in self.feature_names_ if self.dtypes_[c] != "numeric"]
        self.numeric_ = [c for c in self.feature_names_ if self.dtypes_[c] == "numeric"]
        self.missing_fraction_ = {c: float(frame[c].isna().mean()) for c in self.feature_names_}
        self._fit_numeric(frame)
        self.categories_: dict[str, list] = {}
        const = [c for k, c in enumerate(self.numeric_) if not self.scale_[k] > 0]
        for c in self.categorical_:
            s = frame[c]
            observed = s.dropna()
            if self.dtypes_[c] == "ordinal":
                levels = sorted(pd.to_numeric(observed).unique().tolist())
            elif isinstance(s.dtype, pd.CategoricalDtype):
                used = set(observed.unique().tolist())
                levels = [v for v in s.cat.categories if v in used]
            else:
                levels = sorted(observed.unique().tolist(), key=str)
            self.categories_[c] = levels
            if len(levels) + (len(observed) < len(s)) < 2:
                const.append(c)
        if const:
            raise ValueError(f"X has constant column(s) {const}: they carry no information; drop them")
        return self

    def _fit_numeric(self, frame: pd.DataFrame) -> None:
        self.mean_ = np.zeros(len(self.numeric_))
        self.scale_ = np.zeros(len(self.numeric_))
        for k, c in enumerate(self.numeric_):
            x = frame[c].to_numpy(dtype=np.float64)
            if np.isinf(x).any():
                raise ValueError(f"X has infinite values in column {c!r} (rows {_rows(np.isinf(x))})")
            x = x[~np.isnan(x)]
            if len(x) == 0:
                raise ValueError(f"column {c!r} of X has no observed values (all NaN); drop it")
            self.mean_[k], self.scale_[k] = _stats(x)
            if not self.scale_[k] > 1e-12 * max(abs(self.mean_[k]), 1e-300):
                self.scale_[k] = 0.0

    @property
    def n_categories_(self) -> list[int]:
        """Table size of every categorical / ordinal column: its levels plus the ``missing`` level."""
        return [len(self.categories_[c]) + 1 for c in self.categorical_]

    def frame(self, X) -> pd.DataFrame:
        """Validate X against the fitted columns; returns it as a DataFrame in fitted order."""
        frame, is_frame = _as_frame(X, self.feature_names_ if not isinstance(X, pd.DataFrame) else None,
                                    owner=self.owner)
        if len(frame) == 0:
            raise ValueError("X has 0 samples; at least 1 is needed")
        if is_frame:
            cols = [str(c) for c in frame.columns]
            missing = [c for c in self.feature_names_ if c not in cols]
            extra = [c for c in cols if c not in self.feature_names_]
            if missing or extra:
                raise ValueError(
                    f"X columns do not match the fitted feature names: missing {missing}, unexpected {extra}"
                )
            frame = frame[self.feature_names_]
        elif any(self.dtypes_[c] == "categorical" for c in self.categorical_):
            raise TypeError(
                f"the model was fitted with categorical column(s) {self.categorical_}; pass a pandas DataFrame"
            )
        for c in self.numeric_ + [c for c in self.categorical_ if self.dtypes_[c] == "ordinal"]:
            s = frame[c]
            if ptypes.is_bool_dtype(s.dtype):
                raise ValueError(f"column {c!r} was numeric when fitted but now has dtype {s.dtype}")
            if ptypes.is_numeric_dtype(s.dtype):
                continue
            conv = pd.to_numeric(s, errors="coerce")
            bad = (conv.isna() & s.notna()).to_numpy()
            detail = f" with non-numeric values {sorted(map(str, s[bad].unique()))[:5]} in rows {_rows(bad)}"
            raise ValueError(f"column {c!r} was numeric when fitted but now has dtype {s.dtype}"
                             + (detail if bad.any() else "; convert it with pd.to_numeric"))
        return frame

    def transform(self, X) -> tuple[np.ndarray, np.ndarray]:
        """-> (standardised numerics (N, F_num) float64, NaN where missing; category codes
        (N, F_cat) int64, the last code of each column meaning missing)."""
        frame = self.frame(X)
        num = frame[self.numeric_].to_numpy(dtype=np.float64) if self.numeric_ else np.zeros((len(frame), 0))
        if np.isinf(num).any():
            bad = [c for k, c in enumerate(self.numeric_) if np.isinf(num[:, k]).any()]
            raise ValueError(f"X has infinite values in column(s) {bad}")
        with np.errstate(over="ignore"):
            num = (num - self.mean_) / self.scale_
        too_big = np.abs(np.nan_to_num(num)) > Z_MAX
        if too_big.any():
            k = int(np.flatnonzero(too_big.any(0))[0])
            c = self.numeric_[k]
            raise ValueError(
                f"column {c!r} has values in rows {_rows(too_big[:, k])} (e.g. {frame[c].iloc[int(np.flatnonzero(too_big[:, k])[0])]!r}) "
                f"about 1e30 or more training standard deviations ({self.scale_[k]:.3g}) from the training mean: "
                "beyond what the model computes in float32"
            )
        codes = np.zeros((len(frame), len(self.categorical_)), dtype=np.int64)
        for k, c in enumerate(self.categorical_):
            codes[:, k] = self._codes(c, frame[c])
        return num, codes

    def _codes(self, c: str, s: pd.Series) -> np.ndarray:
        levels = self.categories_[c]
        missing = s.isna().to_numpy()
        if self.dtypes_[c] == "ordinal":
            vals = pd.to_numeric(s).to_numpy(dtype=np.float64)
            idx = np.searchsorted(np.asarray(levels, dtype=np.float64), np.where(missing, levels[0], vals))
            idx = np.minimum(idx, len(levels) - 1)
            unseen = ~missing & (np.asarray(levels, dtype=np.float64)[idx] != vals)
            if unseen.any():
                raise ValueError(
                    f"column {c!r} was fitted as ordinal (levels {levels[:10]}) and has values not seen in "
                    f"fit {sorted(set(vals[unseen].tolist()))[:5]} in rows {_rows(unseen)}; set "
                    f"feature_types={{{c!r}: 'numeric'}} (or a smaller max_ordinal_levels) to fit a continuous shape"
                )
            return np.where(missing, len(levels), idx)
        lookup = {v: i for i, v in enumerate(levels)}
        col = s.astype(object)
        unseen = sorted({v for v in col[~missing].unique().tolist() if v not in lookup}, key=str)
        if unseen:
            raise ValueError(f"column {c!r} has categories not seen in fit: {unseen[:5]}")
        return np.where(missing, len(levels), col.map(lookup).fillna(len(levels)).to_numpy(dtype=np.int64))

    def check_standard(self, feature: str, x: np.ndarray, what: str) -> None:
        """Raise if values of a numeric feature are too far out for the float32 model."""
        with np.errstate(over="ignore"):
            z = np.abs(self.to_standard(feature, x))
        if (z > Z_MAX).any():
            raise ValueError(f"{what} has values (e.g. {np.asarray(x)[z > Z_MAX][0]!r}) about 1e30 or more "
                             "training standard deviations from the training mean: beyond what the model "
                             "computes in float32")

    def to_standard(self, feature: str, x: np.ndarray) -> np.ndarray:
        k = self.numeric_.index(feature)
        return (np.asarray(x, float) - self.mean_[k]) / self.scale_[k]


def check_target(y, n_samples: int, task: str) -> np.ndarray:
    """Validate y (presence, length, NaN, type); returns a 1-D array."""
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValueError(f"y must be 1-D; got a DataFrame with {y.shape[1]} columns")
        y = y.iloc[:, 0]
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        import warnings

        from sklearn.exceptions import DataConversionWarning

        warnings.warn("A column-vector y was passed when a 1d array was expected; it is raveled",
                      DataConversionWarning, stacklevel=3)
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-D; got shape {arr.shape}")
    if len(arr) != n_samples:
        raise ValueError(f"y has {len(arr)} samples but X has {n_samples}")
    if np.iscomplexobj(arr):
        raise ValueError("y has complex values")
    if task == "regression":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"y must be numeric for regression: {err}") from None
        if not np.isfinite(arr).all():
            raise ValueError(f"y has {int((~np.isfinite(arr)).sum())} missing or infinite value(s) "
                             f"(rows {_rows(~np.isfinite(arr))})")
        if _stats(arr)[1] == 0:
            raise ValueError("y is constant")
    else:
        if pd.isna(pd.Series(arr)).any():
            raise ValueError(f"y has {int(pd.isna(pd.Series(arr)).sum())} missing value(s)")
    return arr
