"""Prior precision by validation-set grid search and by K-fold cross-validation."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace
from workbench.laplace.gridsearch import prior_precision_grid


def _reg(n=60):
    X = torch.randn(n, 2)
    y = torch.sin(X[:, :1] * 2) + 0.1 * torch.randn(n, 1)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, X, y


def _gauss_nll(mu, var, y):
    return float((0.5 * ((y - mu) ** 2 / var + torch.log(2 * math.pi * var))).sum(-1).mean())


def test_validation_gridsearch_picks_the_minimum_of_the_predictive_nll():
    model, X, y = _reg()
    tr, va = (X[:40], y[:40]), (X[40:], y[40:])
    grid = np.logspace(-2, 2, 9)
    la = Laplace(model, "regression", hessian_structure="full", sigma_noise=0.2).fit([tr])
    res = la.optimize_prior_precision(
        method="gridsearch", val_loader=DataLoader(TensorDataset(*va), batch_size=7), grid=grid
    )
    ref = []
    for v in grid:  # independent: a fresh Laplace per value, NLL written out here
        lv = Laplace(
            model, "regression", hessian_structure="full", sigma_noise=0.2, prior_precision=float(v)
        ).fit([tr])
        mu, fvar = lv(va[0])
        ref.append(_gauss_nll(mu, fvar[:, :, 0] + 0.04, va[1]))
    np.testing.assert_allclose(res["loss"].values, ref, rtol=1e-10)
    assert res.attrs["best"] == grid[int(np.argmin(ref))]
    torch.testing.assert_close(la.prior_precision, torch.tensor([res.attrs["best"]]))
    assert list(res.prior_precision.values) == list(grid)


def test_classification_losses_and_default_grid():
    X, y = torch.randn(50, 3), torch.randint(0, 3, (50,))
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 3))
    la = Laplace(model, "classification", hessian_structure="kron").fit([(X[:30], y[:30])])
    res = la.optimize_prior_precision(method="gridsearch", val_loader=[(X[30:], y[30:])])
    assert res.sizes["prior_precision"] == 100
    np.testing.assert_allclose(res.prior_precision.values, prior_precision_grid())
    best = res.attrs["best"]
    la.prior_precision = best
    p = la(X[30:])
    nll = float(-torch.log(p[torch.arange(20), y[30:]]).mean())
    assert nll == pytest.approx(float(res["loss"].sel(prior_precision=best)), rel=1e-12)
    brier = la.optimize_prior_precision(
        method="gridsearch",
        val_loader=[(X[30:], y[30:])],
        grid=[0.1, 1.0],
        loss="brier",
        link_approx="bridge",
    )
    assert np.isfinite(brier["loss"]).all()


def test_cross_validation_refits_per_fold_and_on_all_data_at_the_end():
    model, X, y = _reg(45)
    grid = [0.1, 1.0, 10.0]
    la = Laplace(model, "regression", hessian_structure="diag", sigma_noise=0.2)
    la.fit(DataLoader(TensorDataset(X, y), batch_size=10))
    lml_before = la.log_marginal_likelihood(prior_precision=1.0)
    res = la.optimize_prior_precision(
        method="gridsearch",
        cv=3,
        train_loader=DataLoader(TensorDataset(X, y), batch_size=10),
        grid=grid,
        random_state=4,
    )
    assert res["fold_loss"].shape == (3, 3)
    np.testing.assert_allclose(res["loss"].values, res["fold_loss"].values.mean(0))
    perm = torch.from_numpy(np.random.default_rng(4).permutation(45))
    held = torch.tensor_split(perm, 3)[1]
    keep = perm[~torch.isin(perm, held)]
    lv = Laplace(
        model, "regression", hessian_structure="diag", sigma_noise=0.2, prior_precision=10.0
    ).fit([(X[keep], y[keep])])
    mu, fvar = lv(X[held])
    assert res["fold_loss"].values[1, 2] == pytest.approx(
        _gauss_nll(mu, fvar[:, :, 0] + 0.04, y[held])
    )
    assert la.n_data == 45  # refitted on all the training data
    torch.testing.assert_close(la.log_marginal_likelihood(prior_precision=1.0), lml_before)


def test_gridsearch_errors_and_stop():
    model, X, y = _reg(20)
    la = Laplace(model, "regression").fit([(X, y)])
    with pytest.raises(ValueError, match="either val_loader"):
        la.optimize_prior_precision(method="gridsearch")
    with pytest.raises(ValueError, match="cv=K needs train_loader"):
        la.optimize_prior_precision(method="gridsearch", cv=3)
    with pytest.raises(ValueError, match="grid must"):
        la.optimize_prior_precision(method="gridsearch", val_loader=[(X, y)], grid=[0.0, 1.0])
    with pytest.raises(ValueError, match="loss='brier' is for classification"):
        la.optimize_prior_precision(method="gridsearch", val_loader=[(X, y)], loss="brier")
    with pytest.raises(TypeError, match="val_loader"):
        la.optimize_prior_precision(method="marglik", val_loader=[(X, y)])
    seen = []
    res = la.optimize_prior_precision(
        method="gridsearch",
        val_loader=[(X, y)],
        grid=[1.0, 2.0, 3.0],
        callback=lambda p: seen.append(p.done) or p.done == 2,
    )
    assert seen == [1, 2] and np.isnan(res["loss"].values[2])
    assert res.attrs["best"] in (1.0, 2.0)
