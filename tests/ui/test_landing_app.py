"""The landing page of ``panel serve apps/`` lists and opens every dashboard."""

import pytest

from tests.ui.harness import REPO, wait_idle
from tests.ui.visual import screenshot_dir
from workbench.dashboards.landing import LandingPage, discover_dashboards, thumbnail_uri


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
        assert page.locator(f'.wb-card[data-dashboard="{d.name}"] h3 a').inner_text() == d.title
    # every card with a picture in docs/images shows it; no card title is cut off
    page.wait_for_timeout(500)
    cards_js = """() => {
        const cards = [];
        const walk = (root) => { for (const el of root.querySelectorAll('*')) {
            if (el.classList.contains('wb-card')) cards.push(el);
            if (el.shadowRoot) walk(el.shadowRoot); } };
        walk(document);
        return cards.map((c) => ({name: c.dataset.dashboard,
            img: c.querySelector('img')?.naturalWidth ?? -1,
            clipped: Array.from(c.querySelectorAll('h3, p')).some((t) => t.scrollWidth > t.clientWidth + 1)}));
    }"""
    cards_seen = {c["name"]: c for c in page.evaluate(cards_js)}
    for d in dashboards:
        if (REPO / "docs" / "images" / f"{d.name}.png").is_file():
            assert cards_seen[d.name]["img"] > 0, f"the picture of {d.name} does not load"
        assert not cards_seen[d.name]["clipped"], f"the card of {d.name} is cut off"
    page.screenshot(path=str(screenshot_dir() / "landing.png"), full_page=True)
    panel_server.assert_clean()


def test_cards_show_the_dashboard_pictures_when_there_are_any(tmp_path):
    from PIL import Image

    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "alpha.py").write_text('"""Alpha"""\n')
    (apps / "beta.py").write_text('"""Beta"""\n')
    images = tmp_path / "docs" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (1400, 900), (200, 30, 30)).save(images / "alpha.png")
    assert thumbnail_uri(images, "alpha").startswith("data:image/png;base64,")
    assert thumbnail_uri(images, "beta") is None
    html = LandingPage(apps)._cards_html()  # pictures are looked up next to the apps folder
    alpha, beta = html.split('data-dashboard="beta"')
    assert "<img" in alpha and "<img" not in beta


@pytest.mark.ui
def test_unknown_dashboard_is_reported(panel_server, ui_page):
    page = ui_page
    page.goto(panel_server.app_url("no_such_board"), wait_until="domcontentloaded")
    wait_idle(page)
    page.get_by_text("Unknown dashboard 'no_such_board'").first.wait_for(timeout=30_000)
