"""Browser test of the Laplace playground (issue 14): every plot shows content after each driven
change, the degenerate circles/diag/85 fit is flagged on the page, an out-of-range epoch count is
corrected visibly, no console errors and no server tracebacks."""

import re

import pytest

from tests.ui.harness import (
    open_dashboard,
    plot_digest,
    set_widget_value,
    wait_for_change,
    wait_idle,
)
from tests.ui.visual import assert_plots_visible, server_log_problems

_SLIDER_JS = """
([title, value]) => {
  // what releasing a dragged slider does: value and value_throttled both change
  for (const doc of (window.Bokeh?.documents ?? []))
    for (const m of doc.all_models)
      if (m.title === title && 'value_throttled' in m) { m.value = value; m.value_throttled = value; return 'ok'; }
  return 'no slider titled ' + title;
}
"""


def _release_slider(page, title, value):
    assert page.evaluate(_SLIDER_JS, [title, value]) == "ok"


def _wait_fitted(page, problem, timeout=120_000):
    page.get_by_text(re.compile(rf"{problem}, \w+ Laplace.*prior precision =")).first.wait_for(timeout=timeout)
    wait_idle(page)
    page.wait_for_timeout(500)


@pytest.mark.ui
def test_playground_fits_and_updates(panel_server, ui_page):
    log_start = len(panel_server.log())
    page = open_dashboard(ui_page, panel_server, "laplace_playground", min_plots=3)
    _wait_fitted(page, "sine")
    assert_plots_visible(page, "playground_default", min_plots=3)
    assert page.get_by_text("degenerate or unconverged").count() == 0  # the default fit is sound
    before = plot_digest(page)

    set_widget_value(page, "Problem", "moons")
    wait_for_change(page, before, timeout=120)
    _wait_fitted(page, "moons")
    assert_plots_visible(page, "playground_moons", min_plots=3)

    set_widget_value(page, "Epochs", 5000)  # out of range: corrected in the input, with a note
    page.get_by_text("5000 was changed to 2000").first.wait_for(timeout=10_000)
    page.get_by_text(re.compile(r"Fitting .*2000 epochs")).first.wait_for(timeout=10_000)
    set_widget_value(page, "Epochs", 200)  # supersedes the 2000-epoch fit (it is stopped)
    _wait_fitted(page, "moons")

    # the degenerate fit: circles + diagonal Hessian + 85 hidden units
    set_widget_value(page, "Problem", "circles")
    set_widget_value(page, "Hessian structure", "diag")
    _release_slider(page, "Hidden units", 85)
    page.get_by_text(re.compile(r"circles, diag Laplace, 1 x 85 tanh MLP")).first.wait_for(timeout=120_000)
    assert page.get_by_text("degenerate or unconverged").first.is_visible()
    wait_idle(page)
    page.wait_for_timeout(500)
    assert_plots_visible(page, "playground_degenerate", min_plots=3)
    panel_server.assert_clean()
    assert not server_log_problems(panel_server, since=log_start)
