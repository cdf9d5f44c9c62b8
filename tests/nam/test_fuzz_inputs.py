"""Every class of bad input at every public entry point of LA-NAM (#15).

Entry points: constructor parameters (checked by ``fit``), ``fit`` (X and y), ``predict``,
``predict_proba``, ``log_predictive_density``, ``shape_functions`` (grid, level),
``feature_selection_report``, ``fit_interactions``, ``interaction_functions``. Each case asserts a
clear ``ValueError`` / ``TypeError`` (or ``NotFittedError``) whose message names the argument,
column or rows, or a correct result (finite, right shape, labels from ``classes_``) - never a
silent NaN, a dropped column or misaligned values. ``pytest --collect-only -q
tests/nam/test_fuzz_inputs.py`` counts the parametrised cases; the hypothesis properties add
random tables of any float64 magnitude with missing values.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.exceptions import NotFittedError
from workbench.nam import LaplaceAdditiveClassifier, LaplaceAdditiveRegressor

FAST = dict(n_epochs=6, n_epochs_burnin=2, marglik_frequency=2, n_hypersteps=3, n_hidden=8,
            batch_size=64, n_threads=1, device="cpu")
N = 80


def _table(n=N, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.uniform(0, 10, n),
                      "c": pd.Categorical(rng.choice(["p", "q", "r"], n))})
    y = X["a"] + 0.1 * X["b"] + rng.normal(scale=0.3, size=n)
    return X, y.to_numpy()


X0, Y0 = _table()
YC = np.where(Y0 > np.median(Y0), 9, 3)  # labels {3, 9}: predictions must be labels, not indices


@pytest.fixture(scope="module")
def reg():
    return LaplaceAdditiveRegressor(**FAST).fit(X0, Y0)


@pytest.fixture(scope="module")
def clf():
    return LaplaceAdditiveClassifier(**FAST).fit(X0, YC)


def _set(X, col, row, value):
    X = X.copy()
    if X[col].dtype != object and isinstance(value, str):
        X[col] = X[col].astype(object)
    X.loc[row, col] = value
    return X


# -- constructor parameters (validated in fit) ---------------------------------------------------
BAD_PARAMS = [
    ("n_hidden", 0), ("n_hidden", -3), ("n_hidden", 2.5), ("n_hidden", True), ("n_hidden", "64"),
    ("n_epochs", 0), ("n_epochs", "auto"), ("patience", 0), ("patience", "never"), ("batch_size", "big"), ("batch_size", 0),
    ("n_epochs_burnin", -1), ("marglik_frequency", 0), ("n_hypersteps", -2), ("interactions", -1),
    ("interactions", True), ("n_epochs_interactions", 0), ("lr", 0.0), ("lr", -1e-3), ("lr", float("nan")),
    ("lr", float("inf")), ("lr", True), ("lr_hyp", 0), ("prior_precision", -1.0),
    ("prior_precision", float("nan")), ("prior_precision", "1"), ("switch_off_threshold", 1.5),
    ("switch_off_threshold", float("nan")), ("hessian_structure", "diag"), ("max_ordinal_levels", -1),
    ("max_ordinal_levels", 2.5), ("feature_types", "numeric"), ("feature_types", {"zz": "numeric"}),
    ("feature_types", {"a": "integer"}), ("random_state", -1), ("random_state", "seed"),
    ("random_state", 1.5), ("device", "nonsense"), ("device", 3), ("n_threads", 0), ("n_threads", "2"),
    ("callback", 5),
]


@pytest.mark.parametrize("name,value", BAD_PARAMS, ids=[f"{n}={v!r}" for n, v in BAD_PARAMS])
def test_bad_constructor_parameter_is_named(name, value):
    est = LaplaceAdditiveRegressor(**{**FAST, name: value})
    with pytest.raises((ValueError, TypeError), match=name if name != "feature_types" else "feature_types|column"):
        est.fit(X0, Y0)


# -- fit: bad X ------------------------------------------------------------------------------------
A = X0[["a", "b"]].to_numpy()
BAD_FIT_X = {
    "None": (None, TypeError, "None"),
    "series": (X0["a"], TypeError, "2-D"),
    "1-d": (A[:, 0], ValueError, "2-D"),
    "3-d": (A[:, :, None], ValueError, "2-D"),
    "0 rows": (A[:0], ValueError, "n_samples=0"),
    "1 row": (A[:1], ValueError, "n_samples=1"),
    "0 features": (A[:, :0], ValueError, "0 feature"),
    "inf": (_set(X0, "b", 4, np.inf), ValueError, r"infinite.*'b'.*\[4\]"),
    "-inf": (_set(X0, "a", 7, -np.inf), ValueError, r"infinite.*'a'"),
    "complex": (A + 1j, ValueError, "Complex"),
    "complex column": (X0.assign(a=X0["a"] + 1j), ValueError, r"Complex.*'a'"),
    "sparse": (scipy.sparse.csr_matrix(A), TypeError, "sparse"),
    "strings": (np.full((N, 2), "a"), ValueError, "dtype"),
    "object with text": (np.column_stack([A, np.full(N, "x", dtype=object)]).astype(object), ValueError,
                         r"column 'x2'.*non-numeric.*rows"),
    "dict cell": (np.array([[{"k": 1}, 1.0]] * N, dtype=object), TypeError, "string or a number"),
    "stray ?": (_set(_set(X0, "b", 3, "?"), "b", 11, "?"), ValueError, r"column 'b'.*'\?'.*rows \[3, 11\]"),
    "stray n/a text": (_set(X0, "a", 0, "n/a"), ValueError, r"column 'a'.*n/a.*rows \[0\]"),
    "all-NaN column": (X0.assign(a=np.nan), ValueError, r"'a'.*no observed values"),
    "constant column": (X0.assign(b=2.0), ValueError, r"constant.*'b'"),
    "constant categorical": (X0.assign(c=pd.Categorical(["p"] * N)), ValueError, r"constant.*'c'"),
    "duplicated columns": (pd.concat([X0, X0[["a"]]], axis=1), ValueError, r"duplicated.*'a'"),
}


@pytest.mark.parametrize("case", list(BAD_FIT_X))
def test_bad_training_X_is_named(case):
    X, err, match = BAD_FIT_X[case]
    y = Y0[: len(X)] if hasattr(X, "__len__") and not scipy.sparse.issparse(X) and X is not None else Y0
    with pytest.raises(err, match=match):
        LaplaceAdditiveRegressor(**FAST).fit(X, y)


# -- fit: bad y ------------------------------------------------------------------------------------
BAD_Y = {
    "None": (LaplaceAdditiveRegressor, None, "y"),
    "short": (LaplaceAdditiveRegressor, Y0[:-5], "y has 75 samples but X has 80"),
    "long": (LaplaceAdditiveRegressor, np.r_[Y0, Y0[:3]], "y has 83 samples"),
    "nan": (LaplaceAdditiveRegressor, np.where(np.arange(N) == 2, np.nan, Y0), r"1 missing.*\[2\]"),
    "inf": (LaplaceAdditiveRegressor, np.where(np.arange(N) == 2, np.inf, Y0), "infinite"),
    "2-d": (LaplaceAdditiveRegressor, np.c_[Y0, Y0], "1-D"),
    "text": (LaplaceAdditiveRegressor, np.array(["a"] * N), "numeric"),
    "constant": (LaplaceAdditiveRegressor, np.ones(N), "constant"),
    "complex": (LaplaceAdditiveRegressor, Y0 + 1j, "complex"),
    "one class": (LaplaceAdditiveClassifier, np.zeros(N), "1 class"),
    "continuous labels": (LaplaceAdditiveClassifier, np.where(Y0 > 0, 0.3, 0.7) + 1e-3 * Y0, "continuous"),
    "nan label": (LaplaceAdditiveClassifier, np.where(np.arange(N) == 0, None, YC).astype(object), "missing"),
    "short labels": (LaplaceAdditiveClassifier, YC[:50], "y has 50 samples"),
}


@pytest.mark.parametrize("case", list(BAD_Y))
def test_bad_target_is_named(case):
    cls, y, match = BAD_Y[case]
    with pytest.raises(ValueError, match=match):
        cls(**FAST).fit(X0, y)


# -- predict / predict_proba / log_predictive_density: bad X ----------------------------------------
BAD_PRED_X = {
    "float32 overflow": (_set(X0, "a", 5, 1e39), r"'a'.*rows \[5\].*float32"),
    "float64 huge": (_set(X0, "b", 0, 1e300), r"'b'.*rows \[0\]"),
    "inf": (_set(X0, "a", 1, np.inf), r"infinite.*'a'"),
    "stray text": (_set(X0, "b", 2, "?"), r"'b'.*\?.*rows \[2\]"),
    "unseen category": (X0.assign(c=X0["c"].astype(str).where(X0.index != 0, "zz")), r"'c'.*zz"),
    "missing column": (X0[["a", "c"]], r"missing \['b'\]"),
    "extra column": (X0.assign(d=1.0), r"unexpected \['d'\]"),
    "0 rows": (X0.iloc[:0], "0 samples"),
    "numpy without categoricals": (X0.to_numpy(), "DataFrame"),
    "1-d": (X0["a"].to_numpy(), "2-D"),
    "complex": (X0.assign(a=X0["a"] + 1j), "Complex"),
    "bool for numeric": (X0.assign(a=X0["a"] > 0), "'a' was numeric"),
}


@pytest.mark.parametrize("method", ["predict", "predict_std", "predict_proba", "lpd"])
@pytest.mark.parametrize("case", list(BAD_PRED_X))
def test_bad_prediction_input_is_named(reg, clf, method, case):
    X, match = BAD_PRED_X[case]
    est = clf if method in ("predict_proba",) else reg
    call = {
        "predict": lambda: est.predict(X),
        "predict_std": lambda: est.predict(X, return_std=True),
        "predict_proba": lambda: est.predict_proba(X),
        "lpd": lambda: est.log_predictive_density(X, Y0[: len(X)] if hasattr(X, "__len__") else Y0),
    }[method]
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_missing_values_and_classes_are_correct_results(reg, clf):
    X = X0.copy()
    X.loc[:9, "a"] = np.nan
    X["c"] = X["c"].astype(object)
    X.loc[10:14, "c"] = np.nan
    mu, sd = reg.predict(X, return_std=True)
    assert mu.shape == (N,) and np.isfinite(mu).all() and np.isfinite(sd).all()
    assert set(np.unique(clf.predict(X))) <= {3, 9} and clf.predict(X).dtype == YC.dtype
    p = clf.predict_proba(X)
    assert p.shape == (N, 2) and np.allclose(p.sum(1), 1) and np.isfinite(p).all()
    assert np.isfinite(clf.log_predictive_density(X, YC)).all()
    # a column of float64 magnitude 1e200 standardises exactly: it is used, not silently dropped
    Xb = X0.assign(b=X0["b"] * 1e200)
    big = LaplaceAdditiveRegressor(**FAST).fit(Xb, Y0)
    assert np.isfinite(big.preprocessor_.scale_).all()
    assert np.allclose(big.predict(Xb), reg.predict(X0), rtol=1e-5, atol=1e-5)


LPD_BAD = {
    "short y (classifier)": ("clf", YC[:55], "y has 55 samples but X has 80"),
    "long y (classifier)": ("clf", np.r_[YC, YC[:1]], "y has 81 samples"),
    "unseen label": ("clf", np.where(np.arange(N) == 4, 7, YC), r"not seen in fit \['7'\] in rows \[4\]"),
    "text labels": ("clf", np.array(["x"] * N), "not seen in fit"),
    "nan label": ("clf", np.where(np.arange(N) == 0, None, YC).astype(object), "missing"),
    "short y (regressor)": ("reg", Y0[:55], "y has 55 samples but X has 80"),
    "nan y (regressor)": ("reg", np.where(np.arange(N) == 0, np.nan, Y0), "missing or infinite"),
    "2-d y": ("reg", np.c_[Y0, Y0], "1-D"),
}


@pytest.mark.parametrize("case", list(LPD_BAD))
def test_log_predictive_density_checks_y(reg, clf, case):
    which, y, match = LPD_BAD[case]
    with pytest.raises(ValueError, match=match):
        {"clf": clf, "reg": reg}[which].log_predictive_density(X0, y)


@pytest.mark.parametrize("pred_type", ["nn", None, 3])
def test_bad_pred_type(reg, clf, pred_type):
    with pytest.raises(ValueError, match="pred_type"):
        reg.predict(X0, pred_type=pred_type)
    with pytest.raises(ValueError, match="pred_type"):
        clf.predict_proba(X0, pred_type=pred_type)


# -- shape_functions / feature_selection_report / interactions --------------------------------------
BAD_GRID = {
    "1 point": (1, ValueError, "at least 2"),
    "0 points": (0, ValueError, "at least 2"),
    "bool": (True, (TypeError, ValueError), "grid"),
    "string": ("fine", TypeError, "grid must be"),
    "list": ([1, 2, 3], TypeError, "grid must be"),
    "unknown feature": ({"zz": [1, 2]}, ValueError, r"unknown features \['zz'\]"),
    "empty dict": ({}, ValueError, "empty"),
    "empty values": ({"a": []}, ValueError, "'a'.*non-empty"),
    "2-d values": ({"a": [[1, 2], [3, 4]]}, ValueError, "'a'.*1-D"),
    "nan value": ({"a": [0.0, np.nan]}, ValueError, "'a'.*non-finite"),
    "inf value": ({"b": [0.0, np.inf]}, ValueError, "'b'.*non-finite"),
    "text for numeric": ({"a": ["x", "y"]}, ValueError, "'a'.*numeric"),
    "overflow": ({"a": [0.0, 1e39]}, ValueError, "'a'.*float32"),
    "unknown level": ({"c": ["p", "zz"]}, ValueError, r"'c'.*unknown categories \['zz'\]"),
}


@pytest.mark.parametrize("case", list(BAD_GRID))
def test_bad_shape_function_grid_is_named(reg, case):
    grid, err, match = BAD_GRID[case]
    with pytest.raises(err, match=match):
        reg.shape_functions(grid=grid)


@pytest.mark.parametrize("level", [0, 1, -0.5, 1.5, float("nan"), "0.9", True, None])
def test_bad_level(reg, level):
    with pytest.raises(ValueError, match="level"):
        reg.shape_functions(level=level)


@pytest.mark.parametrize("threshold", [-0.1, 1.0, float("nan"), "0.1", True])
def test_bad_selection_threshold(reg, threshold):
    with pytest.raises(ValueError, match="threshold"):
        reg.feature_selection_report(threshold=threshold)


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "1"])
def test_bad_interaction_count(reg, k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        reg.fit_interactions(k)


def test_interaction_functions_of_an_unfitted_pair(reg):
    with pytest.raises(ValueError, match="no fitted interaction"):
        reg.interaction_functions(("a", "b"))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "shape_functions", "feature_selection_report",
                                    "rank_interactions", "training_data", "fit_interactions", "lpd"])
def test_not_fitted(method):
    est = LaplaceAdditiveClassifier(**FAST)
    call = {"predict": lambda: est.predict(X0), "predict_proba": lambda: est.predict_proba(X0),
            "shape_functions": est.shape_functions, "feature_selection_report": est.feature_selection_report,
            "rank_interactions": est.rank_interactions, "training_data": est.training_data,
            "fit_interactions": lambda: est.fit_interactions(1),
            "lpd": lambda: est.log_predictive_density(X0, YC)}[method]
    with pytest.raises(NotFittedError, match="not fitted"):
        call()


# -- properties: random tables of any float64 magnitude, with missing values -------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scale=st.floats(-250, 250), shift=st.floats(-100, 100), frac=st.floats(0, 0.4), seed=st.integers(0, 10**6))
def test_any_float64_magnitude_fits_and_predicts_finite_with_missing_values(reg, scale, shift, frac, seed):
    """Columns of magnitude 10**scale (shifted by shift x their spread) with a fraction missing:
    the fit standardises exactly; predictions are finite or raise naming the column."""
    rng = np.random.default_rng(seed)
    X = X0[["a", "b"]].copy() * 10.0**scale + shift * 10.0**scale
    X = X.mask(rng.random(X.shape) < frac)
    X.iloc[0] = X0[["a", "b"]].iloc[0] * 10.0**scale  # at least one observed value per column
    X.iloc[1] = X0[["a", "b"]].iloc[1] * 10.0**scale
    est = LaplaceAdditiveRegressor(**{**FAST, "n_epochs": 2, "n_epochs_burnin": 1}).fit(X, Y0)
    mu, sd = est.predict(X, return_std=True)
    assert mu.shape == (N,) and np.isfinite(mu).all() and np.isfinite(sd).all()
    far = X.iloc[:3].copy()
    far.iloc[:, 0] = 10.0 ** min(scale + 40, 300)
    try:
        out = est.predict(far)
    except ValueError as err:
        assert "'a'" in str(err) and "rows" in str(err)
    else:
        assert np.isfinite(out).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none(),
                                 st.sampled_from(["?", "", "NA", "1e400", "-"])), min_size=N, max_size=N))
def test_random_cells_in_a_numeric_column_give_a_named_error_or_a_finite_prediction(reg, values):
    X = X0.copy()
    X["a"] = pd.Series(values, dtype=object)
    try:
        mu = reg.predict(X)
    except (ValueError, TypeError) as err:
        assert "'a'" in str(err)
    else:
        assert mu.shape == (N,) and np.isfinite(mu).all()
