"""The dashboard view draws every plot from the run Datasets (no browser; see tests/ui)."""

import numpy as np
import pytest

pn = pytest.importorskip("panel")
hv = pytest.importorskip("holoviews")

from workbench.dashboards import equivariance as dash  # noqa: E402
from workbench.equivariance import (  # noqa: E402
    LearnedEquivarianceClassifier,
    LearnedInvarianceClassifier,
    make_task,
)
from workbench.equivariance import runs as runs_mod  # noqa: E402


@pytest.fixture(scope="module")
def runs():
    d = make_task("translated", 40, 20, canvas=8, random_state=0)
    est = LearnedEquivarianceClassifier(channels=(2, 2, 2), strides=(1, 2, 1), n_epochs=3,
                                        n_epochs_burnin=1, n_hypersteps=3, batch_size=20,
                                        device="cpu")
    est.fit(d.X_train, d.y_train, d.X_test, d.y_test)
    eq = est.history_.assign_attrs(task="translated", model="soft", test_accuracy=0.5,
                                   fit_time=1.0, n_train=40, n_test=20, canvas=8,
                                   settings='{"n_epochs": 3}')
    r = make_task("rotated", 40, 20, canvas=8, random_state=0)
    lila = LearnedInvarianceClassifier(transforms=("rotate",), hidden=(4,), n_samples=2,
                                       n_samples_eval=2, n_epochs=2, n_epochs_burnin=0,
                                       batch_size=20, device="cpu").fit(r.X_train, r.y_train)
    inv = lila.history_.assign_attrs(max_rotation=np.pi / 2, test_accuracy=0.3, fit_time=1.0)
    assert list(eq.attrs["channels"]) == [2, 2, 2] and list(eq.attrs["strides"]) == [1, 2, 1]
    return eq, inv


def _plot_of(obj, kind):
    return [el for el in ([obj] if not hasattr(obj, "values") else obj.values())
            if isinstance(el, kind)]


def test_layer_axis_is_integer_labelled_in_network_order_and_burnin_epochs_are_dropped(runs):
    eq, _ = runs
    heat = dash.equivariance_heatmap(eq, "effective_dim")
    # effective dims exist only after the first marglik step: the burn-in epoch is not an empty
    # column, the layers are 'layer 1..n' (not 0, 0.5, 1, ...) in network order
    assert 0 not in set(heat.data["epoch"])
    assert list(dict.fromkeys(heat.data["layer"])) == ["layer 1", "layer 2", "layer 3"]
    assert np.isfinite(heat.data["equivariance"]).all()
    bars = dash.equivariance_bars(eq, "effective_dim")
    assert list(bars.data["layer"]) == ["layer 1", "layer 2", "layer 3"]
    # the output measure exists from epoch 0 on: nothing is dropped there
    assert 0 in set(dash.equivariance_heatmap(eq, "output_rms").data["epoch"])


def test_true_rotation_line_lies_inside_the_lila_y_range(runs):
    _, inv = runs
    plot = dash.amplitude_plot(inv)
    lo, hi = hv.renderer("bokeh").get_plot(plot).state.y_range.start, None
    hi = hv.renderer("bokeh").get_plot(plot).state.y_range.end
    assert lo <= np.pi / 2 <= hi


def test_view_draws_from_datasets_reacts_to_measure_and_marks_stale_settings(runs):
    eq, inv = runs
    view = dash.EquivarianceDashboard(autostart=False)
    view._show(eq, view.equivariance_settings())
    view._show_lila(inv)
    heat = view._panes["heatmap"].object
    assert "soft on translated" in view._status.object and "trained in" in view._status.object
    assert not view._stale.visible
    assert "share of effective dimensions" in view._measure_note.object
    view.measure = "output_rms"
    assert view._panes["heatmap"].object is not heat
    assert "share of output" in view._measure_note.object  # the page says what is plotted
    assert "rotate" in str(view._lila_status.object)
    view.n_epochs = 5  # the plots no longer show the sidebar's settings: said so
    assert view._stale.visible and "Train" in view._stale.object
    pn.panel(view)  # the layout builds
    import holoviews as hv

    for plot in (dash.precision_plot(eq), dash.curves_plot(eq), dash.marglik_plot(eq),
                 dash.accuracy_plot(eq)):  # each draws data: at least one element with rows
        elements = [el for el in plot.traverse(lambda e: e, [hv.Element])]
        assert elements and any(len(el.data) > 0 for el in elements), type(plot).__name__


def test_failed_training_clears_the_plots_and_says_what_to_do(runs, monkeypatch):
    eq, _ = runs
    view = dash.EquivarianceDashboard(autostart=False)
    view._show(eq, view.equivariance_settings())

    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(dash.EquivarianceDashboard, "compute", staticmethod(boom))
    view._start_equivariance()
    assert "Training failed" in view._status.object and "out of memory" in view._status.object
    assert "no result" in str(view._panes["heatmap"].object.opts.get().kwargs.get("title"))
    assert view.work.error and not view.work.running


def test_saved_runs_are_named_by_settings_and_loading_sets_the_sidebar(runs, tmp_path,
                                                                      monkeypatch):
    eq, _ = runs
    monkeypatch.setattr(dash, "RUN_DIR", tmp_path)
    settings = dict(task="quadrant", model="cnn", random_state=7, n_train=60, n_test=20,
                    n_epochs=3, **dash.PRESETS["full"]["estimator"])
    path = runs_mod.run_path("equivariance", tmp_path, **settings)
    assert path.name.startswith("equivariance_quadrant_cnn_60img_3ep_seed7_")
    ds = eq.copy()
    ds.attrs.update(task="quadrant", model="cnn", seed=7, n_train=60,
                    settings=runs_mod.json.dumps({k: v for k, v in settings.items()
                                                  if k not in ("task", "model", "random_state",
                                                               "n_train", "n_test")}))
    runs_mod.save_run(ds, path)
    view = dash.EquivarianceDashboard(autostart=False)
    label = "cnn on quadrant, 60 images, 3 epochs, seed 7"
    assert label in view.param.saved.objects  # no hash in what people pick from
    view.saved = label
    view._load_saved()
    assert (view.task, view.model, view.seed, view.n_train, view.n_epochs, view.preset) == (
        "quadrant", "cnn", 7, 60, 3, "full")
    assert not view._stale.visible  # the sidebar now matches the plots
    assert "cnn on quadrant" in view._status.object


def test_a_superseded_run_stops_and_saves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(dash, "RUN_DIR", tmp_path)
    settings = dict(task="translated", model="cnn", random_state=0, n_train=60, n_test=5,
                    canvas=8, n_epochs=3, channels=[2], strides=[1], n_epochs_burnin=0,
                    batch_size=10, device="cpu")
    with pytest.raises(dash.Superseded):
        dash.EquivarianceDashboard.compute("equivariance", settings, lambda p, msg="": True)
    assert not list(tmp_path.glob("*.nc"))


def test_training_reports_every_epoch_with_its_test_accuracy(tmp_path, monkeypatch):
    monkeypatch.setattr(dash, "RUN_DIR", tmp_path)
    settings = dict(task="translated", model="cnn", random_state=0, n_train=60, n_test=5,
                    canvas=8, n_epochs=3, channels=[2], strides=[1], n_epochs_burnin=0,
                    batch_size=10, device="cpu")
    seen = []
    ds = dash.EquivarianceDashboard.compute("equivariance", settings,
                                            lambda p, msg="": seen.append((p.fraction, msg)))
    assert [round(f, 2) for f, _ in seen] == [0.33, 0.67, 1.0]
    assert seen[0][1].startswith("Training: epoch 1 of 3, test accuracy")
    # saved under a name made of its settings, and the second call reads it back
    assert [p.name.split("_")[:6] for p in tmp_path.glob("*.nc")] == [
        ["equivariance", "translated", "cnn", "60img", "3ep", "seed0"]]
    again = dash.EquivarianceDashboard.compute("equivariance", settings)
    np.testing.assert_allclose(again.val_accuracy.values, ds.val_accuracy.values)
