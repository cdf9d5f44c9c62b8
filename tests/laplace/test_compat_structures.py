"""workbench.laplace.compat's low-rank, functional and subnetwork classes and subnetwork masks."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.laplace import Laplace as Native
from workbench.laplace.compat import (
    DiagLaplace,
    FullLaplace,
    FullSubnetLaplace,
    FunctionalLaplace,
    Laplace,
    LargestMagnitudeSubnetMask,
    LargestVarianceDiagLaplaceSubnetMask,
    LastLayerSubnetMask,
    LowRankLaplace,
    ModuleNameSubnetMask,
    ParamNameSubnetMask,
    RandomSubnetMask,
)


def _setup(likelihood, n=30):
    X = torch.randn(n, 3)
    y = torch.randint(0, 3, (n,)) if likelihood == "classification" else torch.randn(n, 1)
    model = nn.Sequential(
        nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3 if likelihood == "classification" else 1)
    )
    return model, X, y, DataLoader(TensorDataset(X, y), batch_size=10)


@pytest.mark.parametrize("likelihood", ["regression", "classification"])
def test_subnetwork_through_masks_equals_the_native_subnetwork(likelihood):
    model, X, y, dl = _setup(likelihood)
    idx = LargestMagnitudeSubnetMask(model, n_params_subnet=9).select()
    kw = {"sigma_noise": 0.4} if likelihood == "regression" else {}
    la = Laplace(
        model,
        likelihood,
        subset_of_weights="subnetwork",
        hessian_structure="full",
        subnetwork_indices=idx,
        prior_precision=0.5,
        **kw,
    )
    assert isinstance(la, FullSubnetLaplace) and la.n_params_subnet == 9
    la.fit(dl)
    ref = Native(
        model,
        likelihood,
        subset_of_weights="subnetwork",
        subnetwork_indices=idx,
        prior_precision=0.5,
        **kw,
    ).fit(dl)
    torch.testing.assert_close(la.log_marginal_likelihood(), ref.log_marginal_likelihood())
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(la.mean, flat)
    torch.testing.assert_close(la.mean_subnet, flat[idx])
    s = la.sample(4)
    keep = torch.ones(len(flat), dtype=torch.bool)
    keep[idx] = False
    assert s.shape == (4, len(flat)) and torch.equal(s[:, keep], flat[keep].expand(4, -1))
    la.prior_precision = torch.full((9,), 2.0)  # diagonal over the subnetwork
    torch.testing.assert_close(la.log_marginal_likelihood(), ref.log_marginal_likelihood(2.0))
    with pytest.raises(ValueError, match="Diagonal or scalar prior"):
        la.prior_precision = torch.ones(4)
    with pytest.raises(ValueError, match="LongTensor"):
        Laplace(model, likelihood, "subnetwork", "full", subnetwork_indices=[1, 2])


def test_masks_select_the_documented_entries():
    model, X, y, dl = _setup("classification")
    last = torch.arange(16, 31)  # 2.weight (12) and 2.bias (3)
    assert torch.equal(ModuleNameSubnetMask(model, ["2"]).select(), last)
    assert torch.equal(LastLayerSubnetMask(model).select(dl), last)
    assert torch.equal(ParamNameSubnetMask(model, ["0.bias"]).select(), torch.arange(12, 16))
    diag = DiagLaplace(model, "classification", prior_precision=1.5)
    var_idx = LargestVarianceDiagLaplaceSubnetMask(model, 6, diag).select(dl)
    ref = Native(model, "classification", hessian_structure="diag", prior_precision=1.5).fit(dl)
    expect = (
        torch.argsort(1 / ref.posterior_precision_diagonal(), descending=True)[:6].sort().values
    )
    assert torch.equal(var_idx, expect)
    mask = RandomSubnetMask(model, 5)
    assert mask.select().shape == (5,) and mask.n_params_subnet == 5
    with pytest.raises(ValueError, match="already selected"):
        mask.select()
    with pytest.raises(ValueError, match="cannot be larger"):
        LargestMagnitudeSubnetMask(model, 1000)
    with pytest.raises(ValueError, match="do not exist"):
        ParamNameSubnetMask(model, ["nope"]).select()


@pytest.mark.parametrize("likelihood", ["regression", "classification"])
def test_lowrank_and_functional_at_full_size_equal_the_full_laplace(likelihood):
    model, X, y, dl = _setup(likelihood)
    kw = {"sigma_noise": 0.4} if likelihood == "regression" else {}
    full = FullLaplace(model, likelihood, prior_precision=0.5, **kw)
    full.fit(dl)
    P = full.n_params
    lr = LowRankLaplace(
        model, likelihood, prior_precision=0.5, backend_kwargs={"low_rank": P}, **kw
    )
    lr.fit(dl)
    torch.testing.assert_close(lr.log_marginal_likelihood(), full.log_marginal_likelihood())
    (U, lam), prior = lr.posterior_precision
    torch.testing.assert_close(
        U @ torch.diag(lam) @ U.T + torch.diag(prior), full.posterior_precision
    )
    with pytest.raises(ValueError, match="does not support updating"):
        lr.fit(dl, override=False)
    gp = Laplace(model, likelihood, "all", "gp", n_subset=30, prior_precision=0.5, **kw)
    assert isinstance(gp, FunctionalLaplace)
    gp.fit(dl)
    got, ref = gp(X[:4], pred_type="gp"), full(X[:4], pred_type="glm")
    if likelihood == "regression":
        torch.testing.assert_close(got[1], ref[1])
    else:  # laplace-torch keeps only the diagonal of the softmax Hessian
        diag = Native(
            model,
            likelihood,
            hessian_structure="gp",
            prior_precision=0.5,
            structure_options={"likelihood_hessian": "diagonal"},
        ).fit(dl)
        torch.testing.assert_close(got, diag(X[:4]))
        assert (got - ref).abs().max() > 1e-4
    with pytest.raises(ValueError, match="Only gp is supported"):
        gp(X[:4], pred_type="glm")
    with pytest.raises(ValueError, match="isotropic"):
        gp.prior_precision = torch.ones(4)
    with pytest.raises(ValueError, match="independent_outputs"):
        FunctionalLaplace(model, likelihood, 10, independent_outputs=True)
    with pytest.raises(ValueError, match="num_data"):
        FunctionalLaplace(model, likelihood, 100, **kw).fit(dl)


def test_functional_laplace_subset_follows_laplace_torchs_scaling():
    """n_subset = M < N: covariance (M/N)·(P0 + (M/N)·G_M)⁻¹ (laplace-torch's prior kernel
    (M/N)·J P0⁻¹ Jᵀ); classification keeps only the diagonal of the loss Hessian."""
    from .dense import dense_ggn, jacobian

    model, X, y, dl = _setup("regression", n=30)
    gp = FunctionalLaplace(model, "regression", n_subset=10, prior_precision=0.5, sigma_noise=0.4)
    gp.fit(dl)
    ctx = gp.native_.blocks_[0].context_index
    assert len(ctx) == 10
    c = 10 / 30
    G = dense_ggn(model, X[ctx], y[ctx], "regression") / 0.16
    Sigma = c * torch.linalg.inv(0.5 * torch.eye(G.shape[0]) + c * G)
    J, _ = jacobian(model, X[:4])
    torch.testing.assert_close(gp(X[:4])[1], J @ Sigma @ J.transpose(1, 2))
    mu, cov = gp(X[:4], joint=True)
    Jf = J.reshape(4, -1)
    torch.testing.assert_close(cov, Jf @ Sigma @ Jf.T)
