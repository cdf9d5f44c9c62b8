"""The tutorials in JupyterLab, offline: open, Run All, every plot drawn, no failed resource loads.

One JupyterLab server (from this venv, token-less, on 127.0.0.1) serves a temporary copy of
``notebooks/``; headless Chromium opens each tutorial with every request that is not to that
server aborted (as on a machine without internet access). Checked per notebook:

- opening it does not mark it modified (stored as JupyterLab writes it);
- after Run All every code cell has an execution count and no error output;
- every HoloViews/Panel output holds a canvas with visible (non-blank) pixels;
- no request left the machine and the console shows no failed resource load;
- in 05, moving the forecast viewer's Lead slider changes the plotted data.

Runtime budget (~4 min on 2 cores): 01, 04 and 05 (lines, areas, scatter, overlays, heat maps,
images, layouts, the viewer) are run in full; for 02 and 03 only the cells up to the first plot
run, which checks the same loading path (nbmake runs them in full).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ui.harness import REPO, _free_port, launch_browser, plot_digest, set_widget_value

pytestmark = pytest.mark.ui

NOTEBOOKS = REPO / "notebooks"
SHOTS = os.environ.get("WORKBENCH_UI_SHOTS")  # a folder: keep a full-page screenshot per notebook
_TRACEBACK = re.compile(r"Traceback|^\w*Error\b", re.M)
FULL = {"01_laplace_basics.ipynb", "04_equivariance.ipynb", "05_forecasting.ipynb"}
SETTINGS = {
    # every cell attached to the DOM, so off-screen plots render too
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"

_CANVAS_JS = """
() => {
  const NB = '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook';
  // per plot output: the largest number of visible non-background pixels over its canvases
  const result = [];
  for (const out of document.querySelectorAll(NB + ' .jp-OutputArea-output')) {
    // HoloViews/Panel outputs render as text/html holding a Bokeh root
    // (setup_plotting's own output is an empty, zero-height root)
    if (!out.querySelector('[data-root-id]') || out.getBoundingClientRect().height < 10) continue;
    let best = 0, canvases = 0;
    const walk = (root) => {
      for (const el of root.querySelectorAll('*')) {
        if (el.tagName === 'CANVAS' && el.width > 0 && el.height > 0) {
          canvases += 1;
          const r = el.getBoundingClientRect();
          if (r.width < 2 || r.height < 2) continue;
          let ctx = null;
          try { ctx = el.getContext('2d'); } catch (e) { ctx = null; }
          if (!ctx) continue;
          const d = ctx.getImageData(0, 0, el.width, el.height).data;
          let n = 0;
          for (let i = 0; i < d.length; i += 16) {
            if (d[i + 3] > 0 && (d[i] < 245 || d[i + 1] < 245 || d[i + 2] < 245)) n += 1;
          }
          best = Math.max(best, n);
        }
        if (el.shadowRoot) walk(el.shadowRoot);
      }
    };
    walk(out);
    const cell = out.closest('.jp-Cell');
    const idx = Array.from(document.querySelectorAll(NB + ' .jp-Cell')).indexOf(cell);
    result.push({cell: idx, canvases, pixels: best});
  }
  return result;
}
"""

_CELLS_JS = """
() => { const NB = '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook'; return Array.from(document.querySelectorAll(NB + ' .jp-CodeCell')).map((c) => ({
  prompt: (c.querySelector('.jp-InputArea-prompt')?.textContent ?? '').trim(),
  stderr: Array.from(c.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
    .map((o) => o.textContent).join('\\n'),
})); }
"""


def _normalize_script():
    spec = importlib.util.spec_from_file_location(
        "normalize_notebooks", REPO / "scripts" / "normalize_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a copy of the tutorials; yields its base URL."""
    root = tmp_path_factory.mktemp("lab")
    work = root / "notebooks"
    shutil.copytree(NOTEBOOKS, work)
    normalize = _normalize_script()
    version = ".".join(map(str, sys.version_info[:3]))
    for path in work.glob("*.ipynb"):
        nb = json.loads(path.read_text())
        if path.name not in FULL:  # up to the first plot cell
            nb["cells"] = nb["cells"][:_first_plot_upto(path)]
        # as stored, with this kernel's Python version (JupyterLab writes the kernel's)
        path.write_text(normalize.dumps(normalize.normalize(nb, python_version=version)))
    settings = root / "settings"
    for name, value in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTER_RUNTIME_DIR=str(root / "runtime"),
               WORKBENCH_DATA=str(root / "data"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
           "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
           "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={work}",
           "--LabApp.news_url=", "--LabApp.extension_manager=readonly", "--allow-root"]
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("JupyterLab did not start:\n" + (root / "lab.log").read_text()) from None
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def lab_browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_browser(p)
        yield b
        b.close()


def _open(browser, lab, name):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    outside, console = [], []

    def route(r):
        if r.request.url.startswith((lab, "data:", "blob:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.goto(f"{lab}/lab/tree/{name}?reset")  # ?reset: no tabs restored from an earlier test
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    # the kernel started, connected and idle (Run All before that asks to select a kernel)
    page.locator(".jp-StatusBar-Widget").get_by_text(
        re.compile(r"Python 3 \(ipykernel\) \| Idle")).first.wait_for(timeout=90_000)
    page.wait_for_timeout(1000)
    return context, page, outside, console


def _run_all(page):
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def _wait_done(page, n_code, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        cells = page.evaluate(_CELLS_JS)[:n_code]
        if all(c["prompt"] not in ("[ ]:", "[*]:", "") for c in cells):
            return cells
        page.wait_for_timeout(1000)
    raise AssertionError(f"cells still running or not run after {timeout} s: "
                         f"{[c['prompt'] for c in page.evaluate(_CELLS_JS)]}")


def _n_code_cells(nb_path, upto=None):
    cells = json.loads(nb_path.read_text())["cells"][:upto]
    return sum(c["cell_type"] == "code" for c in cells)


def _first_plot_upto(nb_path):
    """Index (exclusive) of the cells up to and including the first plot cell after setup."""
    cells = json.loads(nb_path.read_text())["cells"]
    for i, c in enumerate(cells):
        src = "".join(c["source"])
        if i > 1 and c["cell_type"] == "code" and (".hvplot" in src or "hv." in src):
            return i + 1
    return len(cells)


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_and_plots_render_offline(lab_browser, lab, name):
    path = NOTEBOOKS / name
    upto = None if name in FULL else _first_plot_upto(path)
    n_code = _n_code_cells(path, upto)
    context, page, outside, console = _open(lab_browser, lab, name)
    try:
        dirty = page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty")
        assert dirty.count() == 0, f"{name} is marked modified right after opening"
        _run_all(page)
        cells = _wait_done(page, n_code, timeout=400 if upto is None else 120)
        errors = [c["stderr"][-500:] for c in cells if _TRACEBACK.search(c["stderr"])]
        assert not errors, f"{name}: error outputs: {errors}"
        deadline = time.time() + 60
        while True:  # plots draw asynchronously after their cell finished
            plots = page.evaluate(_CANVAS_JS)
            blank = [p for p in plots if p["pixels"] < 50]
            if (plots and not blank) or time.time() > deadline:
                break
            page.wait_for_timeout(500)
        assert plots, f"{name}: no plot output; output types " + str(page.evaluate(
            "() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
            ".map((o) => o.getAttribute('data-mime-type'))"))
        assert not blank, f"{name}: plot outputs without visible content: {blank} of {plots}"
        if name == "05_forecasting.ipynb":
            before = plot_digest(page)
            set_widget_value(page, "Lead", 5)
            deadline = time.time() + 60
            while plot_digest(page) == before and time.time() < deadline:
                page.wait_for_timeout(300)
            assert plot_digest(page) != before, "the forecast viewer did not react to its Lead slider"
        failed = [m for m in console if "Failed to load resource" in m or "net::ERR" in m
                  or "Unable to run Panel code" in m or m.startswith("pageerror")]
        assert not outside, f"{name}: requests to the internet: {sorted(set(outside))[:10]}"
        assert not failed, f"{name}: console: {failed[:10]}"
    finally:
        if SHOTS:  # the window, and every plot output on its own
            page.screenshot(path=str(Path(SHOTS) / f"{path.stem}.png"))
            outputs = page.locator(_PANEL + " .jp-OutputArea-output:has([data-root-id])")
            for i in range(outputs.count()):
                box = outputs.nth(i).bounding_box()
                if box and box["height"] >= 10:  # not setup_plotting's empty root
                    outputs.nth(i).screenshot(path=str(Path(SHOTS) / f"{path.stem}_plot{i}.png"),
                                              timeout=10_000)
        context.close()
