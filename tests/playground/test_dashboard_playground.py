"""Laplace playground view without a browser (issue 14): degenerate fits flagged, out-of-range
epochs corrected visibly, stale fits stopped, classes distinguishable, model vs noise bands."""

import pytest

pytest.importorskip("panel")  # the dashboards need the apps extra (absent on a minimal GPU machine)
pytest.importorskip("holoviews")

import holoviews as hv
import numpy as np
import xarray as xr

from workbench.dashboards import laplace_playground as lp
from workbench.dashboards.laplace_playground import LaplacePlayground, fit_warnings

hv.extension("bokeh")


def _curve(values, chosen):
    grid = np.logspace(-3, 3, len(values))
    return xr.DataArray(np.asarray(values, float), dims="prior_precision", coords={"prior_precision": grid},
                        attrs={"chosen_prior_precision": chosen})


def _history(lm):
    return xr.Dataset({"log_marglik": ("epoch", np.asarray(lm, float))}, coords={"epoch": np.arange(len(lm))})


def test_fit_warnings_name_each_problem():
    peaked = -((np.arange(61) - 30) / 10.0) ** 2
    settled = [-10, -9, -8.5, -8.4, -8.4, -8.41]
    assert fit_warnings(_curve(peaked, 1.0), _history(settled), -8.4) == []
    (nan,) = fit_warnings(_curve(peaked, 1.0), _history(settled), float("nan"))
    assert "NaN" in nan
    (edge,) = fit_warnings(_curve(np.arange(61.0), 2.7e3), _history(settled), -8.4)
    assert "edge" in edge and "2.7e+03" in edge
    (rising,) = fit_warnings(_curve(peaked, 1.0), _history([-20, -15, -12, -10, -8]), -8.0)
    assert "still rising" in rising and "more epochs" in rising


def test_degenerate_fit_is_flagged_on_the_page():
    # the example: circles + diagonal Hessian + 85 hidden units -> prior 2.7e3, NaN evidence
    view = LaplacePlayground(problem="circles", hessian_structure="diag", width=85, n_epochs=200)
    assert view._warnings.visible
    text = view._warnings.object
    assert "degenerate or unconverged" in text and "edge" in text
    assert view._status.object.startswith("⚠")


def test_out_of_range_epochs_are_corrected_visibly(monkeypatch):
    view = LaplacePlayground(autostart=False)
    monkeypatch.setattr(view, "_start", lambda: None)
    view._epochs.value = 5000
    assert view.n_epochs == 2000 and view._epochs.value == 2000
    assert "5000 was changed to 2000" in view._epochs_note.object
    view._epochs.value = 3
    assert view.n_epochs == 20 and "3 was changed to 20" in view._epochs_note.object
    view._epochs.value = 300
    assert view.n_epochs == 300 and view._epochs_note.object == ""


def test_a_superseded_fit_stops_at_once_and_is_not_cached():
    job = LaplacePlayground._make_job(("sine", "kron", 8, 1, 500, 123))
    calls = []

    def superseded(fraction, message=""):
        calls.append(fraction)
        return True  # BackgroundWork's answer once a newer job was submitted

    with pytest.raises(lp._Superseded):
        job(superseded)
    assert len(calls) == 1  # stopped after the first epoch, not after 500
    done = []
    out = LaplacePlayground._make_job(("sine", "kron", 8, 1, 20, 123))(lambda f, m="": done.append(f))
    assert len(done) == 20 and out[0].history.sizes["epoch"] == 20


def test_classes_are_distinguishable_and_bands_separate_model_from_noise():
    view = LaplacePlayground(problem="moons", n_epochs=20, width=8)
    scatters = view._predictive_pane.object.traverse(lambda e: e, [hv.Scatter])
    colours = [s.opts.get().kwargs["color"] for s in scatters]
    assert len(scatters) == 2 and len(set(colours)) == 2
    assert {s.label for s in scatters} == {"class 0", "class 1"}
    view.problem = "sine"
    areas = view._predictive_pane.object.traverse(lambda e: e, [hv.Area])
    labels = " | ".join(a.label for a in areas)
    assert "model uncertainty" in labels and "observation noise" in labels


def test_sliders_start_a_fit_only_when_released(monkeypatch):
    import panel as pn
    import param

    view = LaplacePlayground(autostart=False)
    starts = []
    monkeypatch.setattr(view, "_start", lambda: starts.append(view.width))
    slider = next(w for w in view.__panel__().select(pn.widgets.IntSlider) if w.name == "Hidden units")
    for step in (40, 48, 56):  # dragging: the value moves, nothing is fitted
        slider.value = step
    assert starts == [] and view.width == 32
    with param.edit_constant(slider):  # what the browser sends when the slider is released
        slider.value_throttled = 56
    assert starts == [56] and view.width == 56
