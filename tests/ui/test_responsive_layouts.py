"""No dashboard plot makes HoloViews log "responsive mode could not be enabled" (issue 14: a normal
session logged it 54 times). The culprit was hvplot's default fixed width inside a responsive
overlay; every plot builder here is rendered once with the warning captured (no browser)."""

import logging

import numpy as np
import pytest

hv = pytest.importorskip("holoviews")
xr = pytest.importorskip("xarray")


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _responsive_warnings(plots) -> list[str]:
    handler = _Collect()
    logger = logging.getLogger("param")
    logger.addHandler(handler)
    try:
        for plot in plots:
            hv.renderer("bokeh").get_plot(plot)
    finally:
        logger.removeHandler(handler)
    return [m for m in handler.messages if "responsive mode" in m]


def test_playground_plots_are_responsive_without_warnings():
    from workbench.dashboards.laplace_playground import LaplacePlayground

    grid = np.logspace(-2, 2, 25)
    curve = xr.DataArray(-(np.log10(grid) ** 2) - 100, coords={"prior_precision": grid},
                         dims="prior_precision", name="log_marglik",
                         attrs={"chosen_prior_precision": 1.0})
    history = xr.Dataset({"log_marglik": ("epoch", np.linspace(-160, -115, 20))},
                         coords={"epoch": np.arange(20)})
    plots = [LaplacePlayground._marglik_plot(curve), LaplacePlayground._history_plot(history)]
    assert _responsive_warnings(plots) == []


def test_equivariance_and_sparsity_plots_are_responsive_without_warnings():
    from workbench.dashboards import equivariance as eq_dash
    from workbench.dashboards.sparsity import SparsityExplorer
    from workbench.equivariance import LearnedEquivarianceClassifier, make_task
    from workbench.sparsify import sparsity_curve

    d = make_task("translated", 40, 20, canvas=8, random_state=0)
    est = LearnedEquivarianceClassifier(channels=(2, 2), strides=(1, 2), n_epochs=2,
                                        n_epochs_burnin=1, n_hypersteps=2, batch_size=20,
                                        device="cpu").fit(d.X_train, d.y_train, d.X_test, d.y_test)
    ds = est.history_
    curve = sparsity_curve("breast_cancer", priors=["diagonal"], criteria=["random"],
                           sparsities=[0.0, 0.9], seeds=[0], progress=False, device="cpu",
                           train_kwargs=dict(n_epochs=2, n_epochs_burnin=1, marglik_frequency=1,
                                             n_hypersteps=2)).isel(prior=0)
    plots = [eq_dash.equivariance_heatmap(ds), eq_dash.equivariance_bars(ds),
             eq_dash.precision_plot(ds), eq_dash.marglik_plot(ds), eq_dash.accuracy_plot(ds),
             SparsityExplorer.curve_plot(curve, "flops"), SparsityExplorer.layer_plot(curve, 0.9),
             SparsityExplorer.precision_plot(curve)]
    assert _responsive_warnings(plots) == []
