"""Online marginal-likelihood hyperparameter optimisation during training.

Immer et al. (ICML 2021), Algorithm 1: train θ on the MAP objective; after ``n_epochs_burnin``
epochs, every ``marglik_frequency`` epochs fit the Laplace on the whole training set and take
``n_hypersteps`` Adam steps on the log prior precisions and log σ with the curvature fixed; keep
the model with the best log marginal likelihood.

Optional ``extra_params`` (e.g. learned augmentation amplitudes, LILA) are learned by the
differentiable marglik: each of their hyper-steps refits the curvature with ``create_graph=True``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from ._validation import check_finite, unpack_batch
from .laplace import Laplace


def _n_data(loader):
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return sum(len(b[0]) for b in loader)


def marglik_training(
    model,
    train_loader,
    likelihood,
    hessian_structure="kron",
    prior_structure="layerwise",
    subset_of_weights="all",
    n_epochs=100,
    lr=1e-3,
    lr_min=None,
    optimizer="adam",
    optimizer_kwargs=None,
    scheduler=None,
    n_epochs_burnin=0,
    marglik_frequency=1,
    n_hypersteps=100,
    lr_hyp=0.1,
    prior_prec_init=1.0,
    sigma_noise_init=1.0,
    learn_sigma=True,
    temperature=1.0,
    param_groups=None,
    group_structure=None,
    params=None,
    extra_params=None,
    curvature="ggn",
    kfac="expand",
    callback=None,
    progress=True,
    laplace_kwargs=None,
):
    """Train ``model`` and its hyperparameters by the Laplace marginal likelihood.

    Returns ``(model, la, history)``: the model with the best marglik (restored in place), its
    fitted :class:`Laplace`, and an ``xarray.Dataset`` over ``epoch`` with ``loss``,
    ``log_marglik`` (NaN on epochs without an estimate), ``sigma_noise`` and
    ``prior_precision (epoch, prior)``.

    ``callback(info)`` is called after every epoch with a dict (epoch, n_epochs, loss,
    log_marglik, sigma_noise, prior_precision, history, la); returning ``True`` stops training.
    ``extra_params``: iterable of tensors (not covered by the Laplace; see ``params``) learned by
    the differentiable marglik together with the hyperparameters.

    The MAP objective is ``-log p(y|θ)/(B·T) + ½ Σ δ (θ-μ0)² / N`` per batch, with the prior on the
    parameters the Laplace covers (trainable parameters outside it, e.g. the body with
    ``subset_of_weights="last_layer"``, are trained without a prior). ``lr_min`` enables cosine
    annealing of the parameter learning rate. ``optimizer`` may also be a ``torch.optim`` class,
    built with ``lr`` and ``optimizer_kwargs``; ``scheduler(optimizer)`` builds a learning-rate
    scheduler stepped after every batch (instead of ``lr_min``).
    """
    if n_epochs < 1:
        raise ValueError(f"n_epochs must be >= 1, got {n_epochs}")
    if marglik_frequency < 1:
        raise ValueError(f"marglik_frequency must be >= 1, got {marglik_frequency}")
    if not (optimizer in ("adam", "sgd") or _is_optimizer_class(optimizer)):
        raise ValueError(
            f"optimizer={optimizer!r} is not supported; expected 'adam', 'sgd' or a torch.optim class"
        )
    la = Laplace(
        model,
        likelihood,
        subset_of_weights=subset_of_weights,
        hessian_structure=hessian_structure,
        prior_precision=prior_prec_init,
        prior_structure=prior_structure,
        sigma_noise=sigma_noise_init,
        temperature=temperature,
        curvature=curvature,
        kfac=kfac,
        param_groups=param_groups,
        group_structure=group_structure,
        params=params,
        **(laplace_kwargs or {}),
    )
    lik = la.lik_
    ref = next(model.parameters())
    first = next(iter(train_loader), None)
    if first is None:
        raise ValueError("train_loader is empty")
    X0 = torch.as_tensor(first[0], device=ref.device)
    la.prepare(X0.to(ref.dtype) if X0.is_floating_point() else X0)
    if (
        lik.has_sigma
        and la.sigma_noise.numel() > 1
        and learn_sigma
        and (curvature != "ggn" or any(b.kind == "kron" for b in la.blocks_))
    ):
        raise ValueError(
            "learning a per-output sigma_noise needs curvature='ggn' and full/diag blocks "
            "(KFAC keeps the fit-time sigma inside its factors); pass a scalar "
            "sigma_noise_init or learn_sigma=False"
        )
    N = _n_data(train_loader)
    log_prec = la.prior_precision.detach().log().clone().requires_grad_(True)
    log_sigma = la.sigma_noise.detach().log().clone().requires_grad_(lik.has_sigma and learn_sigma)
    extra = [p for p in (extra_params or [])]
    extra_ids = {id(p) for p in extra}
    theta_params = [p for p in model.parameters() if p.requires_grad and id(p) not in extra_ids]
    if _is_optimizer_class(optimizer):
        opt = optimizer(theta_params, **{"lr": lr, **(optimizer_kwargs or {})})
    else:
        opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        opt = opt_cls(theta_params, lr=lr, **(optimizer_kwargs or {}))
    sched = None
    if scheduler is not None:
        sched = scheduler(opt)
    elif lr_min is not None:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, n_epochs * max(1, len(train_loader)), eta_min=lr_min
        )
    hyper = [log_prec] + ([log_sigma] if log_sigma.requires_grad else [])
    opt_hyp = torch.optim.Adam(hyper + extra, lr=lr_hyp)
    named = dict(model.named_parameters())
    spec = la.spec_
    rec = {"loss": [], "log_marglik": [], "sigma_noise": [], "prior_precision": []}
    best = (-math.inf, None, None)
    bar = tqdm(range(1, n_epochs + 1), desc="marglik training", disable=not progress)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for bi, batch in enumerate(train_loader):
            X, y = unpack_batch(batch, bi)
            X = torch.as_tensor(X, device=ref.device)
            X = X.to(ref.dtype) if X.is_floating_point() else X
            y = torch.as_tensor(y, device=ref.device)
            check_finite(X, "X", bi)
            check_finite(y, "y", bi)
            opt.zero_grad()
            eta = lik.link(model(X))
            yy = lik.prepare_targets(eta, y, bi)
            B = eta.shape[0]
            eta3 = eta.reshape(B, -1, eta.shape[-1])
            y3 = (
                yy.reshape(B, eta3.shape[1])
                if lik.name == "classification"
                else yy.reshape(B, eta3.shape[1], -1)
            )
            sigma = log_sigma.detach().exp() if lik.has_sigma else None
            nll = -lik.log_lik(eta3, y3, sigma) / (B * temperature)
            prec_diag = la.layout_.to_diag(log_prec.detach().exp())
            theta = torch.cat([named[n].reshape(-1) for n in spec.names])
            loss = nll + 0.5 * (prec_diag * (theta - la.prior_mean) ** 2).sum() / N
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * B
            count += B
        rec["loss"].append(total / max(count, 1))
        lml = math.nan
        if epoch > n_epochs_burnin and (epoch - n_epochs_burnin - 1) % marglik_frequency == 0:
            lml = _hyper_steps(la, train_loader, log_prec, log_sigma, opt_hyp, n_hypersteps, extra)
            if lml > best[0]:
                best = (lml, copy.deepcopy(model.state_dict()), la.state_dict())
        rec["log_marglik"].append(lml)
        rec["sigma_noise"].append(
            log_sigma.detach().exp().reshape(-1).cpu().numpy().copy()
            if lik.has_sigma
            else np.full(1, math.nan)
        )
        rec["prior_precision"].append(log_prec.detach().exp().cpu().numpy().copy())
        bar.set_postfix(loss=f"{rec['loss'][-1]:.4g}", lml=f"{lml:.4g}")
        if callback is not None:
            sig = rec["sigma_noise"][-1]
            info = {
                "epoch": epoch,
                "n_epochs": n_epochs,
                "loss": rec["loss"][-1],
                "log_marglik": lml,
                "sigma_noise": float(sig[0]) if sig.size == 1 else sig,
                "prior_precision": rec["prior_precision"][-1],
                "history": _history(rec, la),
                "la": la,  # the Laplace of the latest marglik estimate (read-outs per epoch)
            }
            if callback(info) is True:
                break
    if best[1] is not None:
        model.load_state_dict(best[1])
        la.load_state_dict(best[2])
    else:
        la.prior_precision = log_prec.detach().exp()
        if lik.has_sigma:
            la.sigma_noise = log_sigma.detach().exp()
        la.fit(train_loader)
    return model, la, _history(rec, la)


def _is_optimizer_class(obj):
    return isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)


def _hyper_steps(la, loader, log_prec, log_sigma, opt_hyp, n_steps, extra):
    la.prior_precision = log_prec.detach().exp()
    if la.lik_.has_sigma:
        la.sigma_noise = log_sigma.detach().exp()
    if not extra:
        la.fit(loader)
    for _ in range(n_steps):
        if extra:
            la.fit(loader, create_graph=True)
        opt_hyp.zero_grad()
        sigma = log_sigma.exp() if la.lik_.has_sigma else None
        nlml = -la.log_marginal_likelihood(log_prec.exp(), sigma)
        nlml.backward()
        opt_hyp.step()
    la.prior_precision = log_prec.detach().exp()
    if la.lik_.has_sigma:
        la.sigma_noise = log_sigma.detach().exp()
    if extra:
        la.fit(loader)
    with torch.no_grad():
        return float(la.log_marginal_likelihood())


def _sigma_var(values, n):
    """sigma_noise over epoch, or over (epoch, output) when there is one σ per output."""
    arr = np.stack(values).astype(float) if n else np.zeros((0, 1))
    if arr.shape[1] == 1:
        return {"sigma_noise": ("epoch", arr[:, 0])}
    return {"sigma_noise": (("epoch", "output"), arr)}


def _history(rec, la):
    n = len(rec["loss"])
    epochs = np.arange(1, n + 1)
    prior = np.stack(rec["prior_precision"]) if n else np.zeros((0, len(la.layout_.labels)))
    return xr.Dataset(
        {
            "loss": ("epoch", np.asarray(rec["loss"], dtype=float)),
            "log_marglik": ("epoch", np.asarray(rec["log_marglik"], dtype=float)),
            **_sigma_var(rec["sigma_noise"], n),
            "prior_precision": (("epoch", "prior"), prior),
        },
        coords={"epoch": epochs, "prior": list(la.layout_.labels)},
        attrs={
            "likelihood": la.lik_.name,
            "hessian_structure": la.hessian_structure,
            "prior_structure": la.prior_structure,
        },
    )
