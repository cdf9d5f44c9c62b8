import numpy as np
import pytest
import torch

from workbench.exceptions import NotFittedError
from workbench.sparsify import SpaM, cached_sparsity_curve, make_task, sparsity_curve

FAST = dict(n_epochs=4, n_epochs_burnin=1, marglik_frequency=2, n_hypersteps=5)


@pytest.fixture(scope="module")
def curve():
    calls = []
    ds = sparsity_curve("breast_cancer", priors=["map", "diagonal"],
                        criteria=["opd", "magnitude", "snip", "random", "grasp"],
                        sparsities=[0.0, 0.5, 0.9], seeds=[0], train_kwargs=FAST,
                        progress=False, callback=calls.append)
    return ds, calls


def test_curve_layout(curve):
    ds, calls = curve
    assert ds.accuracy.dims == ("prior", "criterion", "sparsity", "seed")
    assert ds.layer_sparsity.dims == ("prior", "criterion", "sparsity", "seed", "layer")
    assert list(ds.layer.values) == ["0", "2", "4"]
    for v in ("accuracy", "nll", "ece", "n_params", "flops", "param_sparsity"):
        assert np.isfinite(ds[v].values).all(), v
    assert ((ds.accuracy >= 0) & (ds.accuracy <= 1)).all()
    points = [c for c in calls if c.stage == "curve"]
    assert len(points) == 2 * 5 * 3 and (points[-1].done, points[-1].total) == (30, 30)
    last = calls[-1]
    assert last.stage == "curve" and last.state == dict(prior="diagonal", criterion="grasp",
                                                        sparsity=0.9, seed=0, overall=1.0)
    # training epochs are reported too, so a progress bar moves while the networks train
    epochs = [c for c in calls if c.stage == "train"]
    assert len(epochs) == 2 * FAST["n_epochs"] and epochs[0].state["prior"] == "map"
    overall = [c.state["overall"] for c in calls]
    assert overall == sorted(overall) and 0 < overall[0] < 0.1
    assert last.metrics["accuracy"] == float(ds.accuracy.sel(prior="diagonal", criterion="grasp",
                                                             sparsity=0.9, seed=0))
    # learned prior precisions are per parameter; MAP's is the fixed weight decay
    n_par = ds.attrs["n_params_dense"]
    assert ds.log10_prior_precision.shape == (2, 1, n_par)
    np.testing.assert_allclose(ds.log10_prior_precision.sel(prior="map"), 0.0)


def test_curve_sparsity_and_costs(curve):
    ds, _ = curve
    dense = ds.sel(sparsity=0.0)
    # at sparsity 0 every criterion is the dense network
    assert (dense.n_params == ds.attrs["n_params_dense"]).all()
    assert (dense.flops == ds.attrs["flops_dense"]).all()
    np.testing.assert_allclose(dense.accuracy.std("criterion"), 0.0, atol=1e-12)
    # unstructured: exactly round(s * prunable weights) weights removed, globally
    n_w = 30 * 64 + 64 * 64 + 64 * 2
    for s in (0.5, 0.9):
        removed = ds.attrs["n_params_dense"] - ds.n_params.sel(sparsity=s)
        assert (removed == round(s * n_w)).all()
        lw = ds.layer_sparsity.sel(sparsity=s)
        sizes = np.array([30 * 64, 64 * 64, 64 * 2])
        np.testing.assert_allclose((lw * sizes).sum("layer"), round(s * n_w), atol=1e-6)
    assert (ds.flops.diff("sparsity") < 0).all()


def test_structured_curve_shrinks(tmp_path):
    ds = sparsity_curve("digits", priors=["map"], criteria=["magnitude"], sparsities=[0.0, 0.5],
                        seeds=[0], structured=True, train_kwargs=dict(n_epochs=1), progress=False)
    half = ds.sel(sparsity=0.5).squeeze()
    assert float(half.param_sparsity) > 0.5 and float(half.flops) < ds.attrs["flops_dense"] / 2
    # every hidden layer lost half its units; the output layer keeps all its 10
    ls = half.layer_sparsity.to_series()
    assert ls["0"] == pytest.approx(0.5) and 0.5 < ls["7"] < 1 and ls["9"] == pytest.approx(0.5)


def test_cache_roundtrip(tmp_path):
    kw = dict(task="breast_cancer", priors=["map"], criteria=["magnitude"], sparsities=[0.0, 0.5],
              seeds=[0], train_kwargs=dict(n_epochs=1))
    a = cached_sparsity_curve(cache_dir=tmp_path, progress=False, **kw)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".nc"
    b = cached_sparsity_curve(cache_dir=tmp_path, progress=False, **kw)
    np.testing.assert_array_equal(a.accuracy.values, b.accuracy.values)
    assert list(b.criterion.values) == ["magnitude"] and b.attrs["task"] == "breast_cancer"
    # settings keep their types through the netCDF file (no JSON strings)
    assert b.attrs["train_n_epochs"] == 1 and b.attrs["map_prior_precision"] == 1.0
    assert not any(isinstance(v, str) and v.startswith(("{", "[")) for v in b.attrs.values())
    assert b.parameter_tensor.values[0] == "0.weight"


@pytest.mark.parametrize("kw,match", [
    (dict(sparsities=[0.5, 1.0]), r"sparsities must lie in \[0, 1\)"),
    (dict(criteria=["opd", "obs"]), "unknown criterion 'obs'"),
    (dict(priors=["horseshoe"]), "unknown prior 'horseshoe'"),
    (dict(task="mnist"), "task must be one of"),
    (dict(hessian_structure="full"), "hessian_structure"),
])
def test_curve_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        sparsity_curve(**kw, progress=False)


def test_estimator_api_and_errors():
    t = make_task("breast_cancer")
    with pytest.raises(NotFittedError, match="not fitted"):
        SpaM().prune(0.5)
    with pytest.raises(ValueError, match="unknown prior"):
        SpaM(prior="lasso").fit(t.X_train, t.y_train)
    with pytest.raises(ValueError, match="no prunable layers"):
        SpaM(model=torch.nn.Sequential(torch.nn.Flatten())).fit(t.X_train, t.y_train)
    est = SpaM(prior="map", n_epochs=3).fit(t.X_train.numpy(), t.y_train.numpy())
    assert est.la_ is None
    pn = est.prune(0.7, "opd")  # post-hoc Laplace with the weight-decay prior
    assert est.la_ is not None and abs(pn.mask.sparsity() - 0.7) < 1e-3
    assert est.score(t.X_test, t.y_test) > 0.8
    with pytest.raises(ValueError, match="sparsity"):
        est.prune(-0.2, "magnitude")


def test_finetune_keeps_mask_under_learned_prior():
    t = make_task("breast_cancer")
    est = SpaM(prior="diagonal", **FAST).fit(t.X_train, t.y_train)
    prior = est._finetune_prior()
    assert set(prior) == {n for n, _ in est.model_.named_parameters()}
    pn = est.prune(0.9, "opd", finetune_epochs=2)
    for k, m in pn.mask.masks.items():
        w = dict(pn.model.named_parameters())[k]
        assert torch.all(w[~m] == 0)
    dense_w = dict(est.model_.named_parameters())["0.weight"]
    kept = pn.mask.masks["0.weight"]
    assert not torch.equal(dense_w[kept], pn.model[0].weight[kept])  # fine-tuning moved them
