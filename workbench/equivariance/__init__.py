"""Learned layer-wise equivariance and learned invariance (LILA) with the Laplace marglik.

The estimators are :class:`LearnedEquivarianceClassifier` (a soft-equivariant CNN whose layers
balance a convolution against a free pathway by learned prior precisions) and
:class:`LearnedInvarianceClassifier` (an MLP averaged over affine transforms whose amplitudes
are learned); both are scikit-learn classifiers on (N, C, H, W) images.

Results: :func:`run_equivariance` / :func:`run_invariance` train on a task and return the run
as an xarray Dataset; :func:`cached_run` keeps runs in the data directory (:func:`save_run`,
:func:`load_run`, :func:`list_runs`, :func:`run_path`; :func:`run_settings` and :func:`run_label`
read a run's settings back); :func:`layer_readout` and :func:`equivariance_score` read
the learned equivariance of a network (:data:`MEASURES`). Data: :func:`make_task`
(:data:`TASKS`); :data:`MODELS` and :data:`TRANSFORMS` name the run options.

The building blocks live in submodules: :mod:`.layers` (``SoftEquivariantConv2d`` and its
pathways), :mod:`.models` (``SoftEquivariantNet``), :mod:`.augmentation` (``AffineAugmentation``,
``InvariantModel``), :mod:`.tasks` (``DigitTask``), :mod:`.training`, :mod:`.invariance`,
:mod:`.readout`. Importing those from ``workbench.equivariance`` directly still works for one
release (with a ``FutureWarning``).
"""

from workbench._deprecation import warn_renamed
from workbench.equivariance.augmentation import TRANSFORMS
from workbench.equivariance.invariance import LearnedInvarianceClassifier
from workbench.equivariance.readout import MEASURES, equivariance_score, layer_readout
from workbench.equivariance.runs import (
    MODELS,
    cached_run,
    list_runs,
    load_run,
    run_equivariance,
    run_invariance,
    run_label,
    run_path,
    run_settings,
    save_run,
)
from workbench.equivariance.tasks import TASKS, make_task
from workbench.equivariance.training import LearnedEquivarianceClassifier

__all__ = [
    "LearnedEquivarianceClassifier", "LearnedInvarianceClassifier", "run_equivariance",
    "run_invariance", "cached_run", "save_run", "load_run", "list_runs", "run_path", "run_label",
    "run_settings", "layer_readout",
    "equivariance_score", "make_task", "TASKS", "MODELS", "MEASURES", "TRANSFORMS",
]

#: names this package exported before its surface was trimmed: {name: submodule}
_MOVED = {
    "PATHWAYS": "layers", "CircularConv2d": "layers", "FactoredFreeMap": "layers",
    "SoftEquivariantConv2d": "layers", "SoftEquivariantNet": "models",
    "MAX_AMPLITUDE": "augmentation", "AffineAugmentation": "augmentation",
    "InvariantModel": "augmentation", "DigitTask": "tasks",
}


def __getattr__(name):
    import importlib

    if name in _MOVED:
        where = f"workbench.equivariance.{_MOVED[name]}"
        warn_renamed(f"importing {name} from workbench.equivariance", f"{where}.{name}")
        return getattr(importlib.import_module(where), name)
    raise AttributeError(f"module 'workbench.equivariance' has no attribute {name!r}")
