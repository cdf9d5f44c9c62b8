"""scikit-learn estimators for LA-NAM: :class:`LaplaceAdditiveRegressor`, :class:`LaplaceAdditiveClassifier`."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
import xarray as xr
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from workbench._torch_utils import resolve_device, seed_from, torch_threads
from workbench.exceptions import check_fitted
from workbench.nam.inspection import InspectionMixin
from workbench.nam.modules import AdditiveNet
from workbench.nam.posterior import BlockPosterior, check_structure, sample_chunk
from workbench.nam.preprocessing import TabularPreprocessor, _rows, _stats, check_target
from workbench.nam.training import resolve_schedule, train_marglik
from workbench.progress import ProgressCallback, check_callback

PRED_TYPES = ("glm", "map")
#: rows per chunk of whole-data forward passes (bounded activations on big tables)
ROWS = 4096


class _LaplaceAdditiveBase(InspectionMixin, BaseEstimator):
    """Shared fit / predictive machinery (see the two public estimators for the parameters)."""

    _likelihood_family = "regression"

    def __init__(
        self,
        n_hidden: int = 64,
        hessian_structure: str = "full",
        n_epochs: int | None = None,
        lr: float | None = None,
        batch_size: int | str = "auto",
        n_epochs_burnin: int | None = None,
        marglik_frequency: int | None = None,
        patience: int | str | None = "auto",
        n_hypersteps: int = 10,
        lr_hyp: float = 0.1,
        prior_precision: float = 1.0,
        interactions: int = 0,
        n_epochs_interactions: int | None = None,
        switch_off_threshold: float = 0.01,
        max_ordinal_levels: int = 10,
        feature_types: dict | None = None,
        random_state: int | None = 0,
        device=None,
        n_threads: int | None = None,
        progress: bool = False,
        callback: ProgressCallback | None = None,
    ):
        self.n_hidden = n_hidden
        self.hessian_structure = hessian_structure
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.n_epochs_burnin = n_epochs_burnin
        self.marglik_frequency = marglik_frequency
        self.patience = patience
        self.n_hypersteps = n_hypersteps
        self.lr_hyp = lr_hyp
        self.prior_precision = prior_precision
        self.interactions = interactions
        self.n_epochs_interactions = n_epochs_interactions
        self.switch_off_threshold = switch_off_threshold
        self.max_ordinal_levels = max_ordinal_levels
        self.feature_types = feature_types
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.progress = progress
        self.callback = callback

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        for name in ("n_hidden", "n_epochs", "batch_size", "marglik_frequency", "patience"):
            v = getattr(self, name)
            if (name == "batch_size" and isinstance(v, str) and v == "auto") or (
                    name in ("n_epochs", "marglik_frequency", "patience") and v is None) or (
                    name == "patience" and isinstance(v, str) and v == "auto"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                extra = {"batch_size": ' or "auto"', "patience": ', None or "auto"', "n_epochs": " or None",
                         "marglik_frequency": " or None"}.get(name, "")
                raise ValueError(f"{name} must be a positive integer{extra}, got {v!r}")
        for name in ("n_epochs_burnin", "n_hypersteps", "interactions"):
            v = getattr(self, name)
            if name == "n_epochs_burnin" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        v = self.n_epochs_interactions
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"n_epochs_interactions must be a positive integer or None, got {v!r}")
        for name in ("lr", "lr_hyp", "prior_precision"):
            v = getattr(self, name)
            if name == "lr" and v is None:
                continue
            if isinstance(v, bool) or not (isinstance(v, (int, float, np.floating, np.integer))
                                           and v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        v = self.switch_off_threshold
        if isinstance(v, bool) or not (isinstance(v, (int, float, np.floating)) and 0 <= v < 1):
            raise ValueError(f"switch_off_threshold must be a number in [0, 1), got {v!r}")
        check_structure(self.hessian_structure)
        check_callback(self.callback)

    def _encode_target(self, y: np.ndarray) -> tuple[np.ndarray, str, int]:
        raise NotImplementedError

    def _tensors(self, X, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """X -> (numerics, category codes) on the fitted device (moved once per call)."""
        num, codes = self.preprocessor_.transform(X)
        dev = self.device_
        return (torch.as_tensor(num, dtype=dtype).to(dev),
                torch.as_tensor(codes).to(dev))

    def _predict_model(self) -> AdditiveNet:
        """A float64 copy of the fitted network for prediction: float32 matrix products depend on
        the batch size in their last bits, so predictions of a row would change with the rows
        around it; in float64 they agree to ~1e-15 (and cost little next to the Laplace part)."""
        if getattr(self, "_model64", None) is None:
            self._model64 = copy.deepcopy(self.model_).double()
        return self._model64

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are modelled natively
        return tags

    def _threads(self):
        """Temporarily use ``n_threads`` torch threads (None: leave torch's setting alone)."""
        return torch_threads(self.n_threads)

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y):
        """Fit the additive model and its Laplace posterior by online marglik; returns self."""
        self._check_params()
        device = resolve_device(self.device)
        seed = seed_from(self.random_state)
        with self._threads():
            return self._fit(X, y, device, seed)

    def _fit(self, X, y, device: torch.device, seed: int):
        self.preprocessor_ = TabularPreprocessor(self.max_ordinal_levels, self.feature_types,
                                                 owner=type(self).__name__).fit(X)
        self._model64 = None
        frame = self.preprocessor_.frame(X)
        y = check_target(y, len(frame), self._likelihood_family)
        y_enc, self.likelihood_, n_out = self._encode_target(y)
        self.feature_names_in_ = np.asarray(self.preprocessor_.feature_names_, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self._X_train = frame.reset_index(drop=True)
        self.device_, self._seed = device, seed
        x_num, x_cat = self._tensors(frame)
        y_t = torch.as_tensor(y_enc, dtype=torch.float32 if self.likelihood_ != "multiclass" else torch.long)
        y_t = y_t.to(device)
        self._train = (x_num, x_cat, y_t)
        self.schedule_ = resolve_schedule(
            len(y_t), self.n_epochs, self.batch_size, self.n_epochs_burnin, self.marglik_frequency, self.lr,
            self.patience)
        self.batch_size_ = self.schedule_["batch_size"]
        # built on the CPU from the seed (the same initial weights on every device), then moved once
        self.model_ = AdditiveNet(
            x_num.shape[1], self.preprocessor_.n_categories_, n_out, self.n_hidden, seed=seed,
            dtype=torch.float32,
        ).to(device)
        result = train_marglik(
            self.model_, x_num, x_cat, y_t, self.likelihood_, stage="main effects", **self._train_kwargs(self.schedule_["n_epochs"])
        )
        self._set_posterior(result, history=[])
        self.interaction_pairs_ = []
        if self.interactions:
            self.fit_interactions(self.interactions)
        return self

    def _train_kwargs(self, n_epochs: int) -> dict:
        return {
            "n_epochs": n_epochs, "lr": self.schedule_["lr"], "batch_size": self.batch_size_,
            "n_epochs_burnin": min(self.schedule_["n_epochs_burnin"], n_epochs - 1),
            "marglik_frequency": min(self.schedule_["marglik_frequency"], max(1, n_epochs // 2)),
            "patience": self.schedule_["patience"],
            "n_hypersteps": self.n_hypersteps, "lr_hyp": self.lr_hyp, "prior_precision": self.prior_precision,
            "sigma": 1.0, "seed": self._seed, "progress": self.progress, "callback": self.callback,
            "structure": self.hessian_structure,
        }

    def _set_posterior(self, result, history: list[dict]) -> None:
        self._model64 = None
        self._predict_model()  # built once here: predict leaves the estimator unchanged
        self.log_prior_ = result.log_prior
        self.log_sigma_ = result.log_sigma
        self.log_marglik_ = result.log_marglik
        self.best_epoch_ = result.best_epoch
        self.posterior_ = BlockPosterior(self.model_, result.curvature, result.log_prior, result.log_sigma, self.likelihood_)
        self.history_ = _history_dataset(history + result.history)
        self._history_records = history + result.history
        self.feature_importance_ = self._importance()

    def fit_interactions(self, k: int, n_epochs: int | None = None):
        """Second stage: add the top-``k`` ranked numeric pairs as 2-D subnetworks and fine-tune
        the whole model with online marglik (stage-1 hyperparameters as the starting point)."""
        check_fitted(self, "model_", "fit_interactions")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        numeric = self.preprocessor_.numeric_
        table = self.rank_interactions().table
        table = table[table.feature_i.isin(numeric) & table.feature_j.isin(numeric)]
        if table.empty:
            raise ValueError("no pair of numeric features to model: 2-D subnetworks need two numeric features")
        chosen = list(zip(table.feature_i.iloc[:k], table.feature_j.iloc[:k]))
        with self._threads():
            self._fit_pairs(chosen, n_epochs)
        return self

    def _fit_pairs(self, chosen: list[tuple[str, str]], n_epochs: int | None) -> None:
        numeric = self.preprocessor_.numeric_
        self.model_.add_pairs([(numeric.index(a), numeric.index(b)) for a, b in chosen], seed=self._seed)
        self.model_.to(self.device_)
        x_num, x_cat, y_t = self._train
        n_epochs = n_epochs or self.n_epochs_interactions or max(self.schedule_["n_epochs"] // 2, 2)
        result = train_marglik(
            self.model_, x_num, x_cat, y_t, self.likelihood_, stage="interactions",
            **{**self._train_kwargs(n_epochs), "init_log_prior": self.log_prior_,
               "sigma": float(self.log_sigma_.exp()) if self.log_sigma_ is not None else 1.0},
        )
        self.interaction_pairs_ = chosen
        self._set_posterior(result, history=self._history_records)

    # ------------------------------------------------------------------ predictive
    @torch.no_grad()
    def _predictive(self, X, pred_type: str = "glm") -> tuple[np.ndarray, np.ndarray]:
        """Predictive in model units: mean (N, K) and output variance diag (N, K); ``pred_type``
        ``"glm"`` (linearised Laplace) or ``"map"`` (the MAP network, variance 0)."""
        check_fitted(self, "model_", "predict")
        if pred_type not in PRED_TYPES:
            raise ValueError(f"pred_type must be one of {PRED_TYPES}, got {pred_type!r}")
        x_num, x_cat = self._tensors(X, torch.float64)
        with self._threads():
            if pred_type == "map":
                model = self._predict_model()
                mean = torch.cat([model(x_num[i : i + ROWS], x_cat[i : i + ROWS])
                                  for i in range(0, len(x_num), ROWS)]).cpu().numpy()
                mean, var = mean, np.zeros_like(mean)
            else:
                mean, var = self._glm_predictive_tensors(x_num, x_cat)
        bad = ~(np.isfinite(mean).all(1) & np.isfinite(var).all(1))
        if bad.any():  # never a silent NaN: name the rows
            rows = np.flatnonzero(bad)
            raise ValueError(f"the prediction is not finite for row(s) {rows[:10].tolist()} of X: their inputs "
                             "are too far outside the training range for the float32 model")
        return mean, var

    @torch.no_grad()
    def _glm_predictive_tensors(self, x_num, x_cat):
        model = self._predict_model()
        # in row chunks: the (rows, features, hidden) activations stay bounded on big tables
        mean = torch.cat([model(x_num[i : i + ROWS], x_cat[i : i + ROWS]) for i in range(0, len(x_num), ROWS)])
        var = torch.zeros_like(mean)
        chunk = sample_chunk(model)  # bounded Jacobian tensors, whatever the number of features
        for start in range(0, len(mean), chunk):
            sl = slice(start, start + chunk)
            for g, jac in model.jacobians(x_num[sl], x_cat[sl]).items():
                var[sl] += self.posterior_.functional_variance(g, jac).diagonal(dim1=-2, dim2=-1).sum(1)
        return mean.cpu().numpy(), var.cpu().numpy()

    def _output_scale(self) -> float:
        return 1.0


class LaplaceAdditiveRegressor(RegressorMixin, _LaplaceAdditiveBase):
    """LA-NAM regressor: one GELU MLP per numeric feature, a lookup table per categorical feature,
    missing values (NaN) handled natively (a learned missing-value offset with its own prior per
    numeric feature, a ``missing`` level per categorical; see :meth:`shape_functions`),
    a per-subnetwork Laplace posterior (full or KFAC blocks) with layerwise prior precisions and
    noise sigma learned by online marginal likelihood (best-evidence model kept).

    Parameters
    ----------
    n_hidden : hidden units of every feature subnetwork (reference: 64, GELU).
    hessian_structure : ``"full"`` (exact GGN block per subnetwork) or ``"kron"`` (KFAC per layer
        of each MLP subnetwork, as the reference LA-NAM; cheaper, exact log det under the prior).
    n_epochs, lr, batch_size : MAP training (Adam, cosine-decayed learning rate).
    n_epochs_burnin, marglik_frequency, n_hypersteps, lr_hyp : online marglik schedule.
    patience : marglik-based stopping after this many evidence checks without improvement.
        ``None`` / ``"auto"`` values of these adapt to the number of rows
        (:func:`workbench.nam.training.resolve_schedule`: few large batches and no early stopping
        for small tables, a bounded number of 512-batches with stopping for large ones); the
        resolved schedule is ``schedule_`` (and ``batch_size_``).
    prior_precision : initial prior precision of every parameter tensor.
    max_ordinal_levels : numeric columns with at most this many distinct values (and at least two
        rows per value on average) are ordered categoricals (``preprocessor_.dtypes_`` says
        ``"ordinal"``): one table entry per value instead of a continuous shape. 0 switches it off.
    feature_types : ``{column: "numeric" | "ordinal" | "categorical"}`` overrides the choice per column.
    interactions : if > 0, ``fit`` also runs :meth:`fit_interactions` with this many pairs.
    switch_off_threshold : relative importance below which a feature counts as switched off.
    random_state : int seed (or None for fresh entropy) of the initial weights and the minibatch
        order; the global torch RNG is not touched.
    device : ``None`` (CUDA when available, else CPU), a string or a ``torch.device``; the data is
        moved there once per call, results come back as numpy / xarray on the CPU (``device_``).
    n_threads : torch threads during fit / predict (None: torch's global setting).
    progress : tqdm progress bar.
    callback : ``callback(progress)`` gets a :class:`workbench.progress.Progress` after every epoch
        (``done``/``total``: epochs of the stage, ``stage``: "main effects" or "interactions",
        ``metrics``: loss, log_marglik, ...); returning ``True`` stops that stage early. Callbacks
        that index it like the old per-epoch dict keep working one release (FutureWarning).
    """

    _likelihood_family = "regression"

    def _encode_target(self, y):
        self.y_mean_, self.y_scale_ = _stats(y)  # exact for any float64 magnitude
        return (y - self.y_mean_) / self.y_scale_, "regression", 1

    def _output_scale(self) -> float:
        return self.y_scale_

    @property
    def sigma_(self) -> float:
        """Learned observation-noise std in target units."""
        return float(self.log_sigma_.exp()) * self.y_scale_

    def predict(self, X, return_std: bool = False, pred_type: str = "glm"):
        """Posterior-predictive mean; with ``return_std`` also the predictive std (GLM + noise).
        ``pred_type="map"``: the MAP network, whose std is the noise alone (for comparison)."""
        mean, var = self._predictive(X, pred_type)
        mu = mean[:, 0] * self.y_scale_ + self.y_mean_
        if not return_std:
            return mu
        std = np.sqrt(var[:, 0] + float(self.log_sigma_.exp()) ** 2) * self.y_scale_
        return mu, std

    def log_predictive_density(self, X, y, pred_type: str = "glm") -> np.ndarray:
        """Per-sample Gaussian log predictive density of ``y`` (``pred_type`` as :meth:`predict`)."""
        mu, std = self.predict(X, return_std=True, pred_type=pred_type)
        y = check_target(y, len(mu), "regression")
        return -0.5 * np.log(2 * np.pi * std**2) - 0.5 * ((y - mu) / std) ** 2


class LaplaceAdditiveClassifier(ClassifierMixin, _LaplaceAdditiveBase):
    """LA-NAM classifier (binary: one logit; multiclass: one logit per class per subnetwork);
    probit-approximated GLM predictive. Parameters as :class:`LaplaceAdditiveRegressor`."""

    _likelihood_family = "classification"

    def _encode_target(self, y):
        from sklearn.utils.multiclass import check_classification_targets

        check_classification_targets(y)  # "Unknown label type: continuous" for float targets
        classes, codes = np.unique(np.asarray(y), return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y has {len(classes)} class ({classes.tolist()}); a classifier needs at least 2")
        if len(classes) > max(2, len(y) // 2):
            raise ValueError(
                f"y has {len(classes)} distinct values for {len(y)} samples; is this a regression target?"
            )
        self.classes_ = classes
        if len(classes) == 2:
            return codes.astype(np.float64), "binary", 1
        return codes, "multiclass", len(classes)

    def predict_proba(self, X, pred_type: str = "glm") -> np.ndarray:
        """Class probabilities (N, C) with the probit approximation of the GLM predictive;
        ``pred_type="map"``: the MAP network's probabilities (no posterior averaging)."""
        mean, var = self._predictive(X, pred_type)
        z = mean / np.sqrt(1.0 + np.pi / 8.0 * var)
        if self.likelihood_ == "binary":
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1 - p, p], axis=1)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def predict(self, X, pred_type: str = "glm") -> np.ndarray:
        """The most probable class, as a label of ``classes_``."""
        check_fitted(self, "model_", "predict")
        return self.classes_[np.argmax(self.predict_proba(X, pred_type), axis=1)]

    def log_predictive_density(self, X, y, pred_type: str = "glm") -> np.ndarray:
        """Per-sample log predictive probability of the true class (``pred_type`` as
        :meth:`predict_proba`)."""
        proba = self.predict_proba(X, pred_type)
        y = check_target(y, len(proba), "classification")
        try:
            idx = np.searchsorted(self.classes_, y)
            unseen = (idx >= len(self.classes_)) | (self.classes_[np.minimum(idx, len(self.classes_) - 1)] != y)
        except TypeError:  # labels that do not even compare with the classes
            unseen = np.ones(len(y), dtype=bool)
        if unseen.any():
            raise ValueError(f"y has labels not seen in fit {sorted(map(str, set(y[unseen].tolist())))[:5]} "
                             f"in rows {_rows(unseen)}; known classes: {self.classes_.tolist()}")
        return np.log(np.clip(proba[np.arange(len(y)), idx], 1e-300, None))


def _history_dataset(records: list[dict]) -> xr.Dataset:
    """Training history over the epoch dim (both stages concatenated)."""
    if not records:
        return xr.Dataset()
    df = pd.DataFrame(records)
    df.index = pd.RangeIndex(len(df), name="epoch")
    return xr.Dataset.from_dataframe(df)
