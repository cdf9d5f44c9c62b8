"""Online marginal-likelihood training of soft-equivariant networks (Immer et al., ICML 2021,
Algorithm 1) with per-epoch readouts of the learned equivariance.

Every epoch trains the weights on the MAP objective (mean cross-entropy + ½ Σ δ θ² / N with the
current prior precisions: the weight decay *is* the learned prior, there is no other). After
``n_epochs_burnin`` epochs, then every ``marglik_frequency`` epochs and at the last epoch, the
Laplace core's KFAC Laplace is fitted on the whole training set and the prior precisions (one per
parameter tensor, or one per pathway of each layer) take ``n_hypersteps`` Adam steps on the
negative log marginal likelihood with the curvature held fixed. The readouts of
:mod:`workbench.equivariance.readout` are recorded after every such step; weight and output norms
and accuracies every epoch.

Why SGD (with momentum and a cosine learning-rate decay) and not Adam for the weights: Adam
divides every coordinate's step by its own gradient scale, so the thousands of free-pathway
weights that the data hardly determine still take full-size, noise-driven steps and random-walk
away from zero. At the marglik optimum a precision obeys δ = γ / ‖θ‖², so that inflated norm
holds the free pathways' precisions down and their effective dimensions up, whatever the task.
SGD moves a weight in proportion to its gradient, so weights the data do not ask for stay where
the prior keeps them, and the marglik can switch the free pathways off (on the translated task
the free pathways' learned precisions end up 10-100x the convolutions'). The baselines are trained
with the same optimiser and schedule.

The Laplace core's own ``marglik_training`` runs the same algorithm; this loop uses its building
blocks (``Laplace.fit`` / ``optimize_prior_precision`` / ``effective_dimensions``) directly
because it reports the *last* epoch's model (the core restores the best-marglik one) and records
readouts between marglik steps too.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from workbench.equivariance.layers import PATHWAYS
from workbench.equivariance.models import SoftEquivariantNet, pathway_of_parameter
from workbench.equivariance.readout import READOUT_VARS, add_equivariance, layer_readout

PRIOR_STRUCTURES = ("pathway", "layerwise")
OPTIMIZERS = ("sgd", "adam")


def check_images(X, y=None, image_shape=None, name="X"):
    """Validate ``X`` (N, C, H, W) images (and integer labels ``y``); return tensors."""
    X = torch.as_tensor(X)
    if X.ndim == 3:
        raise ValueError(f"{name} must be (N, C, H, W) images; got {tuple(X.shape)} — add the "
                         "channel axis, e.g. X[:, None]")
    if X.ndim != 4:
        raise ValueError(f"{name} must be (N, C, H, W) images, got shape {tuple(X.shape)}")
    if not torch.is_floating_point(X):
        X = X.float()
    if image_shape is not None and tuple(X.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name} has image shape {tuple(X.shape[1:])}, the model was fitted on "
                         f"{tuple(image_shape)}")
    if not torch.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or inf")
    if y is None:
        return X
    y = torch.as_tensor(y)
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must be a vector of {len(X)} labels, got shape {tuple(y.shape)}")
    if torch.is_floating_point(y):
        if not torch.equal(y, y.round()):
            raise ValueError("y must hold integer class labels")
    y = y.long()
    if (y < 0).any():
        raise ValueError("y must hold class labels >= 0")
    return X, y


def pathway_groups(model: SoftEquivariantNet) -> dict[str, list[str]]:
    """``{"layers.i.<pathway>": [param names], "head": [...]}`` — one prior per pathway."""
    groups: dict[str, list[str]] = {}
    for name, (layer, pathway) in pathway_of_parameter(model).items():
        key = "head" if layer == "head" else f"{layer}.{pathway}"
        groups.setdefault(key, []).append(name)
    return groups


def prior_penalty(model, la_prior_diag: torch.Tensor | None, param_names, prior_precision):
    """½ Σ δ_i θ_i² over the Laplace's parameters (scalar ``prior_precision`` before any fit)."""
    if la_prior_diag is None:
        return 0.5 * prior_precision * sum(p.pow(2).sum() for p in model.parameters())
    named = dict(model.named_parameters())
    theta = torch.cat([named[n].reshape(-1) for n in param_names])
    return 0.5 * (la_prior_diag.to(theta) * theta.pow(2)).sum()


@torch.no_grad()
def predict_logits(model, X, batch_size=1000):
    model.eval()
    out = torch.cat([model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])
    return out


def fit_laplace(model, loader, prior_structure, prior_precision, param_groups):
    """The core's KFAC Laplace on ``model`` with the given prior layout, fitted on ``loader``."""
    from workbench.laplace import Laplace

    kwargs = dict(hessian_structure="kron", prior_precision=prior_precision)
    if prior_structure == "pathway":
        kwargs.update(prior_structure="group", param_groups=param_groups)
    else:
        kwargs.update(prior_structure="layerwise")
    la = Laplace(model, "classification", **kwargs)
    la.fit(loader)
    return la


class LearnedEquivarianceClassifier:
    """Soft-equivariant CNN whose per-pathway prior precisions are learned by online marglik.

    Parameters
    ----------
    channels, strides, kernel_size, pathways : architecture, see :class:`SoftEquivariantNet`
        (``pathways="conv"`` / ``"free"`` give the pure CNN / FC baselines, trained the same way).
    prior_structure : ``"layerwise"`` (one precision per parameter tensor: each pathway of each
        layer has its own, the free pathway one for each Kronecker factor) or ``"pathway"`` (one
        shared by all tensors of a pathway, the head its own). Per tensor is the default because
        the free pathway's column factor ``B`` is He-initialised while ``A`` starts at zero; a
        shared precision would be held down by ‖B‖ (δ = γ / ‖θ‖² at the optimum).
    n_epochs, batch_size, lr : MAP training.
    optimizer : ``"sgd"`` (momentum 0.9, default; see the module docstring) or ``"adam"``.
    lr_min : the learning rate decays along a cosine from ``lr`` to ``lr_min`` over training;
        None keeps it constant.
    n_epochs_burnin, marglik_frequency, n_hypersteps, lr_hyp : online marglik schedule.
    prior_precision : initial prior precision.
    free_init : initial scale of the soft layers' free pathways relative to He (0: they start at
        exactly zero, the network starts as the pure CNN).
    seed : seeds the weight initialisation and the batch order.
    progress : tqdm progress bar over epochs.
    callback : optional ``callback(epoch, n_epochs, history)`` after every epoch (dashboards).

    Attributes after ``fit``: ``model_``, ``la_`` (last fitted Laplace), ``history_`` (Dataset over
    ``epoch``; readouts over ``(epoch, layer, pathway)``, see :mod:`..readout`), ``readout_``
    (last epoch's readout), ``classes_``, ``fit_time_``.
    """

    def __init__(self, channels=(16, 16, 16, 16), strides=(1, 2, 1, 2), kernel_size=3,
                 pathways=PATHWAYS, prior_structure="layerwise", n_epochs=30, batch_size=50,
                 lr=0.05, optimizer="sgd", lr_min=0.0, n_epochs_burnin=1, marglik_frequency=1,
                 n_hypersteps=30, lr_hyp=0.1, prior_precision=1.0, free_init=0.0, seed=0,
                 progress=False, callback=None):
        self.channels = channels
        self.strides = strides
        self.kernel_size = kernel_size
        self.pathways = pathways
        self.prior_structure = prior_structure
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.n_epochs_burnin = n_epochs_burnin
        self.marglik_frequency = marglik_frequency
        self.n_hypersteps = n_hypersteps
        self.lr_hyp = lr_hyp
        self.prior_precision = prior_precision
        self.free_init = free_init
        self.optimizer = optimizer
        self.lr_min = lr_min
        self.seed = seed
        self.progress = progress
        self.callback = callback

    # ------------------------------------------------------------------ helpers
    def _validate_params(self):
        if self.prior_structure not in PRIOR_STRUCTURES:
            raise ValueError(f"prior_structure must be one of {PRIOR_STRUCTURES}, got "
                             f"{self.prior_structure!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_min is not None and not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min must be None or in [0, lr={self.lr}], got {self.lr_min}")
        for name in ("n_epochs", "batch_size", "marglik_frequency"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_epochs_burnin < 0 or self.n_hypersteps < 0:
            raise ValueError("n_epochs_burnin and n_hypersteps must be >= 0")
        if not self.prior_precision > 0:
            raise ValueError(f"prior_precision must be > 0, got {self.prior_precision}")

    def _is_marglik_epoch(self, epoch: int) -> bool:
        e = epoch - self.n_epochs_burnin
        return e >= 0 and (e % self.marglik_frequency == 0 or epoch == self.n_epochs - 1)

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, X_val=None, y_val=None):
        self._validate_params()
        X, y = check_images(X, y)
        if X_val is not None:
            X_val, y_val = check_images(X_val, y_val, X.shape[1:], name="X_val")
        self.classes_ = torch.unique(y).numpy()
        n_classes = int(y.max()) + 1
        torch.manual_seed(self.seed)
        model = SoftEquivariantNet(tuple(X.shape[1:]), n_classes, self.channels, self.strides,
                                   self.kernel_size, self.pathways, self.free_init).to(X.dtype)
        self.model_ = model
        N = len(X)
        gen = torch.Generator().manual_seed(self.seed)
        train_loader = DataLoader(TensorDataset(X, y), batch_size=self.batch_size, shuffle=True,
                                  generator=gen)
        full_loader = DataLoader(TensorDataset(X, y), batch_size=max(self.batch_size, 250))
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        sched = None
        if self.lr_min is not None:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, self.n_epochs * len(train_loader), eta_min=self.lr_min)
        groups = pathway_groups(model)
        la, prior_diag, names = None, None, None
        prior_init = self.prior_precision
        X_probe = X[: min(256, N)]
        records, t0 = [], time.perf_counter()
        last_readout = None
        epochs = range(self.n_epochs)
        if self.progress:
            epochs = tqdm(epochs, desc="marglik training", unit="epoch")
        for epoch in epochs:
            model.train()
            total = 0.0
            for xb, yb in train_loader:
                opt.zero_grad()
                nll = F.cross_entropy(model(xb), yb)
                loss = nll + prior_penalty(model, prior_diag, names, prior_init) / N
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total += float(loss.detach()) * len(xb)
            rec = {"epoch": epoch, "loss": total / N, "marglik_step": False,
                   "log_marglik": math.nan}
            if self._is_marglik_epoch(epoch):
                prior = la.prior_precision.detach().clone() if la is not None else prior_init
                la = fit_laplace(model, full_loader, self.prior_structure, prior, groups)
                if self.n_hypersteps:
                    la.optimize_prior_precision(method="marglik", n_steps=self.n_hypersteps,
                                                lr=self.lr_hyp)
                with torch.no_grad():
                    rec["log_marglik"] = float(la.log_marginal_likelihood())
                prior_diag = la.prior_precision_diag.detach().clone()
                names = list(la.param_names)
                rec["marglik_step"] = True
                readout = last_readout = layer_readout(model, la, X_probe)
            else:
                # precisions and effective dims hold between marglik steps; norms move every epoch
                fresh = layer_readout(model, None, X_probe)
                if last_readout is not None:
                    fresh["prior_precision"] = last_readout["prior_precision"]
                    fresh["effective_dim"] = last_readout["effective_dim"]
                    fresh = add_equivariance(fresh.drop_vars("equivariance"))
                readout = fresh
            rec["readout"] = readout
            rec["train_accuracy"] = _accuracy(model, X, y)
            rec["val_accuracy"] = _accuracy(model, X_val, y_val) if X_val is not None else math.nan
            rec["time"] = time.perf_counter() - t0
            records.append(rec)
            if self.progress:
                epochs.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['train_accuracy']:.3f}")
            if self.callback is not None:
                self.callback(epoch, self.n_epochs, self._history(records))
        self.la_ = la
        self.fit_time_ = time.perf_counter() - t0
        self.history_ = self._history(records)
        self.readout_ = self.history_[list(READOUT_VARS) + ["equivariance"]].isel(epoch=-1)
        return self

    def _history(self, records) -> xr.Dataset:
        readouts = xr.concat([r["readout"] for r in records], dim="epoch")
        epoch = [r["epoch"] for r in records]
        curves = {k: ("epoch", np.array([r[k] for r in records]))
                  for k in ("loss", "log_marglik", "marglik_step", "train_accuracy",
                            "val_accuracy", "time")}
        ds = readouts.assign_coords(epoch=epoch).assign(curves)
        ds["log_marglik"].attrs["long_name"] = "log marginal likelihood (KFAC Laplace)"
        ds["marglik_step"].attrs["long_name"] = "epoch with a Laplace fit and prior update"
        ds.attrs.update(model="SoftEquivariantNet", pathways=str(self.pathways),
                        prior_structure=self.prior_structure, channels=str(tuple(self.channels)),
                        strides=str(tuple(self.strides)), seed=int(self.seed))
        return ds

    # ------------------------------------------------------------------ predict
    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise RuntimeError("this LearnedEquivarianceClassifier is not fitted yet; call fit")

    def decision_function(self, X) -> np.ndarray:
        self._check_fitted()
        X = check_images(X, image_shape=self.model_.image_shape)
        return predict_logits(self.model_, X.to(next(self.model_.parameters()).dtype)).numpy()

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(torch.as_tensor(self.decision_function(X)), -1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.decision_function(X).argmax(-1)

    def score(self, X, y) -> float:
        X, y = check_images(X, y)
        return float((self.predict(X) == y.numpy()).mean())


def _accuracy(model, X, y) -> float:
    if X is None:
        return math.nan
    return float((predict_logits(model, X).argmax(-1) == y).double().mean())
