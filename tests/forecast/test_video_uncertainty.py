"""Last-layer Laplace of the video forecaster: exact against the closed form, calibration output."""

import numpy as np
import pytest
import torch

from workbench.forecast.segments import segment_means
from workbench.forecast.video import VideoForecaster
from workbench.forecast.video.uncertainty import LastLayerLaplace


@pytest.fixture(scope="module")
def fitted(tiny):
    est = VideoForecaster(context=2, horizon=4, widths=(4, 8), emb_dim=8, batch_size=2, n_steps=4,
                          n_threads=1, dtype="float64").fit(tiny)
    lla = LastLayerLaplace(est, n_fit_windows=3, n_noise_windows=3, max_voxels=2000).fit(tiny)
    return est, lla


def test_posterior_matches_closed_form(fitted, tiny):
    est, lla = fitted
    la = lla.la_
    # rebuild the design the Laplace saw is not possible after subsampling, so check the algebra:
    # Sigma^-1 = GGN / sigma^2 + delta I and GGN = Phi^T Phi for the linear read-out
    prec = torch.linalg.inv(lla.cov_)
    delta = float(la.prior_precision.reshape(-1)[0])
    ggn = (prec - delta * torch.eye(prec.shape[0], dtype=prec.dtype)) * la.sigma_noise.reshape(()) ** 2
    evals = torch.linalg.eigvalsh(ggn)
    assert evals.min() > -1e-6 * evals.max()                       # PSD, as Phi^T Phi must be
    # bias-bias entry of Phi^T Phi counts the rows
    b = la.param_slices["bias"].start
    assert abs(float(ggn[b, b]) - lla.n_rows_) < 1e-6 * lla.n_rows_
    # functional variance from the core == our batched quadratic form, for random feature rows
    phi = torch.randn(5, est.model_.readout.weight.shape[1], dtype=torch.float64)
    fv = la.functional_variance(phi)[:, 0, 0]
    torch.testing.assert_close(lla._epistemic(phi), fv, rtol=1e-10, atol=1e-12)


def test_closed_form_on_known_design():
    """The Laplace core on an nn.Linear reproduces (Phi^T Phi / s^2 + d I)^-1 exactly (float64)."""
    from workbench.laplace import Laplace
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(200, 4, generator=g, dtype=torch.float64)
    y = phi @ torch.tensor([[0.5], [-1.0], [0.2], [0.0]], dtype=torch.float64) + 0.1
    lin = torch.nn.Linear(4, 1).double()
    la = Laplace(lin, "regression", hessian_structure="full", prior_precision=2.0, sigma_noise=0.3)
    la.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(phi, y), batch_size=64))
    x = torch.zeros(200, 5, dtype=torch.float64)         # Jacobian rows in the core's parameter order
    x[:, la.param_slices["weight"]] = phi
    x[:, la.param_slices["bias"]] = 1.0
    ref = torch.linalg.inv(x.T @ x / 0.09 + 2.0 * torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(la.posterior_covariance(), ref, rtol=1e-10, atol=1e-12)


def test_trace_variance_is_variance_of_voxel_mean(fitted, tiny):
    est, lla = fitted
    starts = np.array([int(tiny.sizes["time"]) - 40])
    out = lla.predict(tiny, starts, leads=[1, 3])
    assert out["std"].dims == ("window", "lead", "z", "y", "x")
    assert out["trace_std"].dims == ("window", "lead", "neuron")
    # brute force for neuron 0: Jacobian rows of its voxels averaged, then J Sigma J^T
    seg = tiny["segmentation"].values
    _, phi, _ = est.predict_arrays(tiny["volume"].values, starts, [1], return_features=True)
    rows = phi[0, 0].movedim(0, -1)[torch.as_tensor(seg == 1)].double()
    j = lla._jac(rows).mean(0, keepdim=True)
    epi = float(j @ lla.cov_ @ j.T) * est.scale_ ** 2
    expect = np.sqrt(epi + lla.trace_noise_[0] ** 2)
    np.testing.assert_allclose(out["trace_std"].values[0, 0, 0], expect, rtol=1e-8)
    np.testing.assert_allclose(out["trace_forecast"].values,
                               segment_means(out["forecast"].values.astype(np.float64), seg,
                                             tiny.sizes["neuron"]), rtol=1e-5)


def test_calibration_reports_coverage_by_level_and_lead(fitted, tiny):
    _, lla = fitted
    cal = lla.calibration(tiny, "test", levels=(0.5, 0.9), max_windows=3)
    assert cal["coverage_voxel"].dims == ("level", "lead")
    for v in ("coverage_voxel", "coverage_neuron"):
        c = cal[v].values
        assert np.all((c >= 0) & (c <= 1)) and np.all(c[1] >= c[0])
    with pytest.raises(ValueError, match="levels"):
        lla.calibration(tiny, levels=(1.5,))
