"""Old public names keep working for one release, with a ``FutureWarning`` naming the new one."""

from __future__ import annotations

import functools
import warnings

__all__ = ["deprecated_alias", "renamed_argument", "renamed_arguments", "warn_renamed"]


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        FutureWarning,
        stacklevel=stacklevel,
    )


def deprecated_alias(func, old_name: str):
    """A wrapper of ``func`` under its old name that warns once per call."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        warn_renamed(old_name, func.__name__)
        return func(*args, **kwargs)

    wrapper.__name__ = old_name
    wrapper.__doc__ = f"Deprecated alias of :func:`{func.__name__}`."
    return wrapper


def renamed_argument(kwargs: dict, old: str, new: str, current, default=None):
    """Pop ``old`` from ``kwargs`` (warning) and return its value when ``current`` is the default."""
    if old not in kwargs:
        return current
    value = kwargs.pop(old)
    warn_renamed(f"argument {old!r}", f"{new!r}", stacklevel=4)
    if current is not default and current != default:
        raise TypeError(f"pass {new!r} only (got both {old!r} and {new!r})")
    return value


def renamed_arguments(**renames):
    """Decorator: old keyword names (``old="new"``) keep working one release with a warning.

    The decorated function's signature (``inspect.signature`` follows ``__wrapped__``) shows only
    the new names, so scikit-learn's ``get_params`` / ``clone`` and its estimator checks see an
    ``__init__`` without ``**kwargs``.
    """

    def deco(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"pass {new!r} only (got both {old!r} and {new!r})")
                    warn_renamed(f"argument {old!r} of {func.__qualname__}", repr(new))
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return deco
