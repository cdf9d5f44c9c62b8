"""One way for notebooks to load the plotting JavaScript: inline, so plots work offline.

``import hvplot.pandas`` (or ``hv.extension("bokeh")``) makes a notebook fetch BokehJS and Panel's
JavaScript from public CDNs; without internet every plot renders as an empty output. Calling
:func:`setup_plotting` first embeds those resources in the notebook itself, so the plots render in
JupyterLab, classic Notebook and exported HTML with no network access.

Why inline and not Panel's Jupyter server extension (which serves the same files from the local
Jupyter server): an exported HTML file has no server behind it, so only inline resources let it
carry its figures. The cost is ~3 MB of JavaScript in the first output of an *executed* notebook
(stored twice, once per MIME type, ~6 MB on disk); the tutorials are stored with outputs stripped,
so the repository does not grow.

Call it once, at the top of a notebook, *before* importing ``hvplot.*``::

    from workbench.plotting import setup_plotting
    setup_plotting()
    import hvplot.xarray  # noqa: F401
"""

from __future__ import annotations

import base64
import functools
import mimetypes
import os
import re
from pathlib import Path

__all__ = ["KERNEL_NOTE", "setup_plotting"]

KERNEL_NOTE = (
    "The widgets below need a running Python kernel: in a static export (HTML, nbviewer, GitHub) "
    "the figure shows its initial state and the sliders do nothing. Run the notebook to use them."
)

_CSS_URL = re.compile(r"""url\((['"]?)([^'")]+)\1\)""")


def setup_plotting(*extensions: str, **config) -> None:
    """Load HoloViews and Panel (Bokeh backend) with inline JavaScript and CSS.

    Parameters
    ----------
    *extensions : str
        Extra Panel extensions (e.g. ``"tabulator"``), loaded inline too.
    **config
        Passed on to ``pn.extension`` (e.g. ``sizing_mode="stretch_width"``).

    Notes
    -----
    Three things make a notebook fully offline:

    - BokehJS and Panel's bundles are embedded (``inline=True``); ``PANEL_INLINE=1`` and the
      HoloViews extension default are set too, so the ``hv.extension`` call that every
      ``import hvplot.*`` makes afterwards stays inline instead of switching back to the CDN;
    - the few stylesheets that Panel's components reference by CDN URL (``loading.css``, the
      theme files) are rewritten to ``data:`` URLs read from the installed Panel package;
    - nothing else is fetched: MathJax and icon fonts load only when a component uses them.
    """
    import holoviews as hv
    import panel as pn
    from holoviews.ipython import notebook_extension

    os.environ["PANEL_INLINE"] = "1"
    pn.config.inline = True
    notebook_extension.inline = True  # later hv.extension()/hvplot imports stay inline
    _patch_stylesheets()
    hv.extension("bokeh", inline=True, logo=False)
    pn.extension(*extensions, inline=True, **config)


@functools.cache
def _data_url(path: Path) -> str:
    data = path.read_bytes()
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".css":
        # relative url(...) inside a data: stylesheet cannot resolve: embed those files too
        def embed(match):
            ref = match.group(2)
            target = (path.parent / ref.split("?")[0]).resolve()
            if ref.startswith(("data:", "http", "#")) or not target.is_file():
                return match.group(0)
            return f'url("{_data_url(target)}")'

        data = _CSS_URL.sub(embed, data.decode("utf-8")).encode("utf-8")
        mime = "text/css"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _local_stylesheet(url: str) -> str | None:
    """The data: URL for a Panel CDN stylesheet URL, from the installed package; None if unknown."""
    from panel.io.resources import CDN_DIST, DIST_DIR, LOCAL_DIST

    for prefix in (CDN_DIST, LOCAL_DIST, "/" + LOCAL_DIST):
        if url.startswith(prefix):
            path = Path(DIST_DIR) / url[len(prefix) :].split("?")[0]
            return _data_url(path) if path.is_file() else None
    return None


def _inline_stylesheets(model) -> None:
    from bokeh.models import ImportedStyleSheet

    for sheet in model.select({"type": ImportedStyleSheet}):
        local = _local_stylesheet(sheet.url)
        if local is not None:
            sheet.url = local


def _patch_stylesheets() -> None:
    """Panel stylesheets (CDN or server-relative URLs) become data: URLs: whenever an
    ``ImportedStyleSheet``'s URL is set (models that Panel sends later through the comm, e.g.
    when a dashboard updates, included) and in every model Panel's ``render_model`` renders."""
    from bokeh.models import ImportedStyleSheet
    from panel.io import notebook

    if not getattr(ImportedStyleSheet.__setattr__, "_workbench_inline", False):
        setattr_ = ImportedStyleSheet.__setattr__

        # Panel sets and later re-points (patch_stylesheet) these URLs: catch every assignment
        @functools.wraps(setattr_)
        def __setattr__(self, name, value):
            if name == "url" and isinstance(value, str):
                value = _local_stylesheet(value) or value
            setattr_(self, name, value)

        __setattr__._workbench_inline = True
        ImportedStyleSheet.__setattr__ = __setattr__
    if getattr(notebook.render_model, "_workbench_inline", False):
        return
    original = notebook.render_model

    @functools.wraps(original)
    def render_model(model, comm=None, resources="cdn"):
        # HoloViews renders through here with the default resources="cdn"; Panel objects pass
        # "inline" when pn.config.inline is set: either way there is no CDN to read from
        _inline_stylesheets(model)
        return original(model, comm, resources)

    render_model._workbench_inline = True
    notebook.render_model = render_model
