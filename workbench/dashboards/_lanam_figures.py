"""The LA-NAM explorer's figures, drawn from the estimator's xarray/pandas read-outs.

Every figure is one Bokeh plot or a grid of fixed-size plots: the flagship shape plot draws the
histogram of the data on a second y-axis of the same figure (a one-column layout of responsive
plots swapped into a live page laid its figures out with an empty frame, issue 14). Shape
functions share one y-scale, so a switched-off feature looks flat; switched-off features are grey
and labelled. Big rankings show the top features only and say so in the title.
"""

from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend for .opts)
import numpy as np
import pandas as pd

__all__ = [
    "ACTIVE", "OFF", "placeholder", "shared_ylim", "shape_plot", "shape_grid", "importance_plot",
    "precision_plot", "top_pair_features", "interaction_heatmap", "interaction_plot",
]

ACTIVE, OFF, HIST = "#1f77b4", "#9a9a9a", "#c7c7c7"


def _short(name: str, n: int = 22) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def placeholder(title: str, message: str, height: int = 300):
    """An empty frame whose title says why it is empty (fitting, failed, nothing to show).

    The frame stays empty on purpose: a visual check (and a person) must not mistake it for a
    result. Its element group is ``"Placeholder"``.
    """
    return hv.Curve([], group="Placeholder").opts(
        title=f"{title}: {message}", xaxis=None, yaxis=None, responsive=True, height=height,
        toolbar=None, show_frame=True)


def shared_ylim(sf) -> tuple[float, float]:
    """One y-range that holds every feature's credible band (padded by 5 %)."""
    lo, hi = float(np.nanmin(sf["lower"].values)), float(np.nanmax(sf["upper"].values))
    pad = 0.05 * max(hi - lo, 1e-6)
    return lo - pad, hi + pad


def _is_categorical(s) -> bool:
    return str(s["kind"].values) in ("categorical", "ordinal")


def _valid(s):
    ok = ~np.isnan(s["x_value"].values)
    return ok, *(s[v].values[ok] for v in ("x_value", "lower", "upper", "mean"))


def shape_plot(sf, data, feature: str, switched_off: bool = False, ylim=None):
    """One feature's centred shape with its credible band, over a histogram of the training data
    (counts on the right-hand axis), in a single figure."""
    s = sf.sel(feature=feature)
    ok, x, lo, hi, m = _valid(s)
    level, units = sf.attrs["level"], sf.attrs["units"]
    colour = OFF if switched_off else ACTIVE
    ydim = hv.Dimension("f", label=f"f({_short(feature, 18)}) [{units}]")
    values = data["value"].sel(feature=feature).values
    title = f"{_short(feature, 30)}: shape, {level:.0%} band" + (" (switched off)" if switched_off else "")
    if "missing_mean" in s and float(s["missing_fraction"]) > 0:  # native missing values (#20.1)
        title += (f"; missing ({float(s['missing_fraction']):.0%}): {float(s['missing_mean']):+.3g} "
                  f"[{float(s['missing_lower']):.3g}, {float(s['missing_upper']):.3g}]")
    if _is_categorical(s):
        labels = [str(v) for v in s["x_label"].values[ok]]
        xdim = hv.Dimension("level", label=feature)
        counts = np.bincount(values[~np.isnan(values)].astype(int), minlength=len(labels))[: len(labels)]
        df = pd.DataFrame({"level": labels, "f": m, "neg": m - lo, "pos": hi - m, "count": counts})
        err = hv.ErrorBars(df, xdim, [ydim, "neg", "pos"]).opts(color=colour, line_width=2)
        pts = hv.Scatter(df, xdim, ydim).opts(size=10, color=colour)
        bars = hv.Bars(df, xdim, "count").opts(color=HIST, alpha=0.6, line_alpha=0, yaxis="right",
                                               ylim=(0, 3.5 * max(counts.max(), 1)))
        layers = [err, pts, bars]
    else:
        xdim = hv.Dimension("x", label=feature)
        finite = values[np.isfinite(values)]
        edges = np.linspace(finite.min(), finite.max(), 41) if finite.size else np.linspace(0, 1, 2)
        counts, edges = np.histogram(finite, edges)
        band = hv.Area((x, lo, hi), xdim, [ydim, "upper"]).opts(color=colour, alpha=0.3, line_alpha=0)
        curve = hv.Curve((x, m), xdim, ydim).opts(color=colour, line_width=2.5)
        zero = hv.Curve((x[[0, -1]] if x.size else [0, 1], [0, 0]), xdim, ydim).opts(
            color="#555555", line_dash="dotted", line_width=1)
        hist = hv.Histogram((edges, counts), kdims=[xdim], vdims=["count"]).opts(
            color=HIST, alpha=0.5, line_alpha=0, yaxis="right", ylim=(0, 3.5 * max(counts.max(), 1)))
        layers = [band, curve, zero, hist]
    opts = dict(multi_y=True, title=title, responsive=True, height=340, show_legend=False)
    if ylim is not None:
        layers[0] = layers[0].opts(ylim=ylim)
    return hv.Overlay(layers).opts(**opts)


def shape_grid(sf, report: pd.DataFrame, max_features: int = 12, ylim=None):
    """Small multiples on one shared y-scale, most important first; switched-off ones grey."""
    order = report.feature.tolist()[:max_features]
    off = set(report.feature[report.switched_off])
    ylim = ylim or shared_ylim(sf)
    panels = []
    for f in order:
        s = sf.sel(feature=f)
        ok, x, lo, hi, m = _valid(s)
        colour = OFF if f in off else ACTIVE
        title = _short(f, 20) + (" (off)" if f in off else "")
        if _is_categorical(s):
            labels = [str(v) for v in s["x_label"].values[ok]]
            df = pd.DataFrame({"level": labels, "f": m, "neg": m - lo, "pos": hi - m})
            el = (hv.ErrorBars(df, "level", ["f", "neg", "pos"]).opts(color=colour)
                  * hv.Scatter(df, "level", "f").opts(color=colour, size=6))
        else:
            el = (hv.Area((x, lo, hi), "x", ["f", "upper"]).opts(color=colour, alpha=0.3, line_alpha=0)
                  * hv.Curve((x, m), "x", "f").opts(color=colour, line_width=2))
        panels.append(el.opts(title=title, xlabel="", ylabel="", width=250, height=170, ylim=ylim,
                              fontsize={"title": "10pt", "xticks": "7pt"}, toolbar=None))
    if not panels:
        return placeholder("all shape functions", "no features")
    return hv.Layout(panels).cols(4).opts(shared_axes=False)


def importance_plot(report: pd.DataFrame, top: int = 15):
    """Horizontal bars of the most important features, switched-off ones in grey (with a legend)."""
    rep = report.head(top).iloc[::-1]  # the most important at the top
    names = [f"{_short(str(f), 26)}{' (off)' if off else ''}" for f, off in zip(rep.feature, rep.switched_off)]
    df = pd.DataFrame({"feature": names,
                       "status": np.where(rep.switched_off, "switched off", "active"),
                       "importance": rep.importance.to_numpy()})
    n = len(report)
    title = "feature importance" + (f" (top {top} of {n})" if n > top else "")
    return hv.Bars(df, ["feature", "status"], "importance").opts(
        stacked=True, invert_axes=True, cmap={"active": ACTIVE, "switched off": OFF},
        title=title, responsive=True, height=max(300, 24 * len(df) + 90), legend_position="bottom_right",
        show_legend=True, tools=["hover"], xlabel="", ylabel="variance of the shape over the data")


def precision_plot(prec):
    """Heat map of log10 learned prior precisions (feature x layer)."""
    df = np.log10(prec).to_dataframe().reset_index().dropna()
    df["feature"] = df["feature"].astype(str)
    return hv.HeatMap(df, ["layer", "feature"], "prior_precision").opts(
        cmap="viridis", colorbar=True, tools=["hover"], responsive=True,
        height=max(300, 20 * prec.sizes["feature"] + 90),
        title=f"prior precisions, log10 (init {prec.attrs.get('initial', 1.0):g})",
        clabel="log10 precision")


def top_pair_features(matrix, fitted, top: int = 12) -> list[str]:
    """The ``top`` features with the strongest pair scores (plus those of the fitted pairs)."""
    mi = matrix["mutual_information"].to_pandas()
    feats = mi.index.astype(str).tolist()
    if len(feats) <= top:
        return feats
    arr = mi.to_numpy(copy=True)
    np.fill_diagonal(arr, np.nan)
    strength = pd.Series(np.nanmax(arr, axis=1), index=feats).sort_values(ascending=False)
    keep = [f for pair in fitted for f in pair]
    for f in strength.index:
        if len(set(keep)) >= top:
            break
        keep.append(f)
    keep = set(keep)
    return [f for f in feats if f in keep]


def interaction_heatmap(matrix, fitted=(), top: int = 12):
    """Pair ranking (mutual information) as a heat map of the top features; fitted pairs marked."""
    feats = top_pair_features(matrix, fitted, top)
    mi = matrix["mutual_information"].sel(feature_i=feats, feature_j=feats).to_pandas()
    arr = mi.to_numpy(copy=True)
    np.fill_diagonal(arr, np.nan)
    df = pd.DataFrame(arr, index=feats, columns=feats).stack(future_stack=True).rename("mutual_information")
    df = df.rename_axis(["feature_i", "feature_j"]).reset_index()
    n = matrix.sizes["feature_i"]
    title = "pair ranking, MI" + (f" (top {len(feats)} of {n})" if n > len(feats) else "")
    heat = hv.HeatMap(df, ["feature_i", "feature_j"], "mutual_information").opts(
        cmap="magma_r", colorbar=True, tools=["hover"], xrotation=60, responsive=True,
        height=max(360, 24 * len(feats) + 140), title=title, xlabel="", ylabel="", clabel="MI (nats)")
    marks = [(a, b) for a, b in fitted if a in feats and b in feats]
    marks += [(b, a) for a, b in list(marks)]
    if not marks:
        return heat
    boxes = hv.Points(pd.DataFrame(marks, columns=["feature_i", "feature_j"]), ["feature_i", "feature_j"],
                      label="fitted pair").opts(marker="square", size=16, fill_alpha=0, line_color="#00b7ff",
                                                line_width=3, show_legend=True)
    return (heat * boxes).opts(legend_position="top_left")


def interaction_plot(inter):
    """Mean and posterior std of one fitted 2-D interaction."""
    a, b = inter.attrs["feature_i"], inter.attrs["feature_j"]
    kw = dict(xlabel=a, ylabel=b, colorbar=True, responsive=True, height=330, tools=["hover"])
    mean = hv.Image((inter.x_i.values, inter.x_j.values, inter["mean"].values.T), ["xi", "xj"], "mean").opts(
        cmap="RdBu_r", title=f"{_short(a)} × {_short(b)}: mean", symmetric=True, **kw)
    std = hv.Image((inter.x_i.values, inter.x_j.values, inter["std"].values.T), ["xi", "xj"], "std").opts(
        cmap="viridis", title=f"{_short(a)} × {_short(b)}: posterior std", **kw)
    return (mean + std).opts(shared_axes=False)
