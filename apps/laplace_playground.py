"""Laplace playground

Fit a small network to a toy regression or classification problem with online marginal-likelihood
training, then see the GLM predictive with credible bands and the log marginal likelihood as a
function of the prior precision, with the chosen optimum marked. Choose the Hessian structure
(full, KFAC, diagonal) and the network size.
"""

import panel as pn

from workbench.dashboards.laplace_playground import LaplacePlayground

pn.extension(sizing_mode="stretch_width")
LaplacePlayground().servable(title="Laplace playground")
