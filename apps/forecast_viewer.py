"""Forecast viewer

Browse whole-brain activity forecasts slice by slice: ground truth, forecast and error side by
side for any test window, lead and z-plane with shared colour limits, linked pan/zoom and the
segmentation outline; click a cell to see its neuron's context, truth and forecast (with the
last-layer Laplace band for the video model), and compare MAE by lead per method and condition.
Runs on the synthetic recording (built on first use) or a ZAPBench release (?data=<directory>).
"""

import panel as pn

from workbench.dashboards.forecast_viewer import ForecastViewer

pn.extension(sizing_mode="stretch_width")
ForecastViewer().servable(title="Forecast viewer")
