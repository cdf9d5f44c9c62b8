"""Public surface: read-outs, predictives, state_dict round trip, dtype, and bad-input errors."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace, NotFittedError


def clf_setup(n=30, k=3):
    X, y = torch.randn(n, 4), torch.randint(0, k, (n,))
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, k))
    return model, DataLoader(TensorDataset(X, y), batch_size=10), X


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_readouts_and_predictives(structure):
    model, dl, X = clf_setup()
    la = Laplace(model, "classification", hessian_structure=structure, prior_precision=0.5).fit(dl)
    P = sum(p.numel() for p in model.parameters())
    assert la.mean.shape == (P,) and la.prior_precision_diag.shape == (P,)
    torch.testing.assert_close(
        la.mean, torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    )
    assert la.param_names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert la.param_slices["0.bias"] == slice(24, 30)
    ppd = la.posterior_precision_diagonal()
    assert ppd.shape == (P,) and (ppd >= 0.5 - 1e-12).all()
    ed = la.effective_dimensions()
    assert set(ed) == set(la.param_names)
    assert all(0 <= ed[n] <= la.param_slices[n].stop - la.param_slices[n].start for n in ed)
    probs = la(X[:5], link_approx="probit")
    assert probs.shape == (5, 3) and torch.allclose(probs.sum(-1), torch.ones(5))
    g = torch.Generator().manual_seed(0)
    mc = la(X[:5], link_approx="mc", n_samples=4000, generator=g)
    assert (mc - probs).abs().max() < 0.05
    nn_pred = la(X[:5], pred_type="nn", n_samples=50, generator=g)
    assert nn_pred.shape == (5, 3)
    s = la.predictive_samples(X[:5], n_samples=7, generator=g)
    assert s.shape == (7, 5, 3) and torch.allclose(s.sum(-1), torch.ones(7, 5))
    fv = la.functional_variance(X[:5])
    assert fv.shape == (5, 3, 3)
    assert torch.linalg.eigvalsh(fv).min() > -1e-10


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_functional_variance_equals_dense_j_sigma_jt_and_group_blocks(structure):
    model, dl, X = clf_setup()
    groups = {"body": ["0.weight", "0.bias"], "head": ["2.weight", "2.bias"]}
    la = Laplace(model, "classification", hessian_structure=structure, param_groups=groups).fit(dl)
    Sigma = la.posterior_covariance()
    from .dense import jacobian

    J, _ = jacobian(model, X[:4])
    torch.testing.assert_close(la.functional_variance(X[:4]), J @ Sigma @ J.transpose(1, 2))
    total = 0
    for gname, names in groups.items():
        cols = torch.cat(
            [torch.arange(la.param_slices[n].start, la.param_slices[n].stop) for n in names]
        )
        Jg = J[:, :, cols]
        Sg = Sigma[cols][:, cols]
        fg = la.functional_variance(X[:4], group=gname)
        torch.testing.assert_close(fg, Jg @ Sg @ Jg.transpose(1, 2))
        total = total + fg
    torch.testing.assert_close(total, la.functional_variance(X[:4]))  # block-diagonal posterior
    desc = la.describe_blocks()
    assert {d["group"] for d in desc} == {"body", "head"} and sum(
        d["size"] for d in desc
    ) == la.n_params
    with pytest.raises(ValueError, match="group='nope'.*body"):
        la.functional_variance(X[:4], group="nope")


def test_posterior_samples_have_the_posterior_covariance():
    model, dl, X = clf_setup()
    for structure in ["full", "kron", "diag"]:
        la = Laplace(
            model,
            "classification",
            hessian_structure=structure,
            prior_structure="layerwise",
            prior_precision=torch.tensor([1.0, 2.0, 3.0, 4.0]),
        ).fit(dl)
        S = la.sample(20000, generator=torch.Generator().manual_seed(0))
        emp = torch.cov(S.T)
        cov = la.posterior_covariance()
        assert (emp - cov).abs().max() < 0.06 * cov.diagonal().max()


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.norm = nn.LayerNorm(18)
        self.fc = nn.Linear(18, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.norm(self.conv(x)[:, :, ::2, ::2].flatten(1))))


@pytest.mark.parametrize("structure", ["kron", "full", "diag"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_layer_route_variance_equals_torch_func_jacobian_route(structure, arch):
    from workbench.laplace import predictive

    if arch == "mlp":
        model, dl, X = clf_setup()
    else:
        X, y = torch.randn(12, 1, 5, 5), torch.randint(0, 3, (12,))
        model, dl = SmallCNN(), DataLoader(TensorDataset(X, y), batch_size=6)
    la = Laplace(
        model, "classification", hessian_structure=structure, prior_structure="unitwise"
    ).fit(dl)
    fast = la.functional_variance(X[:5])
    slow = predictive._functional_variance(la, X[:5], None, route="jacobian")
    torch.testing.assert_close(fast, slow)


@pytest.mark.parametrize("likelihood", ["regression", "binary", "heteroscedastic"])
def test_other_likelihood_predictives(likelihood):
    X = torch.randn(20, 2)
    k = {"regression": 2, "binary": 1, "heteroscedastic": 2}[likelihood]
    y = {
        "regression": torch.randn(20, 2),
        "binary": torch.randint(0, 2, (20,)).double(),
        "heteroscedastic": torch.randn(20),
    }[likelihood]
    model = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, k))
    la = Laplace(model, likelihood, hessian_structure="kron").fit(
        DataLoader(TensorDataset(X, y), batch_size=8)
    )
    out = la(X[:3])
    if likelihood == "binary":
        assert out.shape == (3, 1) and ((out > 0) & (out < 1)).all()
    else:
        mu, var = out
        assert var.shape == (3, mu.shape[1], mu.shape[1])
        if likelihood == "heteroscedastic":  # aleatoric σ² = exp(-f2) is part of the variance
            f = model(X[:3]).detach()
            assert (torch.diagonal(var, dim1=1, dim2=2)[:, 0] >= torch.exp(-f[:, 1]) - 1e-12).all()
            torch.testing.assert_close(mu[:, 0], f[:, 0] * torch.exp(-f[:, 1]))


def test_state_dict_round_trip():
    model, dl, X = clf_setup()
    for kw in [
        dict(hessian_structure="kron", prior_structure="unitwise"),
        dict(hessian_structure="full", subset_of_weights="last_layer"),
        dict(hessian_structure="diag", prior_structure="layerwise"),
    ]:
        la = Laplace(model, "classification", **kw).fit(dl)
        la.optimize_prior_precision(n_steps=5)
        sd = la.state_dict()
        la2 = Laplace(model, "classification", **kw).load_state_dict(sd)
        torch.testing.assert_close(la2.log_marginal_likelihood(), la.log_marginal_likelihood())
        torch.testing.assert_close(la2(X[:4]), la(X[:4]))
        torch.testing.assert_close(la2.prior_precision, la.prior_precision)
    with pytest.raises(ValueError, match="hessian_structure"):
        Laplace(model, "classification", hessian_structure="diag").load_state_dict(
            sd | {"config": sd["config"] | {"hessian_structure": "kron"}}
        )


def test_float64_in_float64_out_and_float32_works():
    model, dl, X = clf_setup()
    la = Laplace(model, "classification", hessian_structure="kron").fit(dl)
    assert la.mean.dtype == torch.float64 and la(X[:2]).dtype == torch.float64
    assert la.log_marginal_likelihood().dtype == torch.float64
    m32 = nn.Sequential(nn.Linear(4, 3)).float()
    X32, y = torch.randn(10, 4, dtype=torch.float32), torch.randint(0, 3, (10,))
    la32 = Laplace(m32, "classification", hessian_structure="kron").fit(
        DataLoader(TensorDataset(X32, y), batch_size=5)
    )
    assert la32(X32[:2]).dtype == torch.float32 and la32.mean.dtype == torch.float32


def test_bad_input_errors():
    model, dl, X = clf_setup()
    with pytest.raises(ValueError, match="likelihood='poisson'.*regression"):
        Laplace(model, "poisson")
    with pytest.raises(ValueError, match="hessian_structure='banded'"):
        Laplace(model, "classification", hessian_structure="banded")
    with pytest.raises(ValueError, match="prior_structure"):
        Laplace(model, "classification", prior_structure="per_neuron")
    with pytest.raises(ValueError, match="subset_of_weights"):
        Laplace(model, "classification", subset_of_weights="first_layer")
    la = Laplace(model, "classification")
    with pytest.raises(NotFittedError, match="fit"):
        la(X[:2])
    with pytest.raises(NotFittedError):
        la.log_marginal_likelihood()
    # targets that do not match the likelihood
    with pytest.raises(TypeError, match="integer class targets"):
        Laplace(model, "classification").fit(
            DataLoader(TensorDataset(X, torch.randn(30)), batch_size=10)
        )
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        Laplace(model, "classification").fit(
            DataLoader(TensorDataset(X, torch.full((30,), 5)), batch_size=10)
        )
    with pytest.raises(ValueError, match="targets y of shape"):
        Laplace(model, "regression").fit(
            DataLoader(TensorDataset(X, torch.randn(30, 2)), batch_size=10)
        )
    with pytest.raises(TypeError, match="floating-point"):
        Laplace(model, "regression").fit(
            DataLoader(TensorDataset(X, torch.ones(30, 3, dtype=torch.long)), batch_size=10)
        )
    with pytest.raises(ValueError, match="one output logit"):
        Laplace(model, "binary").fit(DataLoader(TensorDataset(X, torch.ones(30)), batch_size=10))
    # NaN in inputs / targets names the batch
    Xn = X.clone()
    Xn[25, 1] = math.nan
    with pytest.raises(ValueError, match="X of batch 2 contains NaN.*rows \\[5\\]"):
        Laplace(model, "classification").fit(
            DataLoader(TensorDataset(Xn, torch.zeros(30, dtype=torch.long)), batch_size=10)
        )
    yn = torch.randn(30, 3)
    yn[3, 0] = math.inf
    with pytest.raises(ValueError, match="y of batch 0"):
        Laplace(model, "regression").fit(DataLoader(TensorDataset(X, yn), batch_size=10))
    # prior precision of the wrong shape says the expected shape
    la = Laplace(
        model, "classification", prior_structure="layerwise", prior_precision=torch.ones(3)
    )
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(\) or \(4,\).*layerwise"):
        la.fit(dl)
    la = Laplace(model, "classification", prior_structure="layerwise").fit(dl)
    with pytest.raises(ValueError, match=r"expected \(\) or \(4,\)"):
        la.log_marginal_likelihood(prior_precision=torch.ones(5))
    with pytest.raises(ValueError, match="must be finite and > 0"):
        la.prior_precision = -1.0
    with pytest.raises(ValueError, match="unknown parameter names"):
        Laplace(model, "classification", params=["0.wieght"]).fit(dl)
    with pytest.raises(ValueError, match="param_groups"):
        Laplace(model, "classification", prior_structure="group")
    with pytest.raises(ValueError, match="pred_type"):
        Laplace(model, "classification").fit(dl)(X, pred_type="exact")
    with pytest.raises(ValueError, match="sigma_noise"):
        Laplace(model, "regression", sigma_noise=0.0)


def test_eigh_of_degenerate_float32_factor_is_finite():
    # a float32 KFAC factor with many exactly repeated zero eigenvalues (dead input units)
    from workbench.laplace.posteriors import _eigh

    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 64, generator=g, dtype=torch.float32)
    a[:, 20:] = 0.0
    A = a.T @ a / 200
    lam, Q = _eigh(A)
    assert lam.dtype == torch.float32 and torch.isfinite(lam).all() and torch.isfinite(Q).all()
    assert (lam >= 0).all()
    torch.testing.assert_close(Q @ torch.diag(lam) @ Q.T, A, atol=1e-4, rtol=1e-4)
