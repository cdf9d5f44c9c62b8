"""Pruning criteria behind one interface: a registry ``name -> score function``.

Every criterion returns importances ``{parameter name: tensor shaped like the parameter}`` for
the prunable weights of the model (:func:`workbench.sparsify.models.prunable_parameters`);
*higher means keep*. Criteria:

``opd``        Optimal Posterior Damage (SpaM): ``theta_i^2 * P_ii``, ``P`` the Laplace posterior
               precision (curvature diagonal + prior precision; for KFAC the diagonal of the
               Kronecker product), read from the already fitted Laplace - no extra data pass.
``obd``        Optimal Brain Damage with the GGN diagonal: ``theta_i^2 * (P_ii - prior_ii)``,
               again from the fitted Laplace.
``magnitude``  ``|theta_i|``.
``random``     i.i.d. uniform scores from a seeded generator.
``snip``       ``|g_i * theta_i|``, ``g`` the gradient of the summed training loss over the
               whole training set.
``grasp``      GraSP removes weights with the largest ``S = -theta * (H g)`` (Hessian-gradient
               product by double backward, summed training loss; like the original, gradient
               and Hessian are those of the prunable weights); as an importance we return
               ``-S = theta * (H g)``.

Add your own with :func:`register_criterion`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench._deprecation import renamed_arguments
from workbench._torch_utils import seed_from

from .models import prunable_parameters

__all__ = ["CRITERIA", "Criterion", "register_criterion", "score_parameters"]


@dataclass(frozen=True)
class Criterion:
    name: str
    fn: Callable[..., dict[str, torch.Tensor]]
    needs_laplace: bool = False
    needs_data: bool = False
    description: str = ""


CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, *, needs_laplace: bool = False, needs_data: bool = False,
                       description: str = ""):
    """Decorator adding ``fn(model, params, *, la, loader, loss_fn, generator)`` to the registry."""

    def deco(fn):
        CRITERIA[name] = Criterion(name, fn, needs_laplace, needs_data, description)
        return fn

    return deco


def _default_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


@renamed_arguments(seed="random_state")
def score_parameters(model: nn.Module, criterion: str, *, la=None, loader=None,
                     loss_fn: Callable | None = None, random_state=0) -> dict[str, torch.Tensor]:
    """Importance of every prunable weight of ``model`` under ``criterion``.

    ``la`` is a fitted :class:`workbench.laplace.Laplace` (needed by ``opd``/``obd``),
    ``loader`` yields ``(X, y)`` batches of the training set (needed by ``snip``/``grasp``),
    ``loss_fn(logits, y)`` must return the *summed* loss (default: cross-entropy),
    ``random_state`` seeds the ``random`` criterion (``seed`` is its deprecated name).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; known: {sorted(CRITERIA)}")
    crit = CRITERIA[criterion]
    params = prunable_parameters(model)
    if crit.needs_laplace and la is None:
        raise ValueError(f"criterion {criterion!r} needs a fitted Laplace: pass la=")
    if crit.needs_data and loader is None:
        raise ValueError(f"criterion {criterion!r} needs the training data: pass loader=")
    gen = torch.Generator().manual_seed(seed_from(random_state))
    scores = crit.fn(model, params, la=la, loader=loader, loss_fn=loss_fn or _default_loss,
                     generator=gen)
    for k, p in params.items():
        if k not in scores or scores[k].shape != p.shape:
            raise RuntimeError(f"criterion {criterion!r} returned no/ill-shaped score for {k!r}")
    return {k: scores[k].detach() for k in params}


# ---------------------------------------------------------------------------------------------
def _laplace_diagonals(la, params):
    """(theta, P_ii, prior_ii) per prunable parameter from a fitted Laplace."""
    try:
        prec = la.posterior_precision_diagonal()
        mean = la.mean
        slices = la.param_slices
    except Exception as e:  # an unfitted Laplace has no posterior yet
        raise ValueError(f"la must be a fitted Laplace (call la.fit first): {e}") from e
    if prec is None or mean is None:
        raise ValueError("la must be a fitted Laplace (call la.fit first)")
    prior = la.prior_precision_diag
    out = {}
    for k, p in params.items():
        if k not in slices:
            raise ValueError(f"the Laplace does not cover prunable parameter {k!r}; fit it with "
                             "subset_of_weights='all' (or include it in params=)")
        sl = slices[k]
        if sl.stop - sl.start != p.numel():
            raise ValueError(f"Laplace slice for {k!r} has {sl.stop - sl.start} entries, the "
                             f"model's parameter has {p.numel()}: was la fitted on this model?")
        shape = p.shape
        pr = prior[sl] if torch.is_tensor(prior) and prior.numel() > 1 else \
            torch.as_tensor(prior).expand(p.numel())
        out[k] = (mean[sl].reshape(shape), prec[sl].reshape(shape),
                  pr.to(prec.device).reshape(shape))
    return out


@register_criterion("opd", needs_laplace=True,
                    description="Optimal Posterior Damage theta^2 * P_ii (SpaM)")
def _opd(model, params, *, la, **_):
    return {k: th.pow(2) * P for k, (th, P, _) in _laplace_diagonals(la, params).items()}


@register_criterion("obd", needs_laplace=True,
                    description="Optimal Brain Damage theta^2 * GGN_ii")
def _obd(model, params, *, la, **_):
    return {k: th.pow(2) * (P - pr) for k, (th, P, pr) in _laplace_diagonals(la, params).items()}


@register_criterion("magnitude", description="|theta|")
def _magnitude(model, params, **_):
    return {k: p.detach().abs() for k, p in params.items()}


@register_criterion("random", description="uniform random scores")
def _random(model, params, *, generator, **_):
    return {k: torch.rand(p.shape, generator=generator, dtype=torch.float64).to(p.device)
            for k, p in params.items()}


def _full_gradient(model, params, loader, loss_fn, create_graph=False):
    names = list(params)
    tensors = [params[k] for k in names]
    grads = [torch.zeros_like(t) for t in tensors]
    dev = tensors[0].device
    for X, y in loader:
        X, y = X.to(dev), y.to(dev)
        g = torch.autograd.grad(loss_fn(model(X), y), tensors, create_graph=create_graph)
        grads = [a + b for a, b in zip(grads, g)]
    return names, tensors, grads


@register_criterion("snip", needs_data=True, description="|g * theta| (whole training set)")
def _snip(model, params, *, loader, loss_fn, **_):
    names, tensors, grads = _full_gradient(model, params, loader, loss_fn)
    return {k: (g * t).detach().abs() for k, t, g in zip(names, tensors, grads)}


@register_criterion("grasp", needs_data=True, description="theta * Hg (GraSP, double backward)")
def _grasp(model, params, *, loader, loss_fn, **_):
    # g = full-data gradient (treated as a constant vector), then Hg = d(g_const . g(theta))/dtheta
    names, tensors, g_const = _full_gradient(model, params, loader, loss_fn)
    g_const = [g.detach() for g in g_const]
    Hg = [torch.zeros_like(t) for t in tensors]
    dev = tensors[0].device
    for X, y in loader:
        X, y = X.to(dev), y.to(dev)
        g = torch.autograd.grad(loss_fn(model(X), y), tensors, create_graph=True)
        z = sum((gi * ci).sum() for gi, ci in zip(g, g_const))
        Hg = [a + b for a, b in zip(Hg, torch.autograd.grad(z, tensors))]
    return {k: (t * h).detach() for k, t, h in zip(names, tensors, Hg)}
