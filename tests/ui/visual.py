"""Visual acceptance: what a person sees, not only what a data source holds.

``assert_plots_visible(page, name)`` takes a full-page screenshot, finds every Bokeh plot through
BokehJS's own views (``Bokeh.index``), crops each plot's data frame and asserts

- every plot shows content: in the central region of its frame (the frame shrunk by ``inset`` on
  each side, so axes and the frame border do not count) more than ``min_fraction`` of the pixels
  differ clearly from the region's modal (background) colour -- faint grid lines do not count,
  an empty frame fails -- and its glyphs other than text draw at least one row of data (a
  placeholder that only says "computing ..." fails);
- no title is clipped: the title's text, measured with its own font, fits the width the plot
  gives it;

and saves the page and one PNG per plot under ``$WORKBENCH_SCREENSHOTS`` (default: a temporary
directory) so people can look at them. :func:`server_log_problems` scans the served app's log
for what the plain traceback check does not catch: ``Task exception was never retrieved`` and
HoloViews' ``responsive mode could not be enabled`` warnings. Console errors are collected by the
``ui_page`` fixture (``tests/ui/conftest.py``); :func:`watch_console` does the same for any page.

Typical use in a browser test::

    page = open_dashboard(ui_page, panel_server, "sparsity", min_plots=3)
    ...wait until the default result is shown...
    shots = assert_plots_visible(page, "sparsity_default", min_plots=3)
    assert not server_log_problems(panel_server)
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "PlotBox", "find_plots", "screenshot_dir", "content_fraction", "assert_plots_visible",
    "clipped_titles", "server_log_problems", "watch_console",
]

#: what the server log must never hold after a dashboard session (on top of tracebacks)
LOG_PROBLEMS = re.compile(r"Task exception was never retrieved|responsive mode could not be enabled")

_PLOTS_JS = """
() => {
  const B = window.Bokeh;
  if (!B || !B.index) return [];
  const seen = new Set(), views = [];
  const walk = (v) => {
    if (!v || seen.has(v)) return;
    seen.add(v); views.push(v);
    for (const c of (v.child_views ?? [])) walk(c);
    if (v.views && v.views[Symbol.iterator]) for (const c of v.views) walk(c);
  };
  const roots = B.index.roots ? Array.from(B.index.roots) : Object.values(B.index);
  for (const r of roots) walk(r);
  const ctx = document.createElement('canvas').getContext('2d');
  const out = [];
  for (const v of views) {
    const t = v.model?.type;
    if (t !== 'Figure' && t !== 'Plot') continue;
    if (!v.frame || !v.el || !v.el.isConnected) continue;
    const canvas = v.canvas_view?.el ?? v.el;
    const r = canvas.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;  // hidden (e.g. an inactive tab)
    const f = v.frame.bbox;
    const title = v.model.title;
    let text = '', textWidth = 0, align = 'left';
    if (title && typeof title.text === 'string' && title.text.length > 0 && title.visible !== false) {
      text = title.text;
      align = title.align ?? 'left';
      ctx.font = `${title.text_font_style ?? 'bold'} ${title.text_font_size ?? '13px'} ${title.text_font ?? 'helvetica'}`;
      textWidth = Math.max(...text.split('\\n').map((line) => ctx.measureText(line).width));
    }
    const width = v.bbox ? v.bbox.width : r.width;
    // data drawn by glyphs other than text (a placeholder that only says "computing ..." is empty)
    let points = 0;
    for (const rr of (v.model.renderers ?? [])) {
      const g = rr.glyph;
      if (!g || !rr.data_source || ['Text', 'HTMLText', 'MathMLText', 'TeXText'].includes(g.type)) continue;
      if (rr.visible === false) continue;
      // invisible glyphs (alpha 0, e.g. points that only fix a placeholder's ranges) draw nothing
      const val = (x) => (x && typeof x === 'object' && 'value' in x) ? x.value : x;
      const alphas = [g.fill_alpha, g.line_alpha].map(val).filter((x) => typeof x === 'number');
      if (val(g.global_alpha) === 0 || (alphas.length > 0 && alphas.every((x) => x === 0))) continue;
      try { points += rr.data_source.get_length() ?? 0; } catch (e) { /* not columnar */ }
    }
    out.push({
      id: v.model.id, title: text, title_width: textWidth, title_align: align,
      x: r.x + window.scrollX, y: r.y + window.scrollY, width: width, height: r.height,
      frame: [f.x0, f.y0, f.x1, f.y1], points: points,
    });
  }
  return out;
}
"""


@dataclass(frozen=True)
class PlotBox:
    """One drawn Bokeh plot: page coordinates of its canvas and its data frame (CSS pixels)."""

    id: str
    title: str
    title_width: float
    title_align: str
    x: float
    y: float
    width: float
    height: float
    frame: tuple[float, float, float, float]  # x0, y0, x1, y1 relative to the canvas
    points: int = 0  # rows of data drawn by the plot's non-text glyphs

    @property
    def title_clipped(self) -> bool:
        """Whether the title's text is wider than the room the plot gives it (1 px tolerance)."""
        if not self.title:
            return False
        room = self.width - self.frame[0] if self.title_align == "left" else self.width
        return self.title_width > room + 1.0

    def frame_box(self, inset: float = 0.05) -> tuple[int, int, int, int]:
        """The central region of the frame in page pixels: (left, top, right, bottom)."""
        x0, y0, x1, y1 = self.frame
        dx, dy = inset * (x1 - x0), inset * (y1 - y0)
        return (round(self.x + x0 + dx), round(self.y + y0 + dy),
                round(self.x + x1 - dx), round(self.y + y1 - dy))


def find_plots(page) -> list[PlotBox]:
    """Every visible Bokeh plot of the page (in every Bokeh document), in document order."""
    return [PlotBox(**{**d, "frame": tuple(d["frame"])}) for d in page.evaluate(_PLOTS_JS)]


def screenshot_dir() -> Path:
    """``$WORKBENCH_SCREENSHOTS`` (created), else one temporary directory per test process."""
    env = os.environ.get("WORKBENCH_SCREENSHOTS")
    path = Path(env) if env else Path(tempfile.gettempdir()) / f"workbench-screenshots-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_fraction(pixels: np.ndarray, tolerance: int = 40) -> float:
    """Fraction of an (H, W, 3|4) image's pixels that differ from its modal colour by more than
    ``tolerance`` in some channel (faint grid lines and anti-aliasing of the background do not)."""
    rgb = np.asarray(pixels)[..., :3].astype(np.int16)
    if rgb.size == 0:
        return 0.0
    flat = rgb.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    mode = colours[np.argmax(counts)]
    differs = np.abs(flat - mode).max(axis=1) > tolerance
    return float(differs.mean())


def _slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:n] or "untitled"


def clipped_titles(page) -> list[str]:
    """The titles of the page's plots whose text does not fit their plot."""
    return [p.title for p in find_plots(page) if p.title_clipped]


def assert_plots_visible(page, name: str, *, min_plots: int = 1, min_fraction: float = 0.003,
                         inset: float = 0.05, check_titles: bool = True,
                         per_plot: dict[str, float] | None = None,
                         settle: float = 20.0) -> list[Path]:
    """Screenshot the page and assert every plot shows content and no title is clipped.

    ``name`` names the screenshots (``<name>.png`` for the page, ``<name>__<i>_<title>.png`` per
    plot). ``per_plot`` maps a title substring to its own ``min_fraction`` (e.g. a sparse scatter).
    The check is repeated for up to ``settle`` seconds while it fails (a result that has just
    arrived may still be painting). Returns the paths written. The assertion message lists every
    failing plot and the files.
    """
    deadline = time.monotonic() + settle
    while True:
        problems, paths = _check_plots(page, name, min_plots, min_fraction, inset, check_titles,
                                       per_plot or {})
        if not problems or time.monotonic() > deadline:
            break
        page.wait_for_timeout(1000)
    assert not problems, "what a person sees is wrong:\n" + "\n".join(problems)
    return paths


def _check_plots(page, name, min_plots, min_fraction, inset, check_titles, per_plot):
    from PIL import Image

    page.wait_for_function("() => (window.Bokeh?.documents ?? []).every((d) => d.is_idle)",
                           timeout=60_000, polling=200)
    page.wait_for_timeout(400)  # let the last paint land
    out = screenshot_dir()
    full = out / f"{name}.png"
    page.screenshot(path=str(full), full_page=True)
    image = np.asarray(Image.open(full).convert("RGB"))
    plots = find_plots(page)
    problems, paths = [], [full]
    if len(plots) < min_plots:
        problems.append(f"expected at least {min_plots} plots, found {len(plots)}")
    for i, plot in enumerate(plots):
        left, top, right, bottom = plot.frame_box(inset)
        crop = image[max(top, 0):max(bottom, 0), max(left, 0):max(right, 0)]
        path = out / f"{name}__{i}_{_slug(plot.title)}.png"
        if crop.size:
            Image.fromarray(crop).save(path)
            paths.append(path)
        frac = content_fraction(crop)
        need = next((v for k, v in per_plot.items() if k in plot.title), min_fraction)
        if frac <= need:
            problems.append(f"plot {i} {plot.title!r} looks empty: {frac:.2%} of its central "
                            f"region differs from the background (need > {need:.2%}); see {path}")
        elif plot.points == 0:
            problems.append(f"plot {i} {plot.title!r} draws no data (only text, e.g. a "
                            f"placeholder); see {path}")
        if check_titles and plot.title_clipped:
            problems.append(f"plot {i} title is clipped: {plot.title!r} needs {plot.title_width:.0f} px,"
                            f" the plot is {plot.width:.0f} px wide; see {full}")
    return problems, paths


def server_log_problems(server, since: int = 0) -> list[str]:
    """Lines of the served app's log (from character ``since``) that must not appear:
    ``Task exception was never retrieved`` and ``responsive mode could not be enabled``."""
    return [line for line in server.log()[since:].splitlines() if LOG_PROBLEMS.search(line)]


def watch_console(page) -> list[str]:
    """Collect console errors and uncaught page errors of ``page`` into the returned list."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    return errors
