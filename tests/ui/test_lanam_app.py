"""LA-NAM explorer in a real browser: the default fit renders, the feature selector and the data-set
choice and the posterior structure (full / KFAC) change the plots, no console errors and no server tracebacks."""

import re

import pytest

from tests.ui.harness import (
    open_dashboard,
    plot_digest,
    set_widget_value,
    wait_for_change,
    wait_idle,
)


def _wait_fitted(page, dataset, timeout_s=300):
    page.get_by_text(re.compile(rf"{dataset}.*log marginal likelihood")).first.wait_for(timeout=timeout_s * 1000)
    wait_idle(page)


@pytest.mark.ui
def test_lanam_explorer(panel_server, ui_page):
    page = open_dashboard(ui_page, panel_server, "lanam", min_plots=4)
    _wait_fitted(page, "synthetic")
    before = plot_digest(page)

    set_widget_value(page, "Feature", "x3")  # another feature's shape function
    after_feature = wait_for_change(page, before)
    assert after_feature != before

    set_widget_value(page, "Data set", "diabetes")  # a new fit in the worker thread
    wait_for_change(page, after_feature, timeout=60)
    _wait_fitted(page, "diabetes")
    after_data = plot_digest(page)
    assert after_data != after_feature

    set_widget_value(page, "Posterior blocks (full GGN or KFAC)", "kron")  # KFAC blocks: a new fit
    wait_for_change(page, after_data, timeout=120)
    _wait_fitted(page, "diabetes")
    assert plot_digest(page) != after_data
    panel_server.assert_clean()
