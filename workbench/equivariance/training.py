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
import xarray as xr

from workbench._deprecation import renamed_arguments
from workbench._torch_utils import batch_loader, torch_threads
from workbench.equivariance._base import ImageClassifier, accuracy
from workbench.equivariance._validation import check_settings
from workbench.equivariance.layers import PATHWAYS
from workbench.equivariance.models import SoftEquivariantNet, pathway_of_parameter
from workbench.equivariance.readout import READOUT_VARS, add_equivariance, layer_readout
from workbench.laplace import fit_laplace, marglik_training

PRIOR_STRUCTURES = ("pathway", "layerwise")
OPTIMIZERS = ("sgd", "adam")


def pathway_groups(model: SoftEquivariantNet) -> dict[str, list[str]]:
    """``{"layers.i.<pathway>": [param names], "head": [...]}`` — one prior per pathway."""
    groups: dict[str, list[str]] = {}
    for name, (layer, pathway) in pathway_of_parameter(model).items():
        key = "head" if layer == "head" else f"{layer}.{pathway}"
        groups.setdefault(key, []).append(name)
    return groups


def _prior_kwargs(prior_structure, param_groups):
    """The core's prior arguments for ``"pathway"`` (one per pathway: group prior) or ``"layerwise"``."""
    if prior_structure == "pathway":
        return dict(prior_structure="group", param_groups=param_groups)
    return dict(prior_structure="layerwise")


def readout_laplace(model, loader, prior_structure, prior_precision, param_groups):
    """The core's :func:`~workbench.laplace.fit_laplace` (KFAC, classification) with the prior
    layout of ``prior_structure``: the Laplace the equivariance read-outs are computed from."""
    return fit_laplace(model, loader, "classification", hessian_structure="kron",
                        prior_precision=prior_precision,
                        **_prior_kwargs(prior_structure, param_groups))


class LearnedEquivarianceClassifier(ImageClassifier):
    """Soft-equivariant CNN whose per-pathway prior precisions are learned by online marglik.

    A scikit-learn classifier (``clone``, ``get_params`` / ``set_params``; ``predict`` returns
    values of ``classes_``) on (N, C, H, W) images.

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
    random_state : int or None; seeds the weight initialisation and the batch order (the global
        torch RNG is left untouched; ``seed`` is its deprecated name).
    n_threads : torch intra-op threads while fitting / predicting (None: unchanged).
    device : None (CUDA when available, else CPU), a string or a ``torch.device``; the images
        are moved there once, results come back as numpy arrays on the CPU.
    dtype : None (float64 for float64 images, else float32), ``torch.float32`` / ``float64``.
    progress : tqdm progress bar over epochs.
    callback : ``callback(Progress)`` after every epoch (stage ``"train"``; metrics ``loss``,
        ``log_marglik``, ``train_accuracy``, ``val_accuracy``; state ``epoch`` and ``history``,
        the Dataset so far); returning True stops training. Old ``callback(epoch, n_epochs,
        history)`` callables still work for one release, with a FutureWarning.

    Attributes after ``fit``: ``model_``, ``la_`` (last fitted Laplace), ``history_`` (Dataset over
    ``epoch``; readouts over ``(epoch, layer, pathway)``, see :mod:`..readout`), ``readout_``
    (last epoch's readout), ``classes_``, ``image_shape_``, ``device_``, ``dtype_``,
    ``fit_time_``.
    """

    @renamed_arguments(seed="random_state")
    def __init__(self, channels=(16, 16, 16, 16), strides=(1, 2, 1, 2), kernel_size=3,
                 pathways=PATHWAYS, prior_structure="layerwise", n_epochs=30, batch_size=50,
                 lr=0.05, optimizer="sgd", lr_min=0.0, n_epochs_burnin=1, marglik_frequency=1,
                 n_hypersteps=30, lr_hyp=0.1, prior_precision=1.0, free_init=0.0,
                 random_state=0, n_threads=None, device=None, dtype=None, progress=False,
                 callback=None):
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
        self.random_state = random_state
        self.n_threads = n_threads
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.callback = callback

    # ------------------------------------------------------------------ helpers
    def _validate_params(self):
        if self.prior_structure not in PRIOR_STRUCTURES:
            raise ValueError(f"prior_structure must be one of {PRIOR_STRUCTURES}, got "
                             f"{self.prior_structure!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        check_settings(self, ints=("n_epochs", "batch_size", "marglik_frequency", "kernel_size"),
                       non_negative=("n_epochs_burnin", "n_hypersteps"),
                       positive=("lr", "lr_hyp", "prior_precision"))
        if self.lr_min is not None and not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min must be None or in [0, lr={self.lr}], got {self.lr_min}")

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, X_val=None, y_val=None):
        """Train on images ``X`` (N, C, H, W) with labels ``y``; ``X_val, y_val`` (optional) are
        scored every epoch into ``history_.val_accuracy``."""
        self._validate_params()
        d = self._prepare(X, y, X_val, y_val)
        with torch_threads(self.n_threads), self._rng_scope():
            return self._fit(d)

    def _fit(self, d):
        X, y, X_val, y_val = d.X, d.y, d.X_val, d.y_val
        model = SoftEquivariantNet(self.image_shape_, len(self.classes_), self.channels,
                                   self.strides, self.kernel_size, self.pathways,
                                   self.free_init).to(device=self.device_, dtype=self.dtype_)
        self.model_ = model
        train_loader = batch_loader(X, y, batch_size=self.batch_size, shuffle=True,
                                    random_state=self._seed)
        full_loader = batch_loader(X, y, batch_size=max(self.batch_size, 250))
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
        callback = self._epoch_callback()

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
            rec["train_accuracy"] = accuracy(model, X, y)
            rec["val_accuracy"] = accuracy(model, X_val, y_val) if X_val is not None else math.nan
            rec["time"] = time.perf_counter() - t0
            records.append(rec)
            return self._report_epoch(callback, rec, lambda: self._history(records))

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
                        prior_structure=self.prior_structure, channels=[int(c) for c in self.channels],
                        strides=[int(s) for s in self.strides], seed=int(self._seed))
        return ds
