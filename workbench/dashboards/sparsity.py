"""SpaM sparsity explorer: accuracy / NLL / ECE / cost versus sparsity, per criterion.

The state is a :class:`param.Parameterized` view. Curves are computed by
:func:`workbench.sparsify.cached_sparsity_curve` through
:class:`~workbench.dashboards._background.BackgroundWork` (the page stays live; the progress bar
follows every training epoch and every pruned point), cached on disk under
``$WORKBENCH_DATA/sparsify`` (atomic writes) and in a bounded in-memory cache (``pn.cache``)
keyed on the settings, so revisiting settings is instant. Every plot is drawn from the curve's
``xarray.Dataset``.

Reading aids: the sparsity axis is "nines" by default (``-log10(1 - s)``: 0.9 and 0.99 are one
decade apart, where the criteria differ), ticks labelled with the sparsity itself; layers are
named by their modules (``Linear 30→100``), criteria by their full names, and colours always come
with a legend.
"""

from __future__ import annotations

import json

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (the options below are Bokeh's)
import numpy as np
import panel as pn
import param
import xarray as xr

from workbench._paths import DATA_DIR
from workbench.dashboards._background import BackgroundWork, start_when_loaded
from workbench.sparsify import (
    CRITERIA,
    PRIORS,
    TASKS,
    cached_sparsity_curve,
    curve_path,
    curve_settings,
    make_model,
)

__all__ = ["SparsityExplorer", "curve_summary", "layer_names", "nines", "DATA_DIR"]

SPARSITIES = (0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
METRICS = {"accuracy": "test accuracy", "nll": "test NLL", "ece": "test ECE",
           "param_sparsity": "parameter sparsity (measured)", "flops": "FLOPs per example"}
COLORS = {"opd": "#d62728", "obd": "#ff7f0e", "magnitude": "#1f77b4", "snip": "#2ca02c",
          "grasp": "#9467bd", "random": "#7f7f7f"}
CRITERION_LABELS = {"opd": "OPD (optimal posterior damage)", "obd": "OBD (optimal brain damage)",
                    "magnitude": "magnitude |w|", "snip": "SNIP", "grasp": "GraSP",
                    "random": "random"}
CRITERION_SHORT = {"opd": "OPD", "obd": "OBD", "magnitude": "magnitude", "snip": "SNIP",
                   "grasp": "GraSP", "random": "random"}
SPARSITY_TICKS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 0.99)
AXES = {"nines": "nines: -log10(1 - sparsity)", "linear": "linear"}


@pn.cache(max_items=16)
def _load_curve(path: str, mtime: float) -> xr.Dataset:
    """A curve file, read once per (file, modification time); at most 16 kept in memory."""
    with xr.open_dataset(path, engine="scipy") as ds:
        return ds.load()


def nines(s):
    """``-log10(1 - s)``: 0 -> 0, 0.9 -> 1, 0.99 -> 2 (the high-sparsity range spread out)."""
    return -np.log10(1.0 - np.minimum(np.asarray(s, dtype=float), 0.9999))


def layer_names(task: str, layers) -> dict[str, str]:
    """``{module key: 'Linear 30→100'}`` for the prunable layers of ``task``'s network
    ('Conv 1→8, 3×3' for convolutions), numbered when two would read the same."""
    mods = dict(make_model(task).named_modules())
    out = {}
    for i, key in enumerate(layers):
        m = mods.get(str(key))
        if m is None:
            out[str(key)] = f"layer {key}"
        elif hasattr(m, "kernel_size"):
            k = "×".join(map(str, m.kernel_size))
            out[str(key)] = f"{i + 1}: Conv {m.in_channels}→{m.out_channels}, {k}"
        else:
            out[str(key)] = f"{i + 1}: Linear {m.in_features}→{m.out_features}"
    return out


def _nice_log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """1-2-5 ticks between ``lo`` and ``hi`` labelled '500', '2k', '1.2M'-style."""
    ticks = []
    for e in range(int(np.floor(np.log10(max(lo, 1e-12)))), int(np.ceil(np.log10(hi))) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if lo / 1.05 <= v <= hi * 1.05:
                ticks.append(v)
    if len(ticks) < 3:  # a narrow range: add its ends
        ticks = sorted(set(ticks) | {float(lo), float(hi)})
    return [(v, _si(v)) for v in ticks]


def _si(v: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


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
                                  objects=sorted(CRITERIA), label="Pruning criteria")
    structured = param.Boolean(default=False, label="Structured (neurons / filters)")
    n_seeds = param.Integer(default=2, bounds=(1, 5), label="Seeds")
    n_epochs = param.Integer(default=20, bounds=(5, 200), label="Training epochs")
    metric = param.Selector(default="accuracy", objects=list(METRICS), label="Metric")
    axis = param.Selector(default="nines", objects=list(AXES), label="Sparsity axis")
    level = param.Selector(default=0.9, objects=list(SPARSITIES), label="Per-layer view at sparsity")

    def __init__(self, autostart: bool = True, **params):
        super().__init__(**params)
        self.work = BackgroundWork()
        self._progress = pn.indicators.Progress(value=0, max=100, height=18, visible=False,
                                                sizing_mode="stretch_width")
        self._status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._stale = pn.pane.Alert("", alert_type="warning", visible=False,
                                    sizing_mode="stretch_width")
        pane = dict(sizing_mode="stretch_width", linked_axes=False)
        self._curve_pane = pn.pane.HoloViews(self._empty("metric vs sparsity"), min_height=360,
                                             **pane)
        self._layer_pane = pn.pane.HoloViews(self._empty("per-layer sparsity"), min_height=300,
                                             **pane)
        self._prec_pane = pn.pane.HoloViews(self._empty("prior precisions"), min_height=300,
                                            **pane)
        self._ds: xr.Dataset | None = None
        self._ds_key: str | None = None
        self.work.param.watch(self._follow, ["progress", "running", "message"])
        self.param.watch(self._on_settings, ["task", "prior", "criteria", "structured",
                                             "n_seeds", "n_epochs"])
        self.param.watch(self._on_view, ["metric", "level", "axis"])
        if autostart:
            start_when_loaded(self._start)

    # -- settings -> cached computation off the event loop --------------------------------------
    def settings(self) -> dict:
        if not self.criteria:
            raise ValueError("choose at least one pruning criterion (the checkboxes under "
                             "'Pruning criteria')")
        return dict(task=self.task, priors=[self.prior], criteria=list(self.criteria),
                    sparsities=list(SPARSITIES), seeds=list(range(self.n_seeds)),
                    structured=self.structured,
                    train_kwargs=dict(n_epochs=self.n_epochs,
                                      n_epochs_burnin=min(5, self.n_epochs // 2),
                                      n_hypersteps=20))

    @staticmethod
    def _key(settings: dict) -> str:
        return json.dumps(curve_settings(**settings), sort_keys=True)

    @staticmethod
    def compute(settings: dict, report=None) -> xr.Dataset:
        """The curve for ``settings`` (memory cache, then disk cache, then computed)."""
        path = curve_path(DATA_DIR / "sparsify", **settings)
        if path.is_file():
            return _load_curve(str(path), path.stat().st_mtime)

        def callback(p):
            overall = p.state.get("overall", p.fraction)
            return report(overall, p.message) if report is not None else False

        ds = cached_sparsity_curve(cache_dir=DATA_DIR / "sparsify", progress=False,
                                   callback=callback, n_threads=1, **settings)
        if ds["accuracy"].isnull().any():  # stopped early: superseded by newer settings
            raise RuntimeError("superseded")
        return ds

    def _on_settings(self, *events):
        self._start()

    def _on_view(self, *events):
        if self._ds is not None:
            self._draw()

    def _start(self):
        try:
            settings = self.settings()
        except ValueError as err:  # said on the page; the plots are marked, nothing raises
            self.work.cancel(message="")
            self._status.object = f"**Nothing to compute:** {err}."
            self._mark_stale("The plots below show the previous settings.")
            return
        n_pts = len(settings["criteria"]) * len(SPARSITIES) * len(settings["seeds"])
        message = (f"Training on **{self.task}** with a **{self.prior}** prior and pruning "
                   f"{n_pts} networks ...")
        key = self._key(settings)
        self.work.submit(lambda report: self.compute(settings, report),
                         lambda ds: self._show(ds, key), on_error=self._failed, message=message)
        if self.work.running:
            self._status.object = message
            self._mark_stale("Computing the new settings; the plots below show the previous ones.")

    def _follow(self, *events):
        self._progress.visible = self.work.running
        self._progress.value = int(round(100 * self.work.progress))
        if self.work.running and self.work.message:
            self._status.object = self.work.message

    def _failed(self, err):
        self._ds = None
        for pane, title in ((self._curve_pane, "metric vs sparsity"),
                            (self._layer_pane, "per-layer sparsity"),
                            (self._prec_pane, "prior precisions")):
            pane.object = self._empty(title, "no result")
        self._stale.visible = False
        self._status.object = (f"**Computation failed:** {type(err).__name__}: {err}. The plots "
                               "are cleared; try fewer training epochs or another prior.")

    def _mark_stale(self, text: str):
        if self._ds is None:
            self._stale.visible = False
            return
        self._stale.object, self._stale.visible = text, True

    # -- plots (all from the Dataset) ----------------------------------------------------------
    def _show(self, ds: xr.Dataset, key: str | None = None):
        self._ds, self._ds_key = ds, key
        self._stale.visible = False
        dense = ds.accuracy.sel(sparsity=0.0).mean()
        kind = "structured (units per layer)" if ds.attrs["structured"] else "unstructured (global)"
        self._status.object = (
            f"**{ds.attrs['task']}**, prior **{ds.prior.values[0]}**, {kind} pruning, "
            f"{ds.sizes['seed']} seed(s): dense accuracy {float(dense):.3f}, "
            f"{ds.attrs['n_params_dense']} parameters, {_si(ds.attrs['flops_dense'])} FLOPs per "
            f"example; computed in {ds.attrs['wall_time_s']:.0f} s.")
        self._draw()

    def _draw(self):
        ds = self._ds.isel(prior=0)
        self._curve_pane.object = self.curve_plot(ds, self.metric, self.axis)
        self._layer_pane.object = self.layer_plot(ds, self.level)
        self._prec_pane.object = self.precision_plot(ds)

    @staticmethod
    def _empty(title, state="computing ..."):
        return hv.Curve([]).opts(title=f"{title} ({state})", responsive=True, height=300)

    @staticmethod
    def curve_plot(ds: xr.Dataset, metric: str, axis: str = "nines"):
        s = curve_summary(ds, metric).to_dataframe().reset_index()
        x = "nines" if axis == "nines" else "sparsity"
        s["nines"] = nines(s["sparsity"])
        overlays = []
        for crit, d in s.groupby("criterion", sort=False):
            c = COLORS.get(crit, "#333333")
            label = CRITERION_LABELS.get(crit, crit)
            overlays.append(hv.Area(d, x, ["lo", "hi"]).opts(color=c, alpha=0.2, line_alpha=0))
            overlays.append(hv.Curve(d, x, "mean", label=label).opts(color=c, line_width=2.5))
            overlays.append(hv.Scatter(d, x, "mean", label=label).opts(color=c, size=6))
        xlabel = "sparsity" + (" (fraction of hidden units)" if ds.attrs["structured"] else "")
        opts = dict(title=f"{METRICS[metric]} vs sparsity (band: ±1 std over seeds)",
                    ylabel=METRICS[metric], responsive=True, height=360,
                    legend_position="bottom_left", tools=["hover"])
        if axis == "nines":
            opts.update(xticks=[(float(nines(t)), f"{t:g}") for t in SPARSITY_TICKS],
                        xlabel=xlabel + ", spaced by -log10(1 - sparsity)")
        else:
            opts.update(xlabel=xlabel)
        if metric == "flops":
            vals = s[["lo", "hi", "mean"]].to_numpy(dtype=float)
            vals = vals[np.isfinite(vals) & (vals > 0)]
            if vals.size:
                opts.update(logy=True, yticks=_nice_log_ticks(vals.min(), vals.max()))
        return hv.Overlay(overlays).opts(**opts)

    @staticmethod
    def layer_plot(ds: xr.Dataset, level: float):
        d = ds.layer_sparsity.sel(sparsity=level).mean("seed").to_dataframe().reset_index()
        names = layer_names(ds.attrs["task"], ds.layer.values)
        d["layer"] = d["layer"].astype(str).map(names)
        d["criterion"] = d["criterion"].map(lambda c: CRITERION_SHORT.get(c, c))
        cmap = {CRITERION_SHORT.get(k, k): v for k, v in COLORS.items()}
        what = "units removed" if ds.attrs["structured"] else "weights pruned"
        return hv.Bars(d, ["layer", "criterion"], ("layer_sparsity", f"fraction of {what}")).opts(
            cmap=cmap, ylim=(0, 1), xlabel="", show_legend=True, legend_position="right",
            title=f"per-layer sparsity at {level:g} overall (mean over seeds)",
            responsive=True, height=320, tools=["hover"], multi_level=False)

    @staticmethod
    def precision_plot(ds: xr.Dataset):
        prior = str(ds.prior.values) if ds.prior.ndim == 0 else str(ds.prior.values[0])
        lp = ds.log10_prior_precision.stack(point=("seed", "parameter"))
        d = lp.to_dataframe().reset_index()[["log10_prior_precision", "parameter_layer"]]
        names = layer_names(ds.attrs["task"], list(dict.fromkeys(d["parameter_layer"])))
        d["layer"] = d["parameter_layer"].astype(str).map(names)
        if prior == "map":
            title = "map prior: fixed weight decay, nothing learned"
        else:
            title = "learned prior precisions (high = switched off)"
        hists = []
        edges = np.histogram_bin_edges(d["log10_prior_precision"].dropna(), bins=40)
        if len(np.unique(edges)) < 2:
            edges = np.linspace(d["log10_prior_precision"].min() - 0.5,
                                d["log10_prior_precision"].max() + 0.5, 11)
        for name, g in d.groupby("layer", sort=False):
            counts, _ = np.histogram(g["log10_prior_precision"].dropna(), bins=edges)
            hists.append(hv.Histogram((edges, counts), kdims=[("log10_prior_precision",
                                                                "log10 prior precision")],
                                      vdims=[("count", "parameters")], label=name).opts(
                alpha=0.6, line_alpha=0.3))
        return hv.Overlay(hists).opts(title=title, responsive=True, height=320,
                                      legend_position="top_right")

    def __panel__(self):
        p = self.param
        criteria = pn.widgets.CheckBoxGroup.from_param(
            p.criteria, options={CRITERION_LABELS[c]: c for c in sorted(CRITERIA)},
            inline=False)
        sidebar = pn.Column(
            "### SpaM sparsity explorer",
            pn.widgets.Select.from_param(p.task), pn.widgets.Select.from_param(p.prior),
            pn.pane.Markdown("**Pruning criteria**",
                             margin=(5, 10, 0, 10)),
            criteria,
            pn.widgets.Checkbox.from_param(p.structured),
            pn.widgets.IntSlider.from_param(p.n_seeds), pn.widgets.IntInput.from_param(p.n_epochs),
            pn.widgets.Select.from_param(p.metric),
            pn.pane.Markdown("**Sparsity axis**", margin=(5, 10, 0, 10)),
            pn.widgets.RadioButtonGroup.from_param(p.axis),
            pn.widgets.Select.from_param(p.level),
            self._progress, width=300)
        main = pn.Column(self._status, self._stale, self._curve_pane,
                         pn.Row(self._layer_pane, self._prec_pane, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
        return pn.Row(sidebar, main, sizing_mode="stretch_width")
