"""workbench: Bayesian model selection for deep learning and whole-brain activity forecasting.

Capabilities live in sub-packages, one folder each:

- :mod:`workbench.laplace`      Laplace approximations and the log marginal likelihood
- :mod:`workbench.nam`          LA-NAM, Laplace-approximated neural additive models
- :mod:`workbench.sparsify`     SpaM, marginal-likelihood sparsification with OPD
- :mod:`workbench.equivariance` learned layer-wise equivariance and invariance
- :mod:`workbench.forecast`     ZAPBench-style whole-brain activity forecasting
- :mod:`workbench.dashboards`   Panel view classes behind ``apps/`` (import needs the ``apps`` extra)
"""

__version__ = "0.1.0"
