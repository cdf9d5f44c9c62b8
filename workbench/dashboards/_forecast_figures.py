"""Persistent Bokeh figures of the forecast viewer; a slider step only swaps their sources' data.

* :class:`SliceFigures`: ground truth, forecast and signed error as ``image`` glyphs on one shared
  ``x_range``/``y_range`` (linked pan and zoom). Truth and forecast share one colour mapper (same
  limits); the error uses a symmetric diverging mapper. A segmentation-outline image and a
  picked-neuron marker are drawn on all three from one source each.
* :class:`TraceFigure`: a neuron's context + truth, the forecast and (where the store has an
  uncertainty) a 95 % band; the grey box is the context, the dashed line the selected lead.
* :class:`MAEFigure`: MAE by lead, one line per method (``set_condition`` switches the condition).

Nothing here reads data; :mod:`workbench.dashboards.forecast_viewer` feeds the arrays.
"""

from __future__ import annotations

import numpy as np
from bokeh.events import Tap
from bokeh.models import (
    BoxAnnotation,
    ColorBar,
    ColumnDataSource,
    HoverTool,
    Label,
    LinearColorMapper,
    Range1d,
    Span,
)
from bokeh.palettes import RdBu11, Viridis256, interp_palette
from bokeh.plotting import figure

__all__ = ["SliceFigures", "TraceFigure", "MAEFigure", "COLORS", "ALL_TRAIN"]

ALL_TRAIN = "training conditions (mean)"
COLORS = {"video": "#d62728", "linear": "#1f77b4", "mean": "#7f7f7f", "stimulus": "#2ca02c",
          "tsmixer": "#9467bd"}
_NAN = "#f2f2f2"
_TRANSPARENT = "rgba(0, 0, 0, 0)"
_EMPTY_IMAGE = dict(image=[], x=[], y=[], dw=[], dh=[])


def _compact_toolbar(f):
    """A narrow figure's toolbar shows on hover only and without the logo (never over the title)."""
    f.toolbar.logo = None
    f.toolbar.autohide = True


def _image_data(arr, extent):
    x0, y0, dw, dh = extent
    return dict(image=[np.ascontiguousarray(arr, dtype=np.float32)], x=[x0], y=[y0], dw=[dw], dh=[dh])


def _extent(coords):
    """Left edge and width of a grid of pixel centres (unit spacing for a single pixel)."""
    c = np.asarray(coords, float)
    step = float(np.median(np.diff(c))) if c.size > 1 else 1.0
    return float(c[0] - step / 2), float(step * c.size)


class SliceFigures:
    """The three image panels (truth, forecast, error) with outline and marker overlays."""

    TITLES = ("ground truth", "forecast", "error: forecast − truth")

    def __init__(self, height: int = 330, frame_width: int | None = None):
        """``frame_width=None``: each figure stretches to its share of the page width (the served
        dashboard). A number: fixed-size figures whose *frames* keep the data aspect (a notebook
        column): the plot area is ``frame_width`` px wide (narrower for tall data) and as high as
        the grid's y/x extent ratio asks (set by :meth:`set_grid`)."""
        self.frame_width = frame_width
        self.x_range, self.y_range = Range1d(0, 1), Range1d(0, 1)
        self.value_mapper = LinearColorMapper(palette=Viridis256, low=0, high=1, nan_color=_NAN)
        self.error_mapper = LinearColorMapper(palette=interp_palette(RdBu11, 256), low=-1, high=1,
                                              nan_color=_NAN)
        self.sources = [ColumnDataSource(dict(_EMPTY_IMAGE), name=f"slice_{k}")
                        for k in ("truth", "forecast", "error")]
        self.outline_source = ColumnDataSource(dict(_EMPTY_IMAGE), name="slice_outline")
        self.marker_source = ColumnDataSource(dict(x=[], y=[]), name="slice_marker")
        outline_mapper = LinearColorMapper(palette=["#ffffff"], low=0, high=1, nan_color=_TRANSPARENT)
        self.figures, self.outline_renderers, self.notes = [], [], []
        for title, src, mapper in zip(self.TITLES, self.sources,
                                      (self.value_mapper, self.value_mapper, self.error_mapper)):
            size = dict(height=height, sizing_mode="stretch_width", min_width=220) if frame_width is None \
                else dict(frame_width=int(frame_width), frame_height=int(frame_width))
            f = figure(title=title, x_range=self.x_range, y_range=self.y_range, x_axis_label="x (µm)",
                       y_axis_label="y (µm)", tools="pan,wheel_zoom,box_zoom,reset,save",
                       active_scroll="wheel_zoom", toolbar_location="above", **size)
            if frame_width is not None:
                _compact_toolbar(f)
                if self.figures:    # one shared y axis label (the first image's) saves width
                    f.yaxis.axis_label = None
            img = f.image(image="image", x="x", y="y", dw="dw", dh="dh", source=src, color_mapper=mapper)
            self.outline_renderers.append(
                f.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.outline_source,
                        color_mapper=outline_mapper, global_alpha=0.6))
            f.scatter("x", "y", source=self.marker_source, size=14, fill_alpha=0, line_color="#ff00ff",
                      line_width=2)
            f.add_tools(HoverTool(renderers=[img], tooltips=[("x, y (µm)", "$x{0.0}, $y{0.0}"),
                                                             ("value", "@image{0.000}")]))
            f.add_layout(ColorBar(color_mapper=mapper, width=10, title="dF/F" if mapper is self.value_mapper
                                  else "error"), "right")
            f.grid.visible = False
            # why a panel is grey (no voxel with a value on this plane); empty text when it is not
            note = Label(x=8, y=8, x_units="screen", y_units="screen", text="", text_font_size="10pt",
                         background_fill_color="white", background_fill_alpha=0.85, text_color="#7a4a00")
            f.add_layout(note)
            self.notes.append(note)
            self.figures.append(f)

    def set_grid(self, xc, yc, clim):
        """Axes extents from pixel-centre coordinates; shared truth/forecast limits, symmetric error."""
        (x0, w), (y0, h) = _extent(xc), _extent(yc)
        self._extent = (x0, y0, w, h)
        self.x_range.update(start=x0, end=x0 + w, bounds=(x0, x0 + w))
        self.y_range.update(start=y0, end=y0 + h, bounds=(y0, y0 + h))
        if self.frame_width is not None:
            fw, fh = self.frame_shape(w, h)
            for f in self.figures:
                f.update(frame_width=fw, frame_height=fh)
        lo, hi = map(float, clim)
        self.value_mapper.update(low=lo, high=hi)
        e = max(abs(lo), abs(hi)) / 2
        self.error_mapper.update(low=-e, high=e)

    def frame_shape(self, w: float, h: float, max_height: int = 300) -> tuple[int, int]:
        """(frame width, frame height) in px with height/width = h/w (data units), within
        ``frame_width`` wide and ``max_height`` high."""
        ratio = float(h) / float(w) if w > 0 and h > 0 else 1.0
        fw = float(self.frame_width)
        if fw * ratio > max_height:
            fw = max_height / ratio
        return int(round(fw)), int(round(fw * ratio))

    def show(self, truth, forecast, empty_reason: str = "no forecast on this plane"):
        """Swap the three image sources' data (one message per source, no figure rebuilt); a panel
        without a single finite value says so (``empty_reason``) instead of staying plain grey."""
        err = np.asarray(forecast, np.float32) - np.asarray(truth, np.float32)
        for src, arr in zip(self.sources, (truth, forecast, err)):
            src.data = _image_data(arr, self._extent)
        has_truth = bool(np.isfinite(truth).any())
        texts = ("" if has_truth else "no recorded values on this plane",
                 "" if np.isfinite(forecast).any() else empty_reason,
                 "" if np.isfinite(err).any() else (empty_reason if has_truth else "no values to compare"))
        for note, text in zip(self.notes, texts):
            if note.text != text:
                note.text = text

    def set_outline(self, mask_or_none):
        self.outline_source.data = dict(_EMPTY_IMAGE) if mask_or_none is None else \
            _image_data(mask_or_none, self._extent)

    def set_outline_visible(self, visible: bool):
        for r in self.outline_renderers:
            r.visible = bool(visible)

    def set_marker(self, xy):
        self.marker_source.data = dict(x=[], y=[]) if xy is None else dict(x=[xy[0]], y=[xy[1]])

    def on_tap(self, callback):
        """``callback(x, y)`` in data coordinates when any of the three images is clicked."""
        for f in self.figures:
            f.on_event(Tap, lambda event: callback(event.x, event.y))


class TraceFigure:
    """Context + truth, forecast and optional 95 % band of one neuron in one window."""

    TITLE, SHORT_TITLE = "picked neuron: context (grey), truth, forecast", "picked neuron"

    def __init__(self, height: int = 300, short_title: bool = False):
        self.truth = ColumnDataSource(dict(t=[], v=[]), name="trace_truth")
        self.forecast = ColumnDataSource(dict(t=[], v=[]), name="trace_forecast")
        self.band = ColumnDataSource(dict(t=[], lo=[], hi=[]), name="trace_band")
        # explicit ranges, set with the data: an auto-range would be recomputed in the browser and
        # synced back to the server after every step
        f = figure(title=self.SHORT_TITLE if short_title else self.TITLE, height=height,
                   sizing_mode="stretch_width",
                   x_range=Range1d(-0.5, 1.5), y_range=Range1d(0, 1),
                   x_axis_label="frame relative to forecast origin", y_axis_label="dF/F",
                   tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="above")
        self.context_box = BoxAnnotation(left=-0.5, right=0.5, fill_color="#bbbbbb", fill_alpha=0.3)
        f.add_layout(self.context_box)
        self.band_renderer = f.varea("t", "lo", "hi", source=self.band, fill_color=COLORS["video"],
                                     fill_alpha=0.2, legend_label="95% band (Laplace)")
        f.line("t", "v", source=self.truth, color="black", line_width=2, legend_label="truth")
        self.forecast_renderer = f.line("t", "v", source=self.forecast, color=COLORS["video"],
                                        line_width=2, legend_label="forecast")
        # which neuron/window: a label inside the frame (a new title text would re-lay out the figure)
        # bottom right, away from the grey context frames on the left
        self.label = Label(x=1.5, y=8, x_units="data", y_units="screen", text="neuron (loading ...)",
                           text_align="right", text_font_size="11pt", background_fill_color="white",
                           background_fill_alpha=0.7)
        f.add_layout(self.label)
        self.lead_span = Span(location=1, dimension="height", line_color="#888888", line_dash="dashed")
        f.add_layout(self.lead_span)
        f.legend.click_policy = "hide"
        if short_title:
            _compact_toolbar(f)
        legend = f.legend[0]
        f.center = [r for r in f.center if r is not legend]
        legend.orientation = "horizontal"
        f.add_layout(legend, "below")  # outside the frame: it never covers the context frames
        self.figure = f

    def set_layout(self, context: int, horizon: int, color: str):
        self.context_box.update(left=-context + 0.5, right=0.5)
        self.label.x = horizon + 0.3
        self.figure.x_range.update(start=-context + 0.5, end=horizon + 0.5)
        self.forecast_renderer.glyph.line_color = color
        self.band_renderer.glyph.fill_color = color

    def show(self, title, rel, truth, leads, forecast, std=None):
        self.label.text = title
        self.truth.data = dict(t=np.asarray(rel, float), v=np.asarray(truth, float))
        self.forecast.data = dict(t=np.asarray(leads, float), v=np.asarray(forecast, float))
        if std is None:
            self.band.data = dict(t=[], lo=[], hi=[])
        else:
            f, s = np.asarray(forecast, float), np.asarray(std, float)
            self.band.data = dict(t=np.asarray(leads, float), lo=f - 1.96 * s, hi=f + 1.96 * s)
        self.band_renderer.visible = std is not None
        vals = np.concatenate([np.asarray(truth, float), np.asarray(forecast, float)] +
                              ([self.band.data["lo"], self.band.data["hi"]] if std is not None else []))
        vals = vals[np.isfinite(vals)]
        lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
        pad = 0.06 * max(hi - lo, 1e-3)
        self.figure.y_range.update(start=lo - pad, end=hi + pad)

    def set_lead(self, lead: int):
        self.lead_span.location = int(lead)


def _mae_values(scores, method, condition):
    names = [str(m) for m in scores["model"].values.tolist()]
    d = scores.isel(model=names.index(str(method)))      # (label .sel keeps the dim on object indexes)
    y = d["mae_train_conditions"] if condition == ALL_TRAIN else d["mae"].sel(condition=condition)
    return dict(lead=d["lead"].values.astype(float), mae=np.asarray(y.values, float))


def _mae_title(scores, condition, short=False):
    if short:   # a notebook column: the window count is in the viewer's status line
        return "MAE by lead, " + ("training conditions" if condition == ALL_TRAIN else str(condition))
    n = int(scores.attrs.get("n_windows_scored", 0))
    return f"MAE by lead, {condition}" + (f" ({n} test windows)" if n else "")


class MAEFigure:
    """MAE by lead, one line per model of ``scores`` (model, condition, lead); built per store set."""

    def __init__(self, scores, condition, height: int = 300, short_title: bool = False):
        self.scores, self.short_title = scores, short_title
        f = figure(title=_mae_title(scores, condition, short_title), height=height, sizing_mode="stretch_width",
                   x_axis_label="lead (frames)", y_axis_label="MAE (dF/F)",
                   tools="pan,wheel_zoom,box_zoom,reset,save,hover", toolbar_location="above",
                   tooltips=[("lead", "@lead"), ("MAE", "@mae{0.0000}")])
        self.sources = {}
        for m in scores["model"].values.tolist():
            src = ColumnDataSource(_mae_values(scores, m, condition), name=f"mae_{m}")
            f.line("lead", "mae", source=src, color=COLORS.get(str(m), "#333333"), line_width=2,
                   legend_label=str(m))
            self.sources[str(m)] = src
        f.legend.location = "top_left"
        f.legend.click_policy = "hide"
        if short_title:
            _compact_toolbar(f)
        self.figure = f

    def set_condition(self, condition):
        """Switch to another condition in place."""
        self.figure.title.text = _mae_title(self.scores, condition, self.short_title)
        for m, src in self.sources.items():
            src.data = _mae_values(self.scores, m, condition)
