"""Browser test of the forecast viewer: sliders, players, neuron pick by clicking, no console errors.

The slider latency is measured in the browser and printed (run with ``-s``), never asserted (the
machine is shared): from setting a slider's value in BokehJS (which syncs to the server exactly
as a drag does) until the last image source that the step changes has new data and the next frame
has been painted (a task queued from ``requestAnimationFrame``). With ``WORKBENCH_VIEWER_LATENCY_JSON=<path>`` the
per-step times and their median/max per slider are also written there as JSON.
"""

import json
import os
import statistics

import pytest

from tests.ui.harness import plot_digest, set_widget_value, wait_idle, wait_rendered
from tests.ui.visual import assert_plots_visible, server_log_problems

# Set a widget's value and resolve with the milliseconds until the image data it changes is
# painted: every ColumnDataSource holding 2-d images is watched; after the first change
# the update counts as finished once no source changed for `quiet` ms.
_TIMED_STEP_JS = """
async ([key, value, quiet, timeout]) => {
  const models = (window.Bokeh?.documents ?? []).flatMap((d) => Array.from(d.all_models));
  // image sources: a column whose entries are 2-d arrays (BokehJS ndarrays carry a shape)
  const columns = (m) => (m.data instanceof Map ? Array.from(m.data.values()) : Object.values(m.data));
  const isImage = (c) => c != null && c.length > 0 && c[0] != null && c[0].shape?.length === 2;
  const sources = models.filter((m) => m.data !== undefined && m.selected !== undefined
                                       && columns(m).some(isImage));
  const label = (m) => [m.title, m.name, m.label].filter((x) => typeof x === 'string')
                         .map((l) => l.replace(/:\\s*$/, ''));
  const widget = models.find((m) => 'value' in m && label(m).includes(key));
  if (!widget) return {error: 'no widget titled ' + key};
  if (sources.length === 0) return {error: 'no image sources'};
  let changes = 0, lastChange = 0, lastPaint = -1, firstChange = -1;
  const slot = () => {
    changes += 1;
    if (firstChange < 0) firstChange = performance.now();
    const t = performance.now();
    lastChange = t;
    // rAF runs before the next frame is drawn; a task queued from it runs once that frame is painted
    requestAnimationFrame(() => setTimeout(() => { if (lastChange === t) lastPaint = performance.now(); }, 0));
  };
  for (const s of sources) s.properties.data.change.connect(slot);
  const t0 = performance.now();
  widget.value = value;
  try {
    return await new Promise((resolve) => {
      const poll = () => {
        const now = performance.now();
        if (changes > 0 && lastPaint >= lastChange && now - lastChange > quiet) {
          resolve({ms: lastPaint - t0, data_ms: firstChange - t0, changes});
        } else if (now - t0 > timeout) {
          resolve({error: 'no image change within ' + timeout + ' ms', changes});
        } else {
          setTimeout(poll, 10);
        }
      };
      poll();
    });
  } finally {
    for (const s of sources) s.properties.data.change.disconnect(slot);
  }
}
"""

_STEPS = [("z-plane", 0), ("Lead", 5), ("Window", 3), ("z-plane", 1), ("Lead", 6), ("Window", 4),
          ("Lead", 7), ("z-plane", 2), ("Window", 5), ("Lead", 8), ("z-plane", 3), ("Window", 6),
          ("Lead", 9), ("z-plane", 4), ("Window", 7), ("Lead", 10), ("z-plane", 1), ("Window", 2)]


def _timed_step(page, key, value):
    res = page.evaluate(_TIMED_STEP_JS, [key, value, 250, 60_000])
    assert "error" not in res, res
    return res


_TRACE_TITLE_JS = """
() => {
  for (const doc of (window.Bokeh?.documents ?? []))
    for (const m of doc.all_models)
      if (typeof m.text === 'string' && m.text.startsWith('neuron ')) return m.text;
  return null;
}
"""


def _trace_title(page):
    return page.evaluate(_TRACE_TITLE_JS)


def _wait_title_change(page, old, timeout_ms=10_000):
    for _ in range(timeout_ms // 100):
        now = _trace_title(page)
        if now is not None and now != old:
            return now
        page.wait_for_timeout(100)
    raise AssertionError("the neuron panel did not change")


_VALUES_JS = """
(keys) => {
  const out = {};
  for (const doc of (window.Bokeh?.documents ?? []))
    for (const m of doc.all_models)
      for (const k of keys)
        if ([m.title, m.name, m.label].includes(k) && 'value' in m) out[k] = m.value;
  return out;
}
"""


def _check_first_view(page, panel_server):
    """Issue 14: every panel shows content, the outline is off, the z player starts at the shown
    z-plane, each player is labelled once, and an unknown neuron is rejected with a message."""
    assert_plots_visible(page, "forecast_viewer_default", min_plots=5)
    values = page.evaluate(_VALUES_JS, ["z-plane", "Play z-planes", "Window", "Play windows"])
    assert values["Play z-planes"] == values["z-plane"], values
    assert values["Play windows"] == values["Window"], values
    outline = page.evaluate("""() => { for (const d of Bokeh.documents) for (const m of d.all_models)
        if (m.label === 'Segmentation outline' && 'active' in m) return m.active; return null; }""")
    assert outline is False
    for label in ("Play windows", "Play leads", "Play z-planes"):
        assert page.get_by_text(label, exact=True).count() == 1, f"{label!r} is labelled twice"
    data = lambda: [line for line in plot_digest(page).splitlines() if line.startswith("ColumnDataSource")]  # noqa: E731
    before = data()
    set_widget_value(page, "Neuron", 99999)
    page.get_by_text("Neuron 99999 does not exist").first.wait_for(timeout=10_000)
    wait_idle(page)
    assert page.evaluate(_VALUES_JS, ["Neuron"])["Neuron"] != 99999
    assert data() == before  # nothing re-plotted for a neuron that does not exist


def _summary(timings):
    """Per slider: painted latency (median, max, all) and the median time until the data arrived."""
    by = {}
    for (key, _), res in timings:
        by.setdefault(key, []).append(res)
    out = {}
    for k, rs in by.items():
        ms = [r["ms"] for r in rs]
        out[k] = {"n": len(ms), "median_ms": round(statistics.median(ms), 1), "max_ms": round(max(ms), 1),
                  "median_data_arrived_ms": round(statistics.median(r["data_ms"] for r in rs), 1),
                  "all_ms": [round(x, 1) for x in ms]}
    return out


@pytest.mark.ui
def test_forecast_viewer_sliders_players_and_pick(panel_server, ui_page):
    page = ui_page
    # train=0: show the stored forecasts only (no background training during the measurement)
    page.goto(panel_server.app_url("forecast_viewer") + "&train=0", wait_until="domcontentloaded",
              timeout=300_000)
    page.get_by_text("Forecast shown").first.wait_for(timeout=300_000)
    wait_rendered(page, min_plots=5, timeout=120_000)
    wait_idle(page)
    panel_server.assert_clean()
    log_start = len(panel_server.log())
    _check_first_view(page, panel_server)

    # slider steps: each must change the images (the timing JS fails otherwise) and the page text
    timings = []
    for key, value in _STEPS:
        before = plot_digest(page)
        timings.append(((key, value), _timed_step(page, key, value)))
        wait_idle(page)
        assert plot_digest(page) != before, f"setting {key}={value} changed no plot"
    summary = _summary(timings)
    print("\nforecast viewer: browser latency per slider step (set value -> new image painted):")
    for key, s in summary.items():
        print(f"  {key:8s} n={s['n']:2d} median {s['median_ms']:7.1f} ms  max {s['max_ms']:7.1f} ms  "
              f"(data arrived: median {s['median_data_arrived_ms']:.1f} ms)  {s['all_ms']}")
    out = os.environ.get("WORKBENCH_VIEWER_LATENCY_JSON")
    if out:
        with open(out, "w") as fh:
            json.dump(summary, fh, indent=1)
    assert page.get_by_text("Window 2:").first.is_visible()

    # the players drive the same parameters as the sliders
    for name, text in (("Play z-planes", "z-plane 3 "), ("Play leads", "(lead 12)"), ("Play windows", "Window 5:")):
        value = {"Play z-planes": 3, "Play leads": 12, "Play windows": 5}[name]
        before = plot_digest(page)
        set_widget_value(page, name, value)
        page.get_by_text(text).first.wait_for(timeout=30_000)
        wait_idle(page)
        assert plot_digest(page) != before, f"the {name} player changed no plot"

    # neuron pick: click inside the first image (ground truth); the trace panel (its title names
    # the neuron) and the marker must follow the clicked cell
    canvas = page.locator("canvas").first
    box = canvas.bounding_box()
    assert box is not None
    title = _trace_title(page)
    picked = None
    for fx, fy in ((0.35, 0.45), (0.6, 0.55), (0.45, 0.3), (0.3, 0.7)):
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        try:
            picked = _wait_title_change(page, title)
        except AssertionError:
            continue
        break
    assert picked is not None, "clicking the image did not pick a different neuron"
    assert picked.startswith("neuron ") and picked != title
    assert_plots_visible(page, "forecast_viewer_after_steps", min_plots=5)
    panel_server.assert_clean()
    assert not server_log_problems(panel_server, since=log_start)


@pytest.mark.slow
def test_viewer_reads_the_release_layout_through_part1_loader(tmp_path):
    """Pointed at a directory in the ZAPBench release layout, the viewer opens it with
    ``open_release``, builds a labelled baseline store and fills every panel (no browser)."""
    import numpy as np

    from workbench.dashboards.forecast_viewer import ForecastViewer
    from workbench.forecast import make_dataset
    from workbench.forecast.release import write_release_layout

    ds = make_dataset("tiny", random_state=0)
    release = write_release_layout(ds, tmp_path / "release", scales=("s0",))
    v = ForecastViewer(data=str(release), root=tmp_path / "root", train_video=False)
    assert list(v.stores) == ["linear"] and "rendered as video" in v._status.object
    truth, fc = v.planes(0, 1, 1)
    assert truth.shape == fc.shape == ds["segmentation"].shape[1:]
    v.lead, v.z = 3, 2
    truth, fc = v.planes(0, 3, 2)
    shown = [s.data["image"][0] for s in v.slices.sources]
    np.testing.assert_array_equal(shown[0], truth)
    np.testing.assert_array_equal(shown[1], fc)
    np.testing.assert_allclose(shown[2], fc - truth)
    v._on_tap(x=float(v._xc[14]), y=float(v._yc[10]))
    assert 0 <= v.neuron < ds.sizes["neuron"]
    assert len(v.trace_figure.truth.data["v"]) == v._context + v._horizon
    assert len(v.mae_figure.sources["linear"].data["mae"]) == v._horizon
