"""The project's one not-fitted error (scikit-learn's) and the check every estimator uses."""

from __future__ import annotations

from sklearn.exceptions import NotFittedError

__all__ = ["NotFittedError", "check_fitted"]


def check_fitted(estimator, attributes, what: str = "this method") -> None:
    """Raise :class:`NotFittedError` naming the estimator unless it has every ``attributes``."""
    if isinstance(attributes, str):
        attributes = (attributes,)
    if not all(hasattr(estimator, a) for a in attributes):
        name = type(estimator).__name__
        raise NotFittedError(
            f"This {name} instance is not fitted yet: call fit before using {what}."
        )
