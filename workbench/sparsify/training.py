"""Training with and without marglik-learned sparsity-inducing priors, and masked fine-tuning.

* :func:`train_map` - the baseline: MAP with a fixed isotropic Gaussian prior (weight decay).
* :func:`train_spam` - online marglik training (Immer et al. 2021) with a learned prior of the
  given structure (``scalar``/``layerwise``/``unitwise``/``diagonal``) from the Laplace core.
* :func:`finetune` - a few epochs with a :class:`PruningMask` kept applied after every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from workbench.progress import report

from .masks import PruningMask

__all__ = ["PRIORS", "train_map", "train_spam", "fit_laplace", "finetune"]

#: prior coordinates of a sparsity curve: "map" is the weight-decay baseline, the others are the
#: marglik-learned prior structures of the Laplace core
PRIORS = ("map", "scalar", "layerwise", "unitwise", "diagonal")


def _check_prior(prior: str) -> str:
    if prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; known: {PRIORS}")
    return prior


def _prior_weights(model, prior_precision):
    """``[(parameter, precision)]`` for a scalar or a ``{name: tensor}`` per-parameter prior."""
    if isinstance(prior_precision, dict):
        out = []
        for n, p in model.named_parameters():
            if n not in prior_precision:
                raise ValueError(f"prior_precision has no entry for parameter {n!r}")
            d = torch.as_tensor(prior_precision[n], dtype=p.dtype, device=p.device)
            if d.numel() != 1 and d.shape != p.shape:
                raise ValueError(f"prior_precision[{n!r}] has shape {tuple(d.shape)}, parameter "
                                 f"has {tuple(p.shape)}")
            out.append((p, d))
        return out
    if float(prior_precision) < 0:
        raise ValueError(f"prior_precision must be >= 0, got {prior_precision}")
    return [(p, float(prior_precision)) for p in model.parameters()]


def _fit_loop(model, loader, n_epochs, lr, prior_precision, mask=None, progress=False, desc="",
              callback=None):
    N = len(loader.dataset)
    prior = _prior_weights(model, prior_precision)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    handle = mask.attach(opt, model) if mask is not None else None
    model.train()
    try:
        for epoch in tqdm(range(n_epochs), disable=not progress, desc=desc, leave=False):
            total = 0.0
            for X, y in loader:
                opt.zero_grad()
                reg = sum((d * p.pow(2)).sum() for p, d in prior)
                loss = F.cross_entropy(model(X), y) + 0.5 / N * reg
                loss.backward()
                opt.step()
                total = total + loss.detach() * len(X)  # no host sync per batch
            if callback is not None and report(
                    callback, epoch + 1, n_epochs, "train" if desc == "MAP" else desc,
                    f"{desc} epoch {epoch + 1}/{n_epochs}",
                    {"loss": float(total) / N}):
                break
    finally:
        if handle is not None:
            handle.remove()
    return model


def train_map(model: nn.Module, loader, n_epochs: int = 100, lr: float = 1e-2,
              prior_precision: float = 1.0, progress: bool = False, callback=None) -> nn.Module:
    """MAP training: mean cross-entropy + ``prior_precision / (2N) * ||theta||^2`` (Adam).

    ``callback(Progress)`` after every epoch (stage ``"train"``, metric ``loss``); True stops."""
    if prior_precision < 0:
        raise ValueError(f"prior_precision must be >= 0, got {prior_precision}")
    return _fit_loop(model, loader, n_epochs, lr, prior_precision, progress=progress, desc="MAP",
                     callback=callback)


def train_spam(model: nn.Module, loader, prior_structure: str = "diagonal",
               hessian_structure: str = "kron", n_epochs: int = 100, lr: float = 1e-2,
               n_epochs_burnin: int = 10, marglik_frequency: int = 5, n_hypersteps: int = 50,
               lr_hyp: float = 0.1, progress: bool = False, callback=None, **kwargs):
    """Online marglik training with a learned ``prior_structure`` prior -> ``(model, la, history)``.

    ``callback(Progress)`` after every epoch (the core's per-epoch progress: metrics ``loss``,
    ``log_marglik``; state ``history``, ``la``, ...); returning True stops."""
    if _check_prior(prior_structure) == "map":
        raise ValueError("prior_structure='map' is the weight-decay baseline: use train_map")
    from workbench.laplace import marglik_training

    return marglik_training(model, loader, "classification", hessian_structure=hessian_structure,
                            prior_structure=prior_structure, n_epochs=n_epochs, lr=lr,
                            n_epochs_burnin=n_epochs_burnin, marglik_frequency=marglik_frequency,
                            n_hypersteps=n_hypersteps, lr_hyp=lr_hyp, progress=progress,
                            callback=callback, **kwargs)


def fit_laplace(model: nn.Module, loader, hessian_structure: str = "kron",
                prior_precision: float = 1.0):
    """Deprecated: call :func:`workbench.laplace.fit_laplace` (the one post-hoc helper) with
    ``"classification"``, ``prior_structure="scalar"``."""
    from workbench._deprecation import warn_renamed
    from workbench.laplace import fit_laplace as _fit_laplace

    warn_renamed("workbench.sparsify.training.fit_laplace",
                 "workbench.laplace.fit_laplace(model, loader, 'classification', ...)")
    return _fit_laplace(model, loader, "classification", hessian_structure=hessian_structure,
                        prior_precision=float(prior_precision), prior_structure="scalar")


def finetune(model: nn.Module, mask: PruningMask, loader, n_epochs: int = 5, lr: float = 1e-3,
             prior_precision: float | dict = 1.0, progress: bool = False) -> nn.Module:
    """Fine-tune ``model`` in place with ``mask`` re-applied after every optimiser step.

    The objective is the MAP loss under the given prior: a scalar precision, or
    ``{parameter name: precision tensor}`` (e.g. the learned SpaM prior).
    """
    mask.apply(model)
    return _fit_loop(model, loader, n_epochs, lr, prior_precision, mask=mask, progress=progress,
                     desc="fine-tune")
