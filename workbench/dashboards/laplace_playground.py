"""The Laplace playground: fit a small network with online marglik and look at its posterior.

State is a :class:`param.Parameterized`; fits run in a worker thread (the page stays live and a
progress bar follows the epochs) and are cached on the settings, so going back to earlier settings
is instant. The plots are drawn from the xarray results of :mod:`workbench.playground`.
"""

from __future__ import annotations

import asyncio
import threading

import holoviews as hv
import hvplot.pandas  # noqa: F401  (registers .hvplot on pandas objects)
import hvplot.xarray  # noqa: F401  (registers .hvplot on xarray objects)
import numpy as np
import panel as pn
import param

from workbench.dashboards._background import server_loop, start_when_loaded
from workbench.playground import PROBLEMS, fit_playground, marglik_curve, predictive_grid

__all__ = ["LaplacePlayground"]

_CACHE: dict[tuple, tuple] = {}
_CACHE_LOCK = threading.Lock()


def _fit_cached(key: tuple, on_epoch) -> tuple:
    """(result, predictive, curve) for the settings ``key``; computed once per process."""
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    problem, structure, width, depth, n_epochs, seed = key
    result = fit_playground(problem, structure, width, depth, n_epochs, seed, callback=on_epoch)
    out = (result, predictive_grid(result), marglik_curve(result))
    with _CACHE_LOCK:
        _CACHE[key] = out
    return out


class LaplacePlayground(pn.viewable.Viewer):
    """Choose a toy problem, Hessian structure and network size; fit; inspect the posterior."""

    problem = param.Selector(default="sine", objects=list(PROBLEMS), doc="Toy problem")
    hessian_structure = param.Selector(default="kron", objects=["kron", "diag", "full"], label="Hessian structure")
    width = param.Integer(default=32, bounds=(4, 128), label="Hidden units")
    depth = param.Integer(default=1, bounds=(1, 3), label="Hidden layers")
    n_epochs = param.Integer(default=200, bounds=(20, 2000), label="Epochs")
    seed = param.Integer(default=0, bounds=(0, 10_000))
    status = param.String(default="", precedence=-1)

    def __init__(self, autostart: bool = True, **params):
        super().__init__(**params)
        self._progress = pn.indicators.Progress(name="Fit progress", value=0, max=100, sizing_mode="stretch_width", height=18)
        self._status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._fit_button = pn.widgets.Button(name="Fit", button_type="primary")
        self._fit_button.on_click(self._on_fit)
        self._predictive_pane = pn.pane.HoloViews(sizing_mode="stretch_width", min_height=380)
        self._marglik_pane = pn.pane.HoloViews(sizing_mode="stretch_width", min_height=300)
        self._history_pane = pn.pane.HoloViews(sizing_mode="stretch_width", min_height=300)
        self._running = False
        self.param.watch(self._on_settings, ["problem", "hessian_structure", "width", "depth", "n_epochs", "seed"])
        if autostart:
            start_when_loaded(self._start)

    # -- running fits off the event loop ---------------------------------------------------------
    def _key(self) -> tuple:
        return (self.problem, self.hessian_structure, self.width, self.depth, self.n_epochs, self.seed)

    def _on_settings(self, *events):
        self._start()

    async def _on_fit(self, event=None):
        self._start()

    def _start(self):
        key = self._key()
        if key in _CACHE:
            self._show(*_CACHE[key])
            return
        self._progress.value, self._progress.active = 0, True
        self._status.object = f"Fitting **{key[0]}** with a {key[1]} Laplace ..."
        self._fit_button.disabled = True
        loop = server_loop()
        if loop is None:  # no event loop (plain Python / tests): fit synchronously
            self._show(*_fit_cached(key, self._make_progress(key[4])))
            return
        loop.create_task(self._fit_async(key))

    def _make_progress(self, n_epochs: int):
        def on_epoch(progress):
            done = min(int(progress.done), n_epochs)  # epochs count from 1
            self._progress.value = int(100 * done / n_epochs)

        return on_epoch

    async def _fit_async(self, key: tuple):
        try:
            out = await asyncio.get_running_loop().run_in_executor(None, _fit_cached, key, self._make_progress(key[4]))
        except Exception as err:  # show the failure on the page, and in the server log
            self._status.object = f"**Fit failed:** {err}"
            self._fit_button.disabled = False
            raise
        if key == self._key():  # settings may have moved on while this fit ran
            self._show(*out)

    # -- plots -------------------------------------------------------------------------------
    def _show(self, result, pred, curve):
        self._progress.value, self._progress.active = 100, False
        self._fit_button.disabled = False
        sigma = result.sigma_noise
        noise = f", sigma = {sigma:.3f}" if sigma is not None else ""
        self._status.object = (
            f"**{result.problem.name}**, {result.hessian_structure} Laplace, "
            f"{result.depth} x {result.width} tanh MLP: prior precision = {result.prior_precision:.3g}{noise}, "
            f"log marglik = {float(curve.interp(prior_precision=result.prior_precision)):.2f}"
        )
        self._predictive_pane.object = self._predictive_plot(result, pred)
        self._marglik_pane.object = self._marglik_plot(curve)
        self._history_pane.object = self._history_plot(result.history)

    @staticmethod
    def _predictive_plot(result, pred):
        data = result.training_data().to_dataframe()
        if result.problem.task == "regression":
            band = pred.hvplot.area(x="x", y="lower", y2="upper", alpha=0.25, color="#4c72b0", label=f"±{pred.attrs['band_std']:g} std (GLM + noise)")
            mean = pred.hvplot.line(x="x", y="mean", color="#1f3b73", line_width=2.5, label="predictive mean")
            pts = data.hvplot.scatter(x="x1", y="y", color="#d62728", size=12, label="training data")
            return (band * mean * pts).opts(title="GLM predictive", xlabel="x", ylabel="y", legend_position="top_left", responsive=True, height=380)
        p = pred.prob.isel({"class": -1}) if pred.sizes["class"] == 2 else pred.confidence
        label = "p(class 1)" if pred.sizes["class"] == 2 else "confidence"
        img = p.hvplot.image(x="x1", y="x2", cmap="RdBu_r", clim=(0, 1), clabel=label)
        pts = data.hvplot.scatter(x="x1", y="x2", c="y", cmap="RdBu_r", size=14, line_color="black", colorbar=False)
        return (img * pts).opts(title="GLM predictive (probit)", responsive=True, height=380)

    @staticmethod
    def _marglik_plot(curve):
        chosen = curve.attrs["chosen_prior_precision"]
        best_value = float(curve.max())
        # the evidence falls off steeply for strong priors: frame the region around the optimum
        low = max(float(curve.min()), float(np.percentile(curve.values, 40)))
        pad = 0.05 * max(best_value - low, 1.0)
        line = curve.hvplot.line(
            logx=True, color="#4c72b0", line_width=2, xlabel="prior precision", ylabel="log marginal likelihood",
            ylim=(low - pad, best_value + pad),
        )
        best = hv.Scatter([(chosen, float(curve.interp(prior_precision=chosen)))], "prior_precision", "log_marglik", label="chosen").opts(color="#d62728", size=12)
        return (line * hv.VLine(chosen).opts(color="#d62728", line_dash="dashed") * best).opts(title="Marginal likelihood over the prior precision", responsive=True, height=300, show_legend=False)

    @staticmethod
    def _history_plot(history):
        valid = history.log_marglik.dropna("epoch")
        lm = valid.hvplot.line(x="epoch", color="#2ca02c", ylabel="log marginal likelihood", label="log marglik")
        return lm.opts(title="Online marglik during training", responsive=True, height=300)

    def __panel__(self):
        widgets = pn.Param(
            self.param,
            parameters=["problem", "hessian_structure", "width", "depth", "n_epochs", "seed"],
            widgets={"width": pn.widgets.IntSlider, "depth": pn.widgets.IntSlider, "n_epochs": pn.widgets.IntInput, "seed": pn.widgets.IntInput},
            show_name=False,
            width=280,
        )
        sidebar = pn.Column("### Laplace playground", widgets, self._fit_button, self._progress, width=300)
        main = pn.Column(
            self._status,
            self._predictive_pane,
            pn.Row(self._marglik_pane, self._history_pane, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        return pn.Row(sidebar, main, sizing_mode="stretch_width")
