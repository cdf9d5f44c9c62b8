"""The Laplace playground: fit a small network with online marglik and look at its posterior.

State is a :class:`param.Parameterized`; fits run through :class:`BackgroundWork` (a worker thread
when served; a newer setting stops the running fit through its progress callback) and are
memoised with ``pn.cache(max_items=...)`` on the settings, so going back to earlier settings is
instant. Sliders start a fit when released (``throttled``), not on every step. The plots are drawn
from the xarray results of :mod:`workbench.playground`.

Honest state: degenerate or unconverged fits are flagged (NaN evidence, the evidence optimum on the
edge of the scanned prior-precision grid, evidence still rising at the last epoch), an out-of-range
epoch count is corrected visibly, and while a fit runs or after it failed the old plots are cleared.
"""

from __future__ import annotations

import threading

import holoviews as hv
import hvplot.pandas  # noqa: F401  (registers .hvplot on pandas objects)
import hvplot.xarray  # noqa: F401  (registers .hvplot on xarray objects)
import numpy as np
import panel as pn
import param
import torch

from workbench.dashboards._background import BackgroundWork, start_when_loaded
from workbench.dashboards._lanam_figures import placeholder
from workbench.playground import PROBLEMS, fit_playground, marglik_curve, predictive_grid

__all__ = ["LaplacePlayground", "fit_warnings", "EPOCH_RANGE"]

EPOCH_RANGE = (20, 2000)
#: marker colours of the two classes: far from each other and from the background's grey-purple map
CLASS_COLOURS = ["#ff7f0e", "#17becf", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
CLASS_MARKERS = ["circle", "triangle", "square", "diamond", "inverted_triangle", "hex"]


class _Superseded(Exception):
    """Raised inside a fit whose settings were replaced (the newest settings win)."""


@pn.cache(max_items=16)
def _fit_cached(problem: str, structure: str, width: int, depth: int, n_epochs: int, seed: int) -> tuple:
    """(result, predictive, curve, log marglik at the chosen prior) for the settings (memoised)."""
    result = fit_playground(problem, structure, width, depth, n_epochs, seed, callback=_progress_hook)
    with torch.no_grad():
        lml = float(result.la.log_marginal_likelihood())
    return result, predictive_grid(result), marglik_curve(result), lml


_HOOK = {}


def _progress_hook(progress):
    """Forward a fit's progress to the job that runs it in this thread (not part of the cache key)."""
    fn = _HOOK.get(threading.get_ident())
    return fn(progress) if fn is not None else None


def fit_warnings(curve, history, log_marglik: float) -> list[str]:
    """What is wrong with a fit, in words saying what to do (empty when it looks sound)."""
    out = []
    if not np.isfinite(log_marglik):
        out.append("the log marginal likelihood is NaN: the Laplace posterior is degenerate -- try the "
                   "kron or full Hessian, fewer hidden units or another seed")
    grid = curve.prior_precision.values
    chosen = float(curve.attrs["chosen_prior_precision"])
    values = curve.values
    if np.isfinite(values).any():
        best = int(np.nanargmax(values))
        if best in (0, len(values) - 1) or not grid[0] <= chosen <= grid[-1]:
            out.append(f"the evidence optimum is on the edge of the scanned prior precisions "
                       f"({grid[0]:.0e} to {grid[-1]:.0e}; chosen {chosen:.3g}): the prior is "
                       "degenerate, not tuned")
    else:
        out.append("the evidence curve is NaN everywhere")
    lm = history.log_marglik.dropna("epoch").values
    if len(lm) >= 4:
        steps = np.diff(lm[-4:])
        rise = float(steps.sum())
        if (steps > 0).all() and rise > 1e-4 * float(np.abs(lm).max()):
            out.append(f"the evidence was still rising at the last epoch (+{rise:.3g} over the last 3 "
                       "evaluations): train for more epochs")
    return out


class LaplacePlayground(pn.viewable.Viewer):
    """Choose a toy problem, Hessian structure and network size; fit; inspect the posterior."""

    problem = param.Selector(default="sine", objects=list(PROBLEMS), doc="Toy problem")
    hessian_structure = param.Selector(default="kron", objects=["kron", "diag", "full"], label="Hessian structure")
    width = param.Integer(default=32, bounds=(4, 128), label="Hidden units")
    depth = param.Integer(default=1, bounds=(1, 3), label="Hidden layers")
    n_epochs = param.Integer(default=200, bounds=EPOCH_RANGE, label="Epochs")
    seed = param.Integer(default=0, bounds=(0, 10_000))
    status = param.String(default="", precedence=-1)

    def __init__(self, autostart: bool = True, **params):
        super().__init__(**params)
        self._work = BackgroundWork()
        self._progress = pn.indicators.Progress(name="Fit progress", value=0, max=100, sizing_mode="stretch_width", height=18)
        self._work.param.watch(self._on_progress, ["progress", "running"])
        self._status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._warnings = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        # no bounds on the input itself: an out-of-range number is corrected here, visibly
        self._epochs = pn.widgets.IntInput(name="Epochs", value=self.n_epochs, width=260)
        self._correcting = False
        self._epochs.param.watch(self._on_epochs, "value")
        self._epochs_note = pn.pane.Markdown("", sizing_mode="stretch_width", styles={"color": "#b45309"})
        self._fit_button = pn.widgets.Button(name="Fit", button_type="primary")
        self._fit_button.on_click(self._on_fit)
        pane = dict(sizing_mode="stretch_width", linked_axes=False)
        self._predictive_pane = pn.pane.HoloViews(min_height=380, **pane)
        self._marglik_pane = pn.pane.HoloViews(min_height=300, **pane)
        self._history_pane = pn.pane.HoloViews(min_height=300, **pane)
        self._clear("waiting for the first fit ...")
        self.param.watch(self._on_settings, ["problem", "hessian_structure", "width", "depth", "n_epochs", "seed"])
        if autostart:
            start_when_loaded(self._start)

    # -- inputs ------------------------------------------------------------------------------------
    def _key(self) -> tuple:
        return (self.problem, self.hessian_structure, self.width, self.depth, self.n_epochs, self.seed)

    def _on_epochs(self, event):
        lo, hi = EPOCH_RANGE
        value = event.new
        fixed = lo if value is None else int(min(max(value, lo), hi))
        if value != fixed:
            self._epochs_note.object = f"Epochs must be between {lo} and {hi}: {value} was changed to {fixed}."
            self._correcting = True
            try:
                self._epochs.value = fixed  # shown in the input; re-enters here with a valid value
            finally:
                self._correcting = False
            return
        if not self._correcting:
            self._epochs_note.object = ""
        self.n_epochs = fixed

    def _on_settings(self, *events):
        if any(e.name == "n_epochs" for e in events) and self._epochs.value != self.n_epochs:
            self._epochs.value = self.n_epochs
        self._start()

    async def _on_fit(self, event=None):
        self._start()

    def _on_progress(self, *events):
        self._progress.value = int(round(100 * self._work.progress))
        self._progress.active = self._work.running
        self._fit_button.disabled = self._work.running

    # -- running fits in the background -------------------------------------------------------------
    def _start(self):
        key = self._key()
        n_epochs = key[4]
        message = f"Fitting **{key[0]}** with a {key[1]} Laplace ({key[3]} x {key[2]} MLP, {n_epochs} epochs) ..."
        self._status.object = message
        self._clear("fitting ...")
        self._work.submit(self._make_job(key), self._show, on_error=self._on_error, message=message)

    @staticmethod
    def _make_job(key: tuple):
        """The background job for ``key``: it stops (``_Superseded``) once ``report`` says so."""
        n_epochs = key[4]

        def job(report):
            def on_epoch(progress):
                if report(min(progress.done / n_epochs, 0.99), f"epoch {progress.done} of {n_epochs}"):
                    raise _Superseded()  # a newer setting won: stop this fit now

            _HOOK[threading.get_ident()] = on_epoch
            try:
                return _fit_cached(*key)
            finally:
                _HOOK.pop(threading.get_ident(), None)

        return job

    def _on_error(self, err):
        self._status.object = (f"**Fit failed:** {type(err).__name__}: {err}. Try another Hessian "
                               "structure, a smaller network or another seed.")
        self._clear("no result (see the message above)")

    def _clear(self, message: str):
        with pn.io.hold():
            self._warnings.visible, self._warnings.object = False, ""
            self._predictive_pane.object = placeholder("GLM predictive", message, 380)
            self._marglik_pane.object = placeholder("Marginal likelihood", message)
            self._history_pane.object = placeholder("Online marglik", message)

    # -- plots -------------------------------------------------------------------------------
    def _show(self, out):
        result, pred, curve, lml = out
        sigma = result.sigma_noise
        noise = f", noise σ = {sigma:.3f}" if sigma is not None else ""
        warnings = fit_warnings(curve, result.history, lml)
        with pn.io.hold():
            self._predictive_pane.object = self._predictive_plot(result, pred)
            self._marglik_pane.object = self._marglik_plot(curve)
            self._history_pane.object = self._history_plot(result.history)
            self._warnings.object = ("**This fit is degenerate or unconverged; do not trust its "
                                     "uncertainty:**\n\n" + "\n".join(f"- {w}" for w in warnings)
                                     if warnings else "")
            self._warnings.visible = bool(warnings)
            self._status.object = (
                f"{'⚠ ' if warnings else ''}**{result.problem.name}**, {result.hessian_structure} Laplace, "
                f"{result.depth} x {result.width} tanh MLP: prior precision = {result.prior_precision:.3g}"
                f"{noise}, log marglik = {lml:.2f}")

    @staticmethod
    def _predictive_plot(result, pred):
        data = result.training_data().to_dataframe()
        if result.problem.task == "regression":
            df = pred.to_dataframe().reset_index()
            k = pred.attrs["band_std"]
            df["model_lo"], df["model_hi"] = df["mean"] - k * df.epistemic_std, df["mean"] + k * df.epistemic_std
            noise = hv.Area(df, "x", ["lower", "upper"], label=f"± {k:g} std with observation noise").opts(
                color="#f4a582", alpha=0.35, line_alpha=0)
            model = hv.Area(df, "x", ["model_lo", "model_hi"], label=f"± {k:g} std model uncertainty (GLM)").opts(
                color="#2166ac", alpha=0.45, line_alpha=0)
            mean = hv.Curve(df, "x", "mean", label="predictive mean").opts(color="#053061", line_width=2.5)
            pts = hv.Scatter(data, "x1", "y", label="training data").opts(color="#111111", size=6)
            return (noise * model * mean * pts).opts(
                title="GLM predictive: model uncertainty vs observation noise", xlabel="x", ylabel="y",
                legend_position="top_left", responsive=True, height=380)
        two = pred.sizes["class"] == 2
        p = pred.prob.isel({"class": -1}) if two else pred.confidence
        label = "p(class 1)" if two else "confidence (max class probability)"
        img = p.hvplot.image(x="x1", y="x2", cmap="Greys" if not two else "PRGn", clim=(0, 1), clabel=label, alpha=0.75,
                               responsive=True, height=380)
        classes = sorted(int(c) for c in np.unique(data["y"]))
        pts = [hv.Scatter(data[data["y"] == c], "x1", "x2", label=f"class {c}").opts(
            color=CLASS_COLOURS[i % 6], marker=CLASS_MARKERS[i % 6], size=9, line_color="black", line_width=1)
            for i, c in enumerate(classes)]
        return hv.Overlay([img, *pts]).opts(title="GLM predictive (probit)", responsive=True, height=380,
                                            legend_position="top_left", show_legend=True)

    @staticmethod
    def _marglik_plot(curve):
        chosen = curve.attrs["chosen_prior_precision"]
        finite = curve.where(np.isfinite(curve), drop=True)
        if finite.size == 0:
            return placeholder("Marginal likelihood", "NaN at every prior precision")
        best_value = float(finite.max())
        # the evidence falls off steeply for strong priors: frame the region around the optimum
        low = max(float(finite.min()), float(np.percentile(finite.values, 40)))
        pad = 0.05 * max(best_value - low, 1.0)
        # responsive=True here too: hvplot's default fixed width would make the overlay log
        # "responsive mode could not be enabled" on every fit
        line = curve.hvplot.line(
            logx=True, color="#4c72b0", line_width=2, xlabel="prior precision", ylabel="log marginal likelihood",
            ylim=(low - pad, best_value + pad), responsive=True, height=300,
        )
        at = float(curve.interp(prior_precision=chosen)) if np.isfinite(curve.interp(prior_precision=chosen)) else best_value
        best = hv.Scatter([(chosen, at)], "prior_precision", "log_marglik", label="chosen").opts(color="#d62728", size=12)
        return (line * hv.VLine(chosen).opts(color="#d62728", line_dash="dashed") * best).opts(
            title="Marginal likelihood over the prior precision", responsive=True, height=300, show_legend=False)

    @staticmethod
    def _history_plot(history):
        valid = history.log_marglik.dropna("epoch")
        lm = valid.hvplot.line(x="epoch", color="#2ca02c", ylabel="log marginal likelihood", label="log marglik",
                               responsive=True, height=300)
        return lm.opts(title="Online marglik during training", responsive=True, height=300)

    def __panel__(self):
        widgets = pn.Param(
            self.param,
            parameters=["problem", "hessian_structure", "width", "depth", "seed"],
            widgets={
                # a fit starts when the slider is released, not on every step
                "width": {"type": pn.widgets.IntSlider, "throttled": True},
                "depth": {"type": pn.widgets.IntSlider, "throttled": True},
                "seed": pn.widgets.IntInput,
            },
            show_name=False,
            width=280,
        )
        sidebar = pn.Column("### Laplace playground", widgets, self._epochs, self._epochs_note,
                            self._fit_button, self._progress, width=300)
        main = pn.Column(
            self._status,
            self._warnings,
            self._predictive_pane,
            pn.Row(self._marglik_pane, self._history_pane, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        return pn.Row(sidebar, main, sizing_mode="stretch_width")
