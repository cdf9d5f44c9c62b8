"""setup_plotting: every resource a notebook plot needs is inline (no CDN URL to fetch offline)."""

import re

import pytest

pytest.importorskip("holoviews")
pytest.importorskip("panel")

CDN = re.compile(r"https://cdn\.(holoviz|bokeh)\.org/[^\"'\\ ]+")


@pytest.fixture
def restore_config(monkeypatch):
    """setup_plotting changes process-wide defaults; put them back for the other tests."""
    import panel as pn
    from holoviews.ipython import notebook_extension

    monkeypatch.setenv("PANEL_INLINE", "0")
    inline, hv_inline = pn.config._inline, notebook_extension.inline
    yield
    pn.config._inline = inline
    notebook_extension.inline = hv_inline


def test_rendered_plot_references_no_cdn_resources(restore_config):
    import holoviews as hv
    import panel as pn

    from workbench.plotting import _local_stylesheet, setup_plotting

    setup_plotting()
    setup_plotting()  # idempotent
    assert pn.config.inline
    curve = hv.Curve([1, 3, 2])
    data, _ = pn.panel(curve)._repr_mimebundle_()
    assert "text/html" in data
    assert not CDN.findall(data["text/html"]), CDN.findall(data["text/html"])[:3]
    column = pn.Column(pn.widgets.IntSlider(value=1, start=0, end=3), curve)
    data, _ = column._repr_mimebundle_()
    assert not CDN.findall(data["text/html"])
    from panel.io.resources import CDN_DIST
    url = _local_stylesheet(f"{CDN_DIST}css/loading.css?v=1")
    assert url.startswith("data:text/css;base64,")
    assert _local_stylesheet("https://example.org/x.css") is None
    from bokeh.models import ImportedStyleSheet
    assert ImportedStyleSheet(url=f"{CDN_DIST}css/markdown.css").url.startswith("data:text/css")
    assert ImportedStyleSheet(url="https://example.org/x.css").url == "https://example.org/x.css"
    sheet = ImportedStyleSheet(url="static/extensions/panel/css/loading.css")
    assert sheet.url.startswith("data:text/css")
    sheet.url = f"{CDN_DIST}css/loading.css?v=1"  # as panel's patch_stylesheet re-points it
    assert sheet.url.startswith("data:text/css")
