"""One estimator convention for the whole project (issue #19.3): scikit-learn's.

Every estimator of every capability is in :data:`REGISTRY`. Each one must be a
``BaseEstimator`` whose ``__init__`` only stores its arguments, survive ``clone`` and
``get_params`` / ``set_params`` round trips, use the project's names (``random_state``,
``n_threads``, ``device`` for torch estimators; never ``seed`` / ``num_threads``), and raise
``workbench.exceptions.NotFittedError`` (scikit-learn's) when asked to predict before ``fit``.
The tabular ones also pass scikit-learn's own estimator checks.

Estimators whose owners have not converted them yet are marked ``xfail(strict=True)`` per
(estimator, check) in :data:`PENDING`, with the owner named: the mark fails loudly as soon as the
check passes, so whoever converts an estimator deletes its line here.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.utils.estimator_checks import check_estimator, check_no_attributes_set_in_init

from workbench.exceptions import NotFittedError


@dataclass(frozen=True)
class Case:
    """How to build one estimator cheaply and how to ask it for a prediction."""

    name: str
    build: Callable[[], BaseEstimator]
    predict: Callable  # (estimator, inputs fixture) -> prediction
    inputs: str  # "table" | "images" | "recording"
    kind: str = ""  # "classifier" | "regressor" | "" (forecasters)
    torch: bool = True  # has a torch model: must take ``device``
    stochastic: bool = True  # has randomness: must take ``random_state``
    change: dict = field(default_factory=dict)  # a set_params round trip changes these
    sklearn_checks: bool = False  # run scikit-learn's check_estimator (tabular estimators)


def _spam():
    from workbench.sparsify import SpaM

    return SpaM(prior="map", n_epochs=10, device="cpu")


def _spam_marglik():
    from workbench.sparsify import SpaM

    return SpaM(prior="diagonal", n_epochs=10, n_epochs_burnin=1, marglik_frequency=5,
                n_hypersteps=5, device="cpu")


def _lam(kind):
    def build():
        from workbench.nam import LaplaceAdditiveClassifier, LaplaceAdditiveRegressor

        cls = LaplaceAdditiveClassifier if kind == "classifier" else LaplaceAdditiveRegressor
        return cls(n_hidden=16, n_epochs=25, n_epochs_burnin=5, marglik_frequency=5,
                   n_hypersteps=5)

    return build


def _equivariance():
    from workbench.equivariance import LearnedEquivarianceClassifier

    return LearnedEquivarianceClassifier(channels=(2, 2), strides=(1, 2), n_epochs=2)


def _invariance():
    from workbench.equivariance import LearnedInvarianceClassifier

    return LearnedInvarianceClassifier(hidden=(4,), n_epochs=2, n_samples=2)


def _baseline(cls_name, **kw):
    def build():
        from workbench.forecast import baselines

        return getattr(baselines, cls_name)(**kw)

    return build


def _video():
    from workbench.forecast.video.estimator import VideoForecaster

    return VideoForecaster(widths=(4, 8), n_steps=2)


def _last_layer():
    from workbench.forecast.video.uncertainty import LastLayerLaplace

    return LastLayerLaplace(_video())


def _predict_X(est, X):
    return est.predict(X)


def _predict_window(est, ds):
    return est.predict(ds, np.array([0]))


REGISTRY = [
    Case("SpaM", _spam, _predict_X, "table", "classifier", change={"n_epochs": 7},
         sklearn_checks=True),
    Case("SpaM-marglik", _spam_marglik, _predict_X, "table", "classifier",
         change={"prior": "unitwise"}, sklearn_checks=True),
    Case("LaplaceAdditiveRegressor", _lam("regressor"), _predict_X, "table", "regressor",
         change={"n_epochs": 7}, sklearn_checks=True),
    Case("LaplaceAdditiveClassifier", _lam("classifier"), _predict_X, "table", "classifier",
         change={"n_epochs": 7}, sklearn_checks=True),
    Case("LearnedEquivarianceClassifier", _equivariance, _predict_X, "images", "classifier",
         change={"n_epochs": 7}),
    Case("LearnedInvarianceClassifier", _invariance, _predict_X, "images", "classifier",
         change={"n_samples": 3}),
    Case("MeanBaseline", _baseline("MeanBaseline"), _predict_window, "recording", torch=False,
         stochastic=False, change={"context": 8}),
    Case("StimulusBaseline", _baseline("StimulusBaseline"), _predict_window, "recording",
         torch=False, stochastic=False, change={"context": 8}),
    Case("LinearBaseline", _baseline("LinearBaseline"), _predict_window, "recording",
         torch=False, stochastic=False, change={"context": 8}),
    Case("TSMixerBaseline", _baseline("TSMixerBaseline", max_checks=1, check_every=2), _predict_window,
         "recording", change={"ff_dim": 8}),
    Case("TimeMixBaseline", _baseline("TimeMixBaseline", max_checks=1, check_every=2), _predict_window,
         "recording", change={"n_blocks": 3}),
    Case("TiDEBaseline", _baseline("TiDEBaseline", max_checks=1, check_every=2), _predict_window,
         "recording", change={"hidden": 16}),
    Case("VideoForecaster", _video, _predict_window, "recording", change={"n_steps": 3}),
    Case("LastLayerLaplace", _last_layer, _predict_window, "recording",
         change={"prior_precision": 2.0}),
]
CASES = {c.name: c for c in REGISTRY}

#: (estimator, check) -> owner and what is missing; delete a line once its check passes
PENDING = {
}


def _cases(check):
    out = []
    for c in REGISTRY:
        if check == "sklearn_checks" and not c.sklearn_checks:
            continue
        reason = PENDING.get((c.name, check))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(c.name, id=c.name, marks=marks))
    return out


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 3))


@pytest.fixture(scope="module")
def images():
    return np.zeros((2, 1, 8, 8))


@pytest.fixture(scope="module")
def recording():
    try:
        from workbench.forecast import make_dataset
    except ImportError as err:  # e.g. a minimal GPU environment without the forecast extras
        pytest.skip(f"workbench.forecast is not importable here: {err}")
    return make_dataset("tiny", 0)


def _build(case: Case):
    try:
        return case.build()
    except ImportError as err:
        pytest.skip(f"{case.name} is not importable here: {err}")


def _params_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.nn.Module | BaseEstimator):
            assert type(x) is type(y), k
        else:
            assert x is y or x == y, k


@pytest.mark.parametrize("name", _cases("base"))
def test_is_a_scikit_learn_estimator_that_only_stores_in_init(name):
    case = CASES[name]
    est = _build(case)
    assert isinstance(est, BaseEstimator)
    assert is_classifier(est) == (case.kind == "classifier")
    assert is_regressor(est) == (case.kind == "regressor")
    check_no_attributes_set_in_init(name, est)


@pytest.mark.parametrize("name", _cases("clone"))
def test_clone(name):
    est = _build(CASES[name])
    copy = clone(est)
    assert copy is not est and type(copy) is type(est)
    _params_equal(copy.get_params(deep=False), est.get_params(deep=False))


@pytest.mark.parametrize("name", _cases("params"))
def test_get_set_params_round_trip(name):
    case = CASES[name]
    est = _build(case)
    before = est.get_params(deep=False)
    assert est.set_params(**before) is est
    _params_equal(est.get_params(deep=False), before)
    est.set_params(**case.change)
    after = clone(est).get_params(deep=False)
    for k, v in case.change.items():
        assert after[k] == v
    _params_equal({k: v for k, v in after.items() if k not in case.change},
                  {k: v for k, v in before.items() if k not in case.change})


@pytest.mark.parametrize("name", _cases("names"))
def test_one_name_per_concept(name):
    case = CASES[name]
    est = _build(case)
    params = est.get_params(deep=False)
    assert not {"seed", "num_threads", "n_jobs"} & set(params)
    if case.stochastic:
        assert "random_state" in params
    if case.torch:
        assert {"device", "n_threads"} <= set(params)
        default = inspect.signature(type(est)).parameters["device"].default
        assert default is None  # the convention's default: CUDA when available


@pytest.mark.parametrize("name", _cases("not_fitted"))
def test_not_fitted_error_before_fit(name, request):
    case = CASES[name]
    inputs = request.getfixturevalue(case.inputs)
    with pytest.raises(NotFittedError, match="not fitted"):
        case.predict(_build(case), inputs)


@pytest.mark.parametrize("name", _cases("sklearn_checks"))
def test_scikit_learn_estimator_checks(name):
    est = _build(CASES[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_num_threads(1)
        results = check_estimator(est, on_fail=None, on_skip=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results
              if r["status"] == "failed"]
    assert not failed, f"{len(failed)} of {len(results)} checks failed: {failed}"
