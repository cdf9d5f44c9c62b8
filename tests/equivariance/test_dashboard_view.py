"""The dashboard view draws every plot from the run Datasets (no browser; see tests/ui)."""

import numpy as np
import pytest

pn = pytest.importorskip("panel")

from workbench.dashboards import equivariance as dash  # noqa: E402
from workbench.equivariance import (  # noqa: E402
    LearnedEquivarianceClassifier,
    LearnedInvarianceClassifier,
    make_task,  # noqa: E402
)


@pytest.fixture(scope="module")
def runs():
    d = make_task("translated", 40, 20, canvas=8, seed=0)
    est = LearnedEquivarianceClassifier(channels=(2, 2), strides=(1, 2), n_epochs=2,
                                        n_epochs_burnin=0, n_hypersteps=3, batch_size=20)
    est.fit(d.X_train, d.y_train, d.X_test, d.y_test)
    eq = est.history_.assign_attrs(task="translated", model="soft", test_accuracy=0.5,
                                   fit_time=1.0)
    r = make_task("rotated", 40, 20, canvas=8, seed=0)
    lila = LearnedInvarianceClassifier(transforms=("rotate",), hidden=(4,), n_samples=2,
                                       n_samples_eval=2, n_epochs=2, n_epochs_burnin=0,
                                       batch_size=20).fit(r.X_train, r.y_train)
    inv = lila.history_.assign_attrs(max_rotation=np.pi / 2, test_accuracy=0.3, fit_time=1.0)
    assert list(eq.attrs["channels"]) == [2, 2] and list(eq.attrs["strides"]) == [1, 2]
    return eq, inv


@pytest.mark.slow
def test_view_draws_from_datasets_and_reacts_to_measure(runs):
    eq, inv = runs
    view = dash.EquivarianceDashboard(autostart=False)
    view._show(eq)
    view._show_lila(inv)
    heat = view._panes["heatmap"].object
    assert "soft" in view._status.object and "trained in" in view._status.object
    view.measure = "output_rms"
    assert view._panes["heatmap"].object is not heat
    vals = heat.data["equivariance"].to_numpy()
    np.testing.assert_allclose(np.sort(vals), np.sort(
        eq.equivariance.sel(measure="effective_dim").values.ravel()))
    assert "rotate" in str(view._lila_status.object)
    pn.panel(view)  # the layout builds
    for plot in (dash.precision_plot(eq), dash.curves_plot(eq), dash.amplitude_plot(inv),
                 dash.equivariance_bars(eq, "output_rms")):
        assert plot is not None
