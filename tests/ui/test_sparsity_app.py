"""Browser test of the SpaM sparsity explorer."""

import pytest

from tests.ui.harness import open_dashboard, plot_digest, set_widget_value, wait_for_change


@pytest.mark.ui
def test_sparsity_explorer_renders_and_updates(panel_server, ui_page):
    page = open_dashboard(ui_page, panel_server, "sparsity", min_plots=3)
    # the default curve (small run, or the on-disk cache) arrives in the background
    page.get_by_text("computed in").first.wait_for(timeout=180_000)
    before = plot_digest(page)
    set_widget_value(page, "Metric", "ece")            # re-drawn from the cached Dataset
    after = wait_for_change(page, before, timeout=60)
    set_widget_value(page, "Per-layer view at sparsity", "0.6")  # select values are labels
    after2 = wait_for_change(page, after, timeout=60)
    set_widget_value(page, "Prior structure", "map")   # a new curve, computed off the event loop
    wait_for_change(page, after2, timeout=180)
    page.get_by_text("prior **map**".replace("**", "")).first.wait_for(timeout=180_000)
    panel_server.assert_clean()
