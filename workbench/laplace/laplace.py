"""The ``Laplace`` class: a linearised Laplace approximation of any ``nn.Module``.

Internals run on ``torch.func`` and module hooks; no BackPACK / ASDL / curvlinops. See
``posteriors`` for the block structures, ``priors`` for prior structures and ``marglik`` for the
evidence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import marglik as _marglik
from . import predictive as _pred
from ._validation import (
    CURVATURES,
    HESSIAN_STRUCTURES,
    KFAC_FALLBACKS,
    KFAC_FLAVOURS,
    PRIOR_STRUCTURES,
    SUBSETS,
    NotFittedError,
    check_choice,
    positive_tensor,
)
from .fitting import fit_curvature, plan_blocks
from .gridsearch import gridsearch_prior_precision
from .likelihoods import get_likelihood
from .params import build_spec, last_layer_names
from .posteriors import Scale, block_from_state
from .priors import PriorLayout


class Laplace:
    """Laplace approximation ``N(θ*, P⁻¹)`` with ``P = GGN/(σ²T) + P0`` around the MAP ``θ*``.

    Parameters
    ----------
    model : nn.Module returning (N, K) (or (N, ..., K) for per-position likelihoods)
    likelihood : "regression" | "classification" | "binary" | "heteroscedastic"
    subset_of_weights : "all" | "last_layer" (the last module with parameters in execution order)
    hessian_structure : "full" | "diag" | "kron"
    prior_precision : float or tensor of shape ``(n_hyper,)`` for ``prior_structure``
    prior_structure : "scalar" | "layerwise" | "unitwise" | "diagonal" | "group"
    prior_mean : float or tensor (P,)
    sigma_noise : observation noise std for regression (scalar, or one per output)
    temperature : likelihood tempering T (curvature and log-likelihood scaled by 1/T)
    curvature : "ggn" (exact generalised Gauss-Newton) | "ef" (empirical Fisher)
    kfac : "expand" | "reduce" flavour for layers with weight sharing
    param_groups : {group: [param names]} -> block-diagonal posterior, one block (set) per group;
        selected parameters not in any group form the group "other"
    group_structure : {group: "full" | "kron" | "diag"}, defaults to ``hessian_structure``
    params : optional list of parameter names the Laplace covers (others stay fixed)
    kfac_fallback : "diag" (parameters of modules KFAC does not support get an exact diagonal
        block, with a warning) | "error"
    chunk_budget : max numbers materialised at once for per-sample Jacobians
    """

    def __init__(
        self,
        model,
        likelihood,
        subset_of_weights="all",
        hessian_structure="full",
        prior_precision=1.0,
        prior_structure="scalar",
        prior_mean=0.0,
        sigma_noise=1.0,
        temperature=1.0,
        curvature="ggn",
        kfac="expand",
        param_groups=None,
        group_structure=None,
        params=None,
        kfac_fallback="diag",
        chunk_budget=2**25,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.likelihood = likelihood
        self.lik_ = get_likelihood(likelihood)
        self.subset_of_weights = check_choice("subset_of_weights", subset_of_weights, SUBSETS)
        self.hessian_structure = check_choice(
            "hessian_structure", hessian_structure, HESSIAN_STRUCTURES
        )
        self.prior_structure = check_choice("prior_structure", prior_structure, PRIOR_STRUCTURES)
        self.curvature = check_choice("curvature", curvature, CURVATURES)
        self.kfac = check_choice("kfac", kfac, KFAC_FLAVOURS)
        self.kfac_fallback = check_choice("kfac_fallback", kfac_fallback, KFAC_FALLBACKS)
        if group_structure:
            for g, s in group_structure.items():
                check_choice(f"group_structure[{g!r}]", s, HESSIAN_STRUCTURES)
        if prior_structure == "group" and not param_groups:
            raise ValueError("prior_structure='group' needs param_groups={'name': [param names]}")
        if params is not None and subset_of_weights == "last_layer":
            raise ValueError("pass either params=... or subset_of_weights='last_layer', not both")
        self.param_groups = param_groups
        self.group_structure = group_structure
        self.params = params
        self.temperature = float(temperature)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.chunk_budget = int(chunk_budget)
        self._init_prior_precision = prior_precision
        self._init_prior_mean = prior_mean
        ref = next(model.parameters(), None)
        if ref is None:
            raise ValueError("model has no parameters")
        self._sigma = positive_tensor("sigma_noise", sigma_noise, ref).detach()
        if self._sigma.ndim > 1:
            raise ValueError(
                f"sigma_noise must be a scalar or a 1-D tensor (one per output), got shape {tuple(self._sigma.shape)}"
            )
        self._fitted = False
        self.spec_ = None

    # ------------------------------------------------------------------ set-up
    def _ref(self):
        return next(self.model.parameters())

    def _setup(self, first_X=None):
        model = self.model
        if self.subset_of_weights == "last_layer":
            if first_X is None:
                raise NotFittedError(
                    "last-layer Laplace needs data to find the last layer: call fit first"
                )
            names = last_layer_names(model, first_X)
        else:
            names = self.params
        spec = build_spec(model, names)
        groups = self._groups(spec)
        structures = {
            g: (self.group_structure or {}).get(g, self.hessian_structure) for g in groups
        }
        self.spec_ = spec
        self.groups_ = groups
        self.plans_ = plan_blocks(spec, groups, structures, self.kfac_fallback)
        self.layout_ = PriorLayout(
            self.prior_structure, spec, groups if self.param_groups else None, model
        )
        ref = self._ref()
        if (
            not hasattr(self, "_prior_prec")
            or self._prior_prec is None
            or self._prior_prec.shape != self.layout_.expected_shape
        ):
            self._prior_prec = self.layout_.init(self._init_prior_precision, ref).detach()
        pm = torch.as_tensor(self._init_prior_mean, dtype=ref.dtype, device=ref.device)
        if pm.ndim > 0 and tuple(pm.shape) != (spec.P,):
            raise ValueError(f"prior_mean has shape {tuple(pm.shape)}, expected () or ({spec.P},)")
        self.prior_mean = pm.expand(spec.P).clone()

    def _groups(self, spec):
        if not self.param_groups:
            return {"all": list(spec.names)}
        sel = set(spec.names)
        seen, groups = {}, {}
        for g, names in self.param_groups.items():
            if isinstance(names, str):
                raise TypeError(
                    f"param_groups[{g!r}] must be a list of parameter names, got a string"
                )
            bad = [n for n in names if n not in sel]
            if bad:
                raise ValueError(
                    f"param_groups[{g!r}] names parameters not covered by the Laplace: {bad}"
                )
            for n in names:
                if n in seen:
                    raise ValueError(f"parameter {n!r} is in param groups {seen[n]!r} and {g!r}")
                seen[n] = g
            groups[g] = [n for n in spec.names if n in set(names)]
        other = [n for n in spec.names if n not in seen]
        if other:
            groups["other"] = other
        if self.group_structure:
            unknown = set(self.group_structure) - set(groups)
            if unknown:
                raise ValueError(
                    f"group_structure names unknown groups {sorted(unknown)}; groups are {list(groups)}"
                )
        return groups

    def _check_fitted(self, what="this"):
        if not self._fitted:
            raise NotFittedError(f"Laplace is not fitted: call la.fit(train_loader) before {what}")

    # ------------------------------------------------------------------ fit
    def fit(self, train_loader, create_graph=False, progress=False, override=True):
        """Fit the curvature on ``train_loader`` (an iterable of (X, y), e.g. a DataLoader, a list
        of batches, or one ``(X, y)`` tuple of tensors); returns self.

        ``override=False`` (continual fitting) adds this loader's curvature, log-likelihood and
        data count to those of the previous fits instead of replacing them: the result equals one
        fit on all loaders together (KFAC included), with the MAP at the model's current parameters.

        The model is put in eval mode while the curvature is computed (its mode is restored);
        the MAP is the model's current parameters. ``create_graph=True`` keeps the autograd graph
        of the curvature and log-likelihood so that the log marginal likelihood is
        differentiable w.r.t. quantities that enter the network (e.g. augmentation parameters
        not covered by the Laplace, see ``params``).
        """
        if (
            isinstance(train_loader, tuple)
            and len(train_loader) == 2
            and all(isinstance(t, torch.Tensor) for t in train_loader)
        ):
            train_loader = [train_loader]
        first = next(iter(train_loader), None)
        if first is None:
            raise ValueError("train_loader is empty")
        X0 = first[0] if isinstance(first, (tuple, list)) else None
        if X0 is not None and isinstance(X0, torch.Tensor) and X0.is_floating_point():
            X0 = X0.to(device=self._ref().device, dtype=self._ref().dtype)
        if (
            not override
            and self._fitted
            and self.comps_
            and not torch.equal(self._sigma, self._sigma_fit)
        ):
            raise ValueError(
                "fit(override=False) with a per-output sigma_noise that changed: refit all"
            )
        was_training = self.model.training
        self.model.eval()
        try:
            self._setup(X0)
            self._sigma = self._sigma.to(self._ref())
            self._sigma_fit = self._sigma.clone()
            self.comps_ = self._comps_mode()
            blocks, stats, n_data, out_shape = fit_curvature(
                self, train_loader, create_graph, progress
            )
        finally:
            self.model.train(was_training)
        if not override and self._fitted:
            blocks, stats, n_data = self._accumulate(blocks, stats, n_data)
        self.blocks_ = blocks
        self.loglik_stats_ = stats
        self.n_data = n_data
        self.output_shape_ = out_shape
        self.create_graph_ = bool(create_graph)
        params = dict(self.model.named_parameters())
        self._mean = torch.cat([params[n].detach().reshape(-1) for n in self.spec_.names])
        self._hstats = None
        self._fitted = True
        return self

    def _accumulate(self, blocks, stats, n_data):
        """Previous fit + this one (``fit(..., override=False)``)."""
        if len(blocks) != len(self.blocks_) or any(
            a.kind != b.kind or not torch.equal(a.idx, b.idx) for a, b in zip(self.blocks_, blocks)
        ):
            raise ValueError("fit(override=False): the posterior blocks changed since the last fit")
        merged = {k: self.loglik_stats_[k] + v if v is not None else None for k, v in stats.items()}
        return [a.merge(b) for a, b in zip(self.blocks_, blocks)], merged, self.n_data + n_data

    def _comps_mode(self):
        """Regression GGN with one σ per output: full/diag blocks are stored per output."""
        return (
            self.lik_.has_sigma
            and self.curvature == "ggn"
            and self._sigma.ndim == 1
            and self._sigma.numel() > 1
        )

    def _sigma_curv(self):
        """σ used inside the curvature: None (unit, rescaled later) for scalar σ, else per output."""
        if self.lik_.has_sigma and self._sigma.ndim == 1 and self._sigma.numel() > 1:
            return self._sigma
        return None

    # ------------------------------------------------------------------ hyperparameters
    @property
    def prior_precision(self):
        return self._prior_prec

    @prior_precision.setter
    def prior_precision(self, value):
        ref = self._ref()
        if self.spec_ is None:
            self._init_prior_precision = value
            return
        self._prior_prec = self.layout_.init(value, ref)
        for b in getattr(self, "blocks_", []):
            b.invalidate()

    @property
    def prior_mean(self):
        return self._prior_mean

    @prior_mean.setter
    def prior_mean(self, value):
        self._prior_mean = value
        self._hstats = None

    @property
    def sigma_noise(self):
        return self._sigma

    @sigma_noise.setter
    def sigma_noise(self, value):
        s = positive_tensor("sigma_noise", value, self._ref())
        if self._fitted and self._sigma_curv() is not None and s.shape != self._sigma.shape:
            raise ValueError(
                f"sigma_noise has shape {tuple(s.shape)}, expected {tuple(self._sigma.shape)}"
            )
        self._sigma = s
        for b in getattr(self, "blocks_", []):
            b.invalidate()

    def _lik_scale(self, sigma):
        """Likelihood factor s multiplying the stored curvature."""
        T = self.temperature
        if not self.lik_.has_sigma:
            return 1.0 / T
        if getattr(self, "comps_", False):
            K = self._sigma_fit.numel()
            per_out = 1.0 / ((sigma.reshape(-1).expand(K)) ** 2 * T)
            return Scale(lambda: self._proportional_scale(sigma), per_out)
        return self._proportional_scale(sigma)

    def _proportional_scale(self, sigma):
        T = self.temperature
        if self._sigma_curv() is None and not getattr(self, "comps_", False):
            if sigma.numel() > 1:
                raise ValueError(
                    "sigma_noise was a scalar at fit time; refit with a per-output sigma_noise to use one"
                )
            sig = sigma.reshape(())
        else:
            ratio = sigma / self._sigma_fit
            sig = ratio.mean()
            if not torch.allclose(ratio, sig.expand_as(ratio), rtol=1e-6, atol=0):
                raise ValueError(
                    "per-output sigma_noise: KFAC / empirical-Fisher curvature keeps the fit-time sigma "
                    "inside its factors, so only a common rescaling of it is exact -- refit the Laplace "
                    "with the new sigma_noise, or use hessian_structure='full'/'diag' (stored per output)"
                )
        p = 4 if self.curvature == "ef" else 2
        return 1.0 / (sig**p * T)

    def _loglik(self, sigma):
        st = self.loglik_stats_
        if not self.lik_.has_sigma:
            return st["ll"] / self.temperature
        K = st["sse"].shape[0]
        var = (sigma**2).expand(K) if sigma.numel() == 1 else sigma**2
        n_pos = st["n_obs"]
        ll = -0.5 * (st["sse"] / var).sum() - 0.5 * n_pos * torch.log(2 * math.pi * var).sum()
        return ll / self.temperature

    # ------------------------------------------------------------------ read-outs
    @property
    def mean(self):
        self._check_fitted("reading la.mean")
        return self._mean

    @property
    def param_names(self):
        self._check_fitted("reading param_names")
        return list(self.spec_.names)

    @property
    def param_slices(self):
        self._check_fitted("reading param_slices")
        return dict(self.spec_.slices)

    @property
    def prior_precision_diag(self):
        self._check_fitted("reading prior_precision_diag")
        return self.layout_.to_diag(self._prior_prec)

    @property
    def prior_labels(self):
        self._check_fitted("reading prior_labels")
        return list(self.layout_.labels)

    @property
    def n_params(self):
        self._check_fitted()
        return self.spec_.P

    def _hyper_stats(self):
        """(Σ (θ-μ0)², number of parameters) per hyperparameter; cached until the next fit."""
        st = getattr(self, "_hstats", None)
        if st is None:
            delta2 = (self._mean - self.prior_mean) ** 2
            st = (self.layout_.hyper_sums(delta2), self.layout_.hyper_sums(torch.ones_like(delta2)))
            self._hstats = st
        return st

    def _block_priors(self, prior_precision=None):
        prec = self._prior_prec if prior_precision is None else prior_precision
        diag = self.layout_.to_diag(prec)
        return [self.layout_.block_prior(prec, diag, b) for b in self.blocks_]

    def posterior_precision_diagonal(self):
        """Diagonal of the posterior precision (P,) (for KFAC: of the Kronecker product plus prior)."""
        self._check_fitted("posterior_precision_diagonal()")
        s = self._lik_scale(self._sigma)
        out = self._mean.new_zeros(self.spec_.P)
        for b, bp in zip(self.blocks_, self._block_priors()):
            out[b.idx] = b.precision_diag(s, bp).detach()
        return out

    def effective_dimensions(self):
        """{param name: Σ sλ/(sλ+δ)} over the eigenvalues of that tensor's curvature block.

        For priors that are not constant on a tensor, δ is the prior's diagonal in the curvature
        eigenbasis (exact for constant priors)."""
        self._check_fitted("effective_dimensions()")
        s = self._lik_scale(self._sigma)
        out = {}
        for b, bp in zip(self.blocks_, self._block_priors()):
            pos = {int(g): i for i, g in enumerate(b.idx.tolist())}
            for n in b.names:
                sl = self.spec_.slices[n]
                sub = torch.tensor([pos[g] for g in range(sl.start, sl.stop)], device=b.idx.device)
                out[n] = float(b.eff_dims(s, bp, sub))
        return out

    def describe_blocks(self):
        """One dict per posterior block: group, kind (full/diag/kron), module, params, size."""
        self._check_fitted("describe_blocks()")
        return [
            {
                "group": p["group"],
                "kind": b.kind,
                "module": p.get("module", ""),
                "params": list(b.names),
                "size": b.d,
            }
            for p, b in zip(self.plans_, self.blocks_)
        ]

    def group_of(self, name):
        for g, ns in self.groups_.items():
            if name in ns:
                return g
        raise KeyError(name)

    # ------------------------------------------------------------------ evidence
    def log_marginal_likelihood(self, prior_precision=None, sigma_noise=None):
        """Laplace log evidence (scalar tensor), differentiable w.r.t. the passed hyperparameters."""
        self._check_fitted("log_marginal_likelihood()")
        return _marglik.log_marginal_likelihood(self, prior_precision, sigma_noise)

    def evidence_terms(self, prior_precision=None, sigma_noise=None):
        """{log_likelihood, log_det_posterior_precision, log_det_prior_precision, scatter}: the
        evidence is ``log_likelihood - ½ (log_det_posterior - log_det_prior + scatter)``."""
        self._check_fitted("evidence_terms()")
        return _marglik.evidence_terms(self, prior_precision, sigma_noise)

    def set_prior(self, prior_precision, prior_structure=None):
        """Set the prior precision, optionally with a new ``prior_structure``; no refit needed
        (the curvature does not depend on the prior). Returns self."""
        if prior_structure is not None and prior_structure != self.prior_structure:
            self.prior_structure = check_choice(
                "prior_structure", prior_structure, PRIOR_STRUCTURES
            )
            if self.spec_ is not None:
                groups = self.groups_ if self.param_groups else None
                self.layout_ = PriorLayout(prior_structure, self.spec_, groups, self.model)
                self._prior_prec, self._hstats = None, None
        self.prior_precision = prior_precision
        return self

    def optimize_prior_precision(
        self, method="marglik", n_steps=100, lr=0.1, optimize_sigma=False, progress=False, **kwargs
    ):
        """``method="marglik"``: maximise the evidence w.r.t. log prior precision (and log σ if
        ``optimize_sigma``); returns the evidence per step. ``method="gridsearch"``: minimise a
        validation loss over a grid (``val_loader=`` or ``cv=K, train_loader=``; further keywords
        of :func:`workbench.laplace.gridsearch.gridsearch_prior_precision`); returns its Dataset."""
        self._check_fitted("optimize_prior_precision()")
        check_choice("method", method, ("marglik", "gridsearch"))
        if method == "gridsearch":
            return gridsearch_prior_precision(self, progress=progress, **kwargs)
        if kwargs:
            raise TypeError(f"method='marglik' got unexpected keyword arguments {sorted(kwargs)}")
        return _marglik.optimize_prior_precision(
            self, method, n_steps, lr, optimize_sigma, progress
        )

    # ------------------------------------------------------------------ predictive
    def __call__(
        self, x, pred_type="glm", link_approx="probit", n_samples=100, generator=None, joint=False
    ):
        """Predictive at inputs x. Regression: (f_mu (N, K), f_var (N, K, K)), or with
        ``joint=True`` the covariance across the batch (N, K, N, K); classification / binary:
        probabilities by ``link_approx`` "probit" | "mc" | "bridge" | "bridge_norm"."""
        self._check_fitted("predicting")
        return _pred.predict(self, x, pred_type, link_approx, n_samples, generator, joint)

    def functional_covariance(self, x):
        """Joint J Σ Jᵀ over the batch x: (N, K, N, K) (cross-input covariances included)."""
        self._check_fitted("functional_covariance()")
        return _pred.functional_covariance(self, x)

    def functional_variance(self, x, group=None):
        """J Σ Jᵀ (N, K, K) at inputs x; ``group`` restricts to that parameter group's block."""
        self._check_fitted("functional_variance()")
        return _pred.functional_variance(self, x, group)

    def predictive_samples(self, x, n_samples=100, pred_type="glm", generator=None):
        """Samples (n_samples, N, K) of the predictive: function values for regression, raw outputs
        (f1, f2) for heteroscedastic, probabilities for classification / binary."""
        self._check_fitted("predictive_samples()")
        return _pred.predictive_samples(self, x, n_samples, pred_type, generator)

    def sample(self, n_samples=100, generator=None):
        """Parameter samples (n_samples, P) from the Laplace posterior."""
        self._check_fitted("sample()")
        return _pred.sample_params(self, n_samples, generator)

    def posterior_precision(self, group=None):
        """Dense posterior precision (P, P) (or of one group's parameters); small models only."""
        self._check_fitted("posterior_precision()")
        return _pred.dense_precision(self, group)

    def posterior_covariance(self, group=None):
        """Dense posterior covariance (P, P) (or of one group's parameters); small models only."""
        self._check_fitted("posterior_covariance()")
        return _pred.dense_covariance(self, group)

    # ------------------------------------------------------------------ state
    def state_dict(self):
        self._check_fitted("state_dict()")
        det = lambda t: t.detach() if isinstance(t, torch.Tensor) else t  # noqa: E731
        return {
            "config": {
                "likelihood": self.lik_.name,
                "subset_of_weights": self.subset_of_weights,
                "hessian_structure": self.hessian_structure,
                "prior_structure": self.prior_structure,
                "curvature": self.curvature,
                "kfac": self.kfac,
                "temperature": self.temperature,
                "param_groups": self.param_groups,
                "group_structure": self.group_structure,
            },
            "param_names": list(self.spec_.names),
            "mean": self._mean.detach(),
            "prior_precision": self._prior_prec.detach(),
            "prior_mean": self.prior_mean.detach(),
            "sigma_noise": self._sigma.detach(),
            "sigma_fit": self._sigma_fit.detach(),
            "n_data": self.n_data,
            "output_shape": self.output_shape_,
            "loglik_stats": {k: det(v) for k, v in self.loglik_stats_.items()},
            "blocks": [{k: det(v) for k, v in b.state().items()} for b in self.blocks_],
        }

    def load_state_dict(self, state):
        cfg = state["config"]
        for key in (
            "likelihood",
            "hessian_structure",
            "prior_structure",
            "curvature",
            "kfac",
            "subset_of_weights",
        ):
            mine = self.lik_.name if key == "likelihood" else getattr(self, key)
            if cfg[key] != mine:
                raise ValueError(
                    f"state_dict was saved with {key}={cfg[key]!r}, this Laplace has {mine!r}"
                )
        ref = self._ref()
        if self.subset_of_weights == "last_layer":
            self.params, restore = state["param_names"], True
            self.subset_of_weights = "all"
        else:
            restore = False
        try:
            self._setup(None)
        finally:
            if restore:
                self.subset_of_weights, self.params = "last_layer", None
        if list(self.spec_.names) != list(state["param_names"]):
            raise ValueError("state_dict parameters do not match this model's selected parameters")
        to = lambda t: t.to(device=ref.device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        self._mean = to(state["mean"])
        self._prior_prec = self.layout_.check(to(state["prior_precision"]))
        self.prior_mean = to(state["prior_mean"])
        self._hstats = None
        self._sigma = to(state["sigma_noise"])
        self._sigma_fit = to(state["sigma_fit"])
        self.n_data = state["n_data"]
        self.output_shape_ = state["output_shape"]
        self.loglik_stats_ = {k: to(v) for k, v in state["loglik_stats"].items()}
        self.blocks_ = [block_from_state({k: to(v) for k, v in b.items()}) for b in state["blocks"]]
        self.create_graph_ = False
        self.comps_ = self._comps_mode()
        self._fitted = True
        return self

    def __repr__(self):
        fitted = f", P={self.spec_.P}" if self._fitted else ""
        return (
            f"Laplace(likelihood={self.lik_.name!r}, subset_of_weights={self.subset_of_weights!r}, "
            f"hessian_structure={self.hessian_structure!r}, prior_structure={self.prior_structure!r}{fitted})"
        )
