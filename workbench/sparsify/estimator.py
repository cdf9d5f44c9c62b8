"""scikit-learn style estimator: train with a (learned) prior, score, prune, evaluate."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .criteria import CRITERIA, score_parameters
from .flops import count_flops, count_parameters
from .masks import PruningMask, check_sparsity, global_prune
from .metrics import evaluate
from .models import mlp, prunable_parameters, small_cnn
from .structured import shrink, structured_prune
from .training import PRIORS, finetune, fit_laplace, train_map, train_spam

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
        return evaluate(self.model, X, y)


class SpaM:
    """Sparsifiable classifier trained with a marglik-learned sparsity-inducing prior.

    Parameters
    ----------
    model : nn.Module or None
        Network mapping inputs to logits; ``None`` builds the default for the input shape
        (a 2x64 ReLU MLP for tables, a small CNN for 1x8x8 images) at ``fit``.
    prior : "map" | "scalar" | "layerwise" | "unitwise" | "diagonal"
        ``"map"``: fixed weight decay ``prior_precision`` (baseline, post-hoc Laplace for OPD);
        otherwise the prior structure learned by online marglik training.
    hessian_structure : "kron" | "diag"
    """

    def __init__(self, model: nn.Module | None = None, prior: str = "diagonal",
                 hessian_structure: str = "kron", n_epochs: int = 100, lr: float = 1e-2,
                 batch_size: int = 64, prior_precision: float = 1.0, n_epochs_burnin: int = 10,
                 marglik_frequency: int = 5, n_hypersteps: int = 50, lr_hyp: float = 0.1,
                 seed: int = 0, progress: bool = False):
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
        self.seed = seed
        self.progress = progress

    # ------------------------------------------------------------------------------------
    def _validate_xy(self, X, y):
        X = torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X)
        y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y)
        if not X.is_floating_point():
            X = X.float()
        if X.dim() < 2:
            raise ValueError(f"X must be (n_samples, ...) with features, got shape {tuple(X.shape)}")
        if y.dim() != 1 or len(y) != len(X):
            raise ValueError(f"y must be 1-d with len(X)={len(X)} entries, got shape {tuple(y.shape)}")
        return X, y.long()

    def _loader(self, X, y, shuffle):
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(TensorDataset(X, y), batch_size=self.batch_size, shuffle=shuffle,
                          generator=g)

    def fit(self, X, y):
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; known: {PRIORS}")
        if self.hessian_structure not in ("kron", "diag", "full"):
            raise ValueError(f"hessian_structure must be 'kron', 'diag' or 'full', got "
                             f"{self.hessian_structure!r}")
        X, y = self._validate_xy(X, y)
        n_classes = int(y.max()) + 1
        if self.model is None:
            torch.manual_seed(self.seed)
            if X.dim() == 2:
                model = mlp(X.shape[1], n_classes)
            elif X.dim() == 4 and tuple(X.shape[1:]) == (1, 8, 8):
                model = small_cnn(n_classes)
            else:
                raise ValueError(f"no default model for inputs shaped {tuple(X.shape[1:])}; "
                                 "pass model=")
            model = model.to(X.dtype)
        else:
            model = copy.deepcopy(self.model)
        prunable_parameters(model)  # raises early for a model with nothing to prune
        torch.manual_seed(self.seed)
        loader = self._loader(X, y, shuffle=True)
        if self.prior == "map":
            self.model_ = train_map(model, loader, self.n_epochs, self.lr, self.prior_precision,
                                    progress=self.progress)
            self.la_, self.history_ = None, None
        else:
            self.model_, self.la_, self.history_ = train_spam(
                model, loader, self.prior, self.hessian_structure, n_epochs=self.n_epochs,
                lr=self.lr, n_epochs_burnin=self.n_epochs_burnin,
                marglik_frequency=self.marglik_frequency, n_hypersteps=self.n_hypersteps,
                lr_hyp=self.lr_hyp, progress=self.progress)
        self.X_train_, self.y_train_ = X, y
        return self

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise RuntimeError("this SpaM is not fitted yet: call fit(X, y) first")

    @property
    def laplace_(self):
        """The fitted Laplace (post hoc with the weight-decay prior for ``prior='map'``)."""
        self._check_fitted()
        if self.la_ is None:
            self.la_ = fit_laplace(self.model_, self._loader(self.X_train_, self.y_train_, False),
                                   self.hessian_structure, self.prior_precision)
        return self.la_

    def prior_precision_diag(self) -> torch.Tensor:
        """Per-parameter prior precision (learned, or the fixed one for ``map``)."""
        self._check_fitted()
        if self.la_ is None:
            n = sum(p.numel() for p in self.model_.parameters())
            return torch.full((n,), float(self.prior_precision), dtype=torch.float64)
        return torch.as_tensor(self.la_.prior_precision_diag).detach().double().reshape(-1)

    def _finetune_prior(self):
        """The prior of training: fixed weight decay, or the learned per-parameter precisions."""
        if self.prior == "map" or self.la_ is None:
            return float(self.prior_precision)
        diag = self.prior_precision_diag()
        sl = self.la_.param_slices
        return {n: diag[sl[n]].reshape(p.shape) for n, p in self.model_.named_parameters()}

    def scores(self, criterion: str = "opd", seed: int | None = None) -> dict[str, torch.Tensor]:
        """Per-parameter importances of the fitted network's prunable weights."""
        self._check_fitted()
        if criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; known: {sorted(CRITERIA)}")
        crit = CRITERIA[criterion]
        la = self.laplace_ if crit.needs_laplace else None
        loader = self._loader(self.X_train_, self.y_train_, False) if crit.needs_data else None
        return score_parameters(self.model_, criterion, la=la, loader=loader,
                                seed=self.seed if seed is None else seed)

    def prune(self, sparsity: float, criterion: str = "opd", structured: bool = False,
              finetune_epochs: int = 0, finetune_lr: float = 1e-3, scores=None) -> PrunedNetwork:
        """One-shot global (or per-layer structured) pruning, optional masked fine-tuning."""
        self._check_fitted()
        s = check_sparsity(sparsity)
        if scores is None:
            scores = self.scores(criterion)
        example = self.X_train_[:1]
        if structured:
            masked, mask, keep = structured_prune(self.model_, scores, s, example)
        else:
            mask = global_prune(scores, s)
            masked, keep = mask.apply(copy.deepcopy(self.model_)), None
        if finetune_epochs:
            finetune(masked, mask, self._loader(self.X_train_, self.y_train_, True),
                     finetune_epochs, finetune_lr, self._finetune_prior())
        weights = prunable_parameters(masked)
        layer_sp = {k[: -len(".weight")]: float((w == 0).double().mean()) for k, w in weights.items()}
        if structured:
            model = shrink(masked, keep, example)
            n_params, flops = count_parameters(model, sparse=False), count_flops(model, example, sparse=False)
        else:
            model = masked
            n_params, flops = count_parameters(model, sparse=True), count_flops(model, example, sparse=True)
        return PrunedNetwork(model, masked, mask, s, criterion, structured, n_params, flops,
                             layer_sp, keep)

    # ------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, X) -> np.ndarray:
        self._check_fitted()
        X = torch.as_tensor(X, dtype=self.X_train_.dtype)
        self.model_.eval()
        return self.model_(X).softmax(-1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(1)

    def score(self, X, y) -> float:
        return float((self.predict(X) == np.asarray(y)).mean())
