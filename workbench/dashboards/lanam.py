"""LA-NAM explorer: fit a Laplace-approximated neural additive model and look inside it.

The state is a :class:`param.Parameterized` view. Fits run in a worker thread (the page stays live
and a progress bar follows the epochs through the estimator's ``callback``) and are cached in
memory keyed on (data set, settings). Every plot is drawn from the estimator's own xarray/pandas
read-outs (``shape_functions``, ``training_data``, ``feature_selection_report``,
``prior_precision_``, ``rank_interactions``, ``interaction_functions``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend for .opts)
import numpy as np
import pandas as pd
import panel as pn
import param

from workbench.dashboards._background import server_loop, start_when_loaded
from workbench.datasets import (
    available_tables,
    load_breast_cancer,
    load_diabetes,
    load_real,
    make_additive,
)
from workbench.nam import LaplaceAdditiveClassifier, LaplaceAdditiveRegressor

__all__ = ["LanamExplorer", "load_dataset", "fit_cached"]

#: the real tables of workbench.datasets.REAL_TABLES whose package is installed (#20.6)
REAL = [f"real: {n}" for n in available_tables() if n not in ("diabetes", "breast_cancer")]
DATASETS = ["synthetic", "diabetes", "breast cancer", *REAL, "uploaded CSV"]
_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()


def load_dataset(name: str, csv: bytes | None = None, target: str | None = None):
    """-> (X, y, task) for a data-set choice of the dashboard."""
    if name == "synthetic":
        d = make_additive(600, 4, 2, interaction=(0, 1), pair_correlation=0.6, seed=0)
        return d.X, d.y, "regression"
    if name == "diabetes":
        X, y = load_diabetes()
        return X, y, "regression"
    if name == "breast cancer":
        X, y = load_breast_cancer()
        return X, y, "classification"
    if name in REAL:
        return load_real(name.removeprefix("real: "))
    if name == "uploaded CSV":
        if not csv:
            raise ValueError("upload a CSV file first")
        df = pd.read_csv(io.BytesIO(csv))
        if target not in df.columns:
            raise ValueError(f"choose the target column (one of {list(df.columns)})")
        y = df[target]
        X = df.drop(columns=[target])
        for c in X.columns:
            if X[c].dtype == object:
                X[c] = X[c].astype("category")
        numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
        task = "regression" if numeric and y.nunique() > 10 else "classification"
        return X, y, task
    raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")


def fit_cached(key: tuple, X, y, task: str, settings: dict, callback=None):
    """Fit (or fetch from the in-memory cache) an LA-NAM for ``key`` = (data set, settings)."""
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    cls = LaplaceAdditiveRegressor if task == "regression" else LaplaceAdditiveClassifier
    est = cls(**settings, n_threads=1, callback=callback).fit(X, y)
    est.set_params(callback=None)  # do not keep the page's callback alive in the cache
    with _LOCK:
        _CACHE[key] = est
    return est


class LanamExplorer(pn.viewable.Viewer):
    """Pick data, fit with progress, inspect shapes, selection and interactions."""

    dataset = param.Selector(default="synthetic", objects=DATASETS, label="Data set")
    target = param.Selector(default=None, objects=[], label="Target column (CSV)")
    n_epochs = param.Integer(default=40, bounds=(10, 1000), label="Epochs")
    n_hidden = param.Integer(default=32, bounds=(4, 128), label="Hidden units per subnetwork")
    n_pairs = param.Integer(default=1, bounds=(0, 5), label="Interaction pairs (2nd stage)")
    hessian_structure = param.Selector(default="full", objects=["full", "kron"],
                                       label="Posterior blocks (full GGN or KFAC)")
    feature = param.Selector(default=None, objects=[], label="Feature")
    pair = param.Selector(default=None, objects=[], label="Interaction pair")
    level = param.Selector(default=0.95, objects=[0.5, 0.8, 0.9, 0.95, 0.99], label="Credible level")

    def __init__(self, autostart: bool = True, **params):
        super().__init__(**params)
        self._upload = pn.widgets.FileInput(accept=".csv", name="CSV file")
        self._upload.param.watch(self._on_upload, "value")
        self._progress = pn.indicators.Progress(name="Fit progress", value=0, max=100, height=18,
                                                sizing_mode="stretch_width")
        self._status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._shape = pn.pane.HoloViews(self._empty("shape function"), min_height=380, sizing_mode="stretch_width")
        self._grid = pn.pane.HoloViews(self._empty("all shape functions"), min_height=420, sizing_mode="stretch_width")
        self._importance = pn.pane.HoloViews(self._empty("feature importance"), min_height=320, sizing_mode="stretch_width")
        self._precision = pn.pane.HoloViews(self._empty("prior precisions"), min_height=320, sizing_mode="stretch_width")
        self._heatmap = pn.pane.HoloViews(self._empty("interaction ranking"), min_height=360, sizing_mode="stretch_width")
        self._pair_view = pn.pane.HoloViews(self._empty("2-D interaction"), min_height=360, sizing_mode="stretch_width")
        self._report = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, height=260, sizing_mode="stretch_width")
        self._est = None
        self._updating = False
        self.param.watch(self._on_settings, ["dataset", "target", "n_epochs", "n_hidden", "n_pairs",
                                             "hessian_structure"])
        self.param.watch(self._on_view, ["feature", "pair", "level"])
        if autostart:
            start_when_loaded(self._start)

    # -- settings -> cached fit off the event loop ---------------------------------------------
    def settings(self) -> dict:
        return dict(n_epochs=self.n_epochs, n_hidden=self.n_hidden, interactions=self.n_pairs,
                    hessian_structure=self.hessian_structure,
                    n_epochs_burnin=min(10, self.n_epochs // 3), marglik_frequency=10,
                    n_epochs_interactions=max(self.n_epochs // 2, 10), random_state=0)

    def _key(self) -> tuple:
        digest = hashlib.sha1(self._upload.value or b"").hexdigest() if self.dataset == "uploaded CSV" else ""
        return (self.dataset, digest, self.target if digest else None, tuple(sorted(self.settings().items())))

    def _on_upload(self, event):
        try:
            cols = list(pd.read_csv(io.BytesIO(event.new), nrows=5).columns)
        except Exception as err:  # noqa: BLE001 - shown to the user
            self._status.object = f"**Could not read the CSV:** {err}"
            return
        self.param.target.objects = cols
        self.target = cols[-1]
        if self.dataset != "uploaded CSV":
            self.dataset = "uploaded CSV"
        else:
            self._start()

    def _on_settings(self, *events):
        self._start()

    def _on_view(self, *events):
        if self._est is not None and not self._updating:
            self._draw()

    def _start(self):
        try:
            X, y, task = load_dataset(self.dataset, self._upload.value, self.target)
        except ValueError as err:
            self._status.object = f"**{err}**"
            return
        key = self._key()
        with _LOCK:
            cached = _CACHE.get(key)
        if cached is not None:
            self._show(cached)
            return
        self._progress.value, self._progress.active = 0, True
        self._status.object = (f"Fitting LA-NAM on **{self.dataset}** ({len(X)} samples, {X.shape[1]} "
                               f"features, {task}) ...")
        total = self.n_epochs + (max(self.n_epochs // 2, 10) if self.n_pairs else 0)
        done = {"n": 0}

        def progress(info):
            done["n"] += 1
            self._progress.value = min(99, int(100 * done["n"] / total))

        args = (key, X, y, task, self.settings(), progress)
        loop = server_loop()
        if loop is None:  # plain Python (tests, notebooks): fit synchronously
            self._show(fit_cached(*args))
            return
        loop.create_task(self._fit_async(args))

    async def _fit_async(self, args):
        loop = asyncio.get_running_loop()
        try:
            est = await loop.run_in_executor(None, fit_cached, *args)
        except Exception as err:  # visible on the page and in the server log
            self._status.object = f"**Fit failed:** {err}"
            self._progress.active = False
            raise
        if args[0] == self._key():  # settings may have moved on meanwhile
            self._show(est)

    # -- views ----------------------------------------------------------------------------------
    def _show(self, est):
        self._est = est
        self._progress.value, self._progress.active = 100, False
        feats = list(est.feature_names_in_)
        order = est.feature_importance_.to_series().sort_values(ascending=False).index.tolist()
        pairs = [f"{a} × {b}" for a, b in est.interaction_pairs_]
        self._updating = True  # widgets re-syncing their options must not redraw half-updated state
        try:
            self.param.feature.objects = feats
            self.param.pair.objects = pairs
            if self.feature not in feats:
                self.feature = order[0]
            if self.pair not in pairs:
                self.pair = pairs[0] if pairs else None
        finally:
            self._updating = False
        rep = est.feature_selection_report()
        off = rep.feature[rep.switched_off].tolist()
        sigma = f", noise σ = {est.sigma_:.3g}" if est.likelihood_ == "regression" else ""
        self._status.object = (
            f"**{self.dataset}**: log marginal likelihood {est.log_marglik_:.1f} (best epoch "
            f"{est.best_epoch_}){sigma}; switched off: {', '.join(off) if off else 'none'}; "
            f"interaction pairs: {', '.join(pairs) if pairs else 'none'}.")
        self._report.value = rep.round(4)
        self._draw()

    def _draw(self):
        est = self._est
        sf = est.shape_functions(level=float(self.level))
        if "class" in sf.dims:
            sf = sf.isel({"class": -1})
        data = est.training_data()
        self._shape.object = self.shape_plot(sf, data, self.feature)
        self._grid.object = self.shape_grid(sf)
        rep = est.feature_selection_report()
        self._importance.object = self.importance_plot(rep)
        self._precision.object = self.precision_plot(est.prior_precision_)
        self._heatmap.object = self.interaction_heatmap(est.rank_interactions().matrix)
        if self.pair and self.pair in [f"{a} × {b}" for a, b in est.interaction_pairs_]:
            a, b = self.pair.split(" × ")
            inter = est.interaction_functions((a, b))
            if "class" in inter.dims:
                inter = inter.isel({"class": -1})
            self._pair_view.object = self.interaction_plot(inter)
        else:
            self._pair_view.object = self._empty("2-D interaction (no pair fitted)")

    @staticmethod
    def _empty(title):
        return hv.Curve([]).opts(title=f"{title} (fitting ...)", responsive=True, height=300)

    @staticmethod
    def shape_plot(sf, data, feature):
        """Band + mean of one feature's centred shape, with a histogram of the training data."""
        s = sf.sel(feature=feature)
        ok = ~np.isnan(s["x_value"].values)
        x, lo, hi, m = (s[v].values[ok] for v in ("x_value", "lower", "upper", "mean"))
        level = sf.attrs["level"]
        values = data["value"].sel(feature=feature).values
        values = values[~np.isnan(values)]  # missing values are summarised in the title
        miss = ""
        if "missing_mean" in s and float(s["missing_fraction"]) > 0:
            miss = (f"; missing ({float(s['missing_fraction']):.0%}): {float(s['missing_mean']):+.3g} "
                    f"[{float(s['missing_lower']):.3g}, {float(s['missing_upper']):.3g}]")
        if str(s["kind"].values) in ("categorical", "ordinal"):
            labels = s["x_label"].values[ok].tolist()
            df = pd.DataFrame({"level": labels, "mean": m, "lower": lo, "upper": hi})
            pts = hv.Scatter(df, "level", ["mean"]).opts(size=9, color="#1f77b4")
            err = hv.ErrorBars(pd.DataFrame({"level": labels, "mean": m, "neg": m - lo, "pos": hi - m}),
                               "level", ["mean", "neg", "pos"])
            top = (err * pts).opts(title=f"{feature}: shape with {level:.0%} band{miss}", ylabel=sf.attrs["units"],
                                   responsive=True, height=300)
            counts = np.bincount(values.astype(int), minlength=len(labels))[: len(labels)]
            bottom = hv.Bars(pd.DataFrame({"level": labels, "count": counts}), "level", "count").opts(
                responsive=True, height=140, color="#999999")
            return (top + bottom).cols(1)
        band = hv.Area((x, lo, hi), "x", ["lower", "upper"]).opts(alpha=0.3, color="#1f77b4", line_alpha=0)
        curve = hv.Curve((x, m), "x", "shape").opts(color="#1f77b4", line_width=2.5)
        top = (band * curve * hv.HLine(0).opts(color="#888888", line_dash="dotted")).opts(
            title=f"{feature}: centred shape with {level:.0%} credible band{miss}", xlabel=feature,
            ylabel=f"f({feature}) [{sf.attrs['units']}]", responsive=True, height=300)
        edges = np.linspace(np.nanmin(values), np.nanmax(values), 41)
        hist = hv.Histogram(np.histogram(values, edges), kdims=[feature]).opts(
            responsive=True, height=140, color="#999999", ylabel="count", xlabel=feature)
        return (top + hist).cols(1)

    @staticmethod
    def shape_grid(sf, max_features: int = 12):
        """Small multiples of every numeric feature's shape (most important first when many)."""
        feats = [f for f in sf.feature.values.tolist() if str(sf["kind"].sel(feature=f).values) == "numeric"]
        if len(feats) > max_features:
            spread = (sf["mean"].sel(feature=feats).max("x") - sf["mean"].sel(feature=feats).min("x"))
            feats = spread.to_series().sort_values(ascending=False).index[:max_features].tolist()
        panels = []
        for f in feats:
            s = sf.sel(feature=f)
            ok = ~np.isnan(s["x_value"].values)
            x = s["x_value"].values[ok]
            panels.append((hv.Area((x, s["lower"].values[ok], s["upper"].values[ok]), "x", ["lower", "upper"]).opts(
                alpha=0.3, line_alpha=0) * hv.Curve((x, s["mean"].values[ok]), "x", "shape")).opts(
                title=f, xlabel="", ylabel="", width=230, height=170))
        if not panels:
            return hv.Curve([]).opts(title="no numeric features")
        return hv.Layout(panels).cols(4).opts(shared_axes=False)

    @staticmethod
    def importance_plot(rep: pd.DataFrame):
        df = rep.assign(status=np.where(rep.switched_off, "switched off", "active"))
        return hv.Bars(df, ["feature", "status"], "importance").opts(
            stacked=True, cmap={"active": "#1f77b4", "switched off": "#d62728"}, xrotation=60,
            title="feature importance (variance of the shape over the data); red = switched off",
            responsive=True, height=320, legend_position="top_right", show_legend=True)

    @staticmethod
    def precision_plot(prec):
        df = np.log10(prec).to_dataframe().reset_index().dropna()
        return hv.HeatMap(df, ["layer", "feature"], "prior_precision").opts(
            cmap="viridis", colorbar=True, tools=["hover"], responsive=True, height=max(260, 18 * prec.sizes["feature"]),
            title="learned prior precisions, log10 (init: "
                  f"{prec.attrs.get('initial', 1.0):g})")

    @staticmethod
    def interaction_heatmap(matrix):
        df = matrix["mutual_information"].to_dataframe().reset_index()
        return hv.HeatMap(df, ["feature_i", "feature_j"], "mutual_information").opts(
            cmap="magma_r", colorbar=True, tools=["hover"], xrotation=60, responsive=True, height=360,
            title="interaction ranking: residual-aware mutual information −½ log(1 − ρ²)")

    @staticmethod
    def interaction_plot(inter):
        a, b = inter.attrs["feature_i"], inter.attrs["feature_j"]
        kw = dict(xlabel=a, ylabel=b, colorbar=True, responsive=True, height=330, tools=["hover"])
        mean = hv.Image((inter.x_i.values, inter.x_j.values, inter["mean"].values.T), [a, b], "mean").opts(
            cmap="RdBu_r", title=f"{a} × {b}: mean", symmetric=True, **kw)
        std = hv.Image((inter.x_i.values, inter.x_j.values, inter["std"].values.T), [a, b], "std").opts(
            cmap="viridis", title=f"{a} × {b}: posterior std", **kw)
        return (mean + std).opts(shared_axes=False)

    def __panel__(self):
        controls = pn.Column(
            "## LA-NAM explorer",
            pn.widgets.Select.from_param(self.param.dataset),
            self._upload,
            pn.widgets.Select.from_param(self.param.target),
            pn.widgets.IntSlider.from_param(self.param.n_epochs, step=10),
            pn.widgets.IntSlider.from_param(self.param.n_hidden),
            pn.widgets.IntSlider.from_param(self.param.n_pairs),
            pn.widgets.Select.from_param(self.param.hessian_structure),
            self._progress,
            pn.widgets.Select.from_param(self.param.feature),
            pn.widgets.Select.from_param(self.param.pair),
            pn.widgets.Select.from_param(self.param.level),
            width=320,
        )
        main = pn.Column(
            self._status,
            pn.Row(self._shape, self._importance),
            self._grid,
            pn.Row(self._precision, self._heatmap),
            self._pair_view,
            "### Feature-selection report",
            self._report,
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, main, sizing_mode="stretch_width")
