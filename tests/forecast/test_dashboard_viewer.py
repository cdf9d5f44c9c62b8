"""Forecast viewer pieces without a browser or data (issue 14): grey panels explain themselves,
the trace legend sits outside the frame, the outline is off by default, an unknown neuron is
rejected visibly, and no Panel/Bokeh private attribute is overridden."""

import pytest

pytest.importorskip("panel")  # the dashboards need the apps extra (absent on a minimal GPU machine)
pytest.importorskip("holoviews")

import inspect

import numpy as np

from workbench.dashboards import forecast_viewer
from workbench.dashboards._forecast_figures import SliceFigures, TraceFigure
from workbench.dashboards.forecast_viewer import ForecastViewer


def test_an_empty_plane_says_why_it_is_grey():
    sl = SliceFigures()
    sl.set_grid(np.arange(4.0), np.arange(3.0), (0.0, 1.0))
    truth = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    sl.show(truth, np.full((3, 4), np.nan, np.float32), "no forecast on z-plane 0: no neurons")
    assert [n.text for n in sl.notes] == ["", "no forecast on z-plane 0: no neurons",
                                          "no forecast on z-plane 0: no neurons"]
    sl.show(truth, truth + 0.1)
    assert [n.text for n in sl.notes] == ["", "", ""]


def test_trace_legend_is_outside_the_frame_and_the_label_right():
    tf = TraceFigure()
    legend = tf.figure.legend[0]
    assert legend not in tf.figure.center and legend in tf.figure.below
    tf.set_layout(context=4, horizon=32, color="#000000")
    assert tf.label.x > 30 and tf.label.text_align == "right"  # not over the context frames (< 0)


def test_outline_off_by_default_and_unknown_neurons_rejected():
    v = ForecastViewer(autostart=False, train_video=False)
    assert v.show_outline is False
    v._n_neurons = 300
    v.param.neuron.bounds = (0, 299)
    v._neuron_input.value = 12
    assert v.neuron == 12 and v._neuron_note.object == ""
    v._neuron_input.value = 99999
    assert v.neuron == 12 and v._neuron_input.value == 12
    assert "Neuron 99999 does not exist" in v._neuron_note.object and "0 to 299" in v._neuron_note.object
    v.neuron = 40  # e.g. picked by clicking a cell: the input follows and the note goes
    assert v._neuron_input.value == 40 and v._neuron_note.object == ""


def test_no_private_panel_or_bokeh_attribute_is_overridden():
    source = inspect.getsource(forecast_viewer)
    assert "_debounce" not in source


def test_notebook_layout_images_keep_the_data_aspect_and_titles_are_short():
    """layout="notebook" (issue 21): fixed-size image frames with the grid's y/x extent ratio,
    short titles; the served dashboard's stretching figures are unchanged."""
    import pytest

    v = ForecastViewer(autostart=False, train_video=False, layout="notebook")
    v.slices.set_grid(np.arange(28.0) * 3, np.arange(20.0) * 3, (0.0, 1.0))
    for f in v.slices.figures:
        assert f.sizing_mode is None and f.frame_width == 200
        assert abs(f.frame_height / f.frame_width - 20 / 28) < 0.01
    assert v.trace_figure.figure.title.text == "picked neuron"
    tall = SliceFigures(frame_width=200)
    tall.set_grid(np.arange(10.0), np.arange(100.0), (0.0, 1.0))   # capped height, same aspect
    assert tall.figures[0].frame_height == 300 and tall.figures[0].frame_width == 30
    served = ForecastViewer(autostart=False, train_video=False)
    assert all(f.sizing_mode == "stretch_width" for f in served.slices.figures)
    assert served.trace_figure.figure.title.text == TraceFigure.TITLE
    with pytest.raises(ValueError, match="layout"):
        ForecastViewer(autostart=False, layout="phone")


def test_notebook_layout_shows_the_progress_bar_only_while_busy():
    v = ForecastViewer(autostart=False, train_video=False, layout="notebook")
    v._progress.active = False
    assert v._progress.visible is False
    v._progress.active = True
    assert v._progress.visible is True
