"""SpaM sparsity explorer: accuracy / NLL / ECE / cost versus sparsity, per criterion.

The state is a :class:`param.Parameterized` view. Curves are computed by
:func:`workbench.sparsify.cached_sparsity_curve` in a worker thread (the page stays live and a
progress bar follows the pruned points), cached in memory keyed on the settings and on disk under
``$WORKBENCH_DATA/sparsify`` (atomic writes), so revisiting settings is instant. Every plot is
drawn from the curve's ``xarray.Dataset``.
"""

from __future__ import annotations

import asyncio
import json
import threading

import holoviews as hv
import hvplot.pandas  # noqa: F401  (registers .hvplot on DataFrames)
import numpy as np
import panel as pn
import param
import xarray as xr

from workbench._paths import DATA_DIR
from workbench.dashboards._background import server_loop, start_when_loaded
from workbench.sparsify import CRITERIA, PRIORS, TASKS, cached_sparsity_curve, curve_settings

__all__ = ["SparsityExplorer", "curve_summary", "DATA_DIR"]

SPARSITIES = (0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
METRICS = {"accuracy": "test accuracy", "nll": "test NLL", "ece": "test ECE",
           "param_sparsity": "parameter sparsity (measured)", "flops": "FLOPs per example"}
COLORS = {"opd": "#d62728", "obd": "#ff7f0e", "magnitude": "#1f77b4", "snip": "#2ca02c",
          "grasp": "#9467bd", "random": "#7f7f7f"}

_CACHE: dict[str, xr.Dataset] = {}
_LOCK = threading.Lock()


def curve_summary(ds: xr.Dataset, metric: str) -> xr.Dataset:
    """Mean and a band (mean +- std over seeds, clipped to the seeds' range) of ``metric``."""
    v = ds[metric].astype(float)
    mean, sd = v.mean("seed"), v.std("seed")
    return xr.Dataset({"mean": mean, "lo": np.maximum(mean - sd, v.min("seed")),
                       "hi": np.minimum(mean + sd, v.max("seed"))})


class SparsityExplorer(pn.viewable.Viewer):
    """Choose task, prior structure and criteria; prune; compare the curves."""

    task = param.Selector(default="breast_cancer", objects=list(TASKS), label="Task")
    prior = param.Selector(default="diagonal", objects=list(PRIORS), label="Prior structure",
                           doc="'map' is the weight-decay baseline; the rest are learned by marglik")
    criteria = param.ListSelector(default=["opd", "magnitude", "snip", "random"],
                                  objects=sorted(CRITERIA), label="Criteria")
    structured = param.Boolean(default=False, label="Structured (neurons / filters)")
    n_seeds = param.Integer(default=2, bounds=(1, 5), label="Seeds")
    n_epochs = param.Integer(default=20, bounds=(5, 200), label="Training epochs")
    metric = param.Selector(default="accuracy", objects=list(METRICS), label="Metric")
    level = param.Selector(default=0.9, objects=list(SPARSITIES), label="Per-layer view at sparsity")

    def __init__(self, autostart: bool = True, **params):
        super().__init__(**params)
        self._progress = pn.indicators.Progress(name="Progress", value=0, max=100, height=18,
                                                sizing_mode="stretch_width")
        self._status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._curve_pane = pn.pane.HoloViews(self._empty("metric vs sparsity"), min_height=360,
                                             sizing_mode="stretch_width")
        self._layer_pane = pn.pane.HoloViews(self._empty("per-layer sparsity"), min_height=300,
                                             sizing_mode="stretch_width")
        self._prec_pane = pn.pane.HoloViews(self._empty("learned prior precisions"),
                                            min_height=300, sizing_mode="stretch_width")
        self._ds: xr.Dataset | None = None
        self.param.watch(self._on_settings, ["task", "prior", "criteria", "structured",
                                             "n_seeds", "n_epochs"])
        self.param.watch(self._on_view, ["metric", "level"])
        if autostart:
            start_when_loaded(self._start)

    # -- settings -> cached computation off the event loop --------------------------------------
    def settings(self) -> dict:
        if not self.criteria:
            raise ValueError("choose at least one criterion")
        return dict(task=self.task, priors=[self.prior], criteria=list(self.criteria),
                    sparsities=list(SPARSITIES), seeds=list(range(self.n_seeds)),
                    structured=self.structured,
                    train_kwargs=dict(n_epochs=self.n_epochs,
                                      n_epochs_burnin=min(5, self.n_epochs // 2),
                                      n_hypersteps=20))

    @staticmethod
    def _key(settings: dict) -> str:
        return json.dumps(curve_settings(**settings), sort_keys=True)

    def compute(self, settings: dict, progress=None) -> xr.Dataset:
        """The curve for ``settings`` (memory cache, then disk cache, then computed)."""
        key = self._key(settings)
        with _LOCK:
            if key in _CACHE:
                return _CACHE[key]
        cb = None if progress is None else (lambda p: progress(p.fraction))
        ds = cached_sparsity_curve(cache_dir=DATA_DIR / "sparsify", progress=False, callback=cb,
                                   n_threads=1, **settings)
        with _LOCK:
            _CACHE[key] = ds
        return ds

    def _on_settings(self, *events):
        self._start()

    def _on_view(self, *events):
        if self._ds is not None:
            self._draw()

    def _start(self):
        try:
            settings = self.settings()
        except ValueError as err:
            self._status.object = f"**{err}**"
            return
        key = self._key(settings)
        if key in _CACHE:
            self._show(_CACHE[key])
            return
        self._progress.value, self._progress.active = 0, True
        n_pts = len(settings["criteria"]) * len(SPARSITIES) * len(settings["seeds"])
        self._status.object = (f"Training on **{self.task}** with a **{self.prior}** prior and "
                               f"pruning {n_pts} networks ...")
        loop = server_loop()
        if loop is None:  # plain Python (tests, notebooks): compute synchronously
            self._show(self.compute(settings, self._set_progress))
            return
        loop.create_task(self._compute_async(settings, key))

    def _set_progress(self, frac: float):
        self._progress.value = int(100 * frac)

    async def _compute_async(self, settings: dict, key: str):
        loop = asyncio.get_running_loop()
        try:
            ds = await loop.run_in_executor(None, self.compute, settings, self._set_progress)
        except Exception as err:  # visible on the page and in the server log
            self._status.object = f"**Computation failed:** {err}"
            self._progress.active = False
            raise
        if key == self._key(self.settings()):  # settings may have moved on meanwhile
            self._show(ds)

    # -- plots (all from the Dataset) ----------------------------------------------------------
    def _show(self, ds: xr.Dataset):
        self._ds = ds
        self._progress.value, self._progress.active = 100, False
        dense = ds.accuracy.sel(sparsity=0.0).mean()
        kind = "structured (units per layer)" if ds.attrs["structured"] else "unstructured (global)"
        self._status.object = (
            f"**{ds.attrs['task']}**, prior **{ds.prior.values[0]}**, {kind} pruning, "
            f"{ds.sizes['seed']} seed(s): dense accuracy {float(dense):.3f}, "
            f"{ds.attrs['n_params_dense']} parameters, {ds.attrs['flops_dense']} FLOPs/example; "
            f"computed in {ds.attrs['wall_time_s']:.0f} s.")
        self._draw()

    def _draw(self):
        ds = self._ds.isel(prior=0)
        self._curve_pane.object = self.curve_plot(ds, self.metric)
        self._layer_pane.object = self.layer_plot(ds, self.level)
        self._prec_pane.object = self.precision_plot(ds)

    @staticmethod
    def _empty(title):
        return hv.Curve([]).opts(title=f"{title} (computing ...)", responsive=True, height=300)

    @staticmethod
    def curve_plot(ds: xr.Dataset, metric: str, log_kept: bool = False):
        """``log_kept``: x on a log scale of the kept fraction, -log10(1 - sparsity), ticks
        labelled in sparsity, so 0.9, 0.95 and 0.99 are as far apart as 0, 0.5 and 0.9."""
        s = curve_summary(ds, metric).to_dataframe().reset_index()
        x = "sparsity"
        extra = {}
        if log_kept:
            x = "nines"
            s[x] = -np.log10(np.clip(1.0 - s["sparsity"].to_numpy(dtype=float), 1e-6, None))
            ticks = sorted(set(s["sparsity"].round(6)))
            extra["xticks"] = [(-np.log10(max(1.0 - t, 1e-6)), f"{t:g}") for t in ticks]
        overlays = []
        for crit, d in s.groupby("criterion", sort=False):
            c = COLORS.get(crit, "#333333")
            overlays.append(hv.Area(d, x, ["lo", "hi"]).opts(color=c, alpha=0.2, line_alpha=0))
            overlays.append(hv.Curve(d, x, "mean", label=crit).opts(color=c, line_width=2.5))
            overlays.append(hv.Scatter(d, x, "mean").opts(color=c, size=6))
        return hv.Overlay(overlays).opts(
            title=f"{METRICS[metric]} vs sparsity (mean, band = ±1 std over seeds)",
            xlabel="sparsity" + (" (fraction of hidden units)" if ds.attrs["structured"] else "")
            + (" (log scale of the kept fraction)" if log_kept else ""),
            ylabel=METRICS[metric], responsive=True, height=360, legend_position="bottom_left",
            logy=metric == "flops", **extra)

    @staticmethod
    def layer_plot(ds: xr.Dataset, level: float):
        d = ds.layer_sparsity.sel(sparsity=level).mean("seed").to_dataframe().reset_index()
        colors = hv.dim("criterion").categorize(COLORS, default="#333333")
        return hv.Bars(d, ["layer", "criterion"], "layer_sparsity").opts(
            color=colors, ylim=(0, 1), ylabel="fraction of weights pruned", xlabel="layer (criteria coloured as above)",
            title=f"per-layer sparsity at {level:.0%} (mean over seeds)", responsive=True,
            height=300, tools=["hover"], multi_level=False)

    @staticmethod
    def precision_plot(ds: xr.Dataset):
        lp = ds.log10_prior_precision.stack(point=("seed", "parameter"))
        d = lp.to_dataframe().reset_index()[["log10_prior_precision", "parameter_layer"]]
        return d.hvplot.hist("log10_prior_precision", by="parameter_layer", bins=40, alpha=0.5,
                             xlabel="log10 prior precision", ylabel="parameters",
                             title="learned prior precisions (high = switched off)",
                             responsive=True, height=300, legend="top_right")

    def __panel__(self):
        widgets = pn.Param(
            self.param, show_name=False, width=280,
            parameters=["task", "prior", "criteria", "structured", "n_seeds", "n_epochs",
                        "metric", "level"],
            widgets={"criteria": pn.widgets.CheckBoxGroup, "n_seeds": pn.widgets.IntSlider,
                     "n_epochs": pn.widgets.IntInput})
        sidebar = pn.Column("### SpaM sparsity explorer", widgets, self._progress, width=300)
        main = pn.Column(self._status, self._curve_pane,
                         pn.Row(self._layer_pane, self._prec_pane, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
        return pn.Row(sidebar, main, sizing_mode="stretch_width")
