"""Learned equivariance dashboard: per-layer equivariance, prior precisions, marglik, invariance.

The view trains :class:`workbench.equivariance.LearnedEquivarianceClassifier` (and the LILA
learner) through :func:`workbench.equivariance.runs.cached_run` in a worker thread, so the page
stays live while a progress bar follows the epochs; finished runs are saved atomically as netCDF
under ``$WORKBENCH_DATA/equivariance`` and can be loaded again. Every plot is drawn from the run's
``xarray.Dataset`` (the estimator's ``history_``), the same object the notebook plots.
"""

from __future__ import annotations

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
from workbench.equivariance import MEASURES
from workbench.equivariance.runs import cached_run, list_runs, load_run

__all__ = ["EquivarianceDashboard", "DATA_DIR", "DEFAULT_EQUIVARIANCE", "DEFAULT_INVARIANCE",
           "equivariance_heatmap", "equivariance_bars", "precision_plot", "curves_plot",
           "amplitude_plot"]

RUN_DIR = DATA_DIR / "equivariance"
# small enough to train on first use in well under a minute on a busy 2-core machine
DEFAULT_EQUIVARIANCE = dict(channels=[6, 6, 6, 6], n_epochs_burnin=1, marglik_frequency=1,
                            n_hypersteps=20, batch_size=50, lr=0.05)
DEFAULT_INVARIANCE = dict(hidden=[64], n_samples=4, n_samples_eval=8, n_epochs_burnin=1,
                          marglik_frequency=1, n_hypersteps=1, batch_size=50, lr=3e-3,
                          lr_hyp=0.1)
MEASURE_LABELS = {"effective_dim": "effective-dimension share d_conv/(d_conv+d_free)",
                  "output_rms": "output share r_conv/(r_conv+r_free)"}
_CACHE: dict[str, xr.Dataset] = {}
_LOCK = threading.Lock()


# ---------------------------------------------------------------------------- plots (from xarray)
def _final(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel(epoch=-1)


def equivariance_heatmap(ds: xr.Dataset, measure: str = "effective_dim"):
    """Equivariance score of every layer over training epochs (1 = convolution, 0 = free)."""
    df = ds.equivariance.sel(measure=measure).to_dataframe().reset_index()
    return hv.HeatMap(df, ["epoch", "layer"], "equivariance").opts(
        cmap="viridis", clim=(0, 1), colorbar=True, tools=["hover"], responsive=True, height=300,
        title=f"equivariance per layer over training ({measure})", invert_yaxis=True)


def equivariance_bars(ds: xr.Dataset, measure: str = "effective_dim"):
    """Final per-layer equivariance score."""
    df = _final(ds).equivariance.sel(measure=measure).to_dataframe().reset_index()
    return df.hvplot.bar(x="layer", y="equivariance", ylim=(0, 1), responsive=True, height=300,
                         title=f"final equivariance per layer ({MEASURE_LABELS[measure]})",
                         color="#1f77b4")


def precision_plot(ds: xr.Dataset):
    """Learned prior precision of each pathway of each layer over epochs (log scale)."""
    da = ds.prior_precision
    df = da.to_dataframe().reset_index().dropna(subset=["prior_precision"])
    if df.empty:
        return hv.Curve([]).opts(title="learned prior precisions (after the first marglik step)",
                                 responsive=True, height=300)
    df["series"] = "layer " + df["layer"].astype(str) + " " + df["pathway"]
    return df.hvplot.line(x="epoch", y="prior_precision", by="series", logy=True,
                          responsive=True, height=300, ylabel="prior precision δ",
                          title="learned prior precision per layer and pathway",
                          legend="right")


def curves_plot(ds: xr.Dataset):
    """Log marglik (at the marglik steps) and train / test accuracy over epochs."""
    ml = ds.log_marglik.to_dataframe().reset_index().dropna()
    marg = (ml.hvplot.line(x="epoch", y="log_marglik", responsive=True, height=260,
                           title="log marginal likelihood (KFAC Laplace)", color="#d62728")
            * ml.hvplot.scatter(x="epoch", y="log_marglik", color="#d62728", responsive=True,
                                height=260))  # sized like the line: no "responsive mode" warning
    acc = ds[["train_accuracy", "val_accuracy"]].to_dataframe().reset_index()
    acc = acc.rename(columns={"train_accuracy": "train", "val_accuracy": "test"})
    accp = acc.hvplot.line(x="epoch", y=["train", "test"], ylim=(0, 1), responsive=True,
                           height=260, ylabel="accuracy", title="accuracy",
                           legend="bottom_right")
    return (marg + accp).opts(shared_axes=False)


def amplitude_plot(ds: xr.Dataset):
    """Learned augmentation amplitudes over epochs; the true rotation range as a dashed line."""
    df = ds.amplitude.to_dataframe().reset_index()
    plot = df.hvplot.line(x="epoch", y="amplitude", by="transform", responsive=True, height=300,
                          title="learned invariance amplitudes (rotate: rad, translate: "
                                "half image, scale: log factor)", legend="top_left")
    if "max_rotation" in ds.attrs:
        truth = float(ds.attrs["max_rotation"])
        plot = plot * hv.HLine(truth).opts(color="black", line_dash="dashed", line_width=1.5)
        # the y-range holds the dashed true rotation range even while the amplitudes are small
        values = df["amplitude"].to_numpy(dtype=float)
        low = min(0.0, float(np.nanmin(values)) if values.size else 0.0)
        high = max(truth, float(np.nanmax(values)) if values.size else truth)
        plot = plot.opts(ylim=(low, high + 0.08 * (high - low)))
    return plot


# ---------------------------------------------------------------------------- the view
class EquivarianceDashboard(pn.viewable.Viewer):
    """Pick a task and model, train (or load a saved run), read the learned equivariance."""

    task = param.Selector(default="translated", objects=["translated", "quadrant"], label="Task")
    model = param.Selector(default="soft", objects=["soft", "cnn", "fc"], label="Model",
                           doc="soft: conv + free layers; cnn / fc: the pure baselines")
    n_train = param.Integer(default=150, bounds=(50, 1500), label="Training images")
    n_epochs = param.Integer(default=3, bounds=(2, 60), label="Epochs")
    seed = param.Integer(default=0, bounds=(0, 99), label="Seed")
    measure = param.Selector(default="effective_dim", objects=list(MEASURES),
                             label="Equivariance measure")
    saved = param.Selector(default=None, objects=[None], label="Saved run")
    lila_epochs = param.Integer(default=3, bounds=(2, 60), label="LILA epochs")

    def __init__(self, autostart: bool = True, **params):
        super().__init__(**params)
        self._train_btn = pn.widgets.Button(name="Train", button_type="primary")
        self._load_btn = pn.widgets.Button(name="Load saved run")
        self._lila_btn = pn.widgets.Button(name="Train invariance (LILA)")
        self._train_btn.on_click(lambda e: self._start_equivariance())
        self._load_btn.on_click(lambda e: self._load_saved())
        self._lila_btn.on_click(lambda e: self._start_invariance())
        self._progress = pn.indicators.Progress(name="Progress", value=0, max=100, height=18,
                                                sizing_mode="stretch_width")
        self._status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._lila_status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._panes = {k: pn.pane.HoloViews(self._empty(k), min_height=300,
                                            sizing_mode="stretch_width")
                       for k in ("heatmap", "bars", "precision", "curves", "amplitude")}
        self._ds: xr.Dataset | None = None
        self._lila: xr.Dataset | None = None
        self.param.watch(self._on_view, ["measure"])
        self._refresh_saved()
        if autostart:
            start_when_loaded(self._autostart)

    # -- settings and computation ------------------------------------------------------------
    def equivariance_settings(self) -> dict:
        return dict(task=self.task, model=self.model, random_state=self.seed, n_train=self.n_train,
                    n_test=200, n_epochs=self.n_epochs, **DEFAULT_EQUIVARIANCE)

    def invariance_settings(self) -> dict:
        return dict(learn_invariance=True, random_state=self.seed, n_train=self.n_train, n_test=200,
                    n_epochs=self.lila_epochs, **DEFAULT_INVARIANCE)

    @staticmethod
    def compute(kind: str, settings: dict, progress=None) -> xr.Dataset:
        key = kind + json.dumps(settings, sort_keys=True)
        with _LOCK:
            if key in _CACHE:
                return _CACHE[key]
        cb = None if progress is None else (lambda p: progress(p.fraction))
        ds = cached_run(kind, directory=RUN_DIR, callback=cb, **settings)
        with _LOCK:
            _CACHE[key] = ds
        return ds

    def _autostart(self):
        self._start_equivariance(then_invariance=True)

    def _run(self, kind, settings, show, status, then=None):
        self._progress.value, self._progress.active = 0, True
        loop = server_loop()
        if loop is None:  # plain Python (tests, notebooks): compute synchronously
            show(self.compute(kind, settings, self._set_progress))
            if then:
                then()
            return

        async def work():
            try:
                ds = await loop.run_in_executor(None, self.compute, kind, settings,
                                                self._set_progress)
            except Exception as err:  # visible on the page and in the server log
                status.object = f"**Training failed:** {err}"
                self._progress.active = False
                raise
            show(ds)
            if then:
                then()

        loop.create_task(work())

    def _start_equivariance(self, then_invariance=False):
        s = self.equivariance_settings()
        self._status.object = (f"Training **{s['model']}** on **{s['task']}** "
                               f"({s['n_train']} images, {s['n_epochs']} epochs) ...")
        self._run("equivariance", s, self._show, self._status,
                  self._start_invariance if then_invariance else None)

    def _start_invariance(self):
        s = self.invariance_settings()
        self._lila_status.object = f"Training LILA on rotated digits ({s['n_epochs']} epochs) ..."
        self._run("invariance", s, self._show_lila, self._lila_status)

    def _set_progress(self, frac: float):
        self._progress.value = int(100 * min(1.0, frac))

    def _refresh_saved(self):
        runs = [p.name for p in list_runs(RUN_DIR) if p.name.startswith("equivariance_")]
        self.param.saved.objects = [None, *runs]

    def _load_saved(self):
        if not self.saved:
            self._status.object = "**Choose a saved run first.**"
            return
        self._show(load_run(RUN_DIR / self.saved))

    # -- display ---------------------------------------------------------------------------
    def _show(self, ds: xr.Dataset):
        self._ds = ds
        self._progress.value, self._progress.active = 100, False
        eq = _final(ds).equivariance.sel(measure=self.measure).values
        self._status.object = (
            f"**{ds.attrs.get('model')}** on **{ds.attrs.get('task')}**, seed {ds.attrs.get('seed')}"
            f": test accuracy **{float(ds.attrs.get('test_accuracy', np.nan)):.3f}**, final "
            f"equivariance per layer {np.round(eq, 2).tolist()}, trained in "
            f"{float(ds.attrs.get('fit_time', np.nan)):.0f} s.")
        self._refresh_saved()
        self._draw()

    def _show_lila(self, ds: xr.Dataset):
        self._lila = ds
        self._progress.value, self._progress.active = 100, False
        amp = _final(ds).amplitude.to_series().round(3).to_dict()
        self._lila_status.object = (
            f"LILA on rotated digits (true rotation ±{float(ds.attrs['max_rotation']):.2f} rad): "
            f"test accuracy **{float(ds.attrs['test_accuracy']):.3f}**, learned amplitudes "
            f"{amp}; trained in {float(ds.attrs['fit_time']):.0f} s.")
        self._panes["amplitude"].object = amplitude_plot(ds)

    def _on_view(self, *events):
        if self._ds is not None:
            self._draw()

    def _draw(self):
        ds = self._ds
        self._panes["heatmap"].object = equivariance_heatmap(ds, self.measure)
        self._panes["bars"].object = equivariance_bars(ds, self.measure)
        self._panes["precision"].object = precision_plot(ds)
        self._panes["curves"].object = curves_plot(ds)

    @staticmethod
    def _empty(title):
        return hv.Curve([]).opts(title=f"{title} (training ...)", responsive=True, height=300)

    def __panel__(self):
        controls = pn.Column(
            "### Learned equivariance",
            pn.widgets.Select.from_param(self.param.task),
            pn.widgets.Select.from_param(self.param.model),
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
            self._progress, self._status,
            pn.Row(self._panes["heatmap"], self._panes["bars"]),
            self._panes["precision"], self._panes["curves"],
            "### Learned invariance (LILA) on rotated digits", self._lila_status,
            self._panes["amplitude"],
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, main, sizing_mode="stretch_width")
