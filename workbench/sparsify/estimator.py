"""SpaM, the estimator of :mod:`workbench.sparsify`: train with a (learned) prior, score, prune."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from workbench._deprecation import renamed_arguments, warn_renamed
from workbench._torch_utils import (
    batch_loader,
    resolve_device,
    seed_from,
    to_numpy,
    torch_threads,
)
from workbench.exceptions import check_fitted
from workbench.laplace import fit_laplace
from workbench.progress import check_callback

from ._validation import (
    check_inputs,
    check_int,
    check_labels,
    check_positive,
    check_training_data,
    resolve_dtype,
    to_tensor,
)
from .criteria import CRITERIA, score_parameters
from .flops import count_flops, count_parameters
from .masks import PruningMask, check_sparsity, global_prune
from .metrics import score_network
from .models import mlp, prunable_parameters, small_cnn
from .structured import shrink, structured_prune
from .training import PRIORS, finetune, train_map, train_spam

__all__ = ["SpaM", "PrunedNetwork"]


@dataclass
class PrunedNetwork:
    """A pruned network and what it costs.

    ``model`` is what to use for predictions: the masked network (unstructured) or the
    physically shrunk one (structured); ``masked_model`` is always the masked version.
    """

    model: nn.Module
    masked_model: nn.Module
    mask: PruningMask
    sparsity: float
    criterion: str
    structured: bool
    n_params: int
    flops: int
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    keep_units: dict[str, torch.Tensor] | None = None

    def evaluate(self, X, y) -> dict:
        """``{"accuracy", "nll", "ece"}`` of :attr:`model` on ``(X, y)`` (see :func:`score_network`)."""
        return score_network(self.model, X, y)


class SpaM(ClassifierMixin, BaseEstimator):
    """Sparsifiable classifier trained with a marglik-learned sparsity-inducing prior.

    The estimator of :mod:`workbench.sparsify` (a scikit-learn classifier: ``clone``,
    ``get_params``/``set_params`` and grid search work; ``predict`` returns values of
    ``classes_``). After ``fit``, :meth:`scores` ranks the weights under a criterion and
    :meth:`prune` returns a :class:`PrunedNetwork`.

    Parameters
    ----------
    model : nn.Module or None
        Network mapping inputs to one logit per class; ``None`` builds the default for the input
        shape (a 2x64 ReLU MLP for tables, a small CNN for 1x8x8 images) at ``fit``. The module
        passed is copied, never trained in place.
    prior : "map" | "scalar" | "layerwise" | "unitwise" | "diagonal"
        ``"map"``: fixed weight decay ``prior_precision`` (baseline, post-hoc Laplace for OPD);
        otherwise the prior structure learned by online marglik training.
    hessian_structure : "kron" | "diag" | "full"
    n_epochs, lr, batch_size : training (Adam).
    prior_precision : weight decay of ``"map"`` / initial precision of the learned priors (> 0).
    n_epochs_burnin, marglik_frequency, n_hypersteps, lr_hyp : online marglik schedule.
    random_state : int or None; seeds the default network's initialisation, the batch order and
        the ``random`` criterion (the global torch RNG is left untouched).
    n_threads : torch intra-op threads while fitting / predicting (None: unchanged).
    device : None (CUDA when available, else CPU), a string or a ``torch.device``. The data are
        moved there once; results come back as numpy arrays on the CPU.
    dtype : None (the given model's dtype, else float64 for float64 input, else float32),
        ``torch.float32`` / ``torch.float64`` or the names ``"float32"`` / ``"float64"``.
    progress : tqdm bar over the training epochs.
    callback : ``callback(Progress)`` after every training epoch (stage ``"train"``, metrics
        ``loss`` [and ``log_marglik``]); returning True stops training.

    Attributes after ``fit``: ``model_``, ``classes_``, ``n_features_in_``, ``input_shape_``,
    ``la_`` (fitted Laplace; for ``"map"`` built post hoc on first use), ``history_`` (marglik
    history or None), ``device_``, ``dtype_``.
    """

    @renamed_arguments(seed="random_state")
    def __init__(self, model: nn.Module | None = None, prior: str = "diagonal",
                 hessian_structure: str = "kron", n_epochs: int = 100, lr: float = 1e-2,
                 batch_size: int = 64, prior_precision: float = 1.0, n_epochs_burnin: int = 10,
                 marglik_frequency: int = 5, n_hypersteps: int = 50, lr_hyp: float = 0.1,
                 random_state=0, n_threads: int | None = None, device=None, dtype=None,
                 progress: bool = False, callback=None):
        self.model = model
        self.prior = prior
        self.hessian_structure = hessian_structure
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.prior_precision = prior_precision
        self.n_epochs_burnin = n_epochs_burnin
        self.marglik_frequency = marglik_frequency
        self.n_hypersteps = n_hypersteps
        self.lr_hyp = lr_hyp
        self.random_state = random_state
        self.n_threads = n_threads
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.callback = callback

    @property
    def seed(self):
        """Deprecated name of :attr:`random_state`."""
        warn_renamed("SpaM.seed", "SpaM.random_state")
        return self.random_state

    # ------------------------------------------------------------------------------------
    def _check_params(self):
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; known: {PRIORS}")
        if self.hessian_structure not in ("kron", "diag", "full"):
            raise ValueError(f"hessian_structure must be 'kron', 'diag' or 'full', got "
                             f"{self.hessian_structure!r}")
        if self.model is not None and not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a torch nn.Module or None, got "
                            f"{type(self.model).__name__}")
        for name, low in (("n_epochs", 1), ("batch_size", 1), ("n_epochs_burnin", 0),
                          ("marglik_frequency", 1), ("n_hypersteps", 0)):
            check_int(name, getattr(self, name), low)
        for name in ("lr", "lr_hyp", "prior_precision"):
            check_positive(name, getattr(self, name))
        check_callback(self.callback)
        seed = seed_from(self.random_state)
        return resolve_device(self.device), seed

    def _loader(self, shuffle):
        return batch_loader(self.X_train_, self.y_train_, batch_size=self.batch_size,
                            shuffle=shuffle, random_state=self._seed)

    def _network(self, X: torch.Tensor, n_classes: int) -> nn.Module:
        if self.model is not None:
            model = copy.deepcopy(self.model)
        elif X.dim() == 2:
            model = mlp(X.shape[1], n_classes)
        elif tuple(X.shape[1:]) == (1, 8, 8):
            model = small_cnn(n_classes)
        else:
            raise ValueError(f"no default model for inputs shaped {tuple(X.shape[1:])}; pass model=")
        model = model.to(device=X.device, dtype=X.dtype)
        prunable_parameters(model)  # raises early for a model with nothing to prune
        try:
            with torch.no_grad():
                out = model.eval()(X[:1])
        except RuntimeError as err:
            raise ValueError(f"model cannot take inputs shaped {tuple(X.shape[1:])}: {err}") from None
        if tuple(out.shape) != (1, n_classes):
            raise ValueError(f"model maps one input to outputs shaped {tuple(out.shape[1:])}, but y "
                             f"has {n_classes} classes {self.classes_.tolist()}: it must give one "
                             "logit per class")
        return model

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) or images (n_samples, C, H, W) and labels ``y``."""
        device, seed = self._check_params()
        X, y = check_training_data(self, X, y)
        self.classes_, y_idx = check_labels(y)
        dtype = resolve_dtype(self.dtype, self.model, X)
        with torch_threads(self.n_threads), torch.random.fork_rng(devices=[]):
            Xt = to_tensor(X, dtype, device)
            torch.manual_seed(seed)
            model = self._network(Xt, len(self.classes_))
            self.X_train_, self.y_train_ = Xt, torch.as_tensor(y_idx, device=device)
            self._seed, self.device_, self.dtype_ = seed, device, dtype
            torch.manual_seed(seed)
            self._train(model)
        bad = [n for n, p in self.model_.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise ValueError(f"training diverged: parameters {bad} are not finite; lower lr "
                             f"(now {self.lr}) or raise prior_precision")
        return self

    def _train(self, model):
        loader = self._loader(shuffle=True)
        if self.prior == "map":
            self.model_ = train_map(model, loader, self.n_epochs, self.lr, self.prior_precision,
                                    progress=self.progress, callback=self.callback)
            self.la_, self.history_ = None, None
        else:
            self.model_, self.la_, self.history_ = train_spam(
                model, loader, self.prior, self.hessian_structure, n_epochs=self.n_epochs,
                lr=self.lr, n_epochs_burnin=self.n_epochs_burnin,
                marglik_frequency=self.marglik_frequency, n_hypersteps=self.n_hypersteps,
                lr_hyp=self.lr_hyp, progress=self.progress, callback=self.callback)
        self.model_.eval()

    @property
    def laplace_(self):
        """The fitted Laplace (post hoc with the weight-decay prior for ``prior='map'``)."""
        check_fitted(self, "model_", "laplace_")
        if self.la_ is None:
            with torch_threads(self.n_threads):
                self.la_ = fit_laplace(self.model_, self._loader(False), "classification",
                                       hessian_structure=self.hessian_structure,
                                       prior_precision=float(self.prior_precision),
                                       prior_structure="scalar")
        return self.la_

    def prior_precision_diag(self) -> torch.Tensor:
        """Per-parameter prior precision (learned, or the fixed one for ``map``), float64 on CPU."""
        check_fitted(self, "model_", "prior_precision_diag")
        if self.la_ is None:
            n = sum(p.numel() for p in self.model_.parameters())
            return torch.full((n,), float(self.prior_precision), dtype=torch.float64)
        return torch.as_tensor(self.la_.prior_precision_diag).detach().double().cpu().reshape(-1)

    def _finetune_prior(self):
        """The prior of training: fixed weight decay, or the learned per-parameter precisions."""
        if self.prior == "map" or self.la_ is None:
            return float(self.prior_precision)
        diag = self.prior_precision_diag()
        sl = self.la_.param_slices
        return {n: diag[sl[n]].reshape(p.shape) for n, p in self.model_.named_parameters()}

    @renamed_arguments(seed="random_state")
    def scores(self, criterion: str = "opd", random_state=None) -> dict[str, torch.Tensor]:
        """Per-parameter importances of the fitted network's prunable weights.

        ``random_state`` seeds the ``random`` criterion (None: the estimator's)."""
        check_fitted(self, "model_", "scores")
        if criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; known: {sorted(CRITERIA)}")
        crit = CRITERIA[criterion]
        seed = self._seed if random_state is None else seed_from(random_state)
        with torch_threads(self.n_threads):
            la = self.laplace_ if crit.needs_laplace else None
            loader = self._loader(False) if crit.needs_data else None
            return score_parameters(self.model_, criterion, la=la, loader=loader,
                                    random_state=seed)

    def prune(self, sparsity: float, criterion: str = "opd", structured: bool = False,
              finetune_epochs: int = 0, finetune_lr: float = 1e-3, scores=None) -> PrunedNetwork:
        """One-shot global (or per-layer structured) pruning, optional masked fine-tuning."""
        check_fitted(self, "model_", "prune")
        s = check_sparsity(sparsity)
        finetune_epochs = check_int("finetune_epochs", finetune_epochs, 0)
        if finetune_epochs:
            check_positive("finetune_lr", finetune_lr)
        if scores is None:
            scores = self.scores(criterion)
        example = self.X_train_[:1]
        with torch_threads(self.n_threads):
            if structured:
                masked, mask, keep = structured_prune(self.model_, scores, s, example)
            else:
                mask = global_prune(scores, s)
                masked, keep = mask.apply(copy.deepcopy(self.model_)), None
            if finetune_epochs:
                finetune(masked, mask, self._loader(True), finetune_epochs, finetune_lr,
                         self._finetune_prior())
                masked.eval()
            weights = prunable_parameters(masked)
            layer_sp = {k[: -len(".weight")]: float((w == 0).double().mean())
                        for k, w in weights.items()}
            if structured:
                model = shrink(masked, keep, example)
                n_params = count_parameters(model, sparse=False)
                flops = count_flops(model, example, sparse=False)
            else:
                model = masked
                n_params = count_parameters(model, sparse=True)
                flops = count_flops(model, example, sparse=True)
        return PrunedNetwork(model, masked, mask, s, criterion, structured, n_params, flops,
                             layer_sp, keep)

    # ------------------------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) in the order of ``classes_``."""
        check_fitted(self, "model_", "predict_proba")
        X = check_inputs(self, X, reset=False)
        with torch_threads(self.n_threads), torch.no_grad():
            Xt = to_tensor(X, self.dtype_, self.device_)
            self.model_.eval()
            probs = torch.cat([self.model_(Xt[i:i + 4096]).softmax(-1)
                               for i in range(0, len(Xt), 4096)])
        return to_numpy(probs)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row, a value of ``classes_``."""
        check_fitted(self, "model_", "predict")
        return self.classes_[self.predict_proba(X).argmax(1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy on ``(X, y)`` (numpy arrays or tensors)."""
        y = to_numpy(y) if isinstance(y, torch.Tensor) else y
        return float(super().score(X, y, sample_weight=sample_weight))
