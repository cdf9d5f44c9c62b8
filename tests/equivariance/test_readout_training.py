"""Readouts, equivariance score, marglik training and run persistence (tiny, float64 where exact)."""

import math

import numpy as np
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader, TensorDataset

from workbench.equivariance import (
    LearnedEquivarianceClassifier,
    equivariance_score,
    layer_readout,
    load_run,
    make_task,
    save_run,
)
from workbench.equivariance.models import SoftEquivariantNet
from workbench.equivariance.training import pathway_groups, readout_laplace
from workbench.exceptions import NotFittedError

TINY = dict(channels=(3, 3), strides=(1, 2), n_epochs=3, batch_size=20, n_epochs_burnin=1,
            marglik_frequency=1, n_hypersteps=5)


@pytest.fixture(scope="module")
def tiny_data():
    task = make_task("translated", 60, 30, canvas=8, random_state=0, dtype=np.float64)
    return task


def _fitted_la(pathways, data, prior_structure="pathway"):
    torch.manual_seed(0)
    model = SoftEquivariantNet((1, 8, 8), 10, (3, 3), (1, 2), pathways=pathways).double()
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    la = readout_laplace(model, DataLoader(TensorDataset(X, y), batch_size=30), prior_structure,
                     torch.tensor(2.0, dtype=torch.float64), pathway_groups(model))
    return model, la, X


def test_readout_aggregates_the_laplace_per_pathway(tiny_data):
    model, la, X = _fitted_la(("conv", "free"), tiny_data)
    ds = layer_readout(model, la, X)
    assert ds.prior_precision.dims == ("layer", "pathway")
    eff = la.effective_dimensions()
    named = dict(model.named_parameters())
    for i in range(2):
        for p in ("conv", "free"):
            names = [n for n in eff if n.startswith(f"layers.{i}.{p}.")]
            expected = {"conv": ["conv.weight", "conv.bias"], "free": ["rows.weight", "cols.weight"]}
            assert names == [f"layers.{i}.{p}.{k}" for k in expected[p]]
            assert ds.effective_dim.sel(layer=i, pathway=p) == pytest.approx(
                sum(eff[n] for n in names), rel=1e-12)
            norm = math.sqrt(sum(float(named[n].detach().pow(2).sum()) for n in names))
            assert ds.weight_norm.sel(layer=i, pathway=p) == pytest.approx(norm, rel=1e-12)
            assert ds.n_params.sel(layer=i, pathway=p) == sum(named[n].numel() for n in names)
            assert ds.prior_precision.sel(layer=i, pathway=p) == pytest.approx(2.0)
            # 0 <= d_eff <= number of parameters
            assert 0 <= float(ds.effective_dim.sel(layer=i, pathway=p)) <= float(
                ds.n_params.sel(layer=i, pathway=p))
    eq = ds.equivariance
    assert eq.dims == ("layer", "measure")
    d = ds.effective_dim
    np.testing.assert_allclose(eq.sel(measure="effective_dim"),
                               d.sel(pathway="conv") / (d.sel(pathway="conv") + d.sel(pathway="free")))
    assert ((eq >= 0) & (eq <= 1)).all()


def test_layerwise_prior_reads_size_weighted_geometric_mean(tiny_data):
    model, la, X = _fitted_la(("conv", "free"), tiny_data, prior_structure="layerwise")
    la.prior_precision = torch.arange(1, len(la.prior_precision) + 1, dtype=torch.float64)
    ds = layer_readout(model, la, X)
    sl = la.param_slices
    delta = la.prior_precision_diag
    names = ["layers.1.free.rows.weight", "layers.1.free.cols.weight"]
    n = [sl[k].stop - sl[k].start for k in names]
    d = [float(delta[sl[k]][0]) for k in names]
    ref = math.exp((n[0] * math.log(d[0]) + n[1] * math.log(d[1])) / sum(n))
    assert float(ds.prior_precision.sel(layer=1, pathway="free")) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("pathways, expected", [("conv", 1.0), ("free", 0.0)])
def test_equivariance_score_limits(tiny_data, pathways, expected):
    model, la, X = _fitted_la(pathways, tiny_data)
    ds = layer_readout(model, la, X)
    np.testing.assert_array_equal(ds.equivariance.values, expected)
    absent = "free" if pathways == "conv" else "conv"
    assert (ds.effective_dim.sel(pathway=absent) == 0).all()
    assert ds.weight_norm.sel(pathway=absent).isnull().all()


def test_equivariance_score_edge_cases():
    np.testing.assert_allclose(equivariance_score(np.array([3.0, 0.0, 0.0]),
                                                  np.array([1.0, 2.0, 0.0])),
                               [0.75, 0.0, np.nan])
    with pytest.raises(ValueError, match="non-negative"):
        equivariance_score(np.array([-1.0]), np.array([1.0]))
    ds = layer_readout(SoftEquivariantNet((1, 8, 8), 10, (2,), (1,)))  # no Laplace, no data
    assert ds.equivariance.isnull().all() and ds.prior_precision.isnull().all()
    with pytest.raises(TypeError, match="SoftEquivariantNet"):
        layer_readout(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_marglik_training_history_and_predictions(tiny_data, tmp_path):
    calls = []
    est = LearnedEquivarianceClassifier(**TINY, callback=lambda p: calls.append((p.done, p.total)))
    est.fit(tiny_data.X_train, tiny_data.y_train, tiny_data.X_test, tiny_data.y_test)
    h = est.history_
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert dict(h.sizes) == {"epoch": 3, "layer": 2, "pathway": 2, "measure": 2}
    assert h.marglik_step.values.tolist() == [False, True, True]
    assert np.isnan(h.log_marglik[0]) and np.isfinite(h.log_marglik[1:]).all()
    assert h.prior_precision.isel(epoch=0).isnull().all()  # before the first Laplace fit
    assert np.isfinite(h.prior_precision.isel(epoch=-1)).all()
    # the learned precisions moved away from the initial value
    assert not np.allclose(h.prior_precision.isel(epoch=-1), 1.0)
    proba = est.predict_proba(tiny_data.X_test)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-10)
    assert proba.dtype == np.float64
    assert 0.0 <= est.score(tiny_data.X_test, tiny_data.y_test) <= 1.0
    path = save_run(h, tmp_path / "run.nc")
    back = load_run(path)
    xr.testing.assert_allclose(back, h)
    assert back.marglik_step.dtype == bool
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_bad_inputs_raise(tiny_data):
    est = LearnedEquivarianceClassifier(**TINY)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*X\[:, None\]"):
        est.fit(tiny_data.X_train[:, 0], tiny_data.y_train)
    with pytest.raises(ValueError, match="y must be a vector of 60"):
        est.fit(tiny_data.X_train, tiny_data.y_train[:10])
    with pytest.raises(ValueError, match="prior_structure"):
        LearnedEquivarianceClassifier(prior_structure="unitwise").fit(tiny_data.X_train,
                                                                       tiny_data.y_train)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        LearnedEquivarianceClassifier(**{**TINY, "optimizer": "rmsprop"}).fit(tiny_data.X_train,
                                                                               tiny_data.y_train)
    with pytest.raises(ValueError, match="lr_min"):
        LearnedEquivarianceClassifier(**{**TINY, "lr_min": 1.0}).fit(tiny_data.X_train,
                                                                      tiny_data.y_train)
    with pytest.raises(ValueError, match="pathways"):
        LearnedEquivarianceClassifier(**{**TINY, "pathways": "mlp"}).fit(tiny_data.X_train,
                                                                          tiny_data.y_train)
    with pytest.raises(NotFittedError, match="not fitted"):
        est.predict(tiny_data.X_test)
    fitted = LearnedEquivarianceClassifier(**{**TINY, "n_epochs": 1}).fit(tiny_data.X_train,
                                                                          tiny_data.y_train)
    with pytest.raises(ValueError, match=r"image shape \(1, 16, 16\).*\(1, 8, 8\)"):
        fitted.predict(np.zeros((2, 1, 16, 16)))
    with pytest.raises(FileNotFoundError, match="no saved run"):
        load_run("/nonexistent/run.nc")
