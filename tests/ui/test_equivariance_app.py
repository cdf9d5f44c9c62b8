"""Browser test of the learned-equivariance dashboard."""

import pytest

from tests.ui.harness import (
    click_button,
    open_dashboard,
    plot_digest,
    set_widget_value,
    wait_for_change,
)


@pytest.mark.ui
def test_equivariance_dashboard_renders_and_updates(panel_server, ui_page):
    page = open_dashboard(ui_page, panel_server, "equivariance", min_plots=3)
    # the default tiny run (trained on first use, then cached on disk) arrives in the background
    page.get_by_text("trained in").first.wait_for(timeout=240_000)
    before = plot_digest(page)
    set_widget_value(page, "Equivariance measure", "output_rms")  # redrawn from the Dataset
    after = wait_for_change(page, before, timeout=60)
    set_widget_value(page, "Model", "cnn")
    click_button(page, "Train")  # a new run, computed off the event loop
    wait_for_change(page, after, timeout=240)
    page.get_by_text("cnn on translated").first.wait_for(timeout=240_000)
    panel_server.assert_clean()
