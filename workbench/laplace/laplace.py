"""The ``Laplace`` class: a linearised Laplace approximation of any ``nn.Module``.

Internals run on ``torch.func`` and module hooks; no BackPACK / ASDL / curvlinops. ``Laplace``
owns its posterior blocks (``structures``: one class per curvature structure), its prior layout
(``priors``) and the hyperparameters; ``fitting`` feeds the blocks, ``marglik`` and ``predictive``
read a fitted Laplace only through its public methods and the small internal interface below
(``likelihood_scale``, ``block_priors``, ``loglik``, ``hyper_stats``, ``select_blocks``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import marglik as _marglik
from . import predictive as _pred
from ._validation import (
    CURVATURES,
    KFAC_FALLBACKS,
    KFAC_FLAVOURS,
    PRIOR_STRUCTURES,
    SUBSETS,
    NotFittedError,
    check_bool,
    check_choice,
    check_groups,
    check_names,
    check_positive_float,
    check_positive_int,
    check_prior_values,
    positive_tensor,
    prior_mean_vector,
    unpack_batch,
)
from .batches import as_loader, peek, to_model_dtype
from .fitting import fit_curvature, merge_fits
from .gridsearch import gridsearch_prior_precision
from .likelihoods import get_likelihood
from .params import build_spec, last_layer_names, resolve_groups
from .priors import PriorLayout
from .state import laplace_state, load_laplace_state
from .structures import Scale, plan_blocks, structure_names
from .subnetwork import SubnetworkModel, wrap_subnetwork


class Laplace:
    """Laplace approximation ``N(θ*, P⁻¹)`` with ``P = GGN/(σ²T) + P0`` around the MAP ``θ*``.

    Parameters
    ----------
    model : nn.Module returning (N, K) (or (N, ..., K) for per-position likelihoods)
    likelihood : "regression" | "classification" | "binary" | "heteroscedastic"
    subset_of_weights : "all" | "last_layer" (the last module with parameters in execution order)
        | "subnetwork" (the entries ``subnetwork_indices`` of the flat trainable parameter vector;
        ``la.model`` is then a :class:`~.subnetwork.SubnetworkModel` around ``model``)
    hessian_structure : "full" | "diag" | "kron" | "lowrank" (top GGN eigenpairs by Lanczos) |
        "gp" (functional view over context points) (or a structure registered in ``structures``)
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
    structure_options : dict of options for structures that take some: "lowrank" (``rank``,
        ``n_iter``, ``random_state``) and "gp" (``n_context``, ``context_scale``,
        ``likelihood_hessian``, ``random_state``); see :mod:`workbench.laplace.structures.factor`
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
        structure_options=None,
        subnetwork_indices=None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if subset_of_weights == "subnetwork":
            model, params = wrap_subnetwork(model, subnetwork_indices, params, hessian_structure)
        elif subnetwork_indices is not None:
            raise ValueError("subnetwork_indices needs subset_of_weights='subnetwork'")
        self.model = model
        self.likelihood = likelihood
        self.lik_ = get_likelihood(likelihood)
        self.subset_of_weights = check_choice("subset_of_weights", subset_of_weights, SUBSETS)
        self.hessian_structure = check_choice(
            "hessian_structure", hessian_structure, structure_names()
        )
        self.prior_structure = check_choice("prior_structure", prior_structure, PRIOR_STRUCTURES)
        self.curvature = check_choice("curvature", curvature, CURVATURES)
        self.kfac = check_choice("kfac", kfac, KFAC_FLAVOURS)
        self.kfac_fallback = check_choice("kfac_fallback", kfac_fallback, KFAC_FALLBACKS)
        check_groups(param_groups, group_structure, structure_names())
        if prior_structure == "group" and not param_groups:
            raise ValueError("prior_structure='group' needs param_groups={'name': [param names]}")
        if params is not None and subset_of_weights == "last_layer":
            raise ValueError("pass either params=... or subset_of_weights='last_layer', not both")
        self.param_groups = param_groups
        self.group_structure = group_structure
        self.structure_options = structure_options
        self.params = check_names("params", params)
        self.temperature = check_positive_float("temperature", temperature)
        self.chunk_budget = check_positive_int("chunk_budget", chunk_budget)
        if isinstance(model, SubnetworkModel):
            self.chunk_budget = max(1, int(self.chunk_budget * model.chunk_scale))
        ref = next(model.parameters(), None)
        if ref is None:
            raise ValueError("model has no parameters")
        check_prior_values(prior_precision)
        prior_mean_vector(
            prior_mean, torch.empty((), dtype=torch.float64), None
        )  # values; shape at fit
        self._init_prior_precision = prior_precision
        self._init_prior_mean = prior_mean
        self._sigma = positive_tensor("sigma_noise", sigma_noise, ref).detach()
        if self._sigma.ndim > 1:
            raise ValueError(
                f"sigma_noise must be a scalar or a 1-D tensor (one per output), got shape {tuple(self._sigma.shape)}"
            )
        self._fitted = False
        self.spec_ = None
        self.input_shape_ = None

    # ------------------------------------------------------------------ set-up
    def _ref(self):
        return next(self.model.parameters())

    def prepare(self, example_x=None):
        """Choose the parameters, plan the posterior blocks and lay out the prior, without a data
        pass (``fit`` calls it; ``marglik_training`` needs the prior layout before fitting).
        ``example_x``: one input batch, needed to find the last layer."""
        model = self.model
        if self.subset_of_weights == "last_layer":
            if example_x is None:
                raise ValueError(
                    "subset_of_weights='last_layer' needs an input batch to find the last layer: "
                    "call fit(train_loader) (or prepare(example_x))"
                )
            names = last_layer_names(model, example_x)
        else:
            names = self.params
        spec = build_spec(model, names)
        groups = resolve_groups(spec, self.param_groups, self.group_structure)
        structures = {
            g: (self.group_structure or {}).get(g, self.hessian_structure) for g in groups
        }
        self.spec_ = spec
        self.groups_ = groups
        ref = self._ref()
        self.blocks_ = plan_blocks(spec, groups, structures, self.kfac_fallback)
        for b in self.blocks_:
            b.idx = b.idx.to(ref.device)
        self.layout_ = PriorLayout(
            self.prior_structure, spec, groups if self.param_groups else None, model
        )
        if (
            not hasattr(self, "_prior_prec")
            or self._prior_prec is None
            or self._prior_prec.shape != self.layout_.expected_shape
        ):
            self._prior_prec = self.layout_.init(self._init_prior_precision, ref).detach()
        self.prior_mean = prior_mean_vector(self._init_prior_mean, ref, spec.P)
        return self

    _setup = prepare  # older internal name

    def _check_fitted(self, what="this"):
        if not self._fitted:
            raise NotFittedError(f"Laplace is not fitted: call la.fit(train_loader) before {what}")

    # ------------------------------------------------------------------ fit
    def fit(self, train_loader, create_graph=False, progress=False, override=True):
        """Fit the curvature on ``train_loader`` (an iterable of (X, y), e.g. a DataLoader, a list
        of batches, a generator, or one ``(X, y)`` tuple of tensors); returns self.

        ``override=False`` (continual fitting) adds this loader's curvature, log-likelihood and
        data count to those of the previous fits instead of replacing them: the result equals one
        fit on all loaders together (KFAC included), with the MAP at the model's current parameters.

        The model is put in eval mode while the curvature is computed (its mode is restored);
        the MAP is the model's current parameters. ``create_graph=True`` keeps the autograd graph
        of the curvature and log-likelihood so that the log marginal likelihood is
        differentiable w.r.t. quantities that enter the network (e.g. augmentation parameters
        not covered by the Laplace, see ``params``). A failed fit leaves the Laplace unfitted.
        """
        create_graph = check_bool("create_graph", create_graph)
        check_bool("progress", progress)
        loader = as_loader(train_loader)
        first, loader = peek(loader)
        ref = self._ref()
        if ref.dtype not in (torch.float32, torch.float64):
            raise TypeError(
                f"the model's parameters are {ref.dtype}; the Laplace core needs float32 or float64 "
                "(curvature eigendecompositions and Cholesky factors are not available in half "
                "precision): call model.float() or model.double()"
            )
        X0, _ = unpack_batch(first, 0)
        X0 = to_model_dtype(X0, ref, "X", 0)
        previous = self._previous_fit(override)
        self._fitted = False
        was_training = self.model.training
        self.model.eval()
        try:
            self.prepare(X0)
            self._sigma = self._sigma.to(ref)
            self.sigma_fit_ = self._sigma.clone()
            stats, n_data, out_shape = fit_curvature(self, loader, create_graph, progress)
            if previous is not None:
                self.blocks_, stats, n_data = merge_fits(previous, self.blocks_, stats, n_data)
        finally:
            self.model.train(was_training)
        self._check_sigma_length(out_shape)
        self.loglik_stats_ = stats
        self.n_data = n_data
        self.output_shape_ = out_shape
        self.input_shape_ = tuple(X0.shape[1:])
        self.create_graph_ = bool(create_graph)
        params = dict(self.model.named_parameters())
        self._mean = torch.cat([params[n].detach().reshape(-1) for n in self.spec_.names])
        self._hstats = None
        self._fitted = True
        return self

    def _previous_fit(self, override):
        """What ``fit(override=False)`` adds to: (blocks, log-likelihood stats, n_data) or None."""
        if override or not self._fitted:
            return None
        if self.per_output_curvature and not torch.equal(self._sigma, self.sigma_fit_):
            raise ValueError(
                "fit(override=False) with a per-output sigma_noise that changed: refit all"
            )
        return self.blocks_, self.loglik_stats_, self.n_data

    def _check_sigma_length(self, out_shape):
        if self.lik_.has_sigma and self._sigma.numel() > 1 and self._sigma.numel() != out_shape[-1]:
            raise ValueError(
                f"sigma_noise has {self._sigma.numel()} entries but the model has {out_shape[-1]} "
                "outputs; pass a scalar or one value per output"
            )

    @property
    def per_output_curvature(self):
        """Regression GGN with one σ per output: full/diag blocks are stored per output."""
        return (
            self.lik_.has_sigma
            and self.curvature == "ggn"
            and self._sigma.ndim == 1
            and self._sigma.numel() > 1
        )

    def curvature_sigma(self):
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
        if self.spec_ is not None:
            value = prior_mean_vector(value, self._ref(), self.spec_.P)
        self._prior_mean = value
        self._hstats = None

    @property
    def sigma_noise(self):
        return self._sigma

    @sigma_noise.setter
    def sigma_noise(self, value):
        s = positive_tensor("sigma_noise", value, self._ref())
        if s.ndim > 1:
            raise ValueError(f"sigma_noise must be a scalar or 1-D, got shape {tuple(s.shape)}")
        if self._fitted:
            per_output = self.curvature_sigma() is not None or self.sigma_fit_.numel() > 1
            if (per_output and s.shape != self._sigma.shape) or (not per_output and s.numel() > 1):
                raise ValueError(
                    f"sigma_noise has shape {tuple(s.shape)}, expected {tuple(self._sigma.shape)} "
                    "as at fit time (refit the Laplace to change between a scalar and per-output σ)"
                )
        self._sigma = s
        for b in getattr(self, "blocks_", []):
            b.invalidate()

    def likelihood_scale(self, sigma=None):
        """Likelihood factor s multiplying the stored curvature (a :class:`Scale` when the
        curvature is stored per output)."""
        sigma = self._sigma if sigma is None else sigma
        T = self.temperature
        if not self.lik_.has_sigma:
            return 1.0 / T
        if self.per_output_curvature:
            K = self.sigma_fit_.numel()
            per_out = 1.0 / ((sigma.reshape(-1).expand(K)) ** 2 * T)
            return Scale(lambda: self._proportional_scale(sigma), per_out)
        return self._proportional_scale(sigma)

    _lik_scale = likelihood_scale  # older internal name

    def _proportional_scale(self, sigma):
        T = self.temperature
        if self.curvature_sigma() is None and not self.per_output_curvature:
            if sigma.numel() > 1:
                raise ValueError(
                    "sigma_noise was a scalar at fit time; refit with a per-output sigma_noise to use one"
                )
            sig = sigma.reshape(())
        else:
            ratio = sigma / self.sigma_fit_
            sig = ratio.mean()
            if not torch.allclose(ratio, sig.expand_as(ratio), rtol=1e-6, atol=0):
                raise ValueError(
                    "per-output sigma_noise: KFAC / empirical-Fisher curvature keeps the fit-time sigma "
                    "inside its factors, so only a common rescaling of it is exact -- refit the Laplace "
                    "with the new sigma_noise, or use hessian_structure='full'/'diag' (stored per output)"
                )
        p = 4 if self.curvature == "ef" else 2
        return 1.0 / (sig**p * T)

    def loglik(self, sigma=None):
        """Tempered log-likelihood of the training data at the MAP (differentiable in σ)."""
        sigma = self._sigma if sigma is None else sigma
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

    def hyper_stats(self):
        """(Σ (θ-μ0)², number of parameters) per hyperparameter; cached until the next fit."""
        st = getattr(self, "_hstats", None)
        if st is None:
            delta2 = (self._mean - self.prior_mean) ** 2
            st = (self.layout_.hyper_sums(delta2), self.layout_.hyper_sums(torch.ones_like(delta2)))
            self._hstats = st
        return st

    def block_priors(self, prior_precision=None):
        """One :class:`~.priors.BlockPrior` per block of ``blocks_``."""
        prec = self._prior_prec if prior_precision is None else prior_precision
        diag = self.layout_.to_diag(prec)
        return [self.layout_.block_prior(prec, diag, b) for b in self.blocks_]

    def select_blocks(self, group=None):
        """Indices into ``blocks_`` of one parameter group's blocks (all blocks for None)."""
        if group is None:
            return list(range(len(self.blocks_)))
        if group not in self.groups_:
            raise ValueError(
                f"group={group!r} is not a parameter group; groups are {list(self.groups_)}"
            )
        return [i for i, b in enumerate(self.blocks_) if b.group == group]

    def posterior_precision_diagonal(self):
        """Diagonal of the posterior precision (P,) (for KFAC: of the Kronecker product plus prior)."""
        self._check_fitted("posterior_precision_diagonal()")
        s = self.likelihood_scale()
        out = self._mean.new_zeros(self.spec_.P)
        for b, bp in zip(self.blocks_, self.block_priors()):
            out[b.idx] = b.precision_diag(s, bp).detach()
        return out

    def effective_dimensions(self):
        """{param name: Σ sλ/(sλ+δ)} over the eigenvalues of that tensor's curvature block.

        For priors that are not constant on a tensor, δ is the prior's diagonal in the curvature
        eigenbasis (exact for constant priors)."""
        self._check_fitted("effective_dimensions()")
        s = self.likelihood_scale()
        out = {}
        for b, bp in zip(self.blocks_, self.block_priors()):
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
                "group": b.group,
                "kind": b.kind,
                "module": b.module,
                "params": list(b.names),
                "size": b.d,
            }
            for b in self.blocks_
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
        t = _marglik.evidence_terms(self, prior_precision, sigma_noise)
        t.pop("sigma")
        return t

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
        """Everything needed to rebuild the fitted posterior on the same model (see ``state``)."""
        self._check_fitted("state_dict()")
        return laplace_state(self)

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict`; the model must hold the weights the Laplace was fitted at."""
        v = load_laplace_state(self, state)
        self._mean, self._prior_prec, self.prior_mean = (
            v["mean"],
            v["prior_precision"],
            v["prior_mean"],
        )
        self._sigma, self.sigma_fit_ = v["sigma_noise"], v["sigma_fit"]
        self.n_data, self.output_shape_, self.input_shape_ = (
            v["n_data"],
            v["output_shape"],
            v["input_shape"],
        )
        self.loglik_stats_ = v["loglik_stats"]
        self.create_graph_ = False
        self._hstats = None
        self._fitted = True
        return self

    def __repr__(self):
        fitted = f", P={self.spec_.P}" if self._fitted else ""
        return (
            f"Laplace(likelihood={self.lik_.name!r}, subset_of_weights={self.subset_of_weights!r}, "
            f"hessian_structure={self.hessian_structure!r}, prior_structure={self.prior_structure!r}{fitted})"
        )


def fit_laplace(model, train_loader, likelihood, **laplace_kwargs):
    """``Laplace(model, likelihood, **laplace_kwargs).fit(train_loader)``: the one post-hoc helper
    the capabilities share (SpaM's OPD, the equivariance readouts)."""
    return Laplace(model, likelihood, **laplace_kwargs).fit(train_loader)
