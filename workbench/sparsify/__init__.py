"""SpaM: sparsification with marglik-learned sparsity-inducing priors and the OPD criterion.

Dhahri, Immer, Charpentier, Günnemann, Fortuin (2024). Train with a learned prior
(:class:`SpaM`, :func:`train_spam`) or with weight decay (``prior="map"``), score the weights
with any registered criterion (:data:`CRITERIA`: ``opd``, ``obd``, ``magnitude``, ``random``,
``snip``, ``grasp``), prune globally with persistent masks or structurally with physical
shrinking, and sweep everything into an xarray Dataset with :func:`sparsity_curve`.
"""

from .criteria import CRITERIA, Criterion, register_criterion, score_parameters
from .curve import (
                    DEFAULT_SPARSITIES,
                    TASK_DEFAULTS,
                    cached_sparsity_curve,
                    curve_settings,
                    sparsity_curve,
)
from .data import TASKS, Task, load_task
from .estimator import PrunedNetwork, SpaM
from .flops import count_flops, count_parameters
from .masks import PruningMask, global_prune
from .metrics import evaluate
from .models import make_model, mlp, prunable_layers, prunable_parameters, small_cnn
from .structured import shrink, structured_prune, unit_scores
from .training import PRIORS, finetune, fit_laplace, train_map, train_spam

__all__ = [
    "CRITERIA", "Criterion", "register_criterion", "score_parameters", "DEFAULT_SPARSITIES",
    "TASK_DEFAULTS", "cached_sparsity_curve", "curve_settings", "sparsity_curve", "TASKS", "Task",
    "load_task", "PrunedNetwork", "SpaM", "count_flops", "count_parameters", "PruningMask",
    "global_prune", "evaluate", "make_model", "mlp",
    "prunable_layers", "prunable_parameters", "small_cnn", "shrink", "structured_prune",
    "unit_scores", "PRIORS", "finetune", "fit_laplace", "train_map", "train_spam",
]
