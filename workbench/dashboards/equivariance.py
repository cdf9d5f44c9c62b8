"""Learned equivariance dashboard: per-layer equivariance, prior precisions, marglik, invariance.

The view trains :class:`workbench.equivariance.LearnedEquivarianceClassifier` (and the LILA
learner) through :func:`workbench.equivariance.cached_run` with
:class:`~workbench.dashboards._background.BackgroundWork`, so the page stays live while a progress
bar follows the epochs. Finished runs are saved atomically as netCDF under
``$WORKBENCH_DATA/equivariance``, named by their settings, and can be loaded again (which also
sets the sidebar to the run's settings); loaded runs stay in a bounded in-memory cache
(``pn.cache``). Every plot is drawn from the run's ``xarray.Dataset`` (the estimator's
``history_``), the same object the notebook plots.

The default ("quick") run learns: about 0.8 test accuracy on translated digits after 12 epochs on
1000 images, in 1-2 minutes on two busy cores; the "full" run is the benchmark's recipe.
"""

from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (the options below are Bokeh's)
import numpy as np
import panel as pn
import param
import xarray as xr

from workbench._paths import DATA_DIR
from workbench._torch_utils import torch_threads
from workbench.dashboards._background import BackgroundWork, start_when_loaded
from workbench.equivariance import (
    MEASURES,
    cached_run,
    list_runs,
    load_run,
    run_label,
    run_path,
    run_settings,
)

__all__ = ["EquivarianceDashboard", "DATA_DIR", "PRESETS", "DEFAULT_INVARIANCE",
           "equivariance_heatmap", "equivariance_bars", "precision_plot", "marglik_plot",
           "accuracy_plot", "curves_plot", "amplitude_plot", "Superseded", "saved_run_label"]

RUN_DIR = DATA_DIR / "equivariance"
#: estimator settings of the two run sizes. "quick" reaches ~0.8 test accuracy on translated
#: digits (0.1 = chance) in 12 epochs: SGD at lr 0.1 with batches of 32 and the marglik every
#: second epoch; "full" is benchmarks/bench_equivariance.py's recipe (60 epochs, marglik every
#: epoch), several minutes on two cores.
PRESETS = {
    "quick": dict(n_train=1000, n_epochs=12, estimator=dict(
        channels=[16, 16, 16, 16], n_epochs_burnin=2, marglik_frequency=2, n_hypersteps=20,
        batch_size=32, lr=0.1)),
    "full": dict(n_train=1000, n_epochs=60, estimator=dict(
        channels=[16, 16, 16, 16], optimizer="sgd", lr=0.05, lr_min=0.0, n_epochs_burnin=1,
        marglik_frequency=1, n_hypersteps=30, batch_size=50, prior_structure="layerwise")),
}
N_TEST = 300
TRAIN_THREADS = 1  # torch threads while a run trains (not part of a run's settings)
DEFAULT_INVARIANCE = dict(hidden=[64], n_samples=8, n_samples_eval=8, n_epochs_burnin=1,
                          marglik_frequency=1, n_hypersteps=2, batch_size=50, lr=3e-3,
                          lr_hyp=0.2)
MEASURE_LABELS = {"effective_dim": "share of effective dimensions d_conv/(d_conv+d_free)",
                  "output_rms": "share of output r_conv/(r_conv+r_free)"}
CURVE_HEIGHT = 260


class Superseded(Exception):
    """Raised inside a run whose job a newer one replaced: stops it before anything is saved."""


@pn.cache(max_items=16)
def _load_cached(path: str, mtime: float) -> xr.Dataset:
    """A saved run, read once per (file, modification time); at most 16 kept in memory."""
    return load_run(path)


# ---------------------------------------------------------------------------- plots (from xarray)
def _final(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel(epoch=-1)


def _layer_labels(ds: xr.Dataset) -> list[str]:
    """'layer 1' ... 'layer n' in network order (input side first)."""
    return [f"layer {i + 1}" for i in range(ds.sizes["layer"])]


def _epoch_ticks(epochs) -> list[int]:
    epochs = [int(e) for e in epochs]
    if not epochs:
        return []
    step = max(1, int(np.ceil(len(epochs) / 12)))
    return epochs[::step]


def equivariance_heatmap(ds: xr.Dataset, measure: str = "effective_dim"):
    """Equivariance score of every layer over the epochs (1 = convolution, 0 = free).

    Epochs without any score (the burn-in before the first marglik step, for the effective
    dimensions) are dropped rather than shown as an empty column.
    """
    da = ds.equivariance.sel(measure=measure)
    da = da.isel(epoch=np.flatnonzero(np.isfinite(da.values).any(axis=1)))
    labels = _layer_labels(ds)
    rows = [(int(e), labels[j], float(da.values[i, j]))
            for i, e in enumerate(da.epoch.values) for j in range(len(labels))]
    return hv.HeatMap(rows, ["epoch", "layer"], "equivariance").redim.values(layer=labels).opts(
        cmap="viridis", clim=(0, 1), colorbar=True, tools=["hover"], responsive=True,
        height=300, title="equivariance per layer over epochs", xlabel="epoch",
        ylabel="", xticks=_epoch_ticks(da.epoch.values), clabel="equivariance", invert_yaxis=True)


def equivariance_bars(ds: xr.Dataset, measure: str = "effective_dim"):
    """Final per-layer equivariance score, layers in network order."""
    labels = _layer_labels(ds)
    values = _final(ds).equivariance.sel(measure=measure).values
    return hv.Bars(list(zip(labels, values.astype(float))), "layer", "equivariance").opts(
        ylim=(0, 1), responsive=True, height=300, color="#1f77b4", tools=["hover"],
        title="final equivariance per layer", xlabel="", ylabel="equivariance (1 = convolution)")


def precision_plot(ds: xr.Dataset):
    """Learned prior precision of each pathway of each layer over epochs (log scale)."""
    df = ds.prior_precision.to_dataframe().reset_index().dropna(subset=["prior_precision"])
    if df.empty:
        return hv.Curve([], "epoch", "prior_precision").opts(
            title="learned prior precisions (after the first marglik step)", responsive=True,
            height=300)
    df["series"] = "layer " + (df["layer"].astype(int) + 1).astype(str) + " " + df["pathway"]
    curves = [hv.Curve(d, "epoch", ("prior_precision", "prior precision δ"), label=name).opts(
        line_dash="solid" if name.endswith("conv") else "dashed", line_width=2)
        for name, d in df.groupby("series", sort=True)]
    return hv.Overlay(curves).opts(
        logy=True, responsive=True, height=300, legend_position="right",
        title="learned prior precision per layer and pathway (dashed: free)",
        xticks=_epoch_ticks(sorted(df["epoch"].unique())))


def marglik_plot(ds: xr.Dataset):
    """Log marginal likelihood at the marglik steps."""
    ml = ds.log_marglik.to_dataframe().reset_index().dropna()
    dims = ["epoch", ("log_marglik", "log marglik")]
    return (hv.Curve(ml, *dims).opts(color="#d62728", line_width=2)
            * hv.Scatter(ml, *dims).opts(color="#d62728", size=6)).opts(
        responsive=True, height=CURVE_HEIGHT, title="log marginal likelihood (KFAC Laplace)",
        xticks=_epoch_ticks(ml["epoch"]))


def accuracy_plot(ds: xr.Dataset):
    """Train and test accuracy over epochs, chance level dashed."""
    acc = ds[["train_accuracy", "val_accuracy"]].to_dataframe().reset_index()
    n_classes = 10
    return (hv.Curve(acc, "epoch", ("train_accuracy", "accuracy"), label="train").opts(
                color="#1f77b4", line_width=2)
            * hv.Curve(acc, "epoch", ("val_accuracy", "accuracy"), label="test").opts(
                color="#ff7f0e", line_width=2)
            * hv.HLine(1 / n_classes, label="chance").opts(color="grey", line_dash="dotted")
            ).opts(responsive=True, height=CURVE_HEIGHT, ylim=(0, 1), title="accuracy",
                   legend_position="bottom_right", xticks=_epoch_ticks(acc["epoch"]))


def curves_plot(ds: xr.Dataset):
    """Marglik and accuracy side by side (for notebooks; the dashboard shows them full width)."""
    return (marglik_plot(ds) + accuracy_plot(ds)).opts(shared_axes=False)


def amplitude_plot(ds: xr.Dataset):
    """Learned augmentation amplitudes over epochs; the true rotation range as a dashed line
    (the y-range always includes it)."""
    df = ds.amplitude.to_dataframe().reset_index()
    curves = [hv.Curve(d, "epoch", "amplitude", label=str(t)).opts(line_width=2)
              for t, d in df.groupby("transform", sort=False)]
    top = float(np.nanmax(df["amplitude"])) if len(df) else 1.0
    if "max_rotation" in ds.attrs:
        rot = float(ds.attrs["max_rotation"])
        curves.append(hv.HLine(rot).opts(color="black", line_dash="dashed", line_width=1.5))
        curves.append(hv.Text(float(df["epoch"].min()), rot, f" true rotation ±{rot:.2f} rad",
                              halign="left", valign="bottom", fontsize=9))
        top = max(top, rot)
    return hv.Overlay(curves).opts(
        responsive=True, height=300, ylim=(0, 1.15 * top), legend_position="right",
        title="learned invariance amplitudes (rotate: rad, translate: half image, scale: log)",
        xticks=_epoch_ticks(sorted(df["epoch"].unique())))


# ---------------------------------------------------------------------------- the view
class EquivarianceDashboard(pn.viewable.Viewer):
    """Pick a task and model, train (or load a saved run), read the learned equivariance."""

    task = param.Selector(default="translated", objects=["translated", "quadrant"], label="Task")
    model = param.Selector(default="soft", objects=["soft", "cnn", "fc"], label="Model",
                           doc="soft: conv + free layers; cnn / fc: the pure baselines")
    preset = param.Selector(default="quick", objects=list(PRESETS), label="Run",
                            doc="quick: 12 epochs (1-2 min); full: the benchmark's 60 epochs")
    n_train = param.Integer(default=PRESETS["quick"]["n_train"], bounds=(50, 1500),
                            label="Training images")
    n_epochs = param.Integer(default=PRESETS["quick"]["n_epochs"], bounds=(2, 60), label="Epochs")
    seed = param.Integer(default=0, bounds=(0, 99), label="Seed")
    measure = param.Selector(default="effective_dim", objects=list(MEASURES),
                             label="Equivariance measure")
    saved = param.Selector(default="", objects=[""], label="Saved run")
    lila_epochs = param.Integer(default=10, bounds=(2, 60), label="LILA epochs")

    def __init__(self, autostart: bool = True, **params):
        super().__init__(**params)
        self.work = BackgroundWork()
        self.lila_work = BackgroundWork()
        self._train_btn = pn.widgets.Button(label="Train", button_type="primary")
        self._load_btn = pn.widgets.Button(label="Load saved run")
        self._lila_btn = pn.widgets.Button(label="Train invariance (LILA)")
        self._train_btn.on_click(lambda e: self._start_equivariance())
        self._load_btn.on_click(lambda e: self._load_saved())
        self._lila_btn.on_click(lambda e: self._start_invariance())
        self._progress = pn.indicators.Progress(value=0, max=100, height=18,
                                                sizing_mode="stretch_width", visible=False)
        self._lila_progress = pn.indicators.Progress(value=0, max=100,
                                                     height=18, sizing_mode="stretch_width",
                                                     visible=False)
        self._status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._stale = pn.pane.Alert("", alert_type="warning", visible=False,
                                    sizing_mode="stretch_width")
        self._lila_status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._measure_note = pn.pane.Markdown(self._measure_text(), sizing_mode="stretch_width",
                                              margin=(0, 10))
        # linked_axes=False: the bars' layer axis must not follow the heat map's inverted one,
        # nor LILA's epochs the equivariance run's
        self._panes = {k: pn.pane.HoloViews(self._empty(k), sizing_mode="stretch_width",
                                            min_height=CURVE_HEIGHT, linked_axes=False)
                       for k in ("heatmap", "bars", "precision", "marglik", "accuracy",
                                 "amplitude")}
        self._ds: xr.Dataset | None = None
        self._ds_settings: dict | None = None
        self._lila: xr.Dataset | None = None
        self.work.param.watch(lambda *e: self._follow(self.work, self._progress), ["progress", "running"])
        self.lila_work.param.watch(lambda *e: self._follow(self.lila_work, self._lila_progress),
                                   ["progress", "running"])
        self.work.param.watch(lambda *e: self._on_message(), ["message", "error"])
        self.work.param.watch(lambda *e: self._mark_stale(), ["running"])
        self.lila_work.param.watch(lambda *e: self._on_lila_message(), ["message", "error"])
        self.param.watch(self._on_view, ["measure"])
        self.param.watch(self._on_preset, ["preset"])
        self.param.watch(lambda *e: self._mark_stale(), ["task", "model", "preset", "n_train",
                                                        "n_epochs", "seed"])
        self._refresh_saved()
        if autostart:
            start_when_loaded(self._autostart)

    # -- settings ------------------------------------------------------------------------------
    def equivariance_settings(self) -> dict:
        return dict(task=self.task, model=self.model, random_state=self.seed,
                    n_train=self.n_train, n_test=N_TEST, n_epochs=self.n_epochs,
                    **PRESETS[self.preset]["estimator"])

    def invariance_settings(self) -> dict:
        return dict(learn_invariance=True, random_state=self.seed, n_train=500, n_test=N_TEST,
                    n_epochs=self.lila_epochs, **DEFAULT_INVARIANCE)

    def _on_preset(self, event):
        p = PRESETS[event.new]
        self.param.update(n_train=p["n_train"], n_epochs=p["n_epochs"])

    # -- computation -----------------------------------------------------------------------------
    @staticmethod
    def compute(kind: str, settings: dict, report=None) -> xr.Dataset:
        """The run for ``settings``: from memory, from disk, or trained (and saved).

        ``report(Progress)`` follows the epochs; when it answers True (a newer job replaced this
        one) training stops with :class:`Superseded`, so no partial run is ever saved.
        """
        path = run_path(kind, RUN_DIR, **settings)
        if path.is_file():
            return _load_cached(str(path), path.stat().st_mtime)
        callback = None
        if report is not None:
            def callback(p):
                if report(p, _progress_message(p)):
                    raise Superseded("a newer run replaced this one")
        # one torch thread: these nets are small, and on a busy two-core machine two threads per
        # run were 4x slower (318 s instead of 76 s for the quick run, measured under load 8)
        with torch_threads(TRAIN_THREADS):
            return cached_run(kind, directory=RUN_DIR, callback=callback, **settings)

    def _autostart(self):
        self._start_equivariance(then_invariance=True)

    def _start_equivariance(self, then_invariance=False):
        s = self.equivariance_settings()
        label = (f"Training **{s['model']}** on **{s['task']}** ({s['n_train']} images, "
                 f"{s['n_epochs']} epochs) ...")

        def done(ds):
            self._show(ds, s)
            if then_invariance:
                self._start_invariance()

        self.work.submit(lambda report: self.compute("equivariance", s, report), done,
                         on_error=self._failed, message=label)
        self._mark_stale()

    def _start_invariance(self):
        s = self.invariance_settings()
        self.lila_work.submit(lambda report: self.compute("invariance", s, report),
                              self._show_lila, on_error=self._lila_failed,
                              message=f"Training LILA on rotated digits ({s['n_epochs']} epochs) ...")

    def _failed(self, err):
        self._ds, self._ds_settings = None, None
        for k in ("heatmap", "bars", "precision", "marglik", "accuracy"):
            self._panes[k].object = self._empty(k, "no result")
        self._stale.visible = False
        self._status.object = (f"**Training failed:** {type(err).__name__}: {err}. The plots are "
                               "cleared; change the settings (fewer epochs, another seed) and "
                               "press **Train** again.")

    def _lila_failed(self, err):
        self._lila = None
        self._panes["amplitude"].object = self._empty("amplitude", "no result")
        self._lila_status.object = (f"**LILA training failed:** {type(err).__name__}: {err}. "
                                    "Press **Train invariance (LILA)** to retry.")

    @staticmethod
    def _follow(work: BackgroundWork, bar):
        bar.visible = work.running
        bar.value = int(round(100 * work.progress))

    def _on_message(self):
        if self.work.error:
            return  # _failed writes the message
        if self.work.running:
            self._status.object = self.work.message

    def _on_lila_message(self):
        if self.lila_work.running and not self.lila_work.error:
            self._lila_status.object = self.lila_work.message

    # -- saved runs ------------------------------------------------------------------------------
    def _refresh_saved(self):
        """The saved runs, labelled by their settings (newest first)."""
        self._saved_paths = {}
        for p in list_runs(RUN_DIR):
            if p.name.startswith("equivariance_"):
                label, n = saved_run_label(p.stem), 2
                while label in self._saved_paths:  # same main settings, other details
                    label, n = f"{saved_run_label(p.stem)} ({n})", n + 1
                self._saved_paths[label] = p
        self.param.saved.objects = ["", *self._saved_paths]

    def _load_saved(self):
        if not self.saved or self.saved not in self._saved_paths:
            self._status.object = "**Choose a saved run first.**"
            return
        path = self._saved_paths[self.saved]
        try:
            ds = _load_cached(str(path), path.stat().st_mtime)
        except Exception as err:  # noqa: BLE001  (a broken file is reported, not raised)
            self._failed(err)
            return
        self.work.cancel(message="")
        settings = run_settings(ds)
        self._apply_settings(settings)
        self._show(ds, self.equivariance_settings())

    def _apply_settings(self, s: dict):
        """Set the sidebar to a run's settings (without starting a run)."""
        preset = next((name for name, p in PRESETS.items()
                       if all(s.get(k) == v for k, v in p["estimator"].items())), self.preset)
        self.preset = preset  # first: choosing a preset resets the sizes set below
        update = {}
        for name, key in (("task", "task"), ("model", "model"), ("n_train", "n_train"),
                          ("n_epochs", "n_epochs"), ("seed", "random_state")):
            if key in s:
                value, bounds = s[key], getattr(self.param[name], "bounds", None)
                if bounds is not None:  # a run made outside the sliders' range: the nearest
                    value = min(max(value, bounds[0]), bounds[1])
                update[name] = value
        self.param.update(**update)

    # -- display ---------------------------------------------------------------------------
    def _show(self, ds: xr.Dataset, settings: dict):
        self._ds, self._ds_settings = ds, dict(settings)
        eq = _final(ds).equivariance.sel(measure=self.measure).values
        acc = float(ds.attrs.get("test_accuracy", np.nan))
        self._status.object = (
            f"**{run_label(ds, accuracy=False)}**: test accuracy **{acc:.3f}** (chance 0.1); final equivariance "
            f"per layer {np.round(eq, 2).tolist()}; trained in "
            f"{float(ds.attrs.get('fit_time', np.nan)):.0f} s.")
        self._refresh_saved()
        self._mark_stale()
        self._draw()

    def _show_lila(self, ds: xr.Dataset):
        self._lila = ds
        amp = _final(ds).amplitude.to_series().round(2).to_dict()
        self._lila_status.object = (
            f"LILA on rotated digits (true rotation ±{float(ds.attrs['max_rotation']):.2f} rad): "
            f"test accuracy **{float(ds.attrs['test_accuracy']):.3f}**, learned amplitudes "
            f"{amp}; trained in {float(ds.attrs['fit_time']):.0f} s.")
        self._panes["amplitude"].object = amplitude_plot(ds)

    def _mark_stale(self):
        """Say when the plots do not show the sidebar's settings (or a newer run is training)."""
        if self._ds is None:
            self._stale.visible = False
            return
        shown = run_label(self._ds)
        if self.work.running:
            self._stale.object = f"Training a new run; the plots below still show {shown}."
        elif self._ds_settings != self.equivariance_settings():
            self._stale.object = (f"The settings changed: the plots below show {shown}. "
                                  "Press **Train** to see the new settings.")
        else:
            self._stale.visible = False
            return
        self._stale.visible = True

    def _measure_text(self) -> str:
        return (f"Equivariance of a layer = {MEASURE_LABELS[self.measure]}: 1 = pure convolution "
                "(translation equivariant), 0 = pure free (fully connected) map.")

    def _on_view(self, *events):
        self._measure_note.object = self._measure_text()
        if self._ds is not None:
            self._draw()

    def _draw(self):
        ds = self._ds
        self._panes["heatmap"].object = equivariance_heatmap(ds, self.measure)
        self._panes["bars"].object = equivariance_bars(ds, self.measure)
        self._panes["precision"].object = precision_plot(ds)
        self._panes["marglik"].object = marglik_plot(ds)
        self._panes["accuracy"].object = accuracy_plot(ds)

    @staticmethod
    def _empty(title, state="training ..."):
        return hv.Curve([]).opts(title=f"{title} ({state})", responsive=True, height=CURVE_HEIGHT)

    def __panel__(self):
        controls = pn.Column(
            "### Learned equivariance",
            pn.widgets.Select.from_param(self.param.task),
            pn.widgets.Select.from_param(self.param.model),
            pn.widgets.RadioButtonGroup.from_param(self.param.preset),
            pn.widgets.IntSlider.from_param(self.param.n_train),
            pn.widgets.IntSlider.from_param(self.param.n_epochs),
            pn.widgets.IntInput.from_param(self.param.seed),
            self._train_btn,
            pn.widgets.Select.from_param(self.param.saved),
            self._load_btn,
            pn.widgets.Select.from_param(self.param.measure),
            "### Learned invariance",
            pn.widgets.IntSlider.from_param(self.param.lila_epochs),
            self._lila_btn,
            width=300,
        )
        main = pn.Column(
            self._progress, self._status, self._stale, self._measure_note,
            pn.Row(self._panes["heatmap"], self._panes["bars"], sizing_mode="stretch_width"),
            self._panes["precision"], self._panes["marglik"], self._panes["accuracy"],
            "### Learned invariance (LILA) on rotated digits", self._lila_progress,
            self._lila_status, self._panes["amplitude"],
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, main, sizing_mode="stretch_width")


def saved_run_label(stem: str) -> str:
    """``equivariance_translated_soft_1000img_12ep_seed0_ab12cd`` -> ``soft on translated, 1000
    images, 12 epochs, seed 0`` (the settings in words, without the file's key)."""
    parts = stem.split("_")
    if len(parts) != 7 or parts[0] != "equivariance":
        return stem
    _, task, model, n_img, n_ep, seed, _key = parts
    return (f"{model} on {task}, {n_img.removesuffix('img')} images, "
            f"{n_ep.removesuffix('ep')} epochs, seed {seed.removeprefix('seed')}")


def _progress_message(p) -> str:
    acc = p.metrics.get("val_accuracy") if getattr(p, "metrics", None) else None
    text = f"Training: epoch {p.done} of {p.total}"
    return text + (f", test accuracy {acc:.2f}" if acc is not None and np.isfinite(acc) else "")
