"""The landing page of ``panel serve apps/`` lists and opens every dashboard."""

import pytest

from tests.ui.harness import REPO, wait_idle
from workbench.dashboards.landing import discover_dashboards


def test_discovery_reads_docstrings_without_running(tmp_path):
    (tmp_path / "main.py").write_text('"""landing"""\n')
    (tmp_path / "alpha.py").write_text('"""Alpha board\n\nShows alpha\nthings."""\nraise SystemExit("must not run")\n')
    (tmp_path / "_private.py").write_text('"""hidden"""\n')
    (tmp_path / "broken.py").write_text("def (:\n")
    found = {d.name: d for d in discover_dashboards(tmp_path)}
    assert set(found) == {"alpha", "broken"}
    assert found["alpha"].title == "Alpha board"
    assert found["alpha"].description == "Shows alpha things."
    assert "does not parse" in found["broken"].description


def test_discovery_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        discover_dashboards(tmp_path / "nope")


@pytest.mark.ui
def test_landing_page_links_every_dashboard(panel_server, ui_page):
    page = ui_page
    page.goto(panel_server.app_url(), wait_until="domcontentloaded")
    wait_idle(page)
    dashboards = discover_dashboards(REPO / "apps")
    assert dashboards, "apps/ holds no dashboard"
    cards = page.locator(".wb-card")
    cards.first.wait_for(timeout=60_000)
    assert cards.count() == len(dashboards)
    for d in dashboards:
        assert page.locator(f'.wb-card[data-dashboard="{d.name}"] a').inner_text() == d.title
    panel_server.assert_clean()


@pytest.mark.ui
def test_unknown_dashboard_is_reported(panel_server, ui_page):
    page = ui_page
    page.goto(panel_server.app_url("no_such_board"), wait_until="domcontentloaded")
    wait_idle(page)
    page.get_by_text("Unknown dashboard 'no_such_board'").first.wait_for(timeout=30_000)
