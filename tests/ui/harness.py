"""Shared browser-test harness: serve ``apps/`` for real, open pages in headless Chromium.

Every dashboard's browser test uses the fixtures from ``tests/ui/conftest.py``::

    @pytest.mark.ui
    def test_my_dashboard(panel_server, ui_page):
        page = open_dashboard(ui_page, panel_server, "my_dashboard")   # waits for plots to render
        before = plot_digest(page)
        set_widget_value(page, "Lead", 5)          # drive a widget (by its title/label/name)
        wait_for_change(page, before)              # the plots' data changed
        # ui_page fails the test on any browser console error or page error at teardown, and
        # panel_server fails it when the server log shows a handler/callback traceback.

What is checked, and how:
(a) handler failures: the server's log (stdout+stderr of ``panel serve``) is scanned for
    tracebacks and Bokeh's "Error running application handler" after every test
    (``panel_server.assert_clean()`` runs in the ``ui_page`` fixture teardown);
(b) rendering: ``open_dashboard`` waits until BokehJS has a document, the document is idle, and at
    least ``min_plots`` plot canvases are drawn (Bokeh renders in shadow DOM, which Playwright's CSS
    locators pierce);
(c) change: ``plot_digest`` summarises every ColumnDataSource in the page's Bokeh documents (column
    names, lengths and sums) plus the text of every Div/Markdown/HTML model, so any data update of
    a plot changes it;
(d) console errors: every ``console.error`` and uncaught page error is collected by ``ui_page``.

Widgets can be driven through the DOM (``select_option``, ``click_button``) or through the
BokehJS model (``set_widget_value``), which syncs to the server exactly as user input does.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_RECORD_START = re.compile(r"(?m)^(?=\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})")
_TEARDOWN_NOISE = re.compile(r"WebSocketClosedError|StreamClosedError")
_ERROR_PATTERNS = re.compile(
    r"Traceback \(most recent call last\)|Error running application handler|ERROR:|Exception in callback"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PanelServer:
    """``panel serve apps/`` in a subprocess with its log captured to a file."""

    def __init__(self, apps_dir: Path = REPO / "apps", log_path: Path | None = None, data_dir: Path | None = None):
        self.apps_dir = Path(apps_dir)
        self.port = _free_port()
        self.log_path = Path(log_path or (REPO / ".pytest_panel_server.log"))
        self.data_dir = data_dir
        self._proc: subprocess.Popen | None = None
        self._checked_upto = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app_url(self, dashboard: str | None = None) -> str:
        base = f"{self.url}/{self.apps_dir.name}"
        return base if dashboard is None else f"{base}?dashboard={dashboard}"

    def start(self, timeout: float = 120.0) -> PanelServer:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.data_dir is not None:
            env["WORKBENCH_DATA"] = str(self.data_dir)
        self._log = open(self.log_path, "w")
        cmd = [
            sys.executable, "-m", "panel", "serve", str(self.apps_dir),
            "--port", str(self.port), "--address", "127.0.0.1",
            "--allow-websocket-origin", f"127.0.0.1:{self.port}",
            "--check-unused-sessions", "5000", "--unused-session-lifetime", "15000",
        ]
        self._proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"panel serve exited with {self._proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"panel serve did not listen on {self.port} within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def new_errors(self) -> str:
        """Log records since the last check that hold a traceback or handler error, joined ('' if none).

        A record is a timestamped log line with its continuation lines. Records about a websocket
        that a closed page left behind (``WebSocketClosedError`` / ``StreamClosedError`` raised
        while the server was still writing to it) are connection teardown, not app failures.
        """
        text = self.log()
        chunk, self._checked_upto = text[self._checked_upto :], len(text)
        records = _RECORD_START.split(chunk)
        bad = [r for r in records if _ERROR_PATTERNS.search(r) and not _TEARDOWN_NOISE.search(r)]
        return "\n".join(bad)

    def assert_clean(self) -> None:
        errors = self.new_errors()
        assert not errors, f"the panel server logged an error (handler or callback failed):\n{errors}"


def launch_browser(playwright):
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing; run `bash scripts/ensure_chromium.sh` (make test does)")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


_RENDERED_JS = """
(minPlots) => {
  const B = window.Bokeh;
  if (!B || !B.documents || B.documents.length === 0) return false;
  if (!B.documents.every((d) => d.is_idle)) return false;
  let canvases = 0;
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS') canvases += 1;
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return canvases >= minPlots;
}
"""

_DIGEST_JS = """
() => {
  const out = [];
  const summarise = (v) => {
    if (v == null) return 'null';
    if (typeof v === 'string') return 's' + v.length + ':' + v.slice(0, 64);
    if (typeof v === 'number') return 'n' + v;
    if (ArrayBuffer.isView(v) || Array.isArray(v)) {
      let s = 0, n = 0;
      const len = v.length;
      const step = Math.max(1, Math.floor(len / 5000));
      for (let i = 0; i < len; i += step) {
        const x = v[i];
        if (typeof x === 'number' && isFinite(x)) { s += x * ((i % 7) + 1); n += 1; }
        else if (typeof x === 'string') { s += x.length; n += 1; }
        else if (x && (ArrayBuffer.isView(x) || Array.isArray(x))) { s += x.length; n += 1; }
      }
      return 'a' + len + ':' + s.toPrecision(10);
    }
    if (v && v.array) return summarise(v.array);
    return typeof v;
  };
  for (const doc of (window.Bokeh?.documents ?? [])) {
    const models = Array.from(doc.all_models ?? []);
    for (const m of models) {
      const name = m.constructor?.__name__ ?? m.type ?? '';
      if (m.data !== undefined && m.selected !== undefined) {
        const data = m.data instanceof Map ? Object.fromEntries(m.data) : m.data;
        const cols = Object.keys(data).sort();
        out.push(name + '{' + cols.map((c) => c + '=' + summarise(data[c])).join(',') + '}');
      } else if (typeof m.text === 'string' && ('text' in m)) {
        out.push(name + ':' + m.text.length + ':' + m.text.slice(0, 200));
      } else if (typeof m.object === 'string') {
        out.push(name + ':' + m.object.length);
      }
    }
  }
  return out.sort().join('\\n');
}
"""

_SET_WIDGET_JS = """
([key, value]) => {
  const matches = [];
  for (const doc of (window.Bokeh?.documents ?? [])) {
    for (const m of doc.all_models) {
      if (!('value' in m) && !('active' in m)) continue;
      const labels = [m.title, m.name, m.label].filter((x) => typeof x === 'string');
      if (labels.some((l) => l === key || l.replace(/:\\s*$/, '') === key)) matches.push(m);
    }
  }
  if (matches.length === 0) return 'no widget titled ' + JSON.stringify(key);
  const m = matches[0];
  if ('value' in m) { m.value = value; } else { m.active = value; }
  return 'ok';
}
"""


def wait_rendered(page, min_plots: int = 1, timeout: float = 90_000) -> None:
    page.wait_for_function(_RENDERED_JS, arg=min_plots, timeout=timeout, polling=250)


def open_dashboard(page, server: PanelServer, dashboard: str | None, min_plots: int = 1, timeout: float = 120_000):
    """Navigate to a dashboard (None: the landing page) and wait until its plots are drawn."""
    page.goto(server.app_url(dashboard), wait_until="domcontentloaded", timeout=timeout)
    wait_rendered(page, min_plots=min_plots, timeout=timeout)
    server.assert_clean()
    return page


def plot_digest(page) -> str:
    """A summary of all plotted data and texts in the page; it changes when any plot's data does."""
    return page.evaluate(_DIGEST_JS)


def wait_for_change(page, before: str, timeout: float = 60.0) -> str:
    """Poll until :func:`plot_digest` differs from ``before``; return the new digest."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = plot_digest(page)
        if now != before:
            # let the rest of the update land before callers compare again
            page.wait_for_timeout(300)
            return plot_digest(page)
        page.wait_for_timeout(200)
    raise AssertionError(f"the plots did not change within {timeout} s")


def wait_idle(page, timeout: float = 60_000) -> None:
    page.wait_for_function(
        "() => (window.Bokeh?.documents ?? []).every((d) => d.is_idle)", timeout=timeout, polling=200
    )


def set_widget_value(page, key: str, value) -> None:
    """Set the value of the Bokeh widget whose title, name or label is ``key`` (as user input)."""
    result = page.evaluate(_SET_WIDGET_JS, [key, json.loads(json.dumps(value))])
    assert result == "ok", result


def select_option(page, label: str, option: str) -> None:
    """Choose ``option`` in the <select> element labelled ``label`` (through the DOM)."""
    page.get_by_label(label, exact=False).first.select_option(option)


def click_button(page, name: str) -> None:
    page.get_by_role("button", name=name).first.click()
