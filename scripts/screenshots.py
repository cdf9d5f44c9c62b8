"""Regenerate the README's dashboard pictures: serve ``apps/`` for real and photograph each one.

Usage (``make screenshots`` runs this)::

    .venv/bin/python scripts/screenshots.py                      # all dashboards -> docs/images/
    .venv/bin/python scripts/screenshots.py sparsity equivariance --out /tmp/shots

Each dashboard is opened fresh in headless Chromium at 1400 px, the default view is waited for
until every plot shows content (the visual acceptance check of ``tests/ui/visual.py``, which also
rejects clipped titles), and the page is saved as ``<out>/<name>.png``; the landing page is
``<out>/landing.png``. Default results are computed on first use and cached in the data
directory, so the first run takes a few minutes on two cores and later runs seconds. A dashboard
that does not settle within ``--timeout`` seconds is still photographed (so the picture shows
what is wrong) and the script exits with status 1, naming it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.ui.harness import PanelServer, launch_browser, open_dashboard, wait_idle  # noqa: E402
from tests.ui.visual import assert_plots_visible  # noqa: E402
from workbench.dashboards.landing import discover_dashboards  # noqa: E402

VIEWPORT = {"width": 1400, "height": 900}


def photograph(browser, server: PanelServer, name: str, out: Path, timeout: float) -> str | None:
    """Save ``out/<name>.png``; return what was wrong, or None."""
    page = browser.new_page(viewport=VIEWPORT)
    try:
        if name == "landing":
            page.goto(server.app_url(), wait_until="domcontentloaded")
            wait_idle(page)
            page.locator(".wb-card").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out / "landing.png"), full_page=True)
            return None
        open_dashboard(page, server, name, min_plots=1, timeout=timeout * 1000)
        try:
            assert_plots_visible(page, name, settle=timeout)
            problem = None
        except AssertionError as err:
            problem = str(err)
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / f"{name}.png"), full_page=True)
        return problem
    except Exception as err:  # noqa: BLE001  (photograph what there is, report the rest)
        page.screenshot(path=str(out / f"{name}.png"), full_page=True)
        return f"{type(err).__name__}: {err}"
    finally:
        page.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="dashboards (default: landing page and all of apps/)")
    ap.add_argument("--out", default=str(REPO / "docs" / "images"))
    ap.add_argument("--timeout", type=float, default=400.0, help="seconds per dashboard")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.names or ["landing", *(d.name for d in discover_dashboards(REPO / "apps"))]
    from playwright.sync_api import sync_playwright

    # a terminated run still stops its server (the finally below)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    scratch = Path(tempfile.mkdtemp(prefix="workbench-screenshots-"))
    os.environ["WORKBENCH_SCREENSHOTS"] = str(scratch)  # the per-plot crops of the check
    server = PanelServer(log_path=scratch / "panel_server.log").start()
    failed = {}
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            for name in names:
                t = time.perf_counter()
                problem = photograph(browser, server, name, out, args.timeout)
                state = "ok" if problem is None else "NOT SETTLED"
                print(f"{name:20s} {state:12s} {time.perf_counter() - t:6.0f} s  {out / name}.png")
                if problem:
                    failed[name] = problem
            browser.close()
    finally:
        server.stop()
    print(f"server log and per-plot crops: {scratch}")
    for name, problem in failed.items():
        print(f"\n{name}: {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
