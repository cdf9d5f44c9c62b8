"""Forecast viewer: server-side cost of one slider step, in place vs rebuilding the figures.

For steps in lead, z and window on the synthetic ``small`` recording (its linear-baseline store is
built on first use), this measures in one run:

* ``in place``: the viewer's step (planes read from zarr, or from the LRU cache when warm; the
  image/trace sources swapped) plus serialising the document patch the server would send;
* ``rebuild``: building the three image figures and the trace figure anew for the same data and
  serialising them whole (what a step costs when every step makes new plots).

It prints the median per step, the ratio rebuild / in place and the bytes sent per step. The
browser-side latency (set a slider -> image painted) is measured by
``tests/ui/test_forecast_viewer_app.py`` (run it with ``-s``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_viewer.py [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from bokeh.document import Document
from bokeh.layouts import row
from bokeh.protocol import Protocol

from workbench.dashboards._forecast_figures import SliceFigures, TraceFigure
from workbench.dashboards.forecast_viewer import ForecastViewer


def _msg_bytes(msg) -> int:
    return len(msg.header_json) + len(msg.metadata_json) + len(msg.content_json) + \
        sum(len(b.to_bytes()) for b in msg.buffers)


def _patch_bytes(events) -> int:
    """Bytes of the PATCH-DOC message (JSON parts and binary buffers) a server sends for events."""
    return _msg_bytes(Protocol().create("PATCH-DOC", events))


def _doc_bytes(doc: Document) -> int:
    """Bytes of the message carrying a whole document (what new figures cost to ship)."""
    return _msg_bytes(Protocol().create("PULL-DOC-REPLY", "bench", doc))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="steps per slider")
    args = ap.parse_args(argv)
    v = ForecastViewer(train_video=False, prefetch=False)
    doc = Document()
    doc.add_root(row(*v.slices.figures, v.trace_figure.figure))
    events = []
    doc.callbacks.on_change(lambda e: events.append(e))
    nz, nw, h = v._seg.shape[0], v._starts.size, v._horizon
    plans = {"lead": [1 + i % h for i in range(1, args.steps + 1)],
             "z": [i % nz for i in range(1, args.steps + 1)],
             "window": [i % nw for i in range(1, args.steps + 1)]}
    print(f"forecast viewer, {v._key}: planes {v._seg.shape[1:]}, {nz} z, {nw} windows, {h} leads")
    print(f"{'slider':8s} {'cache':5s} {'in place ms':>12s} {'rebuild ms':>11s} {'ratio':>6s} "
          f"{'patch kB':>9s} {'rebuild kB':>10s}")
    for name, values in plans.items():
        for warm in (False, True):
            if not warm:
                v.cache.clear()
            t_in, t_re, b_in, b_re = [], [], [], []
            for val in values:
                if getattr(v, name) == val:
                    continue
                events.clear()
                t0 = time.perf_counter()
                setattr(v, name, val)
                b_in.append(_patch_bytes(list(events)))
                t_in.append(time.perf_counter() - t0)
                # the same step as new figures: read (cold: from zarr again), build, fill, serialise
                if not warm:
                    v.cache.clear()
                t0 = time.perf_counter()
                truth, fc = v.planes(v.window, v.lead, v.z)
                sf, tf = SliceFigures(), TraceFigure()
                sf.set_grid(v._xc, v._yc, v._clim_v)
                sf.show(truth, fc)
                sf.set_outline(v._outline(v.z))
                sf.set_marker(v._marker_xy(v.z, v.neuron))
                tf.set_layout(v._context, v._horizon, "#1f77b4")
                tf.show(*v.trace_data(v.window, v.neuron))
                tf.set_lead(v.lead)
                d = Document()
                d.add_root(row(*sf.figures, tf.figure))
                b_re.append(_doc_bytes(d))
                t_re.append(time.perf_counter() - t0)
                if not warm:
                    v.cache.clear()
                else:    # warm: the next step's planes are in the cache, as after the read-ahead
                    nxt = values[(values.index(val) + 1) % len(values)]
                    v.planes(*[nxt if k == name else getattr(v, k) for k in ("window", "lead", "z")])
                    if name == "window":
                        v._window_traces(nxt)
            mi, mr = statistics.median(t_in) * 1e3, statistics.median(t_re) * 1e3
            print(f"{name:8s} {'warm' if warm else 'cold':5s} {mi:12.2f} {mr:11.2f} {mr / mi:6.1f} "
                  f"{statistics.median(b_in) / 1e3:9.1f} {statistics.median(b_re) / 1e3:10.1f}")
    print("in place = the viewer's step + its document patch; rebuild = new figures + full serialisation;"
          " ratios from this run only.")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
