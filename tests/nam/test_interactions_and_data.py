"""Interaction-ranking maths against closed forms, and the synthetic generator / loaders."""

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.datasets import SHAPES, load_breast_cancer, load_diabetes, make_additive
from workbench.nam.interactions import core_weight_covariance, linear_laplace, mutual_information


def test_linear_laplace_regression_is_the_exact_gaussian_posterior():
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((50, 4, 1))
    y = phi[:, :, 0] @ np.array([1.0, -0.5, 0.0, 2.0]) + 0.3 * rng.standard_normal(50)
    la = linear_laplace(phi, y, "regression", sigma=0.3, prior_precision=2.0)
    A = np.column_stack([phi[:, :, 0], np.ones(50)])
    P = A.T @ A / 0.09 + np.diag([2.0] * 4 + [1e-6])
    assert np.allclose(la["precision"].numpy(), P, rtol=1e-12)
    assert np.allclose(la["covariance"].numpy(), np.linalg.inv(P), rtol=1e-10)
    assert np.allclose(la["mean"].numpy(), np.linalg.solve(P, A.T @ y / 0.09), rtol=1e-10)


def test_linear_laplace_evidence_fixed_point_maximises_the_evidence():
    rng = np.random.default_rng(1)
    phi = rng.standard_normal((80, 3, 1))
    y = phi[:, :, 0] @ np.array([0.5, -0.5, 0.2]) + 0.5 * rng.standard_normal(80)
    delta = float(linear_laplace(phi, y, "regression", sigma=0.5)["prior_precision"])
    A = phi[:, :, 0]
    yc = y - y.mean()  # the (nearly flat) intercept absorbs the mean

    def log_evidence(d):  # closed form: yc ~ N(0, A A^T / d + sigma^2 I)
        C = A @ A.T / d + 0.25 * np.eye(80)
        return -0.5 * (np.linalg.slogdet(C)[1] + yc @ np.linalg.solve(C, yc))

    grid = np.exp(np.linspace(np.log(delta) - 2, np.log(delta) + 2, 41))
    best = grid[np.argmax([log_evidence(d) for d in grid])]
    assert abs(np.log(best) - np.log(delta)) < 0.25


def test_linear_laplace_classification_matches_newton_reference():
    rng = np.random.default_rng(2)
    phi = rng.standard_normal((200, 3, 1))
    y = (rng.random(200) < 1 / (1 + np.exp(-(phi[:, :, 0] @ np.array([2.0, -1.0, 0.0]))))).astype(float)
    la = linear_laplace(phi, y, "binary", prior_precision=1.0)
    A = np.column_stack([phi[:, :, 0], np.ones(200)])
    prior = np.array([1.0, 1.0, 1.0, 1e-6])
    w = np.zeros(4)
    for _ in range(100):  # plain numpy Newton on the regularised logistic loss
        p = 1 / (1 + np.exp(-A @ w))
        H = A.T @ (A * (p * (1 - p))[:, None]) + np.diag(prior)
        w -= np.linalg.solve(H, A.T @ (p - y) + prior * w)
    p = 1 / (1 + np.exp(-A @ w))
    H = A.T @ (A * (p * (1 - p))[:, None]) + np.diag(prior)
    assert np.allclose(la["mean"].numpy(), w, atol=1e-8)
    assert np.allclose(la["covariance"].numpy(), np.linalg.inv(H), rtol=1e-6)


@pytest.mark.parametrize("lik,k", [("regression", 1), ("binary", 1), ("multiclass", 3)])
def test_laplace_core_agrees_with_the_closed_form_weight_posterior(lik, k):
    rng = np.random.default_rng(5)
    phi = rng.standard_normal((120, 4, k))
    if lik == "regression":
        y = phi.sum((1, 2)) + rng.standard_normal(120)
    elif lik == "binary":
        y = (rng.random(120) < 1 / (1 + np.exp(-phi[:, 0, 0]))).astype(float)
    else:
        y = rng.integers(0, 3, 120)
    fit = linear_laplace(phi, y, lik, sigma=0.8)
    cov = core_weight_covariance(phi, y, lik, fit, sigma=0.8)
    assert torch.allclose(cov[:4, :4], fit["covariance"][:4, :4], rtol=1e-8, atol=1e-12)


def test_mutual_information_vectorised_equals_pairwise_gaussian_mi():
    rng = np.random.default_rng(3)
    B = rng.standard_normal((5, 5))
    cov = torch.tensor(B @ B.T + np.eye(5))
    mi, rho = mutual_information(cov)
    c = cov.numpy()
    for i in range(5):
        for j in range(5):
            if i == j:
                assert mi[i, j] == 0
                continue
            sub = c[np.ix_([i, j], [i, j])]  # I(a; b) = 1/2 log(s_a s_b / det)
            ref = 0.5 * np.log(sub[0, 0] * sub[1, 1] / np.linalg.det(sub))
            assert float(mi[i, j]) == pytest.approx(ref, rel=1e-10)
            assert float(rho[i, j]) == pytest.approx(sub[0, 1] / np.sqrt(sub[0, 0] * sub[1, 1]))


def test_make_additive_truth_and_validation():
    d = make_additive(2000, 4, 2, interaction=(1, 3), pair_correlation=0.5, noise=0.1, random_state=4)
    assert list(d.X.columns) == [f"x{i}" for i in range(6)] and d.truth.null_features == ["x4", "x5"]
    assert d.truth.pair == ("x1", "x3")
    assert d.X.abs().max().max() <= 1.0
    assert abs(np.corrcoef(d.X["x1"], d.X["x3"])[0, 1] - 0.5) < 0.08
    assert abs(np.corrcoef(d.X["x0"], d.X["x2"])[0, 1]) < 0.08
    f = d.truth.intercept + sum(d.truth.f(c, d.X[c]) for c in d.X) + d.truth.interaction(d.X["x1"], d.X["x3"])
    assert np.std(d.y - f) == pytest.approx(0.1, rel=0.1)
    grid = {"x0": np.linspace(-1, 1, 7), "x4": np.linspace(-1, 1, 3)}
    true = d.truth.shape_functions(grid, d.X)
    assert true.dims == ("feature", "x") and np.isnan(true.sel(feature="x4").values[3:]).all()
    assert np.allclose(true.sel(feature="x4").values[:3], 0)
    shape = SHAPES[d.truth.shapes["x0"]]
    assert np.allclose(true.sel(feature="x0"), shape(grid["x0"]) - shape(d.X["x0"].to_numpy()).mean())
    with pytest.raises(ValueError, match="unknown features"):
        d.truth.shape_functions({"nope": [0.0]}, d.X)
    with pytest.raises(ValueError, match="interaction"):
        make_additive(10, 2, 0, interaction=(0, 5))
    with pytest.raises(ValueError, match="task"):
        make_additive(10, task="survival")
    c = make_additive(500, 2, 0, task="classification", random_state=0)
    assert set(c.y.unique()) == {0, 1}


def test_make_additive_seed_is_a_deprecated_alias_of_random_state():
    new = make_additive(50, 2, 1, random_state=3)
    with pytest.warns(FutureWarning, match="'seed'.*'random_state'"):
        old = make_additive(50, 2, 1, seed=3)
    pd.testing.assert_frame_equal(old.X, new.X)
    pd.testing.assert_series_equal(old.y, new.y)
    with pytest.raises(TypeError, match="random_state"):
        make_additive(50, 2, 1, seed=3, random_state=3)


def test_loaders_return_frames():
    X, y = load_diabetes()
    assert isinstance(X, pd.DataFrame) and X.shape == (442, 10) and isinstance(X["sex"].dtype, pd.CategoricalDtype)
    assert isinstance(y, pd.Series) and y.name == "progression"
    X, y = load_breast_cancer()
    assert X.shape == (569, 30) and set(y.unique()) == {0, 1}
