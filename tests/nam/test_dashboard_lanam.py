"""LA-NAM explorer view without a browser (issue 14): honest state, CSV checks, no stale
categories, shared y-scales, top-k readability and one interaction ranking per fit."""

import pytest

pytest.importorskip("panel")  # the dashboards need the apps extra (absent on a minimal GPU machine)
pytest.importorskip("holoviews")

import holoviews as hv
import numpy as np
import pandas as pd
from bokeh.models import FactorRange

from workbench.dashboards._lanam_data import (
    CHOOSE_TARGET,
    load_dataset,
    numeric_text_cells,
    read_table,
    suggest_categorical,
)
from workbench.dashboards.lanam import NO_PAIR, LanamExplorer
from workbench.nam import LaplaceAdditiveRegressor

hv.extension("bokeh")
FAST = dict(n_epochs=10, n_hidden=8)


def _factors(element) -> list[str]:
    fig = hv.render(element, backend="bokeh")
    ranges = [r for r in (fig.x_range, fig.y_range) if isinstance(r, FactorRange)]
    return [str(f) for r in ranges for f in r.factors]


def _csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()


@pytest.fixture(scope="module")
def view():
    return LanamExplorer(**FAST)


def _is_placeholder(pane) -> bool:
    return pane.object.group == "Placeholder"


def test_default_fit_fills_every_panel_and_picks_the_most_important_feature(view):
    assert "log marginal likelihood" in view._status.object
    panes = [view._shape, view._grid, view._importance, view._precision, view._heatmap, view._pair_view]
    assert not any(_is_placeholder(p) for p in panes)
    assert view.feature == view._fit.report.feature.iloc[0]
    # the flagship plot is one figure (histogram on a second axis), not a layout of responsive plots
    assert isinstance(view._shape.object, hv.Overlay)


def test_zero_interaction_pairs_finishes_without_none_in_the_options(view):
    view.n_pairs = 0
    assert "fitted pairs: none" in view._status.object
    assert view.pair == NO_PAIR and None not in view.param.pair.objects
    assert not view._pair_view.visible and "no pair fitted" in view._pair_msg.object
    view.n_pairs = 1
    assert view.pair != NO_PAIR


def test_dataset_switch_leaves_no_stale_categories(view):
    view.dataset = "diabetes"
    feats = set(view._fit.estimator.feature_names_in_)
    layers = {str(v) for v in view._fit.estimator.prior_precision_.layer.values}
    for pane in (view._importance, view._precision):
        names = {f.replace(" (off)", "") for f in _factors(pane.object)} - layers
        assert names and names <= feats, names - feats
    assert view.feature in feats
    view.dataset = "synthetic"


def test_feature_and_level_changes_do_not_rerank_interactions(view, monkeypatch):
    calls = []
    original = LaplaceAdditiveRegressor.rank_interactions
    monkeypatch.setattr(LaplaceAdditiveRegressor, "rank_interactions",
                        lambda self: calls.append(1) or original(self))
    before = view._shape.object
    view.feature = [f for f in view.param.feature.objects if f != view.feature][0]
    view.level = 0.8
    assert view._shape.object is not before
    assert calls == []


def test_shared_y_scale_and_switched_off_features_marked(view):
    rep = view._fit.report
    grid = view._grid.object
    ylims = {tuple(np.round(p.opts.get().kwargs["ylim"], 6)) for p in grid}
    assert len(ylims) == 1
    off = rep.feature[rep.switched_off].tolist()
    assert off, "the synthetic data has two noise features the marginal likelihood switches off"
    titles = [p.opts.get().kwargs["title"] for p in grid]
    assert all(any(t.startswith(f) and "(off)" in t for t in titles) for f in off)
    assert any("(off)" in f for f in _factors(view._importance.object))


def test_failed_fit_clears_the_plots_and_says_what_to_do(view, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the curvature was not positive definite")

    monkeypatch.setattr("workbench.dashboards.lanam.fit_lanam", broken)
    view.n_hidden = 9
    assert "Fit failed" in view._status.object and "Change the settings" in view._status.object
    for pane in (view._shape, view._grid, view._importance, view._precision, view._heatmap):
        assert _is_placeholder(pane)
    monkeypatch.undo()
    view.n_hidden = FAST["n_hidden"]
    assert not _is_placeholder(view._shape)


def test_thirty_features_are_cut_to_a_readable_top_k():
    view = LanamExplorer(dataset="breast cancer", n_pairs=0, **FAST)
    assert view._fit.estimator.n_features_in_ == 30
    assert len(set(_factors(view._importance.object))) <= 15
    heat = view._heatmap.object
    heat = heat.HeatMap.I if isinstance(heat, hv.Overlay) else heat
    assert len(set(heat.dframe().feature_i)) <= 12
    assert "top 12 of 30" in heat.opts.get().kwargs["title"]


# -- CSV upload ----------------------------------------------------------------------------------
@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    n = 60
    return pd.DataFrame({"age": rng.normal(50, 10, n).round(1), "smoker": rng.integers(0, 2, n),
                         "dose": rng.uniform(0, 1, n), "y": rng.normal(size=n)})


def test_csv_needs_an_explicit_target(table):
    with pytest.raises(ValueError, match="choose the target column"):
        load_dataset("uploaded CSV", _csv(table), CHOOSE_TARGET)
    X, y, task = load_dataset("uploaded CSV", _csv(table), "y")
    assert list(X.columns) == ["age", "smoker", "dose"] and task == "regression"


def test_csv_text_in_a_numeric_column_is_reported_with_rows(table):
    table["age"] = table["age"].astype(object)
    table.loc[4, "age"], table.loc[16, "age"] = "twelve", "?"
    assert numeric_text_cells(table) == {"age": [(5, "twelve"), (17, "?")]}
    with pytest.raises(ValueError, match=r"column 'age' is numeric but has text in row 5: 'twelve', row 17: '\?'"):
        load_dataset("uploaded CSV", _csv(table), "y")


def test_csv_low_cardinality_columns_can_be_categorical(table):
    assert suggest_categorical(table, "y") == ["smoker"]
    X, _, _ = load_dataset("uploaded CSV", _csv(table), "y", ("smoker",))
    assert isinstance(X["smoker"].dtype, pd.CategoricalDtype)


def test_csv_problems_are_value_errors_saying_what_to_do():
    with pytest.raises(ValueError, match="upload a CSV"):
        read_table(b"")
    with pytest.raises(ValueError, match="needs a target column"):
        read_table(b"a\n1\n2\n")


def test_csv_upload_in_the_view(table, monkeypatch):
    view = LanamExplorer(autostart=False, **FAST)
    view._upload.value = _csv(table)
    assert view.dataset == "uploaded CSV" and view.target == CHOOSE_TARGET
    assert view.categorical == ["smoker"]  # suggested, visible in the widget
    assert "choose the target column" in view._status.object
    assert _is_placeholder(view._shape)  # no stale plots of the previous data set
    assert view.feature is None and view.param.feature.objects == []
    view.target = "y"
    assert "uploaded CSV" in view._status.object and "log marginal likelihood" in view._status.object
    sf = view._fit.shapes(0.95)
    assert str(sf["kind"].sel(feature="smoker").values) == "categorical"
    view.feature = "smoker"  # a categorical shape is drawn (error bars over level counts)
    assert isinstance(view._shape.object, hv.Overlay)
    hv.render(view._shape.object, backend="bokeh")



def test_the_fitted_pair_and_the_top_heat_map_cell_are_explained(view):
    assert view.n_pairs == 1 and view._fit.estimator.interaction_pairs_
    text = view._pair_note.object
    a, b = view._fit.estimator.interaction_pairs_[0]
    assert "main-effects model" in text and f"{a} × {b}" in text
    assert "residual MI fell from" in text and "strongest pair not fitted" in text
    marks = view._heatmap.object.traverse(lambda e: e, [hv.Points])
    assert marks and {tuple(r) for r in marks[0].dframe()[["feature_i", "feature_j"]].values} >= {(a, b)}
