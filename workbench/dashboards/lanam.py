"""LA-NAM explorer: fit a Laplace-approximated neural additive model and look inside it.

The state is a :class:`param.Parameterized` view. Fits run through :class:`BackgroundWork` (a
worker thread when served, newest settings win, a progress bar follows the epochs) and are
memoised by :func:`~workbench.dashboards._lanam_data.fit_lanam` (``pn.cache``, bounded). Every plot
is drawn from the estimator's own xarray/pandas read-outs (``shape_functions``, ``training_data``,
``feature_selection_report``, ``prior_precision_``, ``rank_interactions``,
``interaction_functions``).

Honest state: while a fit runs, or when it failed or the data cannot be used, every plot is
replaced by a frame saying so (never the previous data set's plots under a new message).
"""

from __future__ import annotations

import hashlib
from functools import partial

import pandas as pd
import panel as pn
import param

from workbench.dashboards import _lanam_figures as figs
from workbench.dashboards._background import BackgroundWork, in_server_session, start_when_loaded
from workbench.dashboards._lanam_data import (
    CHOOSE_TARGET,
    DATASETS,
    epoch_hook,
    fit_lanam,
    load_dataset,
    read_table,
    suggest_categorical,
)

__all__ = ["LanamExplorer", "load_dataset", "fit_lanam"]

NO_PAIR = "(no pair fitted)"


class _Superseded(Exception):
    """Raised inside a fit whose settings were replaced by newer ones (it stops at once)."""


class LanamExplorer(pn.viewable.Viewer):
    """Pick data, fit with progress, inspect shapes, selection and interactions."""

    dataset = param.Selector(default="synthetic", objects=DATASETS, label="Data set")
    target = param.Selector(default=CHOOSE_TARGET, objects=[CHOOSE_TARGET], label="Target column (CSV)")
    categorical = param.ListSelector(default=[], objects=[], label="Treat as categorical (CSV)")
    n_epochs = param.Integer(default=40, bounds=(10, 1000), label="Epochs")
    n_hidden = param.Integer(default=32, bounds=(4, 128), label="Hidden units per subnetwork")
    n_pairs = param.Integer(default=1, bounds=(0, 5), label="Interaction pairs (2nd stage)")
    hessian_structure = param.Selector(default="full", objects=["full", "kron"],
                                       label="Posterior blocks (full GGN or KFAC)")
    feature = param.Selector(default=None, objects=[], allow_None=True, label="Feature")
    pair = param.Selector(default=NO_PAIR, objects=[NO_PAIR], label="Interaction pair")
    level = param.Selector(default=0.95, objects=[0.5, 0.8, 0.9, 0.95, 0.99], label="Credible level")

    def __init__(self, autostart: bool = True, **params):
        super().__init__(**params)
        self._upload = pn.widgets.FileInput(accept=".csv", name="CSV file")
        self._upload.param.watch(self._on_upload, "value")
        self._work = BackgroundWork()
        self._progress = pn.indicators.Progress(name="Fit progress", value=0, max=100, height=18,
                                                sizing_mode="stretch_width")
        self._work.param.watch(self._on_progress, ["progress", "running", "message"])
        self._status = pn.pane.Markdown("", sizing_mode="stretch_width")
        # linked_axes=False: Panel links axes of panes that share a dimension name ("feature"), and a
        # linked range outlives an update -- the previous data set's features stayed as categories
        pane = dict(sizing_mode="stretch_width", linked_axes=False)
        self._shape = pn.pane.HoloViews(min_height=340, **pane)
        self._grid = pn.pane.HoloViews(min_height=360, **pane)
        self._importance = pn.pane.HoloViews(min_height=300, **pane)
        self._precision = pn.pane.HoloViews(min_height=300, **pane)
        self._heatmap = pn.pane.HoloViews(min_height=360, **pane)
        self._pair_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._pair_view = pn.pane.HoloViews(min_height=330, **pane)
        self._pair_msg = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._report = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, height=260, sizing_mode="stretch_width")
        self._fit = None
        self._updating = False
        self._clear("waiting for the first fit ...")
        self.param.watch(self._on_settings, ["dataset", "target", "categorical", "n_epochs", "n_hidden",
                                             "n_pairs", "hessian_structure"])
        self.param.watch(self._on_view, ["feature", "pair", "level"])
        if autostart:
            start_when_loaded(self._start)

    # -- settings -> memoised fit in the background ----------------------------------------------
    def settings(self) -> dict:
        return dict(n_epochs=self.n_epochs, n_hidden=self.n_hidden, interactions=self.n_pairs,
                    hessian_structure=self.hessian_structure,
                    n_epochs_burnin=min(10, self.n_epochs // 3), marglik_frequency=10,
                    n_epochs_interactions=max(self.n_epochs // 2, 10), random_state=0)

    def _csv_args(self) -> tuple:
        if self.dataset != "uploaded CSV":
            return None, None, ()
        return self._upload.value, self.target, tuple(self.categorical)

    def _key(self) -> tuple:
        csv, target, cats = self._csv_args()
        digest = hashlib.sha1(csv).hexdigest() if csv else ""
        return (self.dataset, digest, target, cats, tuple(sorted(self.settings().items())))

    def _on_upload(self, event):
        # handled on the next tick: replacing plot panes from inside the FileInput's own change
        # event left some of the previous data set's plots on screen
        doc = pn.state.curdoc
        if in_server_session() and doc is not None:
            doc.add_next_tick_callback(partial(self._handle_upload, event.new))
        else:
            self._handle_upload(event.new)

    def _handle_upload(self, csv: bytes):
        try:
            df = read_table(csv)
        except ValueError as err:
            self._fail(f"**Could not use the CSV:** {err}")
            return
        cols = [str(c) for c in df.columns]
        self._updating = True  # one fit at the end, not one per re-synced widget
        try:
            self.param.target.objects = [CHOOSE_TARGET, *cols]
            self.param.categorical.objects = list(cols)
            self.target = CHOOSE_TARGET
            self.categorical = suggest_categorical(df)
            self.dataset = "uploaded CSV"
        finally:
            self._updating = False
        self._start()

    def _on_settings(self, *events):
        if not self._updating:
            self._start()

    def _on_view(self, *events):
        if self._fit is not None and not self._updating:
            names = {e.name for e in events}
            if names & {"feature", "level"}:
                self._draw_shapes()
            if "pair" in names:
                self._draw_pair()

    def _on_progress(self, *events):
        self._progress.value = int(round(100 * self._work.progress))
        self._progress.active = self._work.running
        if self._work.running and self._work.message:
            self._status.object = self._work.message

    def _start(self):
        """Validate the choice; show the memoised fit or start one (marking the plots as stale)."""
        csv, target, cats = self._csv_args()
        try:
            X, _, task = load_dataset(self.dataset, csv, target, cats)
        except ValueError as err:
            self._work.cancel(message="")
            self._fail(f"**{self.dataset}: the data cannot be used yet.** {err}")
            return
        settings = tuple(sorted(self.settings().items()))
        total = self.n_epochs + (max(self.n_epochs // 2, 10) if self.n_pairs else 0)
        what = (f"Fitting LA-NAM on **{self.dataset}** ({len(X)} samples, {X.shape[1]} features, "
                f"{task}) ...")
        self._fit = None
        self._clear("fitting ...")

        def job(report):
            done = [0]

            def on_epoch(progress):  # a workbench.progress.Progress; done restarts per stage
                done[0] += 1
                if report(min(done[0] / total, 0.99), f"{what} epoch {done[0]} of {total}"):
                    raise _Superseded()

            with epoch_hook(on_epoch):
                return fit_lanam(self.dataset, csv, target, cats, settings)

        self._work.submit(job, self._show, on_error=self._on_error, message=what)

    def _on_error(self, err):
        self._fail(f"**Fit failed:** {type(err).__name__}: {err}. Change the settings (e.g. fewer "
                   "interaction pairs or another Posterior blocks choice) or the data, and it refits.")

    def _fail(self, message: str):
        self._fit = None
        self._updating = True  # no stale feature/pair choices of the previous data set either
        try:
            self.feature = None  # param appends a value missing from objects: reset them after
            self.param.feature.objects = []
            self.param.pair.objects, self.pair = [NO_PAIR], NO_PAIR
        finally:
            self._updating = False
        with pn.io.hold():  # the plots are cleared in the same message, before the text arrives
            self._clear_panes("no result (see the message above)")
            self._progress.value, self._progress.active = 0, False
            self._status.object = message

    def _clear(self, message: str):
        """Replace every plot by a frame that says why it is empty (no stale plots)."""
        with pn.io.hold():
            self._clear_panes(message)

    def _clear_panes(self, message: str):
        self._shape.object = figs.placeholder("shape function", message, 340)
        self._grid.object = figs.placeholder("all shape functions", message, 300)
        self._importance.object = figs.placeholder("feature importance", message)
        self._precision.object = figs.placeholder("prior precisions", message)
        self._heatmap.object = figs.placeholder("pair ranking", message, 360)
        self._pair_view.object = figs.placeholder("2-D interaction", message, 330)
        self._pair_view.visible, self._pair_msg.object = True, ""
        self._pair_note.object = ""
        self._report.value = pd.DataFrame()

    # -- views ----------------------------------------------------------------------------------
    def _show(self, fit):
        self._fit = fit
        est, rep = fit.estimator, fit.report
        feats = [str(f) for f in est.feature_names_in_]
        pairs = [f"{a} × {b}" for a, b in est.interaction_pairs_]
        old_feature, old_pair = self.feature, self.pair
        self._updating = True  # widgets re-syncing their options must not redraw half-updated state
        try:
            self.param.feature.objects = list(feats)
            self.param.pair.objects = list(pairs) or [NO_PAIR]
            self.feature = old_feature if old_feature in feats else str(rep.feature.iloc[0])
            self.pair = old_pair if old_pair in pairs else (pairs[0] if pairs else NO_PAIR)
        finally:
            self._updating = False
        off = rep.feature[rep.switched_off].astype(str).tolist()
        sigma = f", noise σ = {est.sigma_:.3g}" if est.likelihood_ == "regression" else ""
        note = f" ({fit.note})" if fit.note else ""
        with pn.io.hold():  # one message to the browser; the status line last, after the plots
            self._report.value = rep.round(4)
            self._draw_shapes()
            self._importance.object = figs.importance_plot(rep)
            self._precision.object = figs.precision_plot(est.prior_precision_)
            self._heatmap.object = figs.interaction_heatmap(fit.ranking.matrix, est.interaction_pairs_)
            self._pair_note.object = self.pair_explanation(fit)
            self._draw_pair()
            self._status.object = (
                f"**{self.dataset}** ({fit.n_rows} samples, {len(feats)} features, {fit.task}): log "
                f"marginal likelihood {est.log_marglik_:.1f} (best epoch {est.best_epoch_}){sigma}; "
                f"switched off (grey): {', '.join(off) if off else 'none'}; fitted pairs: "
                f"{', '.join(pairs) if pairs else 'none'}{note}.")

    def _draw_shapes(self):
        fit = self._fit
        sf = fit.shapes(float(self.level))
        data = fit.estimator.training_data()
        rep = fit.report
        ylim = figs.shared_ylim(sf)
        off = set(rep.feature[rep.switched_off].astype(str))
        self._shape.object = figs.shape_plot(sf, data, self.feature, self.feature in off, ylim)
        self._grid.object = figs.shape_grid(sf, rep, ylim=ylim)

    def _draw_pair(self):
        est = self._fit.estimator
        pairs = {f"{a} × {b}": (a, b) for a, b in est.interaction_pairs_}
        if self.pair in pairs:
            inter = est.interaction_functions(pairs[self.pair])
            if "class" in inter.dims:
                inter = inter.isel({"class": -1})
            self._pair_view.object = figs.interaction_plot(inter)
            self._pair_view.visible, self._pair_msg.object = True, ""
        else:  # no empty frame: say so in words
            why = "set 'Interaction pairs' above 0 to fit one" if not self.n_pairs else (self._fit.note or "none")
            self._pair_view.visible = False
            self._pair_msg.object = f"**2-D interaction:** no pair fitted ({why})."

    @staticmethod
    def pair_explanation(fit) -> str:
        """Why the heat map's top cell and the fitted pair can differ, in numbers."""
        table = fit.ranking.table
        if table.empty:
            return ""
        top = table.iloc[0]
        text = (f"The heat map ranks pairs on the **main-effects model** (stage 1), the ranking the "
                f"2nd stage picks its pairs from: top pair **{top.feature_i} × {top.feature_j}** "
                f"(MI {top.mutual_information:.3g}).")
        numeric = set(fit.estimator.preprocessor_.numeric_)
        usable = table[table.feature_i.isin(numeric) & table.feature_j.isin(numeric)]
        if len(usable) and usable.index[0] != table.index[0]:
            first = usable.iloc[0]
            text += (f" 2-D subnetworks need two numeric features, so the top numeric pair is "
                     f"**{first.feature_i} × {first.feature_j}** (MI {first.mutual_information:.3g}).")
        fitted = fit.estimator.interaction_pairs_
        if fitted:
            after = fit.final_ranking.table
            key = lambda i, j: frozenset((i, j))  # noqa: E731
            before_mi = {key(r.feature_i, r.feature_j): r.mutual_information for r in table.itertuples()}
            after_mi = {key(r.feature_i, r.feature_j): r.mutual_information for r in after.itertuples()}
            names = ", ".join(f"{a} × {b}" for a, b in fitted)
            a, b = fitted[0]
            text += f" Fitted: **{names}** (outlined)"
            if key(a, b) in after_mi and key(a, b) in before_mi:
                text += (f"; with its 2-D subnetwork in the model, its residual MI fell from "
                         f"{before_mi[key(a, b)]:.3g} to {after_mi[key(a, b)]:.3g}")
            rest = [r for r in after.itertuples() if key(r.feature_i, r.feature_j) not in {key(*p) for p in fitted}]
            if rest:
                text += (f"; the strongest pair not fitted is {rest[0].feature_i} × {rest[0].feature_j} "
                         f"(MI {rest[0].mutual_information:.3g} in the final model)")
            text += "."
        return text

    def __panel__(self):
        controls = pn.Column(
            "## LA-NAM explorer",
            pn.widgets.Select.from_param(self.param.dataset),
            self._upload,
            pn.widgets.Select.from_param(self.param.target),
            pn.widgets.MultiChoice.from_param(self.param.categorical),
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
            "#### All shape functions (one shared y-scale; grey = switched off by the marginal likelihood)",
            self._grid,
            pn.Row(self._precision, pn.Column(self._heatmap, self._pair_note)),
            self._pair_msg,
            self._pair_view,
            "### Feature-selection report",
            self._report,
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, main, sizing_mode="stretch_width")
