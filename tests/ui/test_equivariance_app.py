"""Browser test of the learned-equivariance dashboard: what a person sees, not only data updates."""

import re

import pytest

from tests.ui.harness import open_dashboard, plot_digest, set_widget_value, wait_for_change
from tests.ui.visual import assert_plots_visible, server_log_problems


@pytest.mark.ui
def test_equivariance_dashboard_default_run_learns_and_every_plot_shows(panel_server, ui_page):
    log_start = len(panel_server.log())
    page = open_dashboard(ui_page, panel_server, "equivariance", min_plots=3)
    # the default quick run (trained on first use in the background, then cached on disk)
    page.get_by_text("trained in").first.wait_for(timeout=400_000)
    page.get_by_text("true rotation").first.wait_for(timeout=200_000)  # then LILA
    status = page.get_by_text("trained in").first.inner_text()
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", status).group(1))
    assert accuracy >= 0.6, f"the default run does not learn: {status}"
    assert not page.get_by_text("still show").first.is_visible()  # nothing marked stale
    assert_plots_visible(page, "equivariance_default", min_plots=6)

    before = plot_digest(page)
    set_widget_value(page, "Equivariance measure", "output_rms")  # redrawn from the Dataset
    wait_for_change(page, before, timeout=60)
    assert_plots_visible(page, "equivariance_output_measure", min_plots=6)

    set_widget_value(page, "Epochs", 5)  # settings no longer match the plots: said so
    page.get_by_text("The settings changed").first.wait_for(timeout=30_000)
    assert not server_log_problems(panel_server, since=log_start)
    panel_server.assert_clean()
