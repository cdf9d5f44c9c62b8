"""Trace baselines (scikit-learn style; ``fit(ds)``, ``predict(ds, starts) -> (window, lead, neuron)``)."""

from .base import TraceForecaster, training_windows
from .linear import LinearBaseline
from .naive import MeanBaseline, StimulusBaseline

__all__ = ["TraceForecaster", "training_windows", "MeanBaseline", "StimulusBaseline", "LinearBaseline",
           "TSMixerBaseline", "BASELINES"]


def __getattr__(name):  # TSMixer imports torch lazily
    if name == "TSMixerBaseline":
        from .tsmixer import TSMixerBaseline

        return TSMixerBaseline
    if name == "BASELINES":
        from .tsmixer import TSMixerBaseline

        return {"mean": MeanBaseline, "stimulus": StimulusBaseline, "linear": LinearBaseline,
                "tsmixer": TSMixerBaseline}
    raise AttributeError(name)
