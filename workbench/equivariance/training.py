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

Training runs through the Laplace core's ``marglik_training`` (the one online-marglik loop) with
``restore_best=False`` (the *last* epoch's model is reported), ``marglik_at_last_epoch=True``,
a fresh hyperparameter Adam per marglik step (``reset_hyper_optimizer``) and the Laplace fitted on
the unshuffled training set (``marglik_loader``); the readouts are recorded by its callback.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, TensorDataset

from workbench.equivariance.layers import PATHWAYS
from workbench.equivariance.models import SoftEquivariantNet, pathway_of_parameter
from workbench.equivariance.readout import READOUT_VARS, add_equivariance, layer_readout
from workbench.laplace import fit_laplace as _fit_laplace
from workbench.laplace import marglik_training

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


@torch.no_grad()
def predict_logits(model, X, batch_size=1000):
    model.eval()
    out = torch.cat([model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])
    return out


def _prior_kwargs(prior_structure, param_groups):
    """The core's prior arguments for ``"pathway"`` (one per pathway: group prior) or ``"layerwise"``."""
    if prior_structure == "pathway":
        return dict(prior_structure="group", param_groups=param_groups)
    return dict(prior_structure="layerwise")


def fit_laplace(model, loader, prior_structure, prior_precision, param_groups):
    """The core's KFAC Laplace on ``model`` with the given prior layout, fitted on ``loader``."""
    return _fit_laplace(model, loader, "classification", hessian_structure="kron",
                        prior_precision=prior_precision,
                        **_prior_kwargs(prior_structure, param_groups))


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
        gen = torch.Generator().manual_seed(self.seed)
        train_loader = DataLoader(TensorDataset(X, y), batch_size=self.batch_size, shuffle=True,
                                  generator=gen)
        full_loader = DataLoader(TensorDataset(X, y), batch_size=max(self.batch_size, 250))
        records, t0 = [], time.perf_counter()
        on_epoch = self._recorder(model, X, y, X_val, y_val, records, t0)
        _, la, _ = marglik_training(
            model, train_loader, "classification", hessian_structure="kron",
            **_prior_kwargs(self.prior_structure, pathway_groups(model)),
            n_epochs=self.n_epochs, lr=self.lr, lr_min=self.lr_min, optimizer=self.optimizer,
            optimizer_kwargs={"momentum": 0.9} if self.optimizer == "sgd" else None,
            n_epochs_burnin=self.n_epochs_burnin, marglik_frequency=self.marglik_frequency,
            n_hypersteps=self.n_hypersteps, lr_hyp=self.lr_hyp,
            prior_prec_init=self.prior_precision, marglik_loader=full_loader,
            marglik_at_last_epoch=True, restore_best=False, reset_hyper_optimizer=True,
            callback=on_epoch, progress=self.progress)
        self.la_ = la
        self.fit_time_ = time.perf_counter() - t0
        self.history_ = self._history(records)
        self.readout_ = self.history_[list(READOUT_VARS) + ["equivariance"]].isel(epoch=-1)
        return self

    def _recorder(self, model, X, y, X_val, y_val, records, t0):
        """The per-epoch read-outs, as a ``marglik_training`` callback (appends to ``records``)."""
        X_probe = X[: min(256, len(X))]
        last = {}

        def on_epoch(p):
            epoch = p.done - 1
            rec = {"epoch": epoch, "loss": p.metrics["loss"], "marglik_step": p.state["marglik_step"],
                   "log_marglik": p.metrics["log_marglik"]}
            if rec["marglik_step"]:
                readout = last["readout"] = layer_readout(model, p.state["la"], X_probe)
            else:
                # precisions and effective dims hold between marglik steps; norms move every epoch
                readout = layer_readout(model, None, X_probe)
                if "readout" in last:
                    readout["prior_precision"] = last["readout"]["prior_precision"]
                    readout["effective_dim"] = last["readout"]["effective_dim"]
                    readout = add_equivariance(readout.drop_vars("equivariance"))
            rec["readout"] = readout
            rec["train_accuracy"] = _accuracy(model, X, y)
            rec["val_accuracy"] = _accuracy(model, X_val, y_val) if X_val is not None else math.nan
            rec["time"] = time.perf_counter() - t0
            records.append(rec)
            if self.callback is not None:
                self.callback(epoch, self.n_epochs, self._history(records))

        return on_epoch

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
