"""Learned equivariance

Train a small image network whose every layer is half convolution, half fully connected map, with
one prior precision per pathway learned by the KFAC Laplace marginal likelihood, on digits at
random positions (translation symmetric) or on a quadrant task where position decides the label;
watch each layer's equivariance score over the epochs as a heat map and bars, the learned prior
precisions per pathway, the marglik and accuracy curves, and the augmentation amplitudes that LILA
learns on rotated digits. Runs train in the background and are saved for loading later.
"""

import panel as pn

from workbench.dashboards.equivariance import EquivarianceDashboard

pn.extension(sizing_mode="stretch_width")
EquivarianceDashboard().servable(title="Learned equivariance")
