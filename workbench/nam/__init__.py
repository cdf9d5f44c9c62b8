"""LA-NAM: Laplace-approximated neural additive models (Bouchiat et al., ICML 2024).

One small GELU MLP per numeric feature (all evaluated as one batched op over a feature axis), a
lookup table per categorical feature, a per-subnetwork full Laplace posterior whose layerwise prior
precisions and noise are learned by online marginal likelihood; credible bands per shape function,
implicit feature selection, and interaction ranking by posterior mutual information.

>>> from workbench.nam import LaplaceAdditiveRegressor
>>> est = LaplaceAdditiveRegressor().fit(X, y)                  # doctest: +SKIP
>>> est.shape_functions()                                       # doctest: +SKIP
"""

from workbench.nam.estimators import LaplaceAdditiveClassifier, LaplaceAdditiveRegressor
from workbench.nam.inspection import InteractionRanking

__all__ = ["LaplaceAdditiveRegressor", "LaplaceAdditiveClassifier", "InteractionRanking"]
