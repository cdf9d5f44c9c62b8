"""The playground's xarray results: shapes, the marglik optimum and sane predictive bands."""

import numpy as np
import pytest
import torch

from workbench.playground import fit_playground, make_problem, marglik_curve, predictive_grid


@pytest.fixture(scope="module")
def sine_fit():
    return fit_playground("sine", "kron", width=16, depth=1, n_epochs=150, random_state=0, device="cpu")


def test_regression_predictive_bands(sine_fit):
    pred = predictive_grid(sine_fit, n=50)
    assert pred.sizes == {"x": 50}
    assert np.all(pred.upper > pred.lower)
    assert np.all(pred.predictive_std >= pred.epistemic_std)
    # in-sample fit is close to the truth sin(2x) where data exist
    inside = (np.abs(pred.x) > 1.2) & (np.abs(pred.x) < 2.8)
    assert float(np.abs(pred["mean"][inside] - np.sin(2 * pred.x[inside])).mean()) < 0.35
    # uncertainty is larger far outside the data than inside
    assert float(pred.epistemic_std[0]) > float(pred.epistemic_std[inside].mean())


def test_marglik_curve_peaks_at_the_chosen_prior(sine_fit):
    curve = marglik_curve(sine_fit, np.logspace(-3, 3, 121))
    chosen = curve.attrs["chosen_prior_precision"]
    best = float(curve.prior_precision[curve.argmax()])
    assert abs(np.log10(best) - np.log10(chosen)) <= 0.06
    assert curve.dims == ("prior_precision",)


def test_classification_predictive_is_a_distribution():
    res = fit_playground("moons", "diag", width=16, depth=1, n_epochs=60, random_state=1, device="cpu")
    pred = predictive_grid(res, n=20)
    assert pred.prob.dims == ("x2", "x1", "class")
    np.testing.assert_allclose(pred.prob.sum("class"), 1.0, atol=1e-5)
    assert float(pred.entropy.min()) >= 0


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown problem"):
        make_problem("spiral")
    with pytest.raises(ValueError, match="hessian_structure"):
        fit_playground("sine", "block")
    assert make_problem("cubic", n=30, dtype=torch.float64).X.dtype == torch.float64


@pytest.mark.parametrize("kw,match", [
    (dict(width=0), "width"), (dict(n_epochs=-3), "n_epochs"), (dict(depth=-1), "depth"),
    (dict(lr=float("nan")), "lr"), (dict(device="tpu"), "device"),
])
def test_bad_numbers_are_named(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fit_playground("sine", **kw)


def test_seed_is_a_deprecated_alias_of_random_state():
    with pytest.warns(FutureWarning, match="random_state"):
        a = make_problem("sine", n=20, seed=3)
    np.testing.assert_array_equal(a.X.numpy(), make_problem("sine", n=20, random_state=3).X.numpy())
