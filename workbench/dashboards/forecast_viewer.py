"""Forecast viewer: ground truth, forecast and error slice by slice, per-neuron traces, MAE by lead.

Data: the synthetic ``small`` recording (generated on first use, cached under
``$WORKBENCH_DATA``) or, given a directory (``data=`` argument, ``?data=`` URL argument or the
``WORKBENCH_FORECAST_DATA`` environment variable), a workbench dataset zarr or a ZAPBench
release opened through :func:`workbench.forecast.open_release`. Forecasts come from the zarr
stores of :mod:`workbench.forecast.video.store` under ``$WORKBENCH_DATA/forecasts/<dataset>``.
On first use a trace-baseline store (clearly labelled as a trace forecast rendered on the
segmentation) is written in seconds so the page renders, and a small video forecaster with a
last-layer Laplace is trained in a worker thread (progress shown); its store appears as the
"video" method when done. Every plane is read from zarr on demand (one chunk); nothing loads a
whole volume. All updates are holoviews DynamicMaps, so a slider step only ships new image data.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from pathlib import Path

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (options below need the bokeh backend loaded)
import numpy as np
import panel as pn
import param
import xarray as xr

from workbench._paths import DATA_DIR
from workbench.dashboards._background import server_loop, start_when_loaded
from workbench.forecast.video.store import open_forecast_store, read_plane
from workbench.forecast.video.viewer_data import (
    available_stores,
    ensure_baseline_store,
    ensure_video_store,
    forecast_directory,
    scores_by_method,
)

__all__ = ["ForecastViewer", "DATA_DIR", "open_viewer_dataset", "outline"]

ALL_TRAIN = "training conditions (mean)"
COLORS = {"video": "#d62728", "linear": "#1f77b4", "mean": "#7f7f7f", "stimulus": "#2ca02c",
          "tsmixer": "#9467bd"}
_DATA_LOCK = threading.Lock()


def open_viewer_dataset(data=None, preset: str = "small", seed: int = 0, root=None) -> tuple[xr.Dataset, str]:
    """The recording to view (lazy, one frame per dask chunk) and a key naming it."""
    from workbench.forecast import load_or_generate, open_dataset, store_path
    from workbench.forecast.release import open_release
    root = Path(root or DATA_DIR)
    if data:
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"forecast data directory {str(path)!r} does not exist")
        if (path / "zarr.json").is_file() and (path / "traces").exists() and (path / "time").exists():
            return open_dataset(path, chunks=None), path.name
        return open_release(path), f"release-{path.name}"
    with _DATA_LOCK:
        load_or_generate(preset, seed=seed, root=root)
    # chunks=None: lazy indexing without dask, one plane read is one zarr chunk read (~6x faster)
    return open_dataset(store_path(preset, seed, root), chunks=None), f"{preset}-seed{seed}"


def outline(seg_plane: np.ndarray) -> np.ndarray:
    """1.0 on voxels whose label differs from a 4-neighbour's (cell borders), NaN elsewhere."""
    s = np.asarray(seg_plane)
    edge = np.zeros(s.shape, bool)
    dy = s[1:] != s[:-1]
    dx = s[:, 1:] != s[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return np.where(edge & (s > 0), 1.0, np.nan)


class ForecastViewer(pn.viewable.Viewer):
    """Slice-by-slice forecast viewer (see the module docstring)."""

    method = param.Selector(default=None, objects=[], label="Forecast")
    window = param.Integer(default=0, bounds=(0, 1), label="Window")
    lead = param.Integer(default=1, bounds=(1, 32), label="Lead")
    z = param.Integer(default=0, bounds=(0, 1), label="z-plane")
    neuron = param.Integer(default=0, bounds=(0, None), label="Neuron")
    condition = param.Selector(default=ALL_TRAIN, objects=[ALL_TRAIN], label="MAE condition")
    show_outline = param.Boolean(default=True, label="Segmentation outline")
    version = param.Integer(default=0, precedence=-1)

    def __init__(self, data=None, preset: str = "small", seed: int = 0, root=None, train_video=None,
                 baseline: str = "linear", autostart: bool = True, **params):
        super().__init__(**params)
        args = pn.state.session_args if pn.state.curdoc is not None else {}
        arg = lambda k: args[k][0].decode() if args.get(k) else None  # noqa: E731
        self.data = data or arg("data") or os.environ.get("WORKBENCH_FORECAST_DATA") or None
        self.preset, self.seed, self.root = arg("preset") or preset, int(seed), Path(root or DATA_DIR)
        tv = arg("train")
        self.train_video = (tv not in ("0", "false", "no")) if tv is not None else (
            True if train_video is None else bool(train_video))
        self.baseline = baseline
        self.ds: xr.Dataset | None = None
        self.stores: dict[str, Path] = {}
        self._store: xr.Dataset | None = None
        self._scores: xr.Dataset | None = None
        self._cache: OrderedDict = OrderedDict()
        self._status = pn.pane.Markdown("Preparing the recording and a forecast store ...",
                                        sizing_mode="stretch_width")
        self._progress = pn.indicators.Progress(name="Progress", value=-1, active=True, height=16,
                                                sizing_mode="stretch_width")
        self._info = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._images = pn.pane.HoloViews(self._empty("slices"), min_height=330, sizing_mode="stretch_width")
        self._trace = pn.pane.HoloViews(self._empty("neuron"), min_height=300, sizing_mode="stretch_width")
        self._mae = pn.pane.HoloViews(self._empty("MAE by lead"), min_height=300, sizing_mode="stretch_width")
        self.param.watch(self._on_method, ["method"])
        self.param.watch(self._on_info, ["window", "neuron", "lead", "z"])
        if autostart:
            start_when_loaded(self._start)

    # -- preparation off the event loop ---------------------------------------------------------
    def prepare(self):
        """Open the data, make sure a baseline store exists, score the stores (blocking)."""
        ds, key = open_viewer_dataset(self.data, self.preset, self.seed, self.root)
        if "volume" not in ds or "segmentation" not in ds:
            raise ValueError("the recording has no volume/segmentation; the viewer needs both")
        directory = forecast_directory(self.root, key)
        stores = available_stores(directory)
        if not stores:
            ensure_baseline_store(ds, directory, self.baseline)
            stores = available_stores(directory)
        return ds, directory, stores, scores_by_method(stores, ds)

    def train(self, callback=None):
        """Train the small video forecaster and write its store (blocking)."""
        ensure_video_store(self.ds, self._directory, callback=callback)
        stores = available_stores(self._directory)
        return stores, scores_by_method(stores, self.ds)

    def _start(self):
        loop = server_loop()
        if loop is None:  # plain Python (tests, notebooks): compute synchronously
            self._install(*self.prepare())
            return
        loop.create_task(self._start_async())

    async def _start_async(self):
        loop = asyncio.get_running_loop()
        try:
            res = await loop.run_in_executor(None, self.prepare)
        except Exception as err:
            self._status.object = f"**Could not prepare the viewer:** {err}"
            self._progress.active = False
            raise
        self._install(*res)
        if self.train_video and "video" not in self.stores:
            self._progress.value, self._progress.active = 0, True
            try:
                stores, scores = await loop.run_in_executor(None, self.train, self._on_train_progress)
            except Exception as err:
                self._status.object += f"  \n**Video training failed:** {err}"
                self._progress.active = False
                raise
            self._set_stores(stores, scores)
            self.method = "video"

    def _on_train_progress(self, frac, message):
        self._progress.value = int(100 * frac)
        self._train_msg = message
        self._status.object = self._status_text()

    # -- state ------------------------------------------------------------------------------------
    def _install(self, ds, directory, stores, scores):
        self.ds, self._directory = ds, directory
        self._seg = np.asarray(ds["segmentation"].values)
        self._n_neurons = int(ds.sizes["neuron"])
        self._zc = ds["z"].values if "z" in ds.coords else np.arange(self._seg.shape[0], dtype=float)
        self._yc = ds["y"].values if "y" in ds.coords else np.arange(self._seg.shape[1], dtype=float)
        self._xc = ds["x"].values if "x" in ds.coords else np.arange(self._seg.shape[2], dtype=float)
        self.param.z.bounds = (0, self._seg.shape[0] - 1)
        self.param.neuron.bounds = (0, self._n_neurons - 1)
        # neuron centroids in voxel units, for the pick marker (one bincount per axis)
        lab = self._seg.reshape(-1)
        idx = np.indices(self._seg.shape).reshape(3, -1)
        cnt = np.bincount(lab, minlength=self._n_neurons + 1)[1:]
        self._centroid = np.stack([np.bincount(lab, w, self._n_neurons + 1)[1:] for w in idx], 1) \
            / np.maximum(cnt, 1)[:, None]
        self.z = int(np.argmax(np.bincount(np.nonzero(self._seg)[0], minlength=self._seg.shape[0])))
        # shared colour limits for truth and forecast, from a block of traces (fixed while browsing)
        sample = np.asarray(ds["traces"].isel(time=slice(0, 512), neuron=slice(0, 4096)).values, float)
        lo, hi = np.nanpercentile(sample, [0.5, 99.5])
        self._clim_v = (float(min(lo, 0.0)), float(max(hi, lo + 1e-3)))
        self._set_stores(stores, scores)
        self.neuron = int(np.argmax(cnt))
        self._images.object = self._image_layout()
        # the lead marker is its own DynamicMap, so a lead step does not redraw the traces
        marker = hv.DynamicMap(lambda lead: hv.VLine(lead).opts(color="#888888", line_dash="dashed"),
                               streams=dict(lead=self.param.lead))
        self._trace.object = hv.DynamicMap(self._trace_plot, streams=dict(
            window=self.param.window, neuron=self.param.neuron, v=self.param.version)) * marker
        self._mae.object = hv.DynamicMap(self._mae_plot, streams=dict(
            condition=self.param.condition, v=self.param.version))
        self._progress.value, self._progress.active = 100, False
        self._status.object = self._status_text()
        self._on_info()

    def _set_stores(self, stores, scores):
        self.stores, self._scores = dict(stores), scores
        self.param.method.objects = list(self.stores)
        conds = [ALL_TRAIN] + [str(c) for c in scores["condition"].values]
        self.param.condition.objects = conds
        if self.method not in self.stores:
            self.method = next(iter(self.stores))
        else:
            self._on_method()

    def _on_method(self, *events):
        if self.method is None or self.method not in self.stores:
            return
        self._store = open_forecast_store(self.stores[self.method])
        self._cache.clear()
        nw = self._store.sizes["window"]
        self.param.window.bounds = (0, nw - 1)
        self.param.lead.bounds = (1, int(self._store.attrs["horizon"]))
        if self.window > nw - 1:
            self.window = 0
        self._status.object = self._status_text()
        self.version += 1

    def _status_text(self):
        if self._store is None:
            return "Preparing ..."
        a = self._store.attrs
        kind = ("**trace forecast rendered as video** (each neuron's voxels show its trace forecast)"
                if a.get("kind") != "video" else "**video forecast**")
        txt = f"Forecast shown: **{a.get('label', self.method)}**, {kind}; {self._store.sizes['window']} " \
              f"{a.get('split', 'test')} windows stored."
        if getattr(self, "_train_msg", None) and self._progress.active:
            txt += f"  \nVideo forecaster in the background: {self._train_msg}"
        return txt

    def _on_info(self, *events):
        if self._store is None:
            return
        st = self._store
        c = int(st.attrs["context"])
        s = int(st["start"].values[self.window])
        cond = str(st["condition"].values[self.window]) if "condition" in st.coords else "?"
        self._info.object = (f"Window {self.window}: condition **{cond}**, context frames {s}-{s + c - 1}, "
                             f"target frame {s + c - 1 + self.lead} (lead {self.lead}), "
                             f"z-plane {self.z} ({self._zc[self.z]:.1f} µm); neuron **{self.neuron}**")

    # -- slices ------------------------------------------------------------------------------------
    def planes(self, window: int, lead: int, z: int):
        """(truth, forecast) (y, x) planes, each read from zarr on its own (small LRU cache)."""
        key = (self.method, window, lead, z)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        st = self._store
        t = int(st["start"].values[window]) + int(st.attrs["context"]) - 1 + int(lead)
        truth = np.asarray(self.ds["volume"].isel(time=t, z=int(z)).values, np.float32)
        fc = read_plane(st, "forecast", window, lead, z)
        self._cache[key] = (truth, fc)
        while len(self._cache) > 64:
            self._cache.popitem(last=False)
        return truth, fc

    def _clim(self):
        return self._clim_v

    def _img(self, arr, title):
        return hv.Image((self._xc, self._yc, arr), kdims=["x", "y"], vdims=[hv.Dimension("v", label=title)])

    def _img_opts(self, title, cmap, clim):
        """Options set once on the DynamicMap (not per update: that would clone every frame)."""
        return dict(cmap=cmap, clim=clim, title=title, colorbar=True, responsive=True, height=320,
                    aspect=None, tools=["hover", "tap"], xlabel="x (µm)", ylabel="y (µm)",
                    clipping_colors={"NaN": "#f2f2f2"}, framewise=False, axiswise=False)

    def _truth_img(self, window, lead, z, v, neuron, show_outline):
        """Truth with the segmentation outline and the picked neuron's marker (one inner overlay:
        several DynamicMaps multiplied together cost ~4x more per update)."""
        img = self._img(self.planes(window, lead, z)[0], "truth")
        return img * self._outline_img(z, show_outline) * self._marker(z, neuron)

    def _fc_img(self, window, lead, z, v):
        return self._img(self.planes(window, lead, z)[1], "forecast")

    def _err_img(self, window, lead, z, v):
        t, f = self.planes(window, lead, z)
        return self._img(f - t, "error")

    def _outline_img(self, z, show_outline):
        o = outline(self._seg[int(z)]) if show_outline else np.full(self._seg.shape[1:], np.nan)
        return hv.Image((self._xc, self._yc, o), kdims=["x", "y"], vdims=["outline"], group="Outline")

    def _marker(self, z, neuron):
        cz, cy, cx = self._centroid[int(neuron)]
        here = abs(cz - z) < 1.0
        return hv.Points(([np.interp(cx, np.arange(self._xc.size), self._xc)] if here else [],
                          [np.interp(cy, np.arange(self._yc.size), self._yc)] if here else []))

    def _image_layout(self):
        streams = dict(window=self.param.window, lead=self.param.lead, z=self.param.z, v=self.param.version)
        clim = self._clim()
        e = max(abs(c) for c in clim) / 2
        truth = hv.DynamicMap(self._truth_img, streams=dict(
            streams, neuron=self.param.neuron, show_outline=self.param.show_outline)).opts({
                "Image": self._img_opts("ground truth + cell outlines", "viridis", clim),
                "Image.Outline": dict(cmap=["#ffffff"], alpha=0.6, colorbar=False, tools=[],
                                      clipping_colors={"NaN": (0, 0, 0, 0)}),
                "Points": dict(marker="circle", size=14, fill_alpha=0, line_color="#ff00ff", line_width=2)})
        fc = hv.DynamicMap(self._fc_img, streams=streams).opts(**self._img_opts("forecast", "viridis", clim))
        err = hv.DynamicMap(self._err_img, streams=streams).opts(
            **self._img_opts("error: forecast − truth", "RdBu_r", (-e, e)))
        maps = [truth, fc, err]
        self._taps = [hv.streams.Tap(source=m, x=None, y=None) for m in maps]
        for tap in self._taps:
            tap.add_subscriber(self._on_tap)
        return hv.Layout(maps).cols(3).opts(shared_axes=True)

    def _on_tap(self, x=None, y=None):
        if x is None or y is None or self.ds is None:
            return
        iy = int(np.abs(self._yc - y).argmin())
        ix = int(np.abs(self._xc - x).argmin())
        plane = self._seg[self.z]
        if plane[iy, ix] > 0:
            self.neuron = int(plane[iy, ix]) - 1
            return
        ys, xs = np.nonzero(plane)
        if ys.size:
            k = int(np.argmin((ys - iy) ** 2 + (xs - ix) ** 2))
            self.neuron = int(plane[ys[k], xs[k]]) - 1

    # -- neuron and MAE panels ---------------------------------------------------------------------
    def _trace_plot(self, window, neuron, v):
        st = self._store
        c, h = int(st.attrs["context"]), int(st.attrs["horizon"])
        s = int(st["start"].values[window])
        rel = np.arange(-c + 1, h + 1)
        truth = np.asarray(self.ds["traces"].isel(time=slice(s, s + c + h), neuron=int(neuron)).values, float)
        fc = np.asarray(st["trace_forecast"][window, :, int(neuron)].values, float)
        leads = np.arange(1, h + 1)
        col = COLORS.get(self.method, "#d62728")
        parts = [hv.VSpan(-c + 0.5, 0.5).opts(color="#dddddd", alpha=0.5)]
        if "trace_std" in st:
            sd = np.asarray(st["trace_std"][window, :, int(neuron)].values, float)
            parts.append(hv.Area((leads, fc - 1.96 * sd, fc + 1.96 * sd), vdims=["lo", "hi"],
                                 label="95% band (Laplace)").opts(color=col, alpha=0.2, line_alpha=0))
        parts += [hv.Curve((rel, truth), "frame relative to forecast origin", "dF/F", label="truth")
                  .opts(color="black", line_width=2),
                  hv.Curve((leads, fc), label=f"forecast ({self.method})").opts(color=col, line_width=2)]
        return hv.Overlay(parts).opts(title=f"neuron {neuron}, window {window} (grey: context)",
                                      xlabel="frame relative to forecast origin", ylabel="dF/F",
                                      responsive=True, height=300, legend_position="top_right",
                                      show_legend=True)

    def _mae_plot(self, condition, v):
        sc = self._scores
        curves = []
        for m in sc["method"].values:
            d = sc.sel({"method": m})
            y = d["mae_train_conditions"] if condition == ALL_TRAIN else d["mae"].sel(condition=condition)
            curves.append(hv.Curve((d["lead"].values, y.values), "lead", "MAE", label=str(m))
                          .opts(color=COLORS.get(str(m), "#333333"), line_width=2))
        n = int(sc.attrs.get("n_windows_scored", 0)) or None
        return hv.Overlay(curves).opts(
            title=f"MAE by lead, {condition}" + ("" if n is None else f" ({n} test windows)"),
            responsive=True, height=300, legend_position="top_left")

    @staticmethod
    def _empty(title):
        return hv.Curve([]).opts(title=f"{title} (loading ...)", responsive=True, height=300)

    def __panel__(self):
        w = pn.Param(self.param, show_name=False, width=280,
                     parameters=["method", "window", "lead", "z", "neuron", "condition", "show_outline"],
                     widgets={"window": pn.widgets.IntSlider, "lead": pn.widgets.IntSlider,
                              "z": pn.widgets.IntSlider, "neuron": pn.widgets.IntInput})
        player = pn.widgets.Player(name="Play leads", start=1, end=32, value=1, loop_policy="loop",
                                   interval=400, width=250, show_value=False, show_loop_controls=False,
                                   visible_buttons=["slower", "previous", "pause", "play", "next", "faster"])
        player.link(self, value="lead")
        self.param.watch(lambda e: setattr(player, "value", e.new), ["lead"])
        self.param.watch(lambda e: setattr(player, "end", e.obj.param.lead.bounds[1]), ["version"])
        sidebar = pn.Column("### Forecast viewer", w, "Play through the leads:", player, self._progress,
                            width=300)
        main = pn.Column(self._status, self._info, self._images,
                         pn.Row(self._trace, self._mae, sizing_mode="stretch_width"),
                         "Click a cell in any image to pick its neuron (nearest labelled voxel); the "
                         "magenta circle marks it in the ground truth. Error colours: red = forecast too "
                         "high, blue = too low, white = exact.",
                         sizing_mode="stretch_width")
        return pn.Row(sidebar, main, sizing_mode="stretch_width")
