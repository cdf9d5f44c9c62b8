"""Trace baselines: scikit-learn estimators following the Forecaster protocol.

``fit(ds)``, ``predict(ds, starts) -> (window, lead, neuron)``; every baseline has a ``mode``
(``"zapbench"``: ZAPBench's definitions; ``"workbench"``: this project's earlier choices;
``"auto"``: ZAPBench's on the real release). :func:`zapbench_models` builds ZAPBench's set.
"""

from .base import MODES, TraceForecaster, resolve_mode, training_windows
from .linear import LinearBaseline
from .naive import LONG_CONTEXT_MEAN_WINDOWS, MeanBaseline
from .stimulus import ZAPBENCH_TRIAL_LENGTHS, ZAPBENCH_TRIALS_KEPT, StimulusBaseline
from .tide import TiDEBaseline
from .tsmixer import TimeMixBaseline, TSMixerBaseline

__all__ = ["TraceForecaster", "training_windows", "resolve_mode", "MODES", "MeanBaseline",
           "StimulusBaseline", "LinearBaseline", "TSMixerBaseline", "TimeMixBaseline", "TiDEBaseline",
           "BASELINES", "zapbench_models", "ZAPBENCH_TRIAL_LENGTHS", "ZAPBENCH_TRIALS_KEPT",
           "LONG_CONTEXT_MEAN_WINDOWS"]

# ZAPBench's method names (zapbench/ts_forecasting/util.py, get_method_from_config)
BASELINES = {"mean": MeanBaseline, "stimulus": StimulusBaseline, "linear": LinearBaseline,
             "tsmixer": TSMixerBaseline, "time-mix": TimeMixBaseline, "tide": TiDEBaseline}


def zapbench_models(context: int, names=tuple(BASELINES), mode: str = "zapbench", **kwargs) -> dict:
    """``{name: unfitted estimator}`` of ZAPBench's trace baselines at ``context`` (4 or 256).

    ``kwargs`` go to every estimator that accepts them (e.g. ``device``, ``max_steps``).
    """
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {list(BASELINES)}")
    out = {}
    for n in names:
        cls = BASELINES[n]
        params = cls().get_params()
        out[n] = cls(context=context, mode=mode, **{k: v for k, v in kwargs.items() if k in params})
    return out
