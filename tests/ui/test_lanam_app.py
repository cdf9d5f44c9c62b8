"""LA-NAM explorer in a real browser (issue 14): every plot shows content (the flagship shape plot
was an empty frame), the feature selector and the data-set choice change the plots, no stale
category survives a data-set switch, "Interaction pairs" = 0 finishes, no console errors and no
server tracebacks (nor "Task exception was never retrieved")."""

import re

import pytest

from tests.ui.harness import (
    open_dashboard,
    plot_digest,
    set_widget_value,
    wait_for_change,
    wait_idle,
)
from tests.ui.visual import assert_plots_visible, find_plots, screenshot_dir, server_log_problems

_NO_PLACEHOLDER_JS = """
() => {
  // placeholders on screen are titled "<plot>: fitting ..." / ": no result ..." / ": waiting ..."
  const seen = new Set();
  let found = false;
  const walk = (v) => {
    if (!v || seen.has(v)) return;
    seen.add(v);
    const t = v.model?.title?.text;
    const shown = v.el?.isConnected && v.el.getBoundingClientRect().width > 0;  // not hidden
    if (shown && typeof t === 'string' && /: (fitting|no result|waiting)/.test(t)) found = true;
    for (const c of (v.child_views ?? [])) walk(c);
  };
  const roots = window.Bokeh?.index?.roots ? Array.from(window.Bokeh.index.roots) : Object.values(window.Bokeh?.index ?? {});
  roots.forEach(walk);
  return !found;
}
"""

_FACTORS_JS = """
(titlePart) => {
  // categories of the plots on screen (views attached to the page), whose title contains titlePart
  const seen = new Set(), out = [];
  const walk = (v) => {
    if (!v || seen.has(v)) return;
    seen.add(v);
    const m = v.model, t = m?.title?.text;
    if (v.el?.isConnected && typeof t === 'string' && t.includes(titlePart)) {
      for (const r of [m.x_range, m.y_range]) {
        if (r && Array.isArray(r.factors)) out.push(...r.factors.map((f) => Array.isArray(f) ? f[0] : f));
      }
    }
    for (const c of (v.child_views ?? [])) walk(c);
  };
  const roots = window.Bokeh.index.roots ? Array.from(window.Bokeh.index.roots) : Object.values(window.Bokeh.index);
  roots.forEach(walk);
  return out;
}
"""


def _wait_fitted(page, dataset, timeout_s=300):
    page.get_by_text(re.compile(rf"{dataset}.*log marginal likelihood")).first.wait_for(timeout=timeout_s * 1000)
    wait_idle(page)
    # the plots arrive with the status line (one held message); give the canvases a moment to paint
    page.wait_for_function(_NO_PLACEHOLDER_JS, timeout=30_000, polling=200)


def _factors(page, title_part):
    return {re.sub(r" \(off\)$", "", f) for f in page.evaluate(_FACTORS_JS, title_part)}


@pytest.mark.ui
def test_lanam_explorer(panel_server, ui_page):
    log_start = len(panel_server.log())
    page = open_dashboard(ui_page, panel_server, "lanam", min_plots=4)
    _wait_fitted(page, "synthetic")
    # shape, importance, 6 small multiples, precisions, ranking, pair mean + std
    assert_plots_visible(page, "lanam_default", min_plots=12)
    assert _factors(page, "feature importance") == {f"x{i}" for i in range(6)}
    before = plot_digest(page)

    set_widget_value(page, "Feature", "x3")  # another feature's shape function
    after_feature = wait_for_change(page, before)
    assert "x3: shape" in after_feature
    assert_plots_visible(page, "lanam_feature_x3", min_plots=12)

    set_widget_value(page, "Data set", "diabetes")  # a new fit in the worker thread
    wait_for_change(page, after_feature, timeout=60)
    _wait_fitted(page, "diabetes")
    after_data = plot_digest(page)
    assert after_data != after_feature
    assert_plots_visible(page, "lanam_diabetes", min_plots=12)
    diabetes = {"age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"}
    assert _factors(page, "feature importance") == diabetes  # no stale x0..x5 categories
    assert not _factors(page, "prior precisions") & {f"x{i}" for i in range(6)}

    set_widget_value(page, "Interaction pairs (2nd stage)", 0)  # used to hang at "Fitting ..."
    page.get_by_text(re.compile(r"diabetes.*fitted pairs: none")).first.wait_for(timeout=120_000)
    wait_idle(page)
    # no pair view then (a sentence says why), everything else has content
    page.get_by_text("2-D interaction: no pair fitted").first.wait_for(timeout=10_000)
    assert_plots_visible(page, "lanam_no_pairs", min_plots=10)

    # 30 features: top-k importance and ranking, no clipped title, nothing of diabetes left over
    set_widget_value(page, "Data set", "breast cancer")
    _wait_fitted(page, "breast cancer")
    assert_plots_visible(page, "lanam_30_features", min_plots=10)
    assert len(_factors(page, "feature importance")) == 15
    assert not _factors(page, "prior precisions") & (diabetes - {"age", "sex"})

    # CSV upload: no silent target, text cells in a numeric column reported by row, and no
    # breast-cancer plots left under either message
    rows = ["age,smoker,y"] + [f"{30 + i % 40},{i % 2},{0.1 * i:.1f}" for i in range(40)]
    rows[6] = "twelve,1,0.5"
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "table.csv", "mimeType": "text/csv", "buffer": "\n".join(rows).encode()}])
    page.get_by_text("choose the target column (one of").first.wait_for(timeout=30_000)
    wait_idle(page)
    assert _placeholders_only(page)
    set_widget_value(page, "Target column (CSV)", "y")
    page.get_by_text("column 'age' is numeric but has text in row 6: 'twelve'").first.wait_for(timeout=30_000)
    wait_idle(page)
    assert _placeholders_only(page)
    page.screenshot(path=str(screenshot_dir() / "lanam_csv_error.png"), full_page=True)

    panel_server.assert_clean()
    assert not server_log_problems(panel_server, since=log_start)


def _placeholders_only(page, timeout_s=10):
    """Whether every plot on screen is a 'no result' placeholder (polled: it may still paint)."""
    for _ in range(timeout_s * 5):
        titles = [p.title for p in find_plots(page)]
        if titles and all(": no result" in t for t in titles):
            return True
        page.wait_for_timeout(200)
    return False
