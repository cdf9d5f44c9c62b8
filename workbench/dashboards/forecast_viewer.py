"""Forecast viewer: ground truth, forecast and error slice by slice, per-neuron traces, MAE by lead.

Data: the synthetic ``small`` recording (generated on first use, cached under
``$WORKBENCH_DATA``) or, given a directory (``data=`` argument, ``?data=`` URL argument or the
``WORKBENCH_FORECAST_DATA`` environment variable), a workbench dataset zarr or a ZAPBench
release opened through :func:`workbench.forecast.open_release`. Forecasts come from the zarr
stores of :mod:`workbench.forecast.video.store` under ``$WORKBENCH_DATA/forecasts/<dataset>``.
On first use a trace-baseline store (clearly labelled as a trace forecast rendered on the
segmentation) is written in seconds so the page renders, and a small video forecaster with a
last-layer Laplace is trained in a worker thread (progress shown); its store appears as the
"video" method when done. A trained checkpoint (``checkpoint=`` / ``?checkpoint=``, or a
``video_checkpoint.pt`` in the forecast directory) is used instead of training, stimulus-conditioned
models included.

Rendering: the Bokeh figures of :mod:`._forecast_figures` are built once; a slider or player
step (window, lead, z) reads one (y, x) plane per panel straight from zarr (an LRU cache keyed on
store path and indices, :class:`~workbench.forecast.video.viewer_data.PlaneCache`) and swaps the
image sources' data, so the browser receives three small arrays and redraws; nothing loads a
whole volume and no figure is rebuilt. Clicking an image picks the neuron under the cursor.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import panel as pn
import param
import xarray as xr
from bokeh.models import Slider as BkSlider

from workbench._paths import DATA_DIR
from workbench.dashboards._background import BackgroundWork, in_server_session, start_when_loaded
from workbench.dashboards._forecast_figures import (
    ALL_TRAIN,
    COLORS,
    MAEFigure,
    SliceFigures,
    TraceFigure,
)
from workbench.forecast.video.store import open_forecast_store, read_plane
from workbench.forecast.video.viewer_data import (
    PlaneCache,
    available_stores,
    cached_baseline_store,
    cached_video_store,
    forecast_directory,
    scores_by_method,
)

__all__ = ["ForecastViewer", "DATA_DIR", "open_viewer_dataset", "outline", "ALL_TRAIN"]

_DATA_LOCK = threading.Lock()
_PLAYER_BUTTONS = ["slower", "previous", "pause", "play", "next", "faster"]


_PREFETCH: list[ThreadPoolExecutor] = []


def _prefetcher() -> ThreadPoolExecutor:
    """One read-ahead thread shared by all viewer sessions of the process."""
    with _DATA_LOCK:
        if not _PREFETCH:
            _PREFETCH.append(ThreadPoolExecutor(1, thread_name_prefix="forecast-viewer-read-ahead"))
        return _PREFETCH[0]


def open_viewer_dataset(data=None, preset: str = "small", seed: int = 0, root=None) -> tuple[xr.Dataset, str]:
    """The recording to view (lazy, one frame per dask chunk) and a key naming it."""
    from workbench.forecast import cached_dataset, open_dataset, store_path
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
        cached_dataset(preset, random_state=seed, root=root)
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
    show_outline = param.Boolean(default=False, label="Segmentation outline")
    version = param.Integer(default=0, precedence=-1)

    def __init__(self, data=None, preset: str = "small", seed: int = 0, root=None, train_video=None,
                 baseline: str = "linear", autostart: bool = True, cache_bytes: int = 256 * 2**20,
                 prefetch: bool | None = None, checkpoint=None, **params):
        super().__init__(**params)
        args = pn.state.session_args if pn.state.curdoc is not None else {}
        arg = lambda k: args[k][0].decode() if args.get(k) else None  # noqa: E731
        self.data = data or arg("data") or os.environ.get("WORKBENCH_FORECAST_DATA") or None
        self.preset, self.seed, self.root = arg("preset") or preset, int(seed), Path(root or DATA_DIR)
        tv = arg("train")
        self.train_video = (tv not in ("0", "false", "no")) if tv is not None else (
            True if train_video is None else bool(train_video))
        self.baseline = baseline
        self.checkpoint = checkpoint or arg("checkpoint")
        self.ds: xr.Dataset | None = None
        self.stores: dict[str, Path] = {}
        self._store: xr.Dataset | None = None
        self._scores: xr.Dataset | None = None
        self._key = None
        self.cache = PlaneCache(cache_bytes)
        pf = arg("prefetch")
        prefetch = (pf not in ("0", "false", "no")) if pf is not None else (True if prefetch is None else prefetch)
        # neighbours of the shown (window, lead, z) are read ahead in one worker thread, so the
        # next slider/player step usually finds its planes in the cache
        self._prefetch = _prefetcher() if prefetch else None
        self._generation = 0
        self._status = pn.pane.Markdown("Preparing the recording and a forecast store ...",
                                        sizing_mode="stretch_width")
        self._progress = pn.indicators.Progress(name="Progress", value=-1, active=True, height=16,
                                                sizing_mode="stretch_width")
        # fixed height: a new info text must not re-lay out the page (the figures would redraw)
        self._info = pn.pane.Markdown("", sizing_mode="stretch_width", height=48)
        self.slices = SliceFigures()
        self.slices.on_tap(self._on_tap)
        self.trace_figure = TraceFigure()
        self.mae_figure: MAEFigure | None = None
        # the neuron is typed in an input without bounds, checked here: out of range is rejected visibly
        self._neuron_input = pn.widgets.IntInput(name="Neuron", value=0, width=260)
        self._neuron_input.param.watch(self._on_neuron_input, "value")
        self.param.watch(self._on_neuron, ["neuron"])
        self._neuron_note = pn.pane.Markdown("", width=280, styles={"color": "#b45309"})
        self._images = pn.Row(*(pn.pane.Bokeh(f, sizing_mode="stretch_width", min_height=330)
                                for f in self.slices.figures), sizing_mode="stretch_width")
        self._trace = pn.pane.Bokeh(self.trace_figure.figure, sizing_mode="stretch_width", min_height=300)
        self._mae = pn.pane.Bokeh(None, sizing_mode="stretch_width", min_height=300)
        self._layout = None
        # background work: preparing the data, then training the video forecaster (newest wins,
        # every error shown on the page, results applied on the session's event loop)
        self._prep, self._training = BackgroundWork(), BackgroundWork()
        self._training.param.watch(self._on_train_progress, ["progress", "message"])
        if in_server_session():  # a closed page gets no more progress messages (drop the jobs)
            pn.state.on_session_destroyed(lambda ctx: (self._prep.cancel(""), self._training.cancel("")))
        self.param.watch(self._on_method, ["method"])
        self.param.watch(self._on_view, ["window", "lead", "z", "neuron", "show_outline"])
        self.param.watch(self._on_condition, ["condition"])
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
            cached_baseline_store(ds, directory, self.baseline)
            stores = available_stores(directory)
        return ds, key, directory, stores, scores_by_method(stores, ds)

    def train(self, callback=None):
        """Write the video store (from ``checkpoint=``, else the directory's ``video_checkpoint.pt``,
        else by training the small forecaster; blocking)."""
        cached_video_store(self.ds, self._directory, callback=callback, checkpoint=self.checkpoint)
        stores = available_stores(self._directory)
        return stores, scores_by_method(stores, self.ds)

    def _start(self):
        """Prepare in the background (inline when not served), then train the video forecaster."""
        self._prep.submit(lambda report: self.prepare(), self._prepared, on_error=self._prepare_failed,
                          message="Preparing the recording and a forecast store ...")

    def _prepared(self, res):
        self._install(*res)
        if (self.train_video or self.checkpoint) and "video" not in self.stores:
            self._progress.value, self._progress.active = 0, True

            def job(report):
                return self.train(lambda frac, message: report(frac, message))

            self._training.submit(job, self._show_video, on_error=self._train_failed,
                                  message="training the video forecaster")

    def _prepare_failed(self, err):
        self._status.object = f"**Could not prepare the viewer:** {err}"
        self._progress.active = False

    def _train_failed(self, err):
        self._status.object = self._status_text() + f"  \n**Video training failed:** {err}"
        self._progress.active = False

    def _show_video(self, stores, scores=None):
        if scores is None:  # the background job's result is one (stores, scores) tuple
            stores, scores = stores
        self._set_stores(stores, scores)
        self.method = "video"
        self._progress.value, self._progress.active = 100, False
        self._status.object = self._status_text()

    def _on_train_progress(self, *events):
        work = self._training
        if not work.running:
            return
        self._progress.value = int(100 * work.progress)
        self._train_msg = work.message
        self._status.object = self._status_text()

    # -- state ------------------------------------------------------------------------------------
    def _install(self, ds, key, directory, stores, scores):
        self.ds, self._key, self._directory = ds, key, directory
        self._seg = np.asarray(ds["segmentation"].values)
        self._n_neurons = int(ds.sizes["neuron"])
        nz, ny, nx = self._seg.shape
        self._zc = ds["z"].values if "z" in ds.coords else np.arange(nz, dtype=float)
        self._yc = ds["y"].values if "y" in ds.coords else np.arange(ny, dtype=float)
        self._xc = ds["x"].values if "x" in ds.coords else np.arange(nx, dtype=float)
        self.param.z.bounds = (0, nz - 1)
        self.param.neuron.bounds = (0, self._n_neurons - 1)
        # neuron centroids in voxel units, for the pick marker (one bincount per axis)
        lab = self._seg.reshape(-1)
        idx = np.indices(self._seg.shape).reshape(3, -1)
        cnt = np.bincount(lab, minlength=self._n_neurons + 1)[1:self._n_neurons + 1]
        self._centroid = np.stack([np.bincount(lab, w, self._n_neurons + 1)[1:self._n_neurons + 1]
                                   for w in idx], 1) / np.maximum(cnt, 1)[:, None]
        self._outlines = {}
        # shared colour limits for truth and forecast, from a block of traces (fixed while browsing)
        sample = np.asarray(ds["traces"].isel(time=slice(0, 512), neuron=slice(0, 4096)).values, float)
        lo, hi = np.nanpercentile(sample, [0.5, 99.5])
        self._clim_v = (float(min(lo, 0.0)), float(max(hi, lo + 1e-3)))
        self.slices.set_grid(self._xc, self._yc, self._clim_v)
        with param.parameterized.batch_call_watchers(self):
            self.z = int(np.argmax(np.bincount(np.nonzero(self._seg)[0], minlength=nz)))
            self.neuron = int(np.argmax(cnt))
        self._set_stores(stores, scores)
        self._progress.value, self._progress.active = 100, False
        self._status.object = self._status_text()

    def _set_stores(self, stores, scores):
        self.stores, self._scores = dict(stores), scores
        self.param.method.objects = list(self.stores)
        conds = [ALL_TRAIN] + [str(c) for c in scores["condition"].values]
        self.param.condition.objects = conds
        if self.condition not in conds:
            self.condition = ALL_TRAIN
        self.mae_figure = MAEFigure(scores, self.condition)
        self._mae.object = self.mae_figure.figure
        if self.method not in self.stores:
            self.method = next(iter(self.stores))
        else:
            self._on_method()

    def _on_method(self, *events):
        if self.method is None or self.method not in self.stores or self.ds is None:
            return
        self._store = open_forecast_store(self.stores[self.method])
        self._store_path = str(Path(self.stores[self.method]).resolve())
        st = self._store
        self._current = (st, self._store_path)      # one assignment: the prefetch thread reads it
        self._generation += 1
        self._starts = np.asarray(st["start"].values, np.int64)
        self._conds = [str(c) for c in st["condition"].values.tolist()] if "condition" in st.coords else None
        self._leads = np.asarray(st["lead"].values, np.int64)
        self._context, self._horizon = int(st.attrs["context"]), int(st.attrs["horizon"])
        nw = st.sizes["window"]
        with param.parameterized.batch_call_watchers(self):
            self.param.window.bounds = (0, nw - 1)
            self.param.lead.bounds = (1, self._horizon)
            self.window = min(self.window, nw - 1)
            self.lead = min(self.lead, self._horizon)
        self.trace_figure.set_layout(self._context, self._horizon, COLORS.get(self.method, "#d62728"))
        self._status.object = self._status_text()
        self._refresh({"window", "lead", "z", "neuron", "show_outline"})
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

    # -- updates in place ----------------------------------------------------------------------------
    def _on_view(self, *events):
        self._refresh({e.name for e in events})

    def _refresh(self, changed):
        """Swap the data of what ``changed`` touches; one document hold, so one message."""
        if self._store is None:
            return
        with pn.io.hold():
            if changed & {"window", "lead", "z"}:
                self.slices.show(*self.planes(self.window, self.lead, self.z), self._empty_reason())
            if changed & {"z", "show_outline"}:
                self.slices.set_outline(self._outline(self.z) if self.show_outline else None)
                self.slices.set_outline_visible(self.show_outline)
            if changed & {"z", "neuron"}:
                self.slices.set_marker(self._marker_xy(self.z, self.neuron))
            if changed & {"window", "neuron"}:
                self.trace_figure.show(*self.trace_data(self.window, self.neuron))
            if "lead" in changed:
                self.trace_figure.set_lead(self.lead)
            self._info.object = self._info_text()
        self._push()
        if self._prefetch is not None and changed & {"window", "lead", "z"}:
            self._generation += 1
            self._prefetch.submit(self._read_ahead, self._generation, self.window, self.lead, self.z)

    def _read_ahead(self, generation, window, lead, z):
        """Fill the cache with the planes one step away in window, lead and z (stops when stale)."""
        time.sleep(0.15)   # start after the browser has painted the step (they may share the CPU)
        nw, nz = self._starts.size, self._seg.shape[0]
        steps = [(window, lead + 1, z), (window, lead - 1, z), (window, lead, z + 1), (window, lead, z - 1),
                 (window + 1, lead, z), (window - 1, lead, z)]
        for w, ld, zz in steps:
            if generation != self._generation:
                return
            if 0 <= w < nw and 1 <= ld <= self._horizon and 0 <= zz < nz:
                self.planes(w, ld, zz)
                if w != window:
                    self._window_traces(w)

    def _on_condition(self, *events):
        if self.mae_figure is not None:
            self.mae_figure.set_condition(self.condition)
            self._push()

    def _push(self):
        """Bokeh models changed in place reach a notebook only when pushed (a server syncs itself)."""
        if not in_server_session():
            pn.io.push_notebook(*self._images, self._trace, self._mae)

    def _empty_reason(self) -> str:
        if self._store is not None and self._store.attrs.get("kind") != "video":
            return (f"no forecast on z-plane {self.z}: the trace forecast is drawn on segmented "
                    "neurons' voxels and this plane has none")
        return f"no forecast values on z-plane {self.z}"

    def _info_text(self):
        c, s = self._context, int(self._starts[self.window])
        cond = self._conds[self.window] if self._conds is not None else "?"
        return (f"Window {self.window}: condition **{cond}**, context frames {s}-{s + c - 1}, "
                f"target frame {s + c - 1 + self.lead} (lead {self.lead}), "
                f"z-plane {self.z} ({self._zc[self.z]:.1f} µm); neuron **{self.neuron}**")

    def _on_neuron(self, event):
        """A neuron picked by clicking or set in code: the input follows, an old rejection note goes."""
        self._neuron_note.object = ""
        self._neuron_input.value = event.new

    def _on_neuron_input(self, event):
        n = getattr(self, "_n_neurons", None)
        value = event.new
        if value is None or n is None or not 0 <= value < n:
            shown = f"0 to {n - 1}" if n else "available once the recording is loaded"
            self._neuron_note.object = f"Neuron {value} does not exist (neurons: {shown}); still showing {self.neuron}."
            self._neuron_input.value = self.neuron
            return
        self.neuron = int(value)

    # -- data reads (one plane / one trace at a time) ------------------------------------------------
    def planes(self, window: int, lead: int, z: int):
        """(truth, forecast) (y, x) planes, each read from zarr on its own (LRU cache)."""
        window, lead, z = int(window), int(lead), int(z)
        if not 0 <= window < self._starts.size:
            raise IndexError(f"window {window} outside 0..{self._starts.size - 1}")
        if lead not in self._leads:
            raise IndexError(f"lead {lead} not among the store's leads {self._leads[[0, -1]].tolist()}")
        t = int(self._starts[window]) + self._context - 1 + lead
        st, path = self._current
        truth = self.cache.get((self._key, "volume", t, z), lambda: np.asarray(
            self.ds["volume"].isel(time=t, z=z).transpose("y", "x").values, np.float32))
        fc = self.cache.get((path, "forecast", window, lead, z),
                            lambda: np.asarray(read_plane(st, "forecast", window, lead, z), np.float32))
        return truth, fc

    def _window_traces(self, window: int):
        """(truth (context+horizon, neuron), forecast (lead, neuron), std or None) of a window,
        one read each (cached, so a neuron pick or a lead step reads nothing)."""
        (st, path), c, h, w = self._current, self._context, self._horizon, int(window)
        s = int(self._starts[w])
        truth = self.cache.get((self._key, "traces", s, c + h), lambda: np.asarray(
            self.ds["traces"].isel(time=slice(s, s + c + h)).transpose("time", "neuron").values, np.float32))
        fc = self.cache.get((path, "trace_forecast", w),
                            lambda: np.asarray(st["trace_forecast"][w].values, np.float32))
        sd = self.cache.get((path, "trace_std", w),
                            lambda: np.asarray(st["trace_std"][w].values, np.float32)) if "trace_std" in st else None
        return truth, fc, sd

    def trace_data(self, window: int, neuron: int):
        """Title, context+target frames, truth, leads, forecast and std (or None) of one neuron."""
        truth, fc, sd = self._window_traces(window)
        n, c = int(neuron), self._context
        title = f"neuron {n}, window {window}, {self.method}"
        return (title, np.arange(-c + 1, -c + 1 + truth.shape[0]), truth[:, n], self._leads, fc[:, n],
                None if sd is None else sd[:, n])

    def _outline(self, z):
        if z not in self._outlines:
            self._outlines[z] = outline(self._seg[int(z)])
        return self._outlines[z]

    def _marker_xy(self, z, neuron):
        cz, cy, cx = self._centroid[int(neuron)]
        if abs(cz - z) >= 1.0:
            return None
        return (float(np.interp(cx, np.arange(self._xc.size), self._xc)),
                float(np.interp(cy, np.arange(self._yc.size), self._yc)))

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

    # -- layout ------------------------------------------------------------------------------------
    def _slider_and_player(self, name: str, label: str, interval: int):
        """The parameter's slider and a player linked to it in the browser (the player moves the
        slider client-side; only the slider syncs to the server, so a step is one round trip).

        Served, the slider is a Bokeh ``Slider`` whose ``on_change`` callback Bokeh runs as soon as
        the browser's change arrives (public Bokeh API; Panel widgets coalesce incoming changes for
        50 ms, a quarter of the viewer's 200 ms step budget). Elsewhere (notebooks) it is Panel's
        ``IntSlider``.
        """
        p = self.param[name]
        lo, hi = p.bounds
        if in_server_session():
            model = BkSlider(title=p.label, start=lo, end=max(hi, lo + 1), value=getattr(self, name),
                             step=1, width=260)
            model.on_change("value", lambda attr, old, new: setattr(self, name, int(new)))
            self.param.watch(lambda e: model.value != e.new and setattr(model, "value", e.new), [name])
            slider, target = pn.pane.Bokeh(model, width=270), model
        else:
            slider = target = pn.widgets.IntSlider.from_param(p, width=260)
        player = pn.widgets.Player(name=label, start=lo, end=hi, value=getattr(self, name),
                                   loop_policy="loop", interval=interval, width=250, show_value=False,
                                   show_loop_controls=False, visible_buttons=_PLAYER_BUTTONS)
        player.jslink(target, value="value", bidirectional=True)

        def bounds(_):
            lo, hi = self.param[name].bounds
            value = getattr(self, name)
            if isinstance(target, BkSlider):
                target.update(start=lo, end=max(hi, lo + 1), value=value)
            # bounds first, then the value: a value beyond the old end would be clipped to it
            player.param.update(start=lo, end=hi)
            player.value = value
        self.param.watch(bounds, ["version"])
        return slider, player

    def __panel__(self):
        if self._layout is not None:
            return self._layout
        sliders, players = [], []
        for label, name, interval in (("Play windows", "window", 500), ("Play leads", "lead", 300),
                                      ("Play z-planes", "z", 400)):
            slider, player = self._slider_and_player(name, label, interval)
            sliders.append(slider)
            players.append(player)  # the player's own name labels it (no second label)
        top = pn.Param(self.param, show_name=False, width=280, parameters=["method"])
        rest = pn.Param(self.param, show_name=False, width=280, parameters=["condition", "show_outline"])
        controls = [top, *sliders, self._neuron_input, self._neuron_note, rest, *players]
        sidebar = pn.Column("### Forecast viewer", *controls, self._progress, width=300)
        main = pn.Column(self._status, self._info, self._images,
                         pn.Row(self._trace, self._mae, sizing_mode="stretch_width"),
                         "Click a cell in any image to pick its neuron (nearest labelled voxel); the "
                         "magenta circle marks it. Truth and forecast share one colour scale; error "
                         "colours: red = forecast too high, blue = too low, white = exact.",
                         sizing_mode="stretch_width")
        self._layout = pn.Row(sidebar, main, sizing_mode="stretch_width")
        return self._layout
