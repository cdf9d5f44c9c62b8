"""SpaM: sparsification with marglik-learned sparsity-inducing priors and the OPD criterion.

Dhahri, Immer, Charpentier, Günnemann, Fortuin (2024).

The estimator is :class:`SpaM` (scikit-learn classifier): ``SpaM(prior="diagonal").fit(X, y)``
trains with a learned prior (``prior="map"``: weight decay), ``.scores(criterion)`` ranks the
weights under a criterion of :data:`CRITERIA` (``opd``, ``obd``, ``magnitude``, ``random``,
``snip``, ``grasp``) and ``.prune(sparsity)`` returns a :class:`PrunedNetwork` (global masks, or
``structured=True`` for physically shrunk networks).

Results: :func:`sparsity_curve` sweeps priors x criteria x sparsities x seeds into an xarray
Dataset (:func:`cached_sparsity_curve` keeps it in the data directory); :func:`score_network`
gives accuracy / NLL / ECE of any network. Data: :func:`make_task` (:data:`TASKS`), networks:
:func:`make_model`; costs: :func:`count_parameters`, :func:`count_flops`.

The building blocks live in submodules: :mod:`.criteria` (registry, ``register_criterion``),
:mod:`.masks` (``PruningMask``, ``global_prune``), :mod:`.structured` (``structured_prune``,
``shrink``), :mod:`.training` (``train_map``, ``train_spam``, ``finetune``), :mod:`.models`.
Importing those from ``workbench.sparsify`` directly still works for one release (with a
``FutureWarning``).
"""

from workbench._deprecation import warn_renamed

from .criteria import CRITERIA
from .curve import (
    DEFAULT_SPARSITIES,
    cached_sparsity_curve,
    curve_path,
    curve_settings,
    sparsity_curve,
)
from .data import TASKS, make_task
from .estimator import PrunedNetwork, SpaM
from .flops import count_flops, count_parameters
from .metrics import score_network
from .models import make_model
from .training import PRIORS

__all__ = [
    "SpaM", "PrunedNetwork", "sparsity_curve", "cached_sparsity_curve", "curve_settings", "curve_path",
    "score_network", "count_flops", "count_parameters", "make_task", "make_model", "CRITERIA",
    "PRIORS", "TASKS", "DEFAULT_SPARSITIES",
]

#: names this package exported before its surface was trimmed: {name: submodule}
_MOVED = {
    "Criterion": "criteria", "register_criterion": "criteria", "score_parameters": "criteria",
    "TASK_DEFAULTS": "curve", "Task": "data", "PruningMask": "masks", "global_prune": "masks",
    "mlp": "models", "small_cnn": "models", "prunable_layers": "models",
    "prunable_parameters": "models", "shrink": "structured", "structured_prune": "structured",
    "unit_scores": "structured", "finetune": "training", "fit_laplace": "training",
    "train_map": "training", "train_spam": "training",
}


def __getattr__(name):
    import importlib

    if name == "load_task":
        warn_renamed("workbench.sparsify.load_task", "workbench.sparsify.make_task")
        return make_task
    if name == "evaluate":
        warn_renamed("workbench.sparsify.evaluate", "workbench.sparsify.score_network")
        return score_network
    if name in _MOVED:
        where = f"workbench.sparsify.{_MOVED[name]}"
        warn_renamed(f"importing {name} from workbench.sparsify", f"{where}.{name}")
        return getattr(importlib.import_module(where), name)
    raise AttributeError(f"module 'workbench.sparsify' has no attribute {name!r}")
