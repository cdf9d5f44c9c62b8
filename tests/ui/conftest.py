"""Fixtures for the browser tests: one real ``panel serve apps/`` per session, one page per test."""

from __future__ import annotations

import pytest

from tests.ui.harness import PanelServer, launch_browser


@pytest.fixture(scope="session")
def panel_server(tmp_path_factory):
    server = PanelServer(log_path=tmp_path_factory.mktemp("panel") / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        yield browser
        browser.close()


@pytest.fixture
def ui_page(_browser, panel_server):
    """A fresh page; fails the test on console errors, page errors or server-side tracebacks."""
    context = _browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    panel_server.new_errors()  # only what happens during this test counts
    yield page
    page.wait_for_timeout(300)
    context.close()
    assert not errors, "browser console errors:\n" + "\n".join(errors)
    panel_server.assert_clean()
