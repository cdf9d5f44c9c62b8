"""Browser test of the SpaM sparsity explorer: what a person sees, not only data updates."""

import pytest

from tests.ui.harness import open_dashboard, plot_digest, set_widget_value, wait_for_change
from tests.ui.visual import assert_plots_visible, server_log_problems


@pytest.mark.ui
def test_sparsity_explorer_renders_and_updates(panel_server, ui_page):
    log_start = len(panel_server.log())
    page = open_dashboard(ui_page, panel_server, "sparsity", min_plots=3)
    # the default curve (small run, or the on-disk cache) arrives in the background
    page.get_by_text("computed in").first.wait_for(timeout=180_000)
    # criteria are labelled, bars have a legend, layers are named by module
    page.get_by_label("OPD (optimal posterior damage)").first.wait_for(timeout=10_000)
    assert_plots_visible(page, "sparsity_default", min_plots=3)
    before = plot_digest(page)
    set_widget_value(page, "Metric", "flops")           # re-drawn from the cached Dataset
    after = wait_for_change(page, before, timeout=60)
    assert_plots_visible(page, "sparsity_flops", min_plots=3)
    set_widget_value(page, "Per-layer view at sparsity", "0.6")  # select values are labels
    after2 = wait_for_change(page, after, timeout=60)
    set_widget_value(page, "Prior structure", "map")   # a new curve, computed off the event loop
    wait_for_change(page, after2, timeout=180)
    page.get_by_text("prior map").first.wait_for(timeout=180_000)
    page.get_by_text("computed in").first.wait_for(timeout=180_000)
    assert_plots_visible(page, "sparsity_map_prior", min_plots=3)
    # unchecking every criterion: a message, the old plots marked, no traceback
    for label in ("OPD (optimal posterior damage)", "magnitude |w|", "SNIP", "random"):
        page.get_by_label(label, exact=True).first.uncheck()
    page.get_by_text("choose at least one pruning criterion").first.wait_for(timeout=30_000)
    assert not server_log_problems(panel_server, since=log_start)
    panel_server.assert_clean()
