"""One callback signature for all long work: ``callback(progress: Progress) -> bool | None``.

Every estimator, training loop, data factory and cache that reports progress calls its
``callback`` with a :class:`Progress`. Returning ``True`` asks the work to stop early where the
work supports it (training loops do; the docstring says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Progress", "ProgressCallback", "report", "check_callback", "legacy_callback"]


@dataclass(frozen=True)
class Progress:
    """What a long computation reports after each unit of work.

    done, total : units finished so far and in all (epochs, steps, evaluated points, ...)
    stage : short name of what is running ("train", "curvature", "write", ...)
    message : one human-readable line for a status bar
    metrics : numbers of this unit (e.g. ``{"loss": ..., "log_marglik": ...}``)
    state : heavier objects a caller may want (e.g. the history so far, the Laplace object)
    """

    done: int
    total: int
    stage: str = ""
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """``done / total`` clipped to [0, 1] (0 when ``total`` is 0)."""
        return 0.0 if self.total <= 0 else min(max(self.done / self.total, 0.0), 1.0)


ProgressCallback = Callable[[Progress], "bool | None"]


def check_callback(callback) -> None:
    """Raise a ``TypeError`` naming ``callback`` unless it is ``None`` or callable."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")


def report(callback, done, total, stage="", message="", metrics=None, state=None) -> bool:
    """Call ``callback`` (if any) with a :class:`Progress`; True when it asked to stop."""
    if callback is None:
        return False
    return bool(
        callback(Progress(int(done), int(total), stage, message, dict(metrics or {}), dict(state or {})))
        is True
    )


def legacy_callback(callback, n_args: int, to_args, where: str):
    """Accept an old positional-argument callback for one release (with a ``FutureWarning``).

    A callable whose signature has exactly ``n_args`` required positional parameters is an old
    style callback (e.g. ``callback(done, total, info)``); it is wrapped into a ``Progress``
    callback that calls it with ``to_args(progress)``. Anything else is returned unchanged after
    :func:`check_callback`. ``where`` names the function for the warning.
    """
    import inspect
    import warnings

    check_callback(callback)
    if callback is None:
        return None
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: assume the new convention
        return callback
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    if len(required) != n_args or n_args < 2:
        return callback
    warnings.warn(
        f"{where}: a callback taking {n_args} positional arguments is deprecated and will stop "
        "working in the next release; take one workbench.progress.Progress argument instead",
        FutureWarning,
        stacklevel=3,
    )

    def wrapped(progress: Progress):
        return callback(*to_args(progress))

    return wrapped
