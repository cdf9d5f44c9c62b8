"""LA-NAM explorer

Fit a Laplace-approximated neural additive model to synthetic data, the diabetes or breast-cancer
data, or your own CSV, with progress while it trains; then see every feature's shape function
with its credible band over a histogram of the data, the feature importances with the features the
marginal likelihood switched off, the learned prior precisions, the interaction ranking by
posterior mutual information as a heat map, and the mean and uncertainty of a fitted pairwise
interaction.
"""

import panel as pn

from workbench.dashboards.lanam import LanamExplorer

pn.extension("tabulator", sizing_mode="stretch_width")
LanamExplorer().servable(title="LA-NAM explorer")
