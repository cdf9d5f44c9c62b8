"""Online marginal-likelihood hyperparameter optimisation during training — the one loop.

Immer et al. (ICML 2021), Algorithm 1: train θ on the MAP objective; after ``n_epochs_burnin``
epochs, every ``marglik_frequency`` epochs fit the Laplace on the training set and take
``n_hypersteps`` Adam steps on the log prior precisions and log σ with the curvature fixed; keep
the model with the best log marginal likelihood (or, with ``restore_best=False``, the last one).

Optional ``extra_params`` (e.g. learned augmentation amplitudes, LILA) are learned by the
differentiable marglik: each of their hyper-steps refits the curvature with ``create_graph=True``.
Learned equivariance (``workbench.equivariance``) and LILA train through this loop; their
per-epoch read-outs come from the ``callback``.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from workbench.progress import Progress, check_callback

from . import marglik as _marglik
from ._validation import (
    OPTIMIZERS,
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_prior_values,
    positive_tensor,
    unpack_batch,
)
from .batches import as_loader, is_one_shot, peek, prepare_batch, run_model, shape_outputs
from .laplace import Laplace


@dataclass(frozen=True)
class EpochProgress(Progress):
    """The :class:`~workbench.progress.Progress` of one epoch of :func:`marglik_training`.

    ``done``/``total`` are epochs; ``metrics`` has loss, log_marglik (NaN without an estimate) and
    sigma_noise; ``state`` has epoch, marglik_step (bool), prior_precision, history (Dataset so
    far), la (the Laplace of the latest estimate) and model. Indexing it like the dict that older
    callbacks received (``info["epoch"]``) still works for one release, with a FutureWarning."""

    legacy: dict = field(default_factory=dict, repr=False, compare=False)
    __iter__ = None  # not a sequence: item access is only the deprecated dict view

    def __getitem__(self, key):
        warnings.warn(
            "marglik_training callbacks now receive a workbench.progress.Progress; "
            f"info[{key!r}] is deprecated: read progress.metrics / progress.state instead",
            FutureWarning,
            stacklevel=2,
        )
        return self.legacy[key]


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
    marglik_loader=None,
    marglik_at_last_epoch=False,
    restore_best=True,
    reset_hyper_optimizer=False,
    marglik_estimate="final",
):
    """Train ``model`` and its hyperparameters by the Laplace marginal likelihood.

    Returns ``(model, la, history)``: the model with the best marglik (restored in place; the last
    one with ``restore_best=False``), its fitted :class:`Laplace`, and an ``xarray.Dataset`` over
    ``epoch`` with ``loss``, ``log_marglik`` (NaN on epochs without an estimate), ``sigma_noise``
    and ``prior_precision (epoch, prior)``.

    ``callback(progress)`` gets an :class:`EpochProgress` after every epoch; returning ``True``
    stops training. ``optimizer``: "adam", "sgd" or a ``torch.optim`` class, built with ``lr`` and
    ``optimizer_kwargs`` (e.g. ``{"momentum": 0.9}``); ``lr_min`` enables cosine annealing of the
    parameter learning rate, ``scheduler(optimizer)`` builds another scheduler (stepped per batch). ``marglik_loader``: the data of the Laplace fits (a
    loader, or ``epoch -> loader``; default ``train_loader``). ``marglik_at_last_epoch``: also
    estimate at the last epoch. ``reset_hyper_optimizer``: a fresh Adam for the hyperparameters at
    every estimate. ``extra_params``: tensors (not covered by the Laplace; see ``params``) learned
    by the differentiable marglik with the hyperparameters. ``marglik_estimate``: the recorded
    (and best-model) evidence is the one at the final hyperparameters ("final"; with
    ``extra_params`` that costs one more Laplace fit per estimate) or the value of the last
    hyper-step, before its update ("last_step": no extra pass).

    The MAP objective is ``-log p(y|θ)/(B·T) + ½ Σ δ (θ-μ0)² / N`` per batch, with the prior on the
    parameters the Laplace covers (trainable parameters outside it, e.g. the body with
    ``subset_of_weights="last_layer"``, are trained without a prior).
    """
    opts = _check_options(locals())
    la = Laplace(
        model, likelihood, subset_of_weights=subset_of_weights,
        hessian_structure=hessian_structure, prior_precision=prior_prec_init,
        prior_structure=prior_structure, sigma_noise=sigma_noise_init, temperature=temperature,
        curvature=curvature, kfac=kfac, param_groups=param_groups,
        group_structure=group_structure, params=params, **(laplace_kwargs or {}),
    )  # fmt: skip
    run = _Run(model, la, opts)
    bar = tqdm(range(1, n_epochs + 1), desc="marglik training", disable=not progress)
    shown = "–"  # the bar keeps the latest estimate, not the NaN of epochs without one
    for epoch in bar:
        loss = run.map_epoch(epoch)
        lml = run.marglik_step(epoch) if run.is_marglik_epoch(epoch) else math.nan
        run.record(loss, lml)
        shown = shown if math.isnan(lml) else f"{lml:.4g}"
        bar.set_postfix(loss=f"{loss:.4g}", lml=shown)
        if callback is not None and callback(run.progress(epoch)) is True:
            break
    return model, run.finish(), _history(run.rec, la)


def _check_options(args):
    a = dict(args)
    for name in ("n_epochs", "marglik_frequency"):
        a[name] = check_positive_int(name, a[name])
    for name in ("n_epochs_burnin", "n_hypersteps"):
        a[name] = check_positive_int(name, a[name], minimum=0)
    a["lr"], a["lr_hyp"] = (
        check_positive_float("lr", a["lr"]),
        check_positive_float("lr_hyp", a["lr_hyp"]),
    )
    if a["lr_min"] is not None:
        a["lr_min"] = check_positive_float("lr_min", a["lr_min"], allow_zero=True)
    if not _is_optimizer_class(a["optimizer"]):
        check_choice("optimizer", a["optimizer"], OPTIMIZERS)
    if a["optimizer_kwargs"] is not None and not isinstance(a["optimizer_kwargs"], dict):
        raise TypeError(
            f"optimizer_kwargs must be a dict, got {type(a['optimizer_kwargs']).__name__}"
        )
    if a["scheduler"] is not None and not callable(a["scheduler"]):
        raise TypeError("scheduler must be a callable optimizer -> learning-rate scheduler")
    check_choice("marglik_estimate", a["marglik_estimate"], ("final", "last_step"))
    check_callback(a["callback"])
    check_prior_values(a["prior_prec_init"], "prior_prec_init")
    ref = next(a["model"].parameters(), None) if isinstance(a["model"], torch.nn.Module) else None
    if ref is not None:  # (a bad model is reported by Laplace)
        if positive_tensor("sigma_noise_init", a["sigma_noise_init"], ref).ndim > 1:
            raise ValueError("sigma_noise_init must be a scalar or 1-D (one value per output)")
    for name in ("learn_sigma", "progress", "marglik_at_last_epoch", "restore_best",
                 "reset_hyper_optimizer"):  # fmt: skip
        a[name] = check_bool(name, a[name])
    a["train_loader"] = as_loader(a["train_loader"])
    if is_one_shot(a["train_loader"]):
        raise TypeError(
            "train_loader is a one-shot iterator (e.g. a generator): marglik_training iterates "
            "it once per epoch; pass a DataLoader or a list of (X, y) batches"
        )
    ml = a["marglik_loader"]
    if ml is not None and not _is_factory(ml):
        ml = as_loader(ml, "marglik_loader")
        if is_one_shot(ml):
            raise TypeError("marglik_loader is a one-shot iterator; pass a DataLoader or a list")
    a["marglik_loader"] = ml
    return a


class _Run:
    """State of one marglik_training run: optimisers, hyperparameters, records, the best model."""

    def __init__(self, model, la, o):
        self.model, self.la, self.o = model, la, o
        self.loader = o["train_loader"]
        self.ref = next(model.parameters())
        # the last layer is found on a batch; otherwise no extra pass (a shuffling loader's
        # generator is drawn from by every iter(), so the epochs see the same batch orders)
        x0 = (
            prepare_batch(peek(self.loader)[0], 0, self.ref)[0]
            if la.subset_of_weights == "last_layer"
            else None
        )
        try:
            la.prepare(x0)
        except ValueError as err:  # name marglik_training's own argument
            if "prior_precision" not in str(err):
                raise
            raise ValueError(f"prior_prec_init: {err}") from err
        self.lik = la.lik_
        sig = la.sigma_noise
        if self.lik.has_sigma and sig.numel() > 1 and o["learn_sigma"]:
            if o["curvature"] != "ggn" or any(b.kind == "kron" for b in la.blocks_):
                raise ValueError(
                    "learning a per-output sigma_noise needs curvature='ggn' and full/diag blocks "
                    "(KFAC keeps the fit-time sigma inside its factors); pass a scalar "
                    "sigma_noise_init or learn_sigma=False"
                )
        self.N = _n_data(self.loader)
        self.log_prec = la.prior_precision.detach().log().clone().requires_grad_(True)
        self.log_sigma = (
            sig.detach().log().clone().requires_grad_(self.lik.has_sigma and o["learn_sigma"])
        )
        self.extra = list(o["extra_params"] or [])
        ids = {id(p) for p in self.extra}
        theta = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        cls = o["optimizer"]
        if not _is_optimizer_class(cls):
            cls = torch.optim.Adam if cls == "adam" else torch.optim.SGD
        try:
            self.opt = cls(theta, **{"lr": o["lr"], **(o["optimizer_kwargs"] or {})})
        except (TypeError, ValueError) as err:
            raise type(err)(f"optimizer={cls.__name__} with optimizer_kwargs: {err}") from err
        self.sched = None
        if o["scheduler"] is not None:
            self.sched = o["scheduler"](self.opt)
        elif o["lr_min"] is not None:
            steps = (
                o["n_epochs"] * max(1, len(self.loader))
                if hasattr(self.loader, "__len__")
                else o["n_epochs"]
            )
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.opt, steps, eta_min=o["lr_min"]
            )
        self.hyper = [self.log_prec] + ([self.log_sigma] if self.log_sigma.requires_grad else [])
        self.opt_hyp = torch.optim.Adam(self.hyper + self.extra, lr=o["lr_hyp"])
        self.named = dict(model.named_parameters())
        self.rec = {"loss": [], "log_marglik": [], "sigma_noise": [], "prior_precision": []}
        self.best = (-math.inf, None, None)
        self.last_marglik_epoch = 0

    def is_marglik_epoch(self, epoch):
        o = self.o
        if epoch <= o["n_epochs_burnin"]:
            return False
        return (epoch - o["n_epochs_burnin"] - 1) % o["marglik_frequency"] == 0 or (
            o["marglik_at_last_epoch"] and epoch == o["n_epochs"]
        )

    def map_epoch(self, epoch):
        """One pass of the MAP objective; returns the mean loss per sample."""
        model, la, lik, T = self.model, self.la, self.lik, self.o["temperature"]
        model.train()
        total, count = 0.0, 0
        sigma = self.log_sigma.detach().exp() if lik.has_sigma else None
        prec_diag = la.layout_.to_diag(self.log_prec.detach().exp())
        names = la.spec_.names
        for bi, batch in enumerate(self.loader):
            X, y = prepare_batch(batch, bi, self.ref)
            self.opt.zero_grad()
            eta3, y3 = shape_outputs(lik, lik.link(run_model(model, X)), y, bi)
            B = eta3.shape[0]
            if sigma is not None and sigma.numel() not in (1, eta3.shape[-1]):
                raise ValueError(
                    f"sigma_noise_init has {sigma.numel()} entries but the model has "
                    f"{eta3.shape[-1]} outputs; pass a scalar or one value per output"
                )
            nll = -lik.log_lik(eta3, y3, sigma) / (B * T)
            theta = torch.cat([self.named[n].reshape(-1) for n in names])
            loss = nll + 0.5 * (prec_diag * (theta - la.prior_mean) ** 2).sum() / self.N
            if not torch.isfinite(loss.detach()):
                raise ValueError(
                    f"the training loss is not finite at epoch {epoch}, batch {bi} (largest |X| "
                    f"{float(X.abs().max()) if X.is_floating_point() else 'n/a'}): the model "
                    "diverged; rescale the inputs/targets or lower lr"
                )
            loss.backward()
            self.opt.step()
            if self.sched is not None:
                self.sched.step()
            total += float(loss.detach()) * B
            count += B
        if count == 0:
            raise ValueError("train_loader has no rows")
        return total / count

    def marglik_data(self, epoch):
        ml = self.o["marglik_loader"]
        if ml is None:
            return self.loader
        return as_loader(ml(epoch), "marglik_loader(epoch)") if _is_factory(ml) else ml

    def marglik_step(self, epoch):
        o, la = self.o, self.la
        loader = self.marglik_data(epoch)
        if o["reset_hyper_optimizer"]:
            self.opt_hyp = torch.optim.Adam(self.hyper + self.extra, lr=o["lr_hyp"])
        lml = _hyper_steps(self, loader, o["n_hypersteps"], o["marglik_estimate"] == "final", epoch)
        self.last_marglik_epoch = epoch
        if o["restore_best"] and lml > self.best[0]:
            self.best = (lml, copy.deepcopy(self.model.state_dict()), la.state_dict())
        return lml

    def record(self, loss, lml):
        rec = self.rec
        rec["loss"].append(loss)
        rec["log_marglik"].append(lml)
        rec["sigma_noise"].append(
            self.log_sigma.detach().exp().reshape(-1).cpu().numpy().copy()
            if self.lik.has_sigma
            else np.full(1, math.nan)
        )
        rec["prior_precision"].append(self.log_prec.detach().exp().cpu().numpy().copy())

    def progress(self, epoch):
        rec, la = self.rec, self.la
        sig = rec["sigma_noise"][-1]
        sig = float(sig[0]) if sig.size == 1 else sig
        lml = rec["log_marglik"][-1]
        history = _history(rec, la)
        legacy = {"epoch": epoch, "n_epochs": self.o["n_epochs"], "loss": rec["loss"][-1],
                  "log_marglik": lml, "sigma_noise": sig, "prior_precision": rec["prior_precision"][-1],
                  "history": history, "la": la}  # fmt: skip
        return EpochProgress(
            epoch, self.o["n_epochs"], "train", f"epoch {epoch}/{self.o['n_epochs']}",
            {"loss": rec["loss"][-1], "log_marglik": lml, "sigma_noise": sig},
            {"epoch": epoch, "marglik_step": self.last_marglik_epoch == epoch,
             "prior_precision": rec["prior_precision"][-1], "history": history, "la": la,
             "model": self.model},
            legacy,
        )  # fmt: skip

    def finish(self):
        """The Laplace to return: of the best estimate (model restored), or of the last model."""
        la, lik = self.la, self.lik
        if self.best[1] is not None:
            self.model.load_state_dict(self.best[1])
            la.load_state_dict(self.best[2])
            return la
        la.prior_precision = self.log_prec.detach().exp()
        if lik.has_sigma:
            la.sigma_noise = self.log_sigma.detach().exp()
        last = len(self.rec["loss"])
        if self.last_marglik_epoch != last:  # the Laplace of the returned (last) model
            la.fit(self.marglik_data(last))
        return la


def _is_optimizer_class(obj):
    return isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)


def _is_factory(ml):
    """``marglik_loader`` given as ``epoch -> loader`` (callable, not itself iterable)."""
    return callable(ml) and not hasattr(ml, "__iter__")


def _n_data(loader):
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return sum(len(unpack_batch(b, bi)[0]) for bi, b in enumerate(loader))


def _hyper_steps(run, loader, n_steps, final, epoch):
    la, log_prec, log_sigma, extra = run.la, run.log_prec, run.log_sigma, run.extra
    has_sigma = la.lik_.has_sigma
    la.prior_precision = log_prec.detach().exp()
    if has_sigma:
        la.sigma_noise = log_sigma.detach().exp()
    if not extra:
        la.fit(loader)
    value = math.nan
    for _ in range(n_steps):
        if extra:
            la.fit(loader, create_graph=True)
        run.opt_hyp.zero_grad()
        sigma = log_sigma.exp() if has_sigma else None
        lml = _marglik.log_marginal_likelihood(la, log_prec.exp(), sigma, validate=False)
        (-lml).backward()
        run.opt_hyp.step()
        value = float(lml.detach())
    where = f"marglik_training (epoch {epoch})"
    _marglik.check_converged([value] if n_steps else [], log_prec, log_sigma, where)
    la.prior_precision = log_prec.detach().exp()
    if has_sigma:
        la.sigma_noise = log_sigma.detach().exp()
    if not final and n_steps:
        return value
    if extra:
        la.fit(loader)
    with torch.no_grad():
        value = float(_marglik.log_marginal_likelihood(la, validate=False))
    _marglik.check_converged([value], log_prec, log_sigma, where)
    return value


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
