"""LA-NAM estimators: API, outputs, vectorisation, selection and interactions (small, fast fits)."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from scipy.stats import norm
from sklearn.base import clone

from workbench.datasets import make_additive
from workbench.nam import LaplaceAdditiveClassifier, LaplaceAdditiveRegressor
from workbench.nam.modules import AdditiveNet
from workbench.nam.training import auto_batch_size
from workbench.progress import Progress

FAST = dict(n_epochs=40, n_epochs_burnin=10, marglik_frequency=10, n_hidden=16, batch_size=256,
            lr=2e-2, n_threads=1)


@pytest.fixture(scope="module")
def reg_data():
    return make_additive(400, 3, 1, interaction=None, noise=0.2, random_state=3)


@pytest.fixture(scope="module")
def reg(reg_data):
    return LaplaceAdditiveRegressor(**FAST).fit(reg_data.X, reg_data.y)


def test_vectorised_subnetworks_equal_a_loop_over_features():
    torch.manual_seed(0)
    net = AdditiveNet(5, [3], 2, n_hidden=7, seed=0, dtype=torch.float64)
    net.add_pairs([(0, 3), (2, 4)], seed=0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(11, 5, dtype=torch.float64)
    c = torch.randint(0, 3, (11, 1))
    g = net.groups["numeric"]
    ref = net.groups["bias"].bias.expand(11, 2).clone()
    for s in range(5):  # the reference: one small MLP per feature, in a Python loop
        h = torch.nn.functional.gelu(x[:, s : s + 1] @ g.w1[s] + g.b1[s])
        ref = ref + h @ g.w2[s] + g.b2[s]
    ref = ref + net.groups["categorical"].table[0, c[:, 0]]
    pg = net.groups["pair"]
    for q, (i, j) in enumerate([(0, 3), (2, 4)]):
        h = torch.nn.functional.gelu(x[:, [i, j]] @ pg.w1[q] + pg.b1[q])
        ref = ref + h @ pg.w2[q] + pg.b2[q]
    assert torch.allclose(net(x, c), ref, atol=1e-12)  # summed path (one GEMM per MLP group)
    assert torch.allclose(sum(v.sum(1) for v in net.contributions(x, c).values()), ref, atol=1e-12)


def test_regressor_outputs(reg, reg_data):
    X, y = reg_data.X, reg_data.y
    assert list(reg.feature_names_in_) == list(X.columns) and reg.n_features_in_ == 4
    mu, std = reg.predict(X, return_std=True)
    assert mu.dtype == np.float64 and mu.shape == (len(X),)
    assert np.all(std > reg.sigma_ * 0.999)  # predictive std includes the observation noise
    mu_map, std_map = reg.predict(X, return_std=True, pred_type="map")  # the MAP network: noise only
    assert np.allclose(mu_map, mu) and np.allclose(std_map, reg.sigma_) and (std > std_map).all()
    lpd_map = reg.log_predictive_density(X, y, pred_type="map")
    assert np.allclose(lpd_map, norm.logpdf(y, mu_map, reg.sigma_))
    assert reg.score(X, y) > 0.8
    assert np.isfinite(reg.log_marglik_) and "log_marglik" in reg.history_
    sf = reg.shape_functions()
    assert sf["mean"].dims == ("feature", "x") and sf.sizes == {"feature": 4, "x": 100}
    lo, hi = np.percentile(X["x0"], [5, 95])
    assert sf["x_value"].sel(feature="x0").values[[0, -1]] == pytest.approx([lo, hi])
    assert (sf["lower"] <= sf["mean"]).all() and (sf["mean"] <= sf["upper"]).all()
    z = norm.ppf(0.975)
    assert np.allclose(sf["upper"] - sf["mean"], z * sf["std"])
    narrow = reg.shape_functions(level=0.5)
    assert np.allclose(narrow["upper"] - narrow["mean"], norm.ppf(0.75) * sf["std"])
    # centred by the training-data mean: evaluated on the training inputs, each shape averages 0
    at_train = reg.shape_functions(grid={f: X[f].to_numpy() for f in X.columns})
    assert np.abs(at_train["mean"].mean("x")).max() < 1e-5
    imp = reg.feature_importance_
    assert np.allclose(imp.values, at_train["mean"].var("x").values, rtol=1e-4)
    td = reg.training_data()
    assert td["value"].dims == ("sample", "feature") and np.allclose(td["target"], y)


def test_selection_report_switches_off_the_null_feature(reg, reg_data):
    rep = reg.feature_selection_report()
    assert list(rep.columns[:4]) == ["feature", "kind", "importance", "relative_importance"]
    assert {"prior_precision_w1", "prior_precision_w2", "precision_growth", "switched_off"} <= set(rep.columns)
    null = reg_data.truth.null_features
    assert rep.feature.iloc[-1] in null  # least important
    assert rep.set_index("feature").loc[null, "switched_off"].all()
    assert not rep.set_index("feature").drop(index=null)["switched_off"].any()
    pp = reg.prior_precision_
    assert pp.dims == ("feature", "layer") and np.isnan(pp.sel(layer="table")).all()


def test_sklearn_api_clone_and_params(reg):
    est = clone(reg)
    assert est.get_params()["n_hidden"] == 16 and not hasattr(est, "model_")
    est.set_params(n_epochs=5)
    assert est.n_epochs == 5


def test_categorical_columns_and_column_checks():
    rng = np.random.default_rng(0)
    n = 300
    X = pd.DataFrame({"a": rng.uniform(-1, 1, n), "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
                      "b": rng.uniform(-1, 1, n)})
    effect = X["colour"].map({"red": 1.0, "green": 0.0, "blue": -1.0}).astype(float)
    y = np.sin(2 * X["a"]) + effect + 0.1 * rng.standard_normal(n)
    est = LaplaceAdditiveRegressor(**FAST).fit(X, y)
    sf = est.shape_functions()
    col = sf.sel(feature="colour")
    labels = [s for s in col["x_label"].values.tolist() if s]
    assert sorted(labels) == ["blue", "green", "red"]
    means = dict(zip(labels, col["mean"].values[: len(labels)]))
    assert means["red"] > means["green"] > means["blue"]
    assert sf["kind"].sel(feature="colour") == "categorical"
    # reordered columns are fine; missing / extra / unseen levels are named
    assert np.allclose(est.predict(X[["b", "colour", "a"]]), est.predict(X))
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        est.predict(X[["a", "colour"]])
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        est.predict(X.assign(extra=1.0))
    bad = X.copy()
    bad["colour"] = bad["colour"].astype(str)
    bad.loc[0, "colour"] = "purple"
    with pytest.raises(ValueError, match="'colour'.*purple"):
        est.predict(bad)
    with pytest.raises(ValueError, match="'a' was numeric"):
        est.predict(X.assign(a=X["a"].astype(str)))


@pytest.mark.parametrize(
    "make_bad,match",
    [
        # (NaN in X is no longer an error: missing values are modelled, tests/nam/test_missing_values.py)
        (lambda X, y: (X.assign(x1=np.where(np.arange(len(X)) == 3, np.inf, X["x1"])), y), r"infinite.*'x1'"),
        (lambda X, y: (X, np.where(np.arange(len(y)) == 0, np.nan, y)), "y has 1 missing"),
        (lambda X, y: (X.assign(x2=5.0), y), r"constant column\(s\) \['x2'\]"),
        (lambda X, y: (np.column_stack([X.to_numpy(), np.array(["a"] * len(X), dtype=object)]).astype(object), y),
         "column 'x4'.*non-numeric"),
        (lambda X, y: (X, y[:-1]), "y has 399 samples but X has 400"),
    ],
)
def test_bad_input_is_named(reg_data, make_bad, match):
    X, y = make_bad(reg_data.X, reg_data.y.to_numpy())
    with pytest.raises(ValueError, match=match):
        LaplaceAdditiveRegressor(**FAST).fit(X, y)


def test_bad_classifier_target_and_params(reg_data):
    with pytest.raises(ValueError, match="y has 1 class"):
        LaplaceAdditiveClassifier(**FAST).fit(reg_data.X, np.zeros(len(reg_data.X)))
    with pytest.raises(ValueError, match="n_epochs must be a positive integer"):
        LaplaceAdditiveRegressor(n_epochs=0).fit(reg_data.X, reg_data.y)
    for bad in ("big", 0, 2.5, True):
        with pytest.raises(ValueError, match='batch_size must be a positive integer or "auto"'):
            LaplaceAdditiveRegressor(batch_size=bad).fit(reg_data.X, reg_data.y)


def test_auto_batch_size_gives_several_steps_per_epoch(reg_data):
    # ~8 steps per epoch, clipped to [64, 512]: small data sets no longer get one step per epoch
    assert [auto_batch_size(n) for n in (10, 353, 455, 1000, 4000, 10_000)] == [64, 64, 64, 125, 500, 512]
    fast = {**FAST, "n_epochs": 2, "n_epochs_burnin": 0}
    # the estimator's "auto" (resolve_schedule, #20.3): ~3 steps per epoch, at least 128 rows
    assert LaplaceAdditiveRegressor(**{**fast, "batch_size": "auto"}).fit(reg_data.X, reg_data.y).batch_size_ == 134
    assert LaplaceAdditiveRegressor(**{**fast, "batch_size": 100}).fit(reg_data.X, reg_data.y).batch_size_ == 100
    assert LaplaceAdditiveRegressor().get_params()["batch_size"] == "auto"


def test_binary_classifier_with_string_labels_and_callback():
    d = make_additive(400, 2, 1, interaction=None, task="classification", random_state=1)
    y = np.where(d.y == 1, "yes", "no")
    seen = []
    est = LaplaceAdditiveClassifier(**FAST, callback=seen.append).fit(d.X, y)
    assert [p.state["epoch"] for p in seen] == list(range(FAST["n_epochs"]))
    assert all("loss" in p.metrics and p.total == FAST["n_epochs"] for p in seen)
    assert list(est.classes_) == ["no", "yes"]
    proba = est.predict_proba(d.X)
    assert proba.shape == (400, 2) and np.allclose(proba.sum(1), 1) and ((proba > 0) & (proba < 1)).all()
    assert set(est.predict(d.X)) <= {"no", "yes"} and est.score(d.X, y) > 0.6
    # probit: the predictive is less confident than the plug-in MAP, with the same mean logit
    mean, var = est._predictive(d.X)
    plug = est.predict_proba(d.X, pred_type="map")[:, 1]
    assert np.allclose(plug, 1 / (1 + np.exp(-mean[:, 0])))
    assert (np.abs(proba[:, 1] - 0.5) <= np.abs(plug - 0.5) + 1e-12).all() and (var > 0).all()
    assert np.allclose(est.log_predictive_density(d.X, y, pred_type="map"),
                       np.log(np.where(y == "yes", plug, 1 - plug)))
    with pytest.raises(ValueError, match="pred_type must be one of"):
        est.predict_proba(d.X, pred_type="nn")
    assert est.shape_functions().attrs["units"] == "logit"


def test_multiclass_classifier():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.uniform(-1, 1, (300, 2)), columns=["u", "v"])
    y = np.digitize(X["u"] + 0.2 * rng.standard_normal(300), [-0.3, 0.3])
    est = LaplaceAdditiveClassifier(**FAST).fit(X, y)
    assert est.likelihood_ == "multiclass" and est.predict_proba(X).shape == (300, 3)
    assert est.score(X, y) > 0.7
    sf = est.shape_functions()
    assert sf["mean"].dims == ("feature", "x", "class") and list(sf["class"].values) == [0, 1, 2]
    assert est.rank_interactions().matrix.sizes == {"feature_i": 2, "feature_j": 2}


def test_interaction_ranking_and_second_stage():
    d = make_additive(500, 3, 1, interaction=(0, 1), pair_correlation=0.7, interaction_strength=2.0, random_state=0)
    est = LaplaceAdditiveRegressor(**FAST).fit(d.X, d.y)
    ranking = est.rank_interactions()
    mi = ranking.matrix["mutual_information"]
    assert mi.dims == ("feature_i", "feature_j") and np.allclose(mi, mi.T) and (np.diag(mi) == 0).all()
    top = ranking.table.iloc[0]
    assert {top.feature_i, top.feature_j} == set(d.truth.pair)
    assert ranking.table.mutual_information.is_monotonic_decreasing and len(ranking.table) == 6
    before = est.log_marglik_
    est.fit_interactions(1, n_epochs=30)
    assert est.interaction_pairs_ == [tuple(sorted(d.truth.pair))]
    assert est.log_marglik_ > before  # the planted interaction raises the evidence
    inter = est.interaction_functions(("x1", "x0"), n_points=12)  # either order
    assert inter["mean"].dims == ("x_i", "x_j") and inter.sizes == {"x_i": 12, "x_j": 12}
    assert inter.attrs["feature_i"] == "x1" and (inter["std"] > 0).all()
    with pytest.raises(ValueError, match="no fitted interaction"):
        est.interaction_functions(("x0", "x2"))
    assert isinstance(est.shape_functions(), xr.Dataset)


def test_schedule_adapts_to_the_number_of_rows(reg_data):
    from workbench.nam.training import resolve_schedule

    small, large = resolve_schedule(353), resolve_schedule(100_000)
    assert small == {"n_epochs": 150, "batch_size": 128, "n_epochs_burnin": 15, "marglik_frequency": 15,
                     "lr": 0.02, "patience": None}
    assert large["batch_size"] == 512 and large["patience"] == 3
    assert large["n_epochs"] == round(4000 / (100_000 // 512 + 1))
    given = resolve_schedule(353, n_epochs=40, batch_size=64, n_epochs_burnin=5, marglik_frequency=7, lr=0.1,
                             patience=2)
    assert given == {"n_epochs": 40, "batch_size": 64, "n_epochs_burnin": 5, "marglik_frequency": 7, "lr": 0.1,
                     "patience": 2}
    est = LaplaceAdditiveRegressor(n_epochs=12, n_hidden=8, n_threads=1, device="cpu", patience=1,
                                   marglik_frequency=2, n_epochs_burnin=1).fit(reg_data.X, reg_data.y)
    assert est.schedule_["n_epochs"] == 12 and len(est.history_["epoch"]) <= 12
    with pytest.raises(ValueError, match="patience"):
        LaplaceAdditiveRegressor(patience=0).fit(reg_data.X, reg_data.y)


def test_device_parameter_and_not_fitted(reg_data):
    from workbench.exceptions import NotFittedError

    X, y = reg_data.X.iloc[:120], reg_data.y.iloc[:120]
    fast = {**FAST, "n_epochs": 4, "n_epochs_burnin": 1, "marglik_frequency": 2}
    assert LaplaceAdditiveRegressor().get_params()["device"] is None
    est = LaplaceAdditiveRegressor(**fast, device="cpu").fit(X, y)
    assert est.device_ == torch.device("cpu") and isinstance(est.predict(X), np.ndarray)
    for bad, err in (("nonsense", ValueError), (3.5, TypeError)):
        with pytest.raises(err, match="device"):
            LaplaceAdditiveRegressor(**fast, device=bad).fit(X, y)
    for cls in (LaplaceAdditiveRegressor, LaplaceAdditiveClassifier):
        with pytest.raises(NotFittedError, match="not fitted"):
            cls().predict(X)
        with pytest.raises(NotFittedError, match="not fitted"):
            cls().shape_functions()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_matches_cpu_fit(reg_data):
    X, y = reg_data.X, reg_data.y
    fast = {**FAST, "n_epochs": 10, "n_epochs_burnin": 2, "marglik_frequency": 4}
    cpu = LaplaceAdditiveRegressor(**fast, device="cpu").fit(X, y)
    gpu = LaplaceAdditiveRegressor(**fast, device="cuda").fit(X, y)
    assert gpu.device_.type == "cuda" and gpu.interaction_pairs_ == []
    mu_c, sd_c = cpu.predict(X, return_std=True)
    mu_g, sd_g = gpu.predict(X, return_std=True)
    assert isinstance(mu_g, np.ndarray)
    np.testing.assert_allclose(mu_g, mu_c, rtol=1e-3, atol=1e-3 * float(np.std(y)))
    np.testing.assert_allclose(sd_g, sd_c, rtol=1e-2)
    sf = gpu.shape_functions()
    assert np.isfinite(sf["std"]).all() and gpu.feature_selection_report().shape[0] == X.shape[1]
    gpu.fit_interactions(1, n_epochs=4)
    assert np.isfinite(gpu.predict(X)).all()


def test_callback_gets_progress_with_increasing_done_and_stops_early():
    d = make_additive(300, 2, 1, interaction=None, random_state=0)
    seen = []
    est = LaplaceAdditiveRegressor(**FAST, callback=seen.append).fit(d.X, d.y)
    assert seen and all(isinstance(p, Progress) for p in seen)
    assert [p.done for p in seen] == list(range(1, FAST["n_epochs"] + 1))
    assert all(p.total == FAST["n_epochs"] and p.stage == "main effects" for p in seen)
    assert 0 < seen[0].fraction < seen[-1].fraction == 1.0
    assert all(np.isfinite(p.metrics["loss"]) for p in seen)
    assert len(seen[-1].state["history"]) == FAST["n_epochs"]
    # returning True stops after that epoch, with a usable posterior
    stopped = []
    est = LaplaceAdditiveRegressor(**FAST, callback=lambda p: stopped.append(p) or p.done == 2).fit(d.X, d.y)
    assert [p.done for p in stopped] == [1, 2] and est.history_.sizes["epoch"] == 2
    assert np.isfinite(est.log_marglik_) and np.isfinite(est.predict(d.X)).all()


def test_old_dict_style_callback_still_works_with_future_warning():
    d = make_additive(200, 2, 0, interaction=None, random_state=0)
    epochs = []
    with pytest.warns(FutureWarning, match="Progress"):
        LaplaceAdditiveRegressor(**FAST, callback=lambda info: epochs.append(info["epoch"])).fit(d.X, d.y)
    assert epochs == list(range(FAST["n_epochs"]))
