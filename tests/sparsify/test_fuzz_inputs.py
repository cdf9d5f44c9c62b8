"""Every class of bad input at every public entry point of SpaM and the sparsity curve (#15).

Each case asserts a clear ``ValueError`` / ``TypeError`` (or ``NotFittedError``) whose message
names the argument, or a correct result - never a silent NaN, a truncated label or a wrong shape.
The cases are parametrised; ``pytest --collect-only -q tests/sparsify/test_fuzz_inputs.py``
counts them.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from workbench.exceptions import NotFittedError
from workbench.sparsify import SpaM, curve_settings, make_model, make_task, score_network
from workbench.sparsify.masks import PruningMask, global_prune

FAST = dict(n_epochs=3, n_epochs_burnin=1, marglik_frequency=1, n_hypersteps=3, device="cpu")
PRIORS = ["map", "diagonal"]


def _problem(n=60, d=5, seed=0, labels=(0, 1)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.asarray(labels)[(X[:, 0] + 0.3 * X[:, 1] > 0).astype(int)]
    return X, y


@pytest.fixture(scope="module")
def fitted():
    X, y = _problem()
    return {p: SpaM(prior=p, **FAST).fit(X, y) for p in PRIORS}


def _with(X, i, j, value):
    X = X.copy()
    X[i, j] = value
    return X


# -- fit: bad X -----------------------------------------------------------------------------
X0, Y0 = _problem()
BAD_X = {
    "nan": (_with(X0, 3, 2, np.nan), ValueError, "NaN"),
    "inf": (_with(X0, 0, 0, np.inf), ValueError, "infinity"),
    "-inf": (_with(X0, 5, 1, -np.inf), ValueError, "infinity"),
    "1-d": (X0[:, 0], ValueError, "2D array"),
    "3-d": (X0.reshape(60, 5, 1), ValueError, r"\(n_samples, C, H, W\)"),
    "0 rows": (X0[:0], ValueError, "0 sample"),
    "0 features": (X0[:, :0], ValueError, "0 feature"),
    "complex": (X0 + 1j, ValueError, "[Cc]omplex"),
    "strings": (np.full((60, 5), "a"), ValueError, "convert"),
    "ragged": ([[1.0, 2.0], [3.0]] * 30, ValueError, "inhomogeneous|sequence"),
}


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("case", list(BAD_X))
def test_fit_rejects_bad_X(prior, case):
    X, err, match = BAD_X[case]
    with pytest.raises(err, match=match):
        SpaM(prior=prior, **FAST).fit(X, Y0)


@pytest.mark.parametrize("prior", PRIORS)
def test_float32_overflow_is_an_error_not_inf(prior):
    X = _with(X0, 1, 1, 1e39)  # finite in float64, inf in float32
    with pytest.raises(ValueError, match="beyond the range of torch.float32"):
        SpaM(prior=prior, dtype="float32", **FAST).fit(X, Y0)
    est = SpaM(prior="map", dtype=torch.float32, **FAST).fit(X0, Y0)
    with pytest.raises(ValueError, match="beyond the range"):
        est.predict_proba(X[:3])


# -- fit: bad y -----------------------------------------------------------------------------
BAD_Y = {
    "continuous 0.3/0.7": (np.where(Y0 == 1, 0.7, 0.3), ValueError, "Unknown label type"),
    "nan label": (np.where(np.arange(60) == 4, np.nan, Y0.astype(float)), ValueError, "NaN"),
    "inf label": (np.where(np.arange(60) == 4, np.inf, Y0.astype(float)), ValueError, "inf"),
    "too short": (Y0[:50], ValueError, "60 rows but y has 50"),
    "too long": (np.r_[Y0, Y0], ValueError, "60 rows but y has 120"),
    "2-d multi-output": (np.c_[Y0, Y0], ValueError, "y should be a 1d array"),
    "one class": (np.zeros(60, int), ValueError, "one class"),
    "None": (None, ValueError, "requires y"),
}


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("case", list(BAD_Y))
def test_fit_rejects_bad_y(prior, case):
    y, err, match = BAD_Y[case]
    with pytest.raises(err, match=match):
        SpaM(prior=prior, **FAST).fit(X0, y)


# -- settings (validated at fit, never in __init__) ---------------------------------------
BAD_PARAMS = {
    "n_epochs=-3": (dict(n_epochs=-3), ValueError, "n_epochs must be >= 1"),
    "n_epochs=0": (dict(n_epochs=0), ValueError, "n_epochs must be >= 1"),
    "n_epochs=2.5": (dict(n_epochs=2.5), TypeError, "n_epochs must be an int >= 1"),
    "n_epochs=True": (dict(n_epochs=True), TypeError, "n_epochs must be an int >= 1"),
    "batch_size=0": (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    "n_hypersteps=-1": (dict(n_hypersteps=-1), ValueError, "n_hypersteps must be >= 0"),
    "marglik_frequency=0": (dict(marglik_frequency=0), ValueError, "marglik_frequency"),
    "n_epochs_burnin=-1": (dict(n_epochs_burnin=-1), ValueError, "n_epochs_burnin"),
    "lr=nan": (dict(lr=math.nan), ValueError, "lr must be finite and > 0"),
    "lr=-1": (dict(lr=-1.0), ValueError, "lr must be"),
    "lr='big'": (dict(lr="big"), TypeError, "lr must be a number"),
    "lr_hyp=0": (dict(lr_hyp=0.0), ValueError, "lr_hyp must be"),
    "prior_precision=nan": (dict(prior_precision=math.nan), ValueError, "prior_precision"),
    "prior_precision=inf": (dict(prior_precision=math.inf), ValueError, "prior_precision"),
    "prior_precision=0": (dict(prior_precision=0.0), ValueError, "prior_precision"),
    "prior_precision=-1": (dict(prior_precision=-1.0), ValueError, "prior_precision"),
    "prior='lasso'": (dict(prior="lasso"), ValueError, "unknown prior 'lasso'"),
    "hessian_structure='kfac'": (dict(hessian_structure="kfac"), ValueError, "hessian_structure"),
    "model=str": (dict(model="mlp"), TypeError, "model must be a torch nn.Module"),
    "device='tpu'": (dict(device="tpu"), ValueError, "device="),
    "device=3.5": (dict(device=3.5), TypeError, "device must be"),
    "dtype=int64": (dict(dtype=torch.int64), ValueError, "dtype must be float32 or float64"),
    "dtype='half'": (dict(dtype="float16"), ValueError, "dtype must be float32 or float64"),
    "random_state=-1": (dict(random_state=-1), ValueError, "random_state must be >= 0"),
    "random_state='a'": (dict(random_state="a"), TypeError, "random_state must be"),
    "n_threads=0": (dict(n_threads=0), ValueError, "n_threads must be a positive integer"),
    "callback=3": (dict(callback=3), TypeError, "callback must be callable"),
}


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_fit_rejects_bad_settings(prior, case):
    kw, err, match = BAD_PARAMS[case]
    est = SpaM(**{"prior": prior, **FAST, **kw})  # __init__ only stores
    with pytest.raises(err, match=match):
        est.fit(X0, Y0)


def test_model_that_does_not_fit_the_data():
    with pytest.raises(ValueError, match=r"outputs shaped \(3,\).*2 classes"):
        SpaM(model=nn.Sequential(nn.Linear(5, 3)), **FAST).fit(X0, Y0)
    with pytest.raises(ValueError, match=r"model cannot take inputs shaped \(5,\)"):
        SpaM(model=nn.Sequential(nn.Linear(7, 2)), **FAST).fit(X0, Y0)
    with pytest.raises(ValueError, match="no prunable layers"):
        SpaM(model=nn.Sequential(nn.Flatten()), **FAST).fit(X0, Y0)
    with pytest.raises(ValueError, match="no default model for inputs shaped"):
        SpaM(**FAST).fit(np.zeros((10, 3, 4, 4)), np.arange(10) % 2)


def test_divergence_is_an_error():
    with pytest.raises(ValueError, match="training diverged"):
        SpaM(prior="map", **{**FAST, "n_epochs": 5}, lr=1e20, dtype="float32").fit(X0, Y0)


# -- predict-time input --------------------------------------------------------------------
BAD_PREDICT = {
    "nan row": (_with(X0[:4], 0, 0, np.nan), ValueError, "NaN"),
    "inf row": (_with(X0[:4], 2, 4, np.inf), ValueError, "infinity"),
    "4 features": (X0[:4, :4], ValueError, "X has 4 features, but SpaM is expecting 5"),
    "6 features": (np.c_[X0[:4], X0[:4, :1]], ValueError, "expecting 5 features"),
    "1-d": (X0[0], ValueError, "2D array"),
    "images": (np.zeros((2, 1, 8, 8)), ValueError, "features|rows shaped"),
    "0 rows": (X0[:0], ValueError, "0 sample"),
    "strings": (np.full((2, 5), "x"), ValueError, "convert"),
}


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score"])
@pytest.mark.parametrize("case", list(BAD_PREDICT))
def test_predict_rejects_bad_X(fitted, method, case):
    X, err, match = BAD_PREDICT[case]
    est = fitted["map"]
    args = (X, np.zeros(len(X), int)) if method == "score" else (X,)
    with pytest.raises(err, match=match):
        getattr(est, method)(*args)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "scores", "prune",
                                    "prior_precision_diag", "laplace_"])
def test_not_fitted(method):
    est = SpaM()
    with pytest.raises(NotFittedError, match="SpaM instance is not fitted"):
        attr = getattr(est, method)
        if callable(attr):
            attr(X0) if method.startswith("predict") else attr(0.5) if method == "prune" else attr()


# -- correct results where the old code answered wrongly ---------------------------------------
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("labels", [(3, 9), (-1, 1), ("cat", "dog"), (0.0, 1.0)])
def test_predict_returns_values_of_classes_(prior, labels):
    X, y = _problem(labels=labels)
    est = SpaM(prior=prior, **FAST).fit(X, y)
    assert est.classes_.tolist() == sorted(labels)
    pred = est.predict(X)
    assert set(pred.tolist()) <= set(labels)
    proba = est.predict_proba(X)
    np.testing.assert_array_equal(pred, est.classes_[proba.argmax(1)])
    assert est.score(X, y) == pytest.approx(float(np.mean(pred == y)))


def test_prediction_is_deterministic_and_finite(fitted):
    for est in fitted.values():
        a, b = est.predict_proba(X0), est.predict_proba(X0)
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all() and a.shape == (60, 2) and a.dtype == np.float64
        np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-12)


def test_torch_inputs_and_float32(fitted):
    est = fitted["map"]
    Xt = torch.from_numpy(X0)
    np.testing.assert_array_equal(est.predict_proba(Xt), est.predict_proba(X0))
    assert est.score(Xt, torch.from_numpy(Y0)) == est.score(X0, Y0)
    est32 = SpaM(prior="map", **FAST).fit(X0.astype(np.float32), Y0)
    assert est32.dtype_ == torch.float32 and est32.predict_proba(X0).dtype == np.float32


# -- pruning and scores --------------------------------------------------------------------
BAD_PRUNE = {
    "sparsity=-0.1": (dict(sparsity=-0.1), ValueError, r"sparsity must lie in \[0, 1\)"),
    "sparsity=1": (dict(sparsity=1.0), ValueError, r"sparsity must lie in \[0, 1\)"),
    "sparsity=nan": (dict(sparsity=math.nan), ValueError, r"sparsity must lie in \[0, 1\)"),
    "criterion='obs'": (dict(sparsity=0.5, criterion="obs"), ValueError, "unknown criterion"),
    "finetune_epochs=-1": (dict(sparsity=0.5, finetune_epochs=-1), ValueError,
                           "finetune_epochs must be >= 0"),
    "finetune_epochs=1.5": (dict(sparsity=0.5, finetune_epochs=1.5), TypeError,
                            "finetune_epochs must be an int >= 0"),
    "finetune_lr=nan": (dict(sparsity=0.5, finetune_epochs=1, finetune_lr=math.nan), ValueError,
                        "finetune_lr"),
    "nan scores": (dict(sparsity=0.5, scores="nan"), ValueError, "scores contain NaN"),
}


@pytest.mark.parametrize("case", list(BAD_PRUNE))
def test_prune_rejects_bad_input(fitted, case):
    kw, err, match = BAD_PRUNE[case]
    est = fitted["diagonal"]
    if kw.get("scores") == "nan":
        sc = est.scores("magnitude")
        sc["0.weight"] = sc["0.weight"].clone()
        sc["0.weight"][0, 0] = math.nan
        kw = {**kw, "scores": sc}
    with pytest.raises(err, match=match):
        est.prune(**kw)


def test_scores_reject_unknown_criterion(fitted):
    with pytest.raises(ValueError, match="unknown criterion 'l1'"):
        fitted["map"].scores("l1")


# -- curve, data, networks, metrics, masks -------------------------------------------------
BAD_CURVE = {
    "task": (dict(task="mnist"), "task must be one of"),
    "prior": (dict(priors=["horseshoe"]), "unknown prior 'horseshoe'"),
    "criterion": (dict(criteria=["obs"]), "unknown criterion 'obs'"),
    "empty priors": (dict(priors=[]), "non-empty"),
    "sparsity 1": (dict(sparsities=[0.5, 1.0]), r"sparsities must lie in \[0, 1\)"),
    "sparsity nan": (dict(sparsities=[math.nan]), r"sparsities must lie in \[0, 1\)"),
    "repeats": (dict(seeds=[0, 0]), "must not repeat"),
    "hessian": (dict(hessian_structure="full"), "hessian_structure"),
}


@pytest.mark.parametrize("case", list(BAD_CURVE))
def test_curve_settings_reject(case):
    kw, match = BAD_CURVE[case]
    with pytest.raises(ValueError, match=match):
        curve_settings(**kw)


@pytest.mark.parametrize("call, err, match", [
    (lambda: make_task("mnist"), ValueError, "task must be one of"),
    (lambda: make_task("digits", test_size=1.0), ValueError, "test_size"),
    (lambda: make_task("digits", random_state=-2), ValueError, "random_state"),
    (lambda: make_model("cifar"), ValueError, "task must be"),
    (lambda: score_network(nn.Linear(3, 2), torch.zeros(4, 3), torch.zeros(5).long()),
     ValueError, "4 rows but y has 5"),
    (lambda: global_prune({}, 0.5), ValueError, "scores is empty"),
    (lambda: PruningMask({"x": torch.ones(2)}).apply(nn.Linear(2, 2)), ValueError, "'x'"),
])
def test_helpers_reject(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_deprecated_names_still_work():
    t = make_task("breast_cancer")
    with pytest.warns(FutureWarning, match="'seed'.*'random_state'"):
        est = SpaM(prior="map", seed=3, **FAST)
    assert est.random_state == 3
    with pytest.warns(FutureWarning, match="random_state"):
        assert est.seed == 3
    with pytest.warns(FutureWarning, match="seed"):
        assert torch.equal(make_task("digits", seed=1).X_train,
                           make_task("digits", random_state=1).X_train)
    with pytest.raises(TypeError, match="only"):
        SpaM(seed=1, random_state=2)
    import workbench.sparsify as sp

    with pytest.warns(FutureWarning, match="score_network"):
        assert sp.evaluate is score_network
    with pytest.warns(FutureWarning, match="workbench.sparsify.masks.global_prune"):
        assert sp.global_prune is global_prune
    with pytest.warns(FutureWarning, match="make_task"):
        assert sp.load_task is make_task
    with pytest.raises(AttributeError):
        sp.no_such_name  # noqa: B018
    assert t.n_classes == 2


def test_sparsify_fit_laplace_is_deprecated_in_favour_of_the_core_helper():
    from torch.utils.data import DataLoader, TensorDataset

    from workbench.laplace import fit_laplace as core_fit_laplace
    from workbench.sparsify.training import fit_laplace

    model = nn.Sequential(nn.Linear(3, 2)).double()
    data = DataLoader(TensorDataset(torch.randn(8, 3, dtype=torch.float64), torch.arange(8) % 2), batch_size=4)
    with pytest.warns(FutureWarning, match="workbench.laplace.fit_laplace"):
        old = fit_laplace(model, data, "kron", 2.0)
    new = core_fit_laplace(model, data, "classification", hessian_structure="kron", prior_precision=2.0,
                           prior_structure="scalar")
    assert float(old.log_marginal_likelihood()) == pytest.approx(float(new.log_marginal_likelihood()), rel=1e-12)
