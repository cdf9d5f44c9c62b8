"""SpaM sparsity explorer

Train a small network (breast-cancer MLP or digits CNN) with a sparsity-inducing prior learned by
the marginal likelihood, prune it with Optimal Posterior Damage or a baseline criterion
(magnitude, SNIP, GraSP, random, OBD), and compare test accuracy, NLL, ECE and cost versus
sparsity with bands over seeds, the per-layer sparsity at a chosen level and the histogram of
learned prior precisions that shows what the prior switched off.
"""

import panel as pn

from workbench.dashboards.sparsity import SparsityExplorer

pn.extension(sizing_mode="stretch_width")
SparsityExplorer().servable(title="SpaM sparsity explorer")
