"""The sparsity explorer's plots read as a person needs them to (no browser; see tests/ui)."""

import numpy as np
import pytest

pn = pytest.importorskip("panel")
hv = pytest.importorskip("holoviews")

from workbench.dashboards import sparsity as dash  # noqa: E402
from workbench.sparsify import sparsity_curve  # noqa: E402

FAST = dict(n_epochs=4, n_epochs_burnin=1, marglik_frequency=2, n_hypersteps=5)


@pytest.fixture(scope="module")
def curves():
    kw = dict(criteria=["opd", "random"], sparsities=list(dash.SPARSITIES), seeds=[0],
              train_kwargs=FAST, progress=False, n_threads=1, device="cpu")
    return (sparsity_curve("breast_cancer", priors=["diagonal"], **kw).isel(prior=0),
            sparsity_curve("breast_cancer", priors=["map"], **kw).isel(prior=0))


def _bokeh(plot):
    return hv.renderer("bokeh").get_plot(plot).state


def test_layers_are_named_by_module_and_bars_have_a_criteria_legend(curves):
    ds, _ = curves
    bars = dash.SparsityExplorer.layer_plot(ds, 0.9)
    layers = list(dict.fromkeys(bars.data["layer"]))
    assert layers == ["1: Linear 30→100", "2: Linear 100→100", "3: Linear 100→2"] or all(
        "Linear" in name for name in layers), layers
    fig = _bokeh(bars)
    assert fig.legend and fig.legend[0].items, "the colours of the bars need a legend"
    assert set(bars.data["criterion"]) == {"OPD", "random"}


def test_nines_axis_spreads_the_high_sparsity_range_and_labels_it(curves):
    ds, _ = curves
    fig = _bokeh(dash.SparsityExplorer.curve_plot(ds, "accuracy", "nines"))
    ticks = dict(zip(fig.xaxis[0].major_label_overrides.values(),
                     fig.xaxis[0].major_label_overrides.keys()))
    assert {"0.9", "0.99", "0"} <= set(ticks)
    # 0.9 -> 0.99 takes as much room as 0 -> 0.9
    assert np.isclose(float(ticks["0.99"]) - float(ticks["0.9"]), float(ticks["0.9"]) - float(ticks["0"]))
    lin = _bokeh(dash.SparsityExplorer.curve_plot(ds, "accuracy", "linear"))
    assert lin.x_range.end <= 1.01


def test_flops_axis_has_readable_ticks(curves):
    ds, _ = curves
    fig = _bokeh(dash.SparsityExplorer.curve_plot(ds, "flops"))
    labels = list(fig.yaxis[0].major_label_overrides.values())
    assert len(labels) >= 3 and any(label.endswith("k") for label in labels), labels


def test_precision_histogram_is_titled_by_prior_and_layers_are_named(curves):
    ds, ds_map = curves
    learned = dash.SparsityExplorer.precision_plot(ds)
    assert "learned" in learned.opts.get().kwargs["title"]
    fixed = dash.SparsityExplorer.precision_plot(ds_map)
    title = fixed.opts.get().kwargs["title"]
    assert title.startswith("map prior") and "nothing learned" in title
    assert all("Linear" in h.label for h in learned)


def test_unchecking_every_criterion_gives_a_message_not_a_traceback(curves, monkeypatch):
    ds, _ = curves
    view = dash.SparsityExplorer(autostart=False)
    view._show(ds.expand_dims(prior=["diagonal"]))
    view.criteria = []
    assert "choose at least one pruning criterion" in view._status.object
    assert view._stale.visible and not view.work.running and not view.work.error
    pn.panel(view)  # the layout builds


def test_progress_moves_while_the_networks_train(tmp_path, monkeypatch):
    monkeypatch.setattr(dash, "DATA_DIR", tmp_path)
    seen = []
    settings = dict(task="breast_cancer", priors=["map"], criteria=["random"],
                    sparsities=[0.0, 0.9], seeds=[0], structured=False,
                    train_kwargs=dict(n_epochs=6))
    dash.SparsityExplorer.compute(settings, lambda f, msg="": seen.append(f) and False)
    assert len(seen) == 6 + 2 and seen == sorted(seen) and seen[-1] == 1.0
    assert sum(f < 0.5 for f in seen) >= 3  # not 0 -> 50 -> done
