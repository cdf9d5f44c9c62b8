"""Every class of bad input at every public entry point of learned equivariance / LILA (#15).

Each case asserts a clear ``ValueError`` / ``TypeError`` (or ``NotFittedError``) naming the
argument, or a correct result: labels from ``classes_``, deterministic predictions, no NaN.
``pytest --collect-only -q tests/equivariance/test_fuzz_inputs.py`` counts the cases.
"""

import math

import numpy as np
import pytest
import torch

from workbench.equivariance import (
    LearnedEquivarianceClassifier,
    LearnedInvarianceClassifier,
    cached_run,
    equivariance_score,
    layer_readout,
    load_run,
    make_task,
    run_equivariance,
    run_invariance,
    save_run,
)
from workbench.equivariance.augmentation import AffineAugmentation
from workbench.exceptions import NotFittedError

EQ = dict(channels=(2, 2), strides=(1, 2), n_epochs=2, batch_size=20, n_epochs_burnin=0,
          n_hypersteps=2, device="cpu")
INV = dict(transforms=("rotate", "translate_x"), hidden=(4,), n_samples=2, n_samples_eval=3,
           n_epochs=2, n_epochs_burnin=0, n_hypersteps=1, batch_size=20, device="cpu")
KINDS = {"equivariance": (LearnedEquivarianceClassifier, EQ),
         "invariance": (LearnedInvarianceClassifier, INV)}


@pytest.fixture(scope="module")
def data():
    t = make_task("translated", 40, 12, canvas=8, random_state=0)
    return t.X_train, t.y_train, t.X_test, t.y_test


@pytest.fixture(scope="module")
def fitted(data):
    X, y, Xt, yt = data
    return {k: cls(**kw).fit(X, y) for k, (cls, kw) in KINDS.items()}


def _est(kind, **kw):
    cls, base = KINDS[kind]
    return cls(**{**base, **kw})


def _with(X, idx, value):
    X = np.array(X, dtype=np.float64, copy=True)
    X[idx] = value
    return X


# -- fit: images --------------------------------------------------------------------------
def _bad_X(X):
    return {
        "nan": (_with(X, (3, 0, 2, 2), np.nan), ValueError, r"X contains NaN or inf \(images \[3\]"),
        "inf": (_with(X, (0, 0, 0, 0), np.inf), ValueError, "NaN or inf"),
        "3-d": (X[:, 0], ValueError, r"\(N, C, H, W\).*X\[:, None\]"),
        "2-d table": (X.reshape(len(X), -1), ValueError, r"\(N, C, H, W\) images"),
        "0 images": (X[:0], ValueError, "0 images"),
        "strings": (np.full(X.shape, "a"), TypeError, "real numbers"),
        "complex": (X + 1j, TypeError, "real numbers"),
        "None": (None, ValueError, "X is None"),
    }


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", list(_bad_X(np.zeros((4, 1, 8, 8)))))
def test_fit_rejects_bad_images(data, kind, case):
    X, y = data[0], data[1]
    bad, err, match = _bad_X(X)[case]
    with pytest.raises(err, match=match):
        _est(kind).fit(bad, y)


@pytest.mark.parametrize("kind", list(KINDS))
def test_float32_overflow_is_an_error(data, kind):
    X, y = data[0], data[1]
    with pytest.raises(ValueError, match="beyond the range of torch.float32"):
        _est(kind, dtype="float32").fit(_with(X, (0, 0, 1, 1), 1e39), y)


# -- fit: labels and validation data -----------------------------------------------------------
def _bad_y(y):
    return {
        "continuous 0.3/0.7": (np.where(y > 4, 0.7, 0.3), ValueError, "Unknown label type"),
        "nan label": (np.where(np.arange(len(y)) == 2, np.nan, y.astype(float)), ValueError,
                      "NaN"),
        "too short": (y[:10], ValueError, "y must be a vector of 40 labels"),
        "2-d": (np.c_[y, y], ValueError, "y must be a vector of 40 labels"),
        "one class": (np.zeros_like(y), ValueError, "one class"),
        "None": (None, ValueError, "y is None"),
    }


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", list(_bad_y(np.arange(4))))
def test_fit_rejects_bad_labels(data, kind, case):
    X, y = data[0], data[1]
    bad, err, match = _bad_y(y)[case]
    with pytest.raises(err, match=match):
        _est(kind).fit(X, bad)


@pytest.mark.parametrize("kind", list(KINDS))
def test_fit_rejects_bad_validation_data(data, kind):
    X, y, Xt, yt = data
    with pytest.raises(ValueError, match="both X_val and y_val"):
        _est(kind).fit(X, y, Xt)
    with pytest.raises(ValueError, match=r"X_val has image shape \(1, 4, 4\)"):
        _est(kind).fit(X, y, Xt[:, :, :4, :4], yt)
    with pytest.raises(ValueError, match="X_val contains NaN"):
        _est(kind).fit(X, y, _with(Xt, (0, 0, 0, 0), np.nan), yt)
    with pytest.raises(ValueError, match=r"y_val has labels \[42\] that are not among"):
        _est(kind).fit(X, y, Xt, np.where(np.arange(len(yt)) == 0, 42, yt))
    with pytest.raises(ValueError, match="y_val must be a vector of 12"):
        _est(kind).fit(X, y, Xt, yt[:3])


# -- settings ---------------------------------------------------------------------------
COMMON_BAD = {
    "n_epochs=-3": (dict(n_epochs=-3), ValueError, "n_epochs must be >= 1"),
    "n_epochs=0": (dict(n_epochs=0), ValueError, "n_epochs must be >= 1"),
    "n_epochs=2.5": (dict(n_epochs=2.5), TypeError, "n_epochs must be an int >= 1"),
    "batch_size=0": (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    "marglik_frequency=0": (dict(marglik_frequency=0), ValueError, "marglik_frequency"),
    "n_epochs_burnin=-1": (dict(n_epochs_burnin=-1), ValueError, "n_epochs_burnin"),
    "n_hypersteps=-1": (dict(n_hypersteps=-1), ValueError, "n_hypersteps must be >= 0"),
    "lr=nan": (dict(lr=math.nan), ValueError, "lr must be finite and > 0"),
    "lr=0": (dict(lr=0.0), ValueError, "lr must be"),
    "lr_hyp=inf": (dict(lr_hyp=math.inf), ValueError, "lr_hyp"),
    "prior_precision=nan": (dict(prior_precision=math.nan), ValueError, "prior_precision"),
    "prior_precision=-1": (dict(prior_precision=-1.0), ValueError, "prior_precision"),
    "prior_precision='1'": (dict(prior_precision="1"), TypeError, "prior_precision"),
    "device='tpu'": (dict(device="tpu"), ValueError, "device="),
    "dtype=int": (dict(dtype=torch.int32), ValueError, "dtype must be float32 or float64"),
    "random_state=-1": (dict(random_state=-1), ValueError, "random_state must be >= 0"),
    "random_state=1.5": (dict(random_state=1.5), TypeError, "random_state"),
    "n_threads=0": (dict(n_threads=0), ValueError, "n_threads"),
    "callback='print'": (dict(callback="print"), TypeError, "callback must be callable"),
}
EQ_BAD = {
    "prior_structure": (dict(prior_structure="unitwise"), ValueError, "prior_structure"),
    "optimizer": (dict(optimizer="rmsprop"), ValueError, "optimizer must be one of"),
    "lr_min > lr": (dict(lr_min=1.0), ValueError, "lr_min"),
    "pathways": (dict(pathways="mlp"), ValueError, "pathways"),
    "kernel_size=0": (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    "free_init=-1": (dict(free_init=-1.0), ValueError, "free_init"),
}
INV_BAD = {
    "transforms": (dict(transforms=("shear",)), ValueError, "transforms"),
    "n_samples=0": (dict(n_samples=0), ValueError, "n_samples must be >= 1"),
    "n_samples_eval=0": (dict(n_samples_eval=0), ValueError, "n_samples_eval must be >= 1"),
    "init_amplitude=1": (dict(init_amplitude=1.0), ValueError, "init_amplitude"),
    "marglik_subset=0": (dict(marglik_subset=0), ValueError, "marglik_subset must be >= 1"),
}
SETTINGS = [("equivariance", k) for k in [*COMMON_BAD, *EQ_BAD]] + \
    [("invariance", k) for k in [*COMMON_BAD, *INV_BAD]]


@pytest.mark.parametrize("kind, case", SETTINGS, ids=[f"{k}-{c}" for k, c in SETTINGS])
def test_fit_rejects_bad_settings(data, kind, case):
    kw, err, match = {**COMMON_BAD, **EQ_BAD, **INV_BAD}[case]
    est = _est(kind, **kw)  # __init__ only stores
    with pytest.raises(err, match=match):
        est.fit(data[0], data[1])


# -- prediction ---------------------------------------------------------------------------
def _bad_predict(X):
    return {
        "nan": (_with(X[:3], (1, 0, 0, 0), np.nan), ValueError, "NaN or inf"),
        "wrong size": (np.zeros((2, 1, 16, 16)), ValueError,
                       r"image shape \(1, 16, 16\).*\(1, 8, 8\)"),
        "wrong channels": (np.zeros((2, 3, 8, 8)), ValueError, r"image shape \(3, 8, 8\)"),
        "3-d": (X[:3, 0], ValueError, r"X\[:, None\]"),
        "0 images": (X[:0], ValueError, "0 images"),
        "strings": (np.full((2, 1, 8, 8), "x"), TypeError, "real numbers"),
    }


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function", "score"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", list(_bad_predict(np.zeros((3, 1, 8, 8)))))
def test_predict_rejects_bad_images(data, fitted, method, kind, case):
    bad, err, match = _bad_predict(data[2])[case]
    args = (bad, np.zeros(len(bad), int)) if method == "score" else (bad,)
    with pytest.raises(err, match=match):
        getattr(fitted[kind], method)(*args)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function", "score"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_not_fitted(data, kind, method):
    args = (data[2], data[3]) if method == "score" else (data[2],)
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        getattr(_est(kind), method)(*args)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("labels", [(3, 9), ("cat", "dog"), (-1, 1)])
def test_predict_returns_values_of_classes_(data, kind, labels):
    X, y = data[0], data[1]
    yy = np.asarray(labels)[(y >= 5).astype(int)]
    est = _est(kind).fit(X, yy, data[2], np.asarray(labels)[(data[3] >= 5).astype(int)])
    assert est.classes_.tolist() == sorted(labels)
    pred = est.predict(data[2])
    assert set(pred.tolist()) <= set(labels)  # never an argmax index such as 8
    proba = est.predict_proba(data[2])
    assert proba.shape == (12, 2) and np.isfinite(proba).all()
    np.testing.assert_array_equal(pred, est.classes_[proba.argmax(1)])
    assert est.score(data[2], np.asarray(labels)[(data[3] >= 5).astype(int)]) == \
        pytest.approx(float(np.mean(pred == np.asarray(labels)[(data[3] >= 5).astype(int)])))


@pytest.mark.parametrize("kind", list(KINDS))
def test_prediction_is_deterministic(data, fitted, kind):
    est = fitted[kind]
    a = est.predict_proba(data[2])
    torch.manual_seed(1)  # the global RNG plays no part
    b = est.predict_proba(data[2])
    np.testing.assert_array_equal(a, b)
    # each image's answer does not depend on the others in the batch
    np.testing.assert_allclose(est.predict_proba(data[2][3:5]), a[3:5], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(est.predict(data[2]), est.classes_[a.argmax(1)])


def test_invariance_refit_reproduces_predictions(data):
    X, y, Xt, _ = data
    a = _est("invariance").fit(X, y).predict_proba(Xt)
    b = _est("invariance").fit(X, y).predict_proba(Xt)
    np.testing.assert_array_equal(a, b)
    c = _est("invariance", random_state=5).fit(X, y).predict_proba(Xt)
    assert not np.array_equal(a, c)


# -- runs, tasks, read-outs, augmentation -------------------------------------------------
@pytest.mark.parametrize("call, err, match", [
    (lambda: make_task("mnist"), ValueError, "unknown task 'mnist'"),
    (lambda: make_task("translated", canvas=4), ValueError, "canvas must be an integer >= 8"),
    (lambda: make_task("quadrant", canvas=12), ValueError, "canvas >= 16"),
    (lambda: make_task("rotated", max_rotation=4.0), ValueError, "max_rotation"),
    (lambda: make_task("translated", n_train=0), ValueError, "n_train and n_test must be >= 1"),
    (lambda: make_task("translated", random_state=-3), ValueError, "random_state"),
    (lambda: run_equivariance("rotated"), ValueError, "'translated' or 'quadrant'"),
    (lambda: run_equivariance("translated", model="mlp"), ValueError, "unknown model 'mlp'"),
    (lambda: run_invariance(n_train=0), ValueError, "n_train"),
    (lambda: cached_run("other"), ValueError, "kind must be"),
    (lambda: cached_run("equivariance", seed=0, random_state=0), TypeError, "random_state"),
    (lambda: save_run({"a": 1}, "/tmp/x.nc"), TypeError, "xarray.Dataset"),
    (lambda: load_run("/nonexistent/run.nc"), FileNotFoundError, "no saved run"),
    (lambda: layer_readout(torch.nn.Linear(2, 2)), TypeError, "SoftEquivariantNet"),
    (lambda: equivariance_score(np.array([-1.0]), np.array([1.0])), ValueError, "non-negative"),
    (lambda: AffineAugmentation(("shear",)), ValueError, "transforms"),
    (lambda: AffineAugmentation(n_samples=0), ValueError, "n_samples"),
    (lambda: AffineAugmentation(init_amplitude=0.0), ValueError, "init_amplitude"),
    (lambda: AffineAugmentation(("rotate",)).set_amplitudes([4.0]), ValueError, "amplitudes"),
    (lambda: AffineAugmentation()(torch.zeros(2, 8, 8)), ValueError, r"\(N, C, H, W\)"),
])
def test_helpers_reject(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_deprecated_names_still_work(data):
    import workbench.equivariance as eqv

    with pytest.warns(FutureWarning, match="'seed'.*'random_state'"):
        est = LearnedEquivarianceClassifier(seed=4)
    assert est.random_state == 4
    with pytest.warns(FutureWarning, match="random_state"):
        assert est.seed == 4
    with pytest.warns(FutureWarning, match="seed"):
        a = make_task("translated", 5, 5, canvas=8, seed=2)
    np.testing.assert_array_equal(a.X_train, make_task("translated", 5, 5, canvas=8,
                                                       random_state=2).X_train)
    with pytest.warns(FutureWarning, match="workbench.equivariance.models.SoftEquivariantNet"):
        from workbench.equivariance.models import SoftEquivariantNet

        assert eqv.SoftEquivariantNet is SoftEquivariantNet
    epochs = []
    with pytest.warns(FutureWarning, match="positional arguments is deprecated"):
        _est("equivariance", callback=lambda e, n, h: epochs.append((e, n, h.sizes["epoch"]))
             ).fit(data[0], data[1])
    assert epochs == [(0, 2, 1), (1, 2, 2)]


def test_callback_can_stop_training(data):
    seen = []

    def cb(p):
        seen.append(p)
        return True

    est = _est("invariance", n_epochs=5, callback=cb).fit(data[0], data[1])
    assert len(seen) == 1 and seen[0].stage == "train" and seen[0].total == 5
    assert est.history_.sizes["epoch"] == 1 and np.isfinite(est.predict_proba(data[2])).all()
    assert set(seen[0].metrics) == {"loss", "log_marglik", "train_accuracy", "val_accuracy"}
