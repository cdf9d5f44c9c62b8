"""Browser test of the forecast viewer: sliders, neuron pick by clicking, no console errors.

The slider latency (widget change -> new plot data in the browser) is measured and printed, not
asserted (the machine is shared); run with ``-s`` to see it.
"""

import time

import pytest

from tests.ui.harness import plot_digest, set_widget_value, wait_idle, wait_rendered

_IDLE = "() => (window.Bokeh?.documents ?? []).every((d) => d.is_idle)"


def _timed_change(page, before, timeout=60.0):
    """Seconds until the page's data differs from ``before`` and BokehJS has rendered it (idle)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        now = plot_digest(page)
        if now != before and page.evaluate(_IDLE):
            page.wait_for_timeout(150)            # late pieces of the same update would change it again
            if plot_digest(page) == now:
                return time.perf_counter() - t0 - 0.15, now
        page.wait_for_timeout(5)
    raise AssertionError(f"the plots did not change within {timeout} s")


@pytest.mark.ui
def test_forecast_viewer_sliders_and_pick(panel_server, ui_page):
    page = ui_page
    # train=0: show the stored forecasts only (no background training during the measurement)
    page.goto(panel_server.app_url("forecast_viewer") + "&train=0", wait_until="domcontentloaded",
              timeout=300_000)
    page.get_by_text("Forecast shown").first.wait_for(timeout=300_000)
    wait_rendered(page, min_plots=5, timeout=120_000)
    wait_idle(page)
    panel_server.assert_clean()
    timings = {}
    before = plot_digest(page)
    for key, value in (("z-plane", 0), ("Lead", 5), ("Window", 3), ("z-plane", 1), ("Lead", 6),
                       ("Window", 4), ("Lead", 7)):
        set_widget_value(page, key, value)
        timings[f"{key}={value}"], before = _timed_change(page, before)
    # neuron pick: click inside the first image (ground truth) at two places; the neuron panel
    # and the info line must follow the clicked cell
    canvas = page.locator("canvas").first
    box = canvas.bounding_box()
    assert box is not None
    info = page.get_by_text("Window 4:").first.inner_text()
    changed = False
    for fx, fy in ((0.35, 0.45), (0.6, 0.55), (0.45, 0.3)):
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        try:
            page.wait_for_function("(old) => !document.body.innerText.includes(old)", arg=info,
                                   timeout=15_000, polling=100)
        except Exception:
            continue
        changed = True
        break
    assert changed, "clicking the image did not pick a different neuron"
    _timed_change(page, before)
    print("\nforecast viewer: browser update latency per widget step (s):",
          {k: round(v, 3) for k, v in timings.items()})
    panel_server.assert_clean()


@pytest.mark.slow
def test_viewer_reads_the_release_layout_through_part1_loader(tmp_path):
    """Pointed at a directory in the ZAPBench release layout, the viewer opens it with
    ``open_release``, builds a labelled baseline store and draws every panel (no browser)."""
    import holoviews as hv

    from workbench.dashboards.forecast_viewer import ForecastViewer
    from workbench.forecast import generate
    from workbench.forecast.release import write_release_layout

    ds = generate("tiny", seed=0)
    release = write_release_layout(ds, tmp_path / "release", scales=("s0",))
    v = ForecastViewer(data=str(release), root=tmp_path / "root", train_video=False)
    assert list(v.stores) == ["linear"] and "rendered as video" in v._status.object
    truth, fc = v.planes(0, 1, 1)
    assert truth.shape == fc.shape == ds["segmentation"].shape[1:]
    v.lead, v.z = 3, 2
    v._on_tap(x=float(v._xc[14]), y=float(v._yc[10]))
    assert 0 <= v.neuron < ds.sizes["neuron"]
    for pane in (v._images, v._trace, v._mae):
        hv.render(pane.object)
