"""Learned invariance (LILA, Immer, van der Ouderaa, Rätsch, Fortuin, van der Wilk, NeurIPS 2022).

``LearnedInvarianceClassifier`` trains ``f̄(x) = 1/S Σ_s net(T_s x)`` (see
:mod:`workbench.equivariance.augmentation`). The network weights follow the MAP objective with
the current prior precisions; after ``n_epochs_burnin`` epochs, every ``marglik_frequency`` epochs
the augmentation amplitudes and the (log) prior precisions take ``n_hypersteps`` Adam steps on the
negative log marginal likelihood of the Laplace core's KFAC Laplace in its differentiable mode:
``Laplace(..., params=<network weights>)`` restricted to the network, ``la.fit(loader,
create_graph=True)`` so that the log-likelihood and the curvature keep their graph to the
amplitudes, then ``-la.log_marginal_likelihood(prior_precision).backward()``. A refit precedes
every hyper step because the amplitudes change the curvature. The loop is the Laplace core's
``marglik_training`` with ``extra_params=[amplitudes]`` (``marglik_estimate="last_step"``: the
recorded log marglik is the last hyper step's) and the per-epoch read-outs in its callback.

With ``learn_invariance=False`` the same network is trained without augmentation and with its
prior precision learned by the same marglik (the non-invariant baseline).
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
import torch.nn as nn
import xarray as xr

from workbench._deprecation import renamed_arguments
from workbench._torch_utils import batch_loader, torch_threads
from workbench.equivariance._base import ImageClassifier, accuracy
from workbench.equivariance._validation import check_settings
from workbench.equivariance.augmentation import (
    TRANSFORMS,
    AffineAugmentation,
    InvariantModel,
    check_transforms,
)
from workbench.laplace import marglik_training


@contextlib.contextmanager
def _eval_samples(model, n):
    """``model.n_samples_eval = n`` inside the block (prediction-time S for the accuracies)."""
    old, model.n_samples_eval = model.n_samples_eval, n
    try:
        yield
    finally:
        model.n_samples_eval = old


def make_mlp(image_shape, n_classes, hidden=(128, 128)) -> nn.Sequential:
    """ReLU MLP on images; accepts (N, C, H, W) or (N, S, C, H, W) (flattens the last 3 dims)."""
    dims = [int(np.prod(image_shape)), *hidden]
    layers: list[nn.Module] = [nn.Flatten(start_dim=-3)]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], n_classes))
    return nn.Sequential(*layers)


def marglik(model: InvariantModel, loader, param_names, prior_precision,
            kfac: str = "reduce") -> torch.Tensor:
    """Log marginal likelihood of the KFAC Laplace over ``param_names`` (one prior precision per
    tensor), differentiable w.r.t. ``prior_precision`` and, through the core's
    ``fit(create_graph=True)``, w.r.t. the augmentation amplitudes of ``model``.

    ``kfac="reduce"`` averages each layer's inputs over the S transform samples (the shared
    dimension, see :class:`InvariantModel`) before the Kronecker factors are formed, so the
    curvature is that of the averaged model; ``"expand"`` treats samples like extra data."""
    from workbench.laplace import Laplace

    la = Laplace(model, "classification", hessian_structure="kron", prior_structure="layerwise",
                 prior_precision=prior_precision.detach(), params=list(param_names),
                 kfac=kfac)
    la.fit(loader, create_graph=model.augmentation is not None)
    return la.log_marginal_likelihood(prior_precision=prior_precision)


class LearnedInvarianceClassifier(ImageClassifier):
    """MLP made invariant by averaging over affine transforms whose amplitudes are learned.

    A scikit-learn classifier (``clone``, ``get_params`` / ``set_params``; ``predict`` returns
    values of ``classes_``) on (N, C, H, W) images.

    Parameters
    ----------
    transforms : subset of :data:`TRANSFORMS` whose amplitudes are learned.
    learn_invariance : False trains the plain network (no augmentation) as the baseline.
    hidden : hidden widths of the MLP.
    n_samples : transforms per image in training and in the marglik (S). The averaged model is
        a Monte-Carlo estimate: with few samples its predictions get noisier the wider the
        amplitudes, the marglik's data fit pays for that noise and holds the amplitudes back
        (S = 4 stopped rotation at about 40 % of the true range on rotated digits, S = 16
        reached about 80 % in the same epochs).
    n_samples_eval : transforms per image at prediction time. A fitted model averages over one
        fixed set of ``n_samples_eval`` transforms (the same for every image, drawn from
        ``random_state`` at the end of ``fit``), so its predictions are deterministic; during
        training the accuracies in ``history_`` use fresh draws.
    init_amplitude : initial amplitudes as a fraction of each transform's maximum.
    n_epochs, batch_size, lr : MAP training (Adam).
    n_epochs_burnin, marglik_frequency, n_hypersteps, lr_hyp : marglik schedule; ``lr_hyp`` is the
        Adam step size of the log prior precisions and amplitude logits. Every hyper step moves
        an amplitude logit by at most about ``lr_hyp``, so the steps per epoch times the epochs
        bound how far the amplitudes can travel from their small initial value.
    marglik_subset : fit the differentiable Laplace on a random subset of this many training
        points per marglik step (a cheaper estimate: the marglik of a smaller data set, so the
        prior weighs relatively more); None uses all training data.
    prior_precision : initial prior precision (one per parameter tensor is learned).
    random_state, n_threads, device, dtype, progress, callback : as in
        :class:`LearnedEquivarianceClassifier` (``seed`` is the deprecated name of
        ``random_state``).

    Attributes: ``model_`` (:class:`InvariantModel`), ``history_`` (Dataset over ``epoch``;
    ``amplitude`` over (epoch, transform)), ``amplitudes_`` (DataArray over transform),
    ``fit_time_``, ``classes_``, ``image_shape_``, ``device_``, ``dtype_``.
    """

    @renamed_arguments(seed="random_state")
    def __init__(self, transforms=TRANSFORMS, learn_invariance=True, hidden=(128, 128),
                 n_samples=16, n_samples_eval=16, init_amplitude=0.05, n_epochs=30,
                 batch_size=100, lr=3e-3, n_epochs_burnin=3, marglik_frequency=1,
                 n_hypersteps=3, lr_hyp=0.2, marglik_subset=None, prior_precision=1.0,
                 random_state=0, n_threads=None, device=None, dtype=None, progress=False,
                 callback=None):
        self.transforms = transforms
        self.learn_invariance = learn_invariance
        self.hidden = hidden
        self.n_samples = n_samples
        self.n_samples_eval = n_samples_eval
        self.init_amplitude = init_amplitude
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.n_epochs_burnin = n_epochs_burnin
        self.marglik_frequency = marglik_frequency
        self.n_hypersteps = n_hypersteps
        self.lr_hyp = lr_hyp
        self.marglik_subset = marglik_subset
        self.prior_precision = prior_precision
        self.random_state = random_state
        self.n_threads = n_threads
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.callback = callback

    def _validate_params(self):
        check_settings(self, ints=("n_epochs", "batch_size", "marglik_frequency", "n_samples",
                                   "n_samples_eval"),
                       non_negative=("n_epochs_burnin", "n_hypersteps"),
                       positive=("lr", "lr_hyp", "prior_precision"))
        if self.marglik_subset is not None:
            check_settings(self, ints=("marglik_subset",))
        check_transforms(TRANSFORMS if self.transforms is None else self.transforms)

    def fit(self, X, y, X_val=None, y_val=None):
        """Train on images ``X`` (N, C, H, W) with labels ``y``; ``X_val, y_val`` (optional) are
        scored every epoch into ``history_.val_accuracy``."""
        self._validate_params()
        d = self._prepare(X, y, X_val, y_val)
        with torch_threads(self.n_threads), self._rng_scope():
            self._fit(d)
        # a fitted model predicts with one fixed set of transforms: deterministic answers
        self.model_.fix_eval_transforms(self.n_samples_eval, self._seed)
        return self

    def _fit(self, d):
        X, y, X_val, y_val = d.X, d.y, d.X_val, d.y_val
        kw = dict(device=self.device_, dtype=self.dtype_)
        net = make_mlp(self.image_shape_, len(self.classes_), self.hidden).to(**kw)
        aug = (AffineAugmentation(self.transforms, self.n_samples, self.init_amplitude).to(**kw)
               if self.learn_invariance else None)
        model = InvariantModel(net, aug)
        model.n_samples_eval = self.n_samples_eval
        self.model_ = model
        self.transforms_ = aug.transforms if aug is not None else tuple(
            TRANSFORMS if self.transforms is None else self.transforms)
        loader = batch_loader(X, y, batch_size=self.batch_size, shuffle=True,
                              random_state=self._seed)
        callback = self._epoch_callback()
        net_names = [f"net.{n}" for n, _ in net.named_parameters()]
        records, t0 = [], time.perf_counter()

        def on_epoch(p):
            with _eval_samples(model, self.n_samples_eval):
                rec = {"epoch": p.done - 1, "loss": p.metrics["loss"],
                       "log_marglik": p.metrics["log_marglik"],
                       "amplitude": (aug.amplitudes.detach().cpu().numpy().astype(float)
                                     if aug is not None else np.zeros(len(self.transforms_))),
                       "prior_precision": np.asarray(p.state["prior_precision"], dtype=float),
                       "train_accuracy": accuracy(model, X, y),
                       "val_accuracy": (accuracy(model, X_val, y_val) if X_val is not None
                                        else math.nan)}
            rec["time"] = time.perf_counter() - t0
            records.append(rec)
            return self._report_epoch(callback, rec, lambda: self._history(records, net_names))

        # the marglik's Laplace fits run the model in eval mode: use S samples as in training
        model.n_samples_eval = None
        try:
            _, la, _ = marglik_training(
                model, loader, "classification", hessian_structure="kron",
                prior_structure="layerwise", params=net_names, kfac="reduce",
                extra_params=[aug.raw_amplitude] if aug is not None else None,
                n_epochs=self.n_epochs, lr=self.lr, optimizer="adam",
                n_epochs_burnin=self.n_epochs_burnin, marglik_frequency=self.marglik_frequency,
                n_hypersteps=max(1, self.n_hypersteps), lr_hyp=self.lr_hyp,
                prior_prec_init=self.prior_precision,
                marglik_loader=lambda epoch: self._marglik_loader(X, y, epoch - 1),
                restore_best=False, marglik_estimate="last_step", callback=on_epoch,
                progress=self.progress)
        finally:
            model.n_samples_eval = self.n_samples_eval
        self.fit_time_ = time.perf_counter() - t0
        self.history_ = self._history(records, net_names)
        self.amplitudes_ = self.history_["amplitude"].isel(epoch=-1)
        self.prior_precision_ = la.prior_precision.detach().cpu()

    def _marglik_loader(self, X, y, epoch):
        """The data of one marglik step: all of it, or a seeded random ``marglik_subset``."""
        gen = torch.Generator().manual_seed(self._seed * 100_003 + epoch)
        if self.marglik_subset is not None and self.marglik_subset < len(X):
            idx = torch.randperm(len(X), generator=gen)[: int(self.marglik_subset)].to(X.device)
            X, y = X[idx], y[idx]
        return batch_loader(X, y, batch_size=max(self.batch_size, 250))

    def _history(self, records, net_names) -> xr.Dataset:
        epoch = [r["epoch"] for r in records]
        ds = xr.Dataset(
            {
                "amplitude": (("epoch", "transform"), np.stack([r["amplitude"] for r in records]),
                              {"long_name": "learned augmentation amplitude",
                               "units": "translate: half image; rotate: rad; scale: log factor"}),
                "prior_precision": (("epoch", "param"),
                                    np.stack([r["prior_precision"] for r in records]),
                                    {"long_name": "learned prior precision"}),
                **{k: ("epoch", np.array([r[k] for r in records]))
                   for k in ("loss", "log_marglik", "train_accuracy", "val_accuracy", "time")},
            },
            coords={"epoch": epoch, "transform": list(self.transforms_), "param": net_names},
        )
        ds.attrs.update(model="LearnedInvarianceClassifier",
                        learn_invariance=int(bool(self.learn_invariance)), seed=int(self._seed),
                        n_samples=int(self.n_samples))
        return ds
