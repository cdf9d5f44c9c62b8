"""Native missing values (a learned offset per numeric feature, a missing level per categorical)
and low-cardinality numeric columns as ordered categoricals (issue #20.1 / #20.2)."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import functional_call, jacrev

from workbench.nam import LaplaceAdditiveClassifier, LaplaceAdditiveRegressor

FAST = dict(n_epochs=40, n_epochs_burnin=10, marglik_frequency=10, n_hidden=16, batch_size=128,
            lr=2e-2, n_threads=1, device="cpu")


def _table(n=400, seed=0):
    """x0 smooth effect, x1 missing 30 % with a +2 shift when missing (informative), x2 missing
    20 % at random with no effect, a categorical with NaNs, y in target units."""
    rng = np.random.default_rng(seed)
    x0, x1, x2 = rng.uniform(-2, 2, (3, n))
    m1, m2 = rng.random(n) < 0.3, rng.random(n) < 0.2
    colour = rng.choice(["red", "blue"], n).astype(object)
    colour[rng.random(n) < 0.15] = np.nan
    y = np.sin(x0) + 0.5 * x1 * ~m1 + 2.0 * m1 + np.where(colour == "red", 0.5, 0.0) + 0.1 * rng.standard_normal(n)
    X = pd.DataFrame({"x0": x0, "x1": np.where(m1, np.nan, x1), "x2": np.where(m2, np.nan, x2),
                      "colour": pd.Categorical(colour)})
    return X, pd.Series(y, name="y")


@pytest.fixture(scope="module")
def fitted():
    X, y = _table()
    return X, y, LaplaceAdditiveRegressor(**FAST).fit(X, y)


def test_nan_inputs_fit_predict_and_report_missing_effects(fitted):
    X, y, est = fitted
    assert est.preprocessor_.missing_fraction_["x1"] == pytest.approx(X["x1"].isna().mean())
    mu, sd = est.predict(X, return_std=True)
    assert np.isfinite(mu).all() and np.isfinite(sd).all() and est.score(X, y) > 0.9
    sf = est.shape_functions()
    for v in ("missing_mean", "missing_std", "missing_lower", "missing_upper"):
        assert sf[v].dims == ("feature",) and np.isfinite(sf[v]).all()
    assert list(sf["missing_fraction"].values) == pytest.approx(X.isna().mean().values)
    # informative missingness of x1 (+2 when missing, relative to the mean) is found with a band
    # excluding 0; x2's random missingness is not significant
    rep = est.feature_selection_report().set_index("feature")
    assert {"missing_fraction", "missing_effect", "missing_std", "missing_significant",
            "prior_precision_missing"} <= set(rep.columns)
    assert rep.loc["x1", "missing_significant"] and rep.loc["x1", "missing_effect"] > 1.0
    assert not rep.loc["x2", "missing_significant"]
    assert abs(rep.loc["x2", "missing_effect"]) < 0.3
    assert np.isnan(est.prior_precision_.sel(feature="colour", layer="missing"))


def test_missing_prediction_is_the_mean_imputed_one_plus_the_offset(fitted):
    X, _, est = fitted
    row = X.iloc[:5].copy()
    row["x1"] = np.nan
    imputed = row.assign(x1=est.preprocessor_.mean_[est.preprocessor_.numeric_.index("x1")])
    offset = float(est.model_.groups["missing"].offset[1, 0].detach()) * est.y_scale_
    assert np.allclose(est.predict(row) - est.predict(imputed), offset, atol=1e-4 * est.y_scale_)
    # a categorical NaN takes the missing level; unseen levels are still errors
    assert np.isfinite(est.predict(X.assign(colour=pd.Categorical([np.nan] * len(X))))).all()


def test_missing_entries_match_a_dense_autograd_reference(fitted):
    """missing_mean / missing_std against autograd Jacobians of the float64 model, centred by
    their training means, and the inverted posterior precision blocks."""
    X, _, est = fitted
    model = copy.deepcopy(est.model_).double()
    post, pre = est.posterior_, est.preprocessor_
    x_num = est._train[0].double()
    miss = torch.isnan(x_num)
    filled = torch.where(miss, 0.0, x_num)

    def group_jac(name, inp):
        g = model.groups[name]
        params = {k: v.detach() for k, v in g.named_parameters()}
        out = functional_call(g, params, (inp,))
        jac = jacrev(lambda p: functional_call(g, p, (inp,)))(params)
        return out.detach(), jac

    def flat(jac, names, s):  # (N, K, P) of subnetwork s in the module's flat order
        return torch.cat([jac[n][:, s, :, s].reshape(jac[n].shape[0], jac[n].shape[2], -1) for n in names], -1)

    sf = est.shape_functions()
    for s, f in enumerate(pre.numeric_):
        tr_out, tr_jac = group_jac("numeric", filled.unsqueeze(-1))
        at_out, at_jac = group_jac("numeric", torch.zeros(1, x_num.shape[1], 1, dtype=torch.float64))
        mo, mj = group_jac("missing", miss.double())
        one_o, one_j = group_jac("missing", torch.ones(1, x_num.shape[1], dtype=torch.float64))
        names = ["w1", "b1", "w2", "b2"]
        jn = flat(at_jac, names, s)[0] - flat(tr_jac, names, s).mean(0)
        jm = flat(one_j, ["offset"], s)[0] - flat(mj, ["offset"], s).mean(0)
        mean = (at_out[0, s] - tr_out[:, s].mean(0)) + (one_o[0, s] - mo[:, s].mean(0))
        var = jn @ torch.linalg.inv(post.precision["numeric"][s]) @ jn.T
        var = var + jm @ torch.linalg.inv(post.precision["missing"][s]) @ jm.T
        got = sf.sel(feature=f)
        assert float(got["missing_mean"]) == pytest.approx(float(mean[0]) * est.y_scale_, rel=1e-4, abs=1e-5)
        assert float(got["missing_std"]) == pytest.approx(float(var[0, 0].sqrt()) * est.y_scale_, rel=1e-4)
    codes = est._train[1]
    c = pre.categorical_.index("colour")
    table = model.groups["categorical"].table.detach()
    level = len(pre.categories_["colour"])  # the missing level
    onehot = torch.nn.functional.one_hot(codes[:, c], table.shape[1]).double()
    jc = torch.nn.functional.one_hot(torch.tensor(level), table.shape[1]).double() - onehot.mean(0)
    mean = float(jc @ table[c, :, 0])
    var = float(jc @ torch.linalg.inv(post.precision["categorical"][c]) @ jc)
    assert float(sf.sel(feature="colour")["missing_mean"]) == pytest.approx(mean * est.y_scale_, rel=1e-4, abs=1e-6)
    assert float(sf.sel(feature="colour")["missing_std"]) == pytest.approx(var**0.5 * est.y_scale_, rel=1e-4)


def test_no_missing_values_in_training_leaves_the_fit_unchanged_and_predicts_nan_with_the_prior():
    X, y = _table(300, seed=2)
    X = X.drop(columns="colour").fillna(0.0)
    est = LaplaceAdditiveRegressor(**FAST).fit(X, y)
    assert float(est.model_.groups["missing"].offset.abs().max()) == 0.0  # no data, no gradient
    row = X.iloc[:3].assign(x0=np.nan)
    mu, sd = est.predict(row, return_std=True)
    assert np.isfinite(mu).all() and (sd > est.predict(X.iloc[:3], return_std=True)[1]).all()


def test_classifier_with_missing_values():
    X, y = _table(300, seed=1)
    yc = np.where(y > np.median(y), "high", "low")
    est = LaplaceAdditiveClassifier(**FAST).fit(X, yc)
    p = est.predict_proba(X)
    assert np.isfinite(p).all() and set(est.predict(X)) <= {"high", "low"}
    assert np.isfinite(est.shape_functions()["missing_std"]).all()


def test_low_cardinality_numeric_columns_are_ordinal_and_overridable():
    rng = np.random.default_rng(0)
    n = 300
    X = pd.DataFrame({"u": rng.uniform(-1, 1, n), "flag": rng.integers(0, 2, n).astype(float),
                      "kids": rng.integers(0, 4, n)})
    y = X["u"] + 1.5 * X["flag"] - 0.3 * X["kids"] + 0.1 * rng.standard_normal(n)
    est = LaplaceAdditiveRegressor(**FAST).fit(X, y)
    pre = est.preprocessor_
    assert pre.dtypes_ == {"u": "numeric", "flag": "ordinal", "kids": "ordinal"}
    assert pre.categories_["flag"] == [0.0, 1.0] and pre.categories_["kids"] == [0, 1, 2, 3]
    sf = est.shape_functions()
    flag = sf.sel(feature="flag")
    assert str(flag["kind"].values) == "ordinal" and list(flag["x_label"].values[:2]) == ["0.0", "1.0"]
    assert float(flag["mean"][1] - flag["mean"][0]) == pytest.approx(1.5, abs=0.2)
    assert est.score(X, y) > 0.9
    with pytest.raises(ValueError, match=r"'kids' was fitted as ordinal.*\[7.0\].*rows \[0\]"):
        est.predict(X.assign(kids=np.where(np.arange(n) == 0, 7, X["kids"])))
    over = LaplaceAdditiveRegressor(**FAST, feature_types={"kids": "numeric"}).fit(X, y)
    assert over.preprocessor_.dtypes_["kids"] == "numeric" and over.preprocessor_.dtypes_["flag"] == "ordinal"
    off = LaplaceAdditiveRegressor(**FAST, max_ordinal_levels=0).fit(X, y)
    assert set(off.preprocessor_.dtypes_.values()) == {"numeric"}
    with pytest.raises(ValueError, match="feature_types names unknown column"):
        LaplaceAdditiveRegressor(**FAST, feature_types={"nope": "numeric"}).fit(X, y)
    with pytest.raises(ValueError, match="feature_types values must be one of"):
        LaplaceAdditiveRegressor(**FAST, feature_types={"u": "integer"}).fit(X, y)
