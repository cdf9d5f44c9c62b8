"""The landing page of ``panel serve apps/`` and the navigation between dashboards.

``panel serve apps/`` serves the directory as one Bokeh application whose entry point is
``apps/main.py``. That script calls :func:`serve_workbench`, which shows the landing page, or, for
``?dashboard=<name>``, runs ``apps/<name>.py`` in the same session under a navigation bar. Each
dashboard file is discovered from its module docstring (first line: title, the rest: description)
without executing it, so adding a dashboard means adding one thin file to ``apps/``.
"""

from __future__ import annotations

import ast
import base64
import html
import io
import runpy
from dataclasses import dataclass
from pathlib import Path

import panel as pn

__all__ = ["DashboardInfo", "discover_dashboards", "LandingPage", "serve_workbench", "thumbnail_uri"]

_SKIP = {"main"}


@dataclass(frozen=True)
class DashboardInfo:
    """One servable dashboard script in the apps folder."""

    name: str
    title: str
    description: str
    path: Path


def discover_dashboards(apps_dir: str | Path) -> list[DashboardInfo]:
    """List the dashboards in ``apps_dir``: every ``*.py`` but ``main.py`` and private ``_*.py``.

    The title and description come from the module docstring, read with :mod:`ast` so nothing is
    executed. A file without a docstring still appears, titled by its file name.
    """
    apps_dir = Path(apps_dir)
    if not apps_dir.is_dir():
        raise FileNotFoundError(f"apps folder {apps_dir} does not exist")
    found = []
    for path in sorted(apps_dir.glob("*.py")):
        name = path.stem
        if name in _SKIP or name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except SyntaxError as err:  # show the broken file on the landing page instead of hiding it
            doc = f"{name}\n(this dashboard's file does not parse: {err.msg}, line {err.lineno})"
        title, _, rest = doc.strip().partition("\n")
        title = title.strip() or name.replace("_", " ").capitalize()
        found.append(DashboardInfo(name, title, " ".join(rest.split()), path))
    return found


@pn.cache(max_items=32)
def _thumbnail(path: str, mtime: float, width: int = 660, aspect: float = 0.62) -> str:
    """A data URI of the top right of the screenshot at ``path`` (the plots, without the sidebar),
    ``width`` px wide (2x the card, for sharp text) and ``aspect`` (height / width) high; read
    once per (file, modification time)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        left = int(0.2 * im.width)  # the plots, not the sidebar of settings
        im = im.crop((left, 0, im.width, min(im.height, int((im.width - left) * aspect))))
        im = im.resize((width, int(width * im.height / im.width)), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def thumbnail_uri(images_dir: str | Path, name: str) -> str | None:
    """The card picture of dashboard ``name`` (``<images_dir>/<name>.png``, made by
    ``make screenshots``), or None when there is none (the card then shows text only)."""
    path = Path(images_dir) / f"{name}.png"
    if not path.is_file():
        return None
    try:
        return _thumbnail(str(path), path.stat().st_mtime)
    except OSError:  # an unreadable picture must not break the landing page
        return None


_CSS = """
.wb-cards {display: flex; flex-wrap: wrap; gap: 18px; margin-top: 8px;}
.wb-card {width: 330px; border: 1px solid #d8dee4; border-radius: 10px; padding: 16px 18px;
          background: #fff; box-shadow: 0 1px 3px rgba(0,0,0,.06);}
.wb-card h3 {margin: 0 0 8px 0; font-size: 1.15em;}
.wb-card a {text-decoration: none; color: #0b5cad;}
.wb-card p {color: #444; font-size: .93em; line-height: 1.4; margin: 0;}
.wb-card img {width: 100%; border: 1px solid #e5e9ee; border-radius: 6px; margin-bottom: 10px;
              display: block;}
.wb-nav a {text-decoration: none; color: #0b5cad; font-weight: 600;}
"""


class LandingPage(pn.viewable.Viewer):
    """Cards linking to every dashboard found in the apps folder."""

    def __init__(self, apps_dir: str | Path, images_dir: str | Path | None = None, **params):
        super().__init__(**params)
        self.dashboards = discover_dashboards(apps_dir)
        # the README's pictures (``make screenshots``) next to the apps folder
        self.images_dir = Path(images_dir) if images_dir else Path(apps_dir).parent / "docs" / "images"

    def _cards_html(self) -> str:
        if not self.dashboards:
            return "<p>No dashboards found in apps/.</p>"
        cards = []
        for d in self.dashboards:
            link = f"?dashboard={html.escape(d.name)}"
            uri = thumbnail_uri(self.images_dir, d.name)
            picture = (f'<a href="{link}" tabindex="-1"><img src="{uri}" '
                       f'alt="{html.escape(d.title)}: its default view"></a>' if uri else "")
            cards.append(
                f'<div class="wb-card" data-dashboard="{html.escape(d.name)}">{picture}'
                f'<h3><a href="{link}">{html.escape(d.title)}</a></h3>'
                f"<p>{html.escape(d.description)}</p></div>"
            )
        return f'<div class="wb-cards">{"".join(cards)}</div>'

    def __panel__(self):
        intro = pn.pane.Markdown(
            "# workbench\n"
            "Bayesian model selection for deep learning (Laplace approximations and the marginal "
            "likelihood, LA-NAM, SpaM sparsification, learned equivariance) and forecasting of "
            "whole-brain neural activity from volumetric video. Pick a dashboard:",
            sizing_mode="stretch_width",
        )
        cards = pn.pane.HTML(self._cards_html(), stylesheets=[_CSS], sizing_mode="stretch_width")
        return pn.Column(intro, cards, sizing_mode="stretch_width", margin=(10, 30))


def serve_workbench(apps_dir: str | Path) -> None:
    """Entry point of ``apps/main.py``: the landing page, or the dashboard named in the URL."""
    apps_dir = Path(apps_dir)
    pn.extension(sizing_mode="stretch_width")
    args = pn.state.session_args if pn.state.curdoc is not None else {}
    requested = [v.decode() for v in args.get("dashboard", [])]
    dashboards = {d.name: d for d in discover_dashboards(apps_dir)}
    if not requested:
        LandingPage(apps_dir).servable(title="workbench")
        return
    name = requested[0]
    if name not in dashboards:
        known = ", ".join(sorted(dashboards)) or "none"
        pn.Column(
            pn.pane.HTML('<div class="wb-nav"><a href="?">&larr; all dashboards</a></div>', stylesheets=[_CSS]),
            pn.pane.Alert(f"Unknown dashboard {name!r}. Available: {known}.", alert_type="danger"),
        ).servable(title="workbench")
        return
    info = dashboards[name]
    pn.pane.HTML(
        f'<div class="wb-nav"><a href="?">&larr; all dashboards</a> &nbsp;·&nbsp; {html.escape(info.title)}</div>',
        stylesheets=[_CSS],
        sizing_mode="stretch_width",
        margin=(5, 30),
    ).servable(title=f"workbench · {info.title}")
    runpy.run_path(str(info.path), run_name="__main__")
