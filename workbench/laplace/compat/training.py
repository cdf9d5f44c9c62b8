"""laplace-torch 0.3's ``marglik_training`` as a translation to the native online marglik loop."""

from __future__ import annotations

import math

import torch

from ..training import marglik_training as _native_marglik_training
from ._base import TO_NATIVE_PRIOR, _curvature_of
from ._classes import Laplace


def marglik_training(
    model,
    train_loader,
    likelihood="classification",
    hessian_structure="kron",
    backend=None,
    optimizer_cls=torch.optim.Adam,
    optimizer_kwargs=None,
    scheduler_cls=None,
    scheduler_kwargs=None,
    n_epochs=300,
    lr_hyp=1e-1,
    prior_structure="layerwise",
    n_epochs_burnin=0,
    n_hypersteps=10,
    marglik_frequency=1,
    prior_prec_init=1.0,
    sigma_noise_init=1.0,
    temperature=1.0,
    fix_sigma_noise=False,
    progress_bar=False,
    enable_backprop=False,
    dict_key_x="input_ids",
    dict_key_y="labels",
):
    """Online marglik training (Immer et al., ICML 2021) with laplace-torch's keywords and return
    order ``(la, model, margliks, losses)``; ``la`` is fitted over all weights at the best model.

    ``margliks`` holds the negative log marginal likelihood after each estimation (laplace-torch
    lists it per hyper-step), ``losses`` the per-sample MAP objective per epoch. The epochs with a
    marglik estimate are laplace-torch's: multiples of ``marglik_frequency`` from
    ``n_epochs_burnin`` on.
    """
    if prior_structure not in TO_NATIVE_PRIOR:
        raise ValueError(
            f"prior_structure={prior_structure!r}; expected one of {list(TO_NATIVE_PRIOR)}"
        )
    if likelihood not in ("classification", "regression"):
        raise ValueError(f"Invalid likelihood type {likelihood}")
    kw = dict(optimizer_kwargs or {})
    if "weight_decay" in kw:
        kw["weight_decay"] = 0.0  # handled (and learned) by the prior, as in laplace-torch
    lr = kw.pop("lr", 1e-3)
    scheduler = None
    if scheduler_cls is not None:
        skw = dict(scheduler_kwargs or {})
        scheduler = lambda opt: scheduler_cls(opt, **skw)  # noqa: E731
    # laplace-torch estimates at epochs e with e % frequency == 0 and e >= burn-in
    first = marglik_frequency * math.ceil(max(n_epochs_burnin, 1) / marglik_frequency)
    shell = Laplace(
        model,
        likelihood,
        "all",
        hessian_structure,
        backend=backend,
        temperature=temperature,
        enable_backprop=enable_backprop,
    )
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    groups = shell._native_kwargs(names)
    model, native, history = _native_marglik_training(
        model,
        train_loader,
        likelihood,
        hessian_structure=hessian_structure,
        prior_structure=TO_NATIVE_PRIOR[prior_structure],
        n_epochs=n_epochs,
        lr=lr,
        optimizer=optimizer_cls,
        optimizer_kwargs=kw,
        scheduler=scheduler,
        n_epochs_burnin=first - 1,
        marglik_frequency=marglik_frequency,
        n_hypersteps=n_hypersteps,
        lr_hyp=lr_hyp,
        prior_prec_init=temperature * prior_prec_init,
        sigma_noise_init=sigma_noise_init,
        learn_sigma=not fix_sigma_noise,
        temperature=temperature,
        curvature=_curvature_of(backend),
        param_groups=groups.get("param_groups"),
        group_structure=groups.get("group_structure"),
        progress=progress_bar,
    )
    lml = history["log_marglik"].values
    margliks = [-float(v) for v in lml if v == v]
    losses = [float(v) for v in history["loss"].values]
    return shell._adopt(native), model, margliks, losses
