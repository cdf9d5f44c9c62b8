"""Laplace approximations and the log marginal likelihood, on ``torch.func`` and module hooks.

Public API (see docs/architecture.md): :class:`Laplace`, :func:`marglik_training`,
:class:`NotFittedError`, and the likelihood helper :func:`get_likelihood`.
"""

from ._validation import NotFittedError
from .laplace import Laplace
from .likelihoods import get_likelihood
from .training import marglik_training

__all__ = ["Laplace", "marglik_training", "NotFittedError", "get_likelihood"]
