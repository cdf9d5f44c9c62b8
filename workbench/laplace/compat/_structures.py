"""laplace-torch's low-rank, functional (GP) and subnetwork classes, and its subnetwork masks."""

from __future__ import annotations

import math

import torch

from ..bridge import laplace_bridge
from ..laplace import Laplace as NativeLaplace
from ..subnetwork import check_indices, select_subnetwork, trainable
from ._classes import BaseLaplace, register
from ._predictive import _normal_samples

__all__ = [
    "LowRankLaplace",
    "FunctionalLaplace",
    "FunctionalLLLaplace",
    "SubnetLaplace",
    "FullSubnetLaplace",
    "DiagSubnetLaplace",
    "SubnetMask",
    "RandomSubnetMask",
    "LargestMagnitudeSubnetMask",
    "LargestVarianceDiagLaplaceSubnetMask",
    "ParamNameSubnetMask",
    "ModuleNameSubnetMask",
    "LastLayerSubnetMask",
]


@register
class LowRankLaplace(BaseLaplace):
    """Top eigenpairs of the GGN (Lanczos) plus the diagonal prior. The rank is laplace-torch's
    ``backend_kwargs={"low_rank": k}`` (default 10); laplace-torch decomposes the Hessian with
    asdfghjkl instead, so the two agree where the Hessian's top eigenpairs are the GGN's."""

    _key, _structure, _subset = ("all", "lowrank"), "lowrank", "all"

    def _native_kwargs(self, names):
        kw = super()._native_kwargs(names)
        rank = int((self.backend_kwargs or {}).get("low_rank", 10))
        kw["structure_options"] = {"rank": min(rank, sum(self._sizes()[n] for n in names))}
        return kw

    def _sizes(self):
        return {n: p.numel() for n, p in self.model.named_parameters()}

    def fit(self, train_loader, override=True, progress_bar=False):
        if not override:
            raise ValueError("LowRank LA does not support updating.")
        return super().fit(train_loader, override=True, progress_bar=progress_bar)

    @property
    def posterior_precision(self):
        """((U (P, k), s·λ (k,)), prior diagonal (P,)) as laplace-torch returns it."""
        self._check_H_init()
        (block,) = self.native_.blocks_
        lam = (block.F**2).sum(1)
        U = block.F.T / lam.sqrt().clamp_min(torch.finfo(lam.dtype).tiny)
        return (U, self._H_factor.detach() * lam), self.prior_precision_diag


class _FunctionalMixin:
    """The GP view: predictions only as ``pred_type="gp"``, an isotropic prior, ``n_subset``
    context points drawn with ``seed`` (native ``hessian_structure="gp"``).

    laplace-torch's subset-of-data GP has the prior kernel (M/N)·J P0⁻¹ Jᵀ and, for
    classification, keeps only the diagonal of the loss Hessian; in weight space its covariance
    is (M/N)·(P0 + (M/N)·G_M)⁻¹. We follow it: the native GP view with context_scale M/N and the
    diagonal Hessian, and every predictive covariance times M/N (no change at M = N)."""

    _structure = "gp"

    def __init__(
        self, model, likelihood, n_subset, *args, independent_outputs=False, seed=0, **kwargs
    ):
        if independent_outputs:
            raise ValueError("independent_outputs=True (a diagonal GP kernel) is not supported")
        self.n_subset, self.seed, self.independent_outputs = int(n_subset), seed, False
        self._var_scale = 1.0
        super().__init__(model, likelihood, *args, **kwargs)

    def _prior_structure(self, n):
        if n != 1:
            raise ValueError("Only isotropic priors supported in FunctionalLaplace")
        return "scalar"

    def _native_kwargs(self, names):
        kw = super()._native_kwargs(names)
        kw["structure_options"] = {
            "n_context": self.n_subset,
            "random_state": self.seed,
            "context_scale": self._var_scale,
            "likelihood_hessian": "diagonal" if self.likelihood == "classification" else "exact",
        }
        return kw

    def fit(self, train_loader, progress_bar=False):
        if hasattr(train_loader, "dataset"):
            n = len(train_loader.dataset)
        else:
            n = sum(len(b[1]) for b in train_loader)
        if self.n_subset > n:
            raise ValueError(
                "`num_data` must be less than or equal to the original number of data points."
            )
        self._var_scale = self.n_subset / n
        return super().fit(train_loader, override=True, progress_bar=progress_bar)

    def _check_predict_args(self, pred_type, link_approx, generator, model_kwargs):
        if pred_type != "gp":
            raise ValueError("Only gp is supported as a functional prediction type.")
        super()._check_predict_args("glm", link_approx, generator, model_kwargs)

    def __call__(
        self,
        x,
        pred_type="gp",
        joint=False,
        link_approx="probit",
        n_samples=100,
        diagonal_output=False,
        generator=None,
        fitting=False,
        **model_kwargs,
    ):
        self._check_predict_args(pred_type, link_approx, generator, model_kwargs)
        return self._predict(x, "glm", joint, link_approx, n_samples, diagonal_output, generator)

    def _predict(self, x, pred_type, joint, link_approx, n_samples, diagonal_output, generator):
        """The native GP view's predictive with its covariance times M/N (see the class doc)."""
        self._check_H_init()
        la, x, k = self.native_, self._input(x), self._var_scale
        if self.likelihood == "regression":
            if joint:
                f_mu, cov = la(x, joint=True)
                n = f_mu.numel()
                return f_mu.reshape(n), k * cov.reshape(n, n)
            f_mu, f_var = la(x)
            f_var = k * f_var
            if diagonal_output:
                return f_mu, torch.diagonal(f_var, dim1=-2, dim2=-1)
            return f_mu, f_var
        f_mu, f_var = self._map_out(x), k * la.functional_variance(x)
        if link_approx == "probit":
            var = torch.diagonal(f_var, dim1=-2, dim2=-1)
            return torch.softmax(f_mu / torch.sqrt(1 + math.pi / 8 * var), -1)
        if link_approx.startswith("bridge"):
            return laplace_bridge(f_mu, f_var, normalize=link_approx == "bridge_norm")
        fs = _normal_samples(f_mu, f_var, n_samples, diagonal_output, generator)
        return torch.softmax(fs, -1).mean(0)

    def functional_samples(
        self, x, pred_type="gp", n_samples=100, diagonal_output=False, generator=None
    ):
        self._check_H_init()
        x = self._input(x)
        f_mu, f_var = self._map_out(x), self._var_scale * self.native_.functional_variance(x)
        return _normal_samples(f_mu, f_var, n_samples, diagonal_output, generator)

    def predictive_samples(
        self, x, pred_type="gp", n_samples=100, diagonal_output=False, generator=None
    ):
        fs = self.functional_samples(x, "gp", n_samples, diagonal_output, generator)
        return fs if self.likelihood == "regression" else torch.softmax(fs, -1)

    def optimize_prior_precision(
        self, pred_type="gp", method="marglik", *args, prior_structure="scalar", **kwargs
    ):
        if pred_type != "gp" or prior_structure != "scalar":
            raise ValueError(
                "FunctionalLaplace tunes one isotropic prior precision with pred_type='gp'"
            )
        return super().optimize_prior_precision(
            "glm", method, *args, prior_structure="scalar", **kwargs
        )


@register
class FunctionalLaplace(_FunctionalMixin, BaseLaplace):
    _key, _subset = ("all", "gp"), "all"


@register
class FunctionalLLLaplace(_FunctionalMixin, BaseLaplace):
    _key, _subset = ("last_layer", "gp"), "last_layer"


class SubnetLaplace(BaseLaplace):
    """Laplace over ``subnetwork_indices`` of the flat parameter vector (all other weights fixed).
    ``mean`` and ``sample`` are full parameter vectors as in laplace-torch; ``n_params_subnet`` is
    the subnetwork's size."""

    _subset = "subnetwork"

    def __init__(self, model, likelihood, subnetwork_indices, *args, **kwargs):
        total = sum(p.numel() for _, p in trainable(model))
        if not (
            isinstance(subnetwork_indices, torch.Tensor) and subnetwork_indices.dtype == torch.long
        ):
            raise ValueError("Subnetwork indices must be non-empty 1-dimensional torch.LongTensor.")
        self.subnetwork_indices = check_indices(subnetwork_indices, total)
        self.n_params_subnet = len(self.subnetwork_indices)
        super().__init__(model, likelihood, *args, **kwargs)
        self.n_params, self.n_layers = total, len(self.params)

    def _prior_structure(self, n):
        if n == 1:
            return "scalar"
        if n == self.n_params_subnet:
            return "diagonal"
        raise ValueError("Mismatch of prior and model. Diagonal or scalar prior.")

    def _build_for(self, names):
        kw = self._native_kwargs(None)
        kw.pop("params")
        mean = self._prior_mean.detach()
        return NativeLaplace(
            self.model,
            self.likelihood,
            subset_of_weights="subnetwork",
            subnetwork_indices=self.subnetwork_indices,
            prior_precision=self._prior_precision.detach(),
            prior_structure=self._prior_structure(len(self._prior_precision)),
            prior_mean=mean.reshape(()) if mean.numel() == 1 else mean,
            **kw,
        )

    def _selected_names(self, X0):
        return ["theta"]

    def _adopt_sizes(self):
        self.n_params = sum(p.numel() for _, p in trainable(self.model))

    def fit(self, train_loader, override=True, progress_bar=False):
        super().fit(train_loader, override=override, progress_bar=progress_bar)
        self._adopt_sizes()

    @property
    def mean(self):
        self._check_H_init()
        return self.native_.model.full_vector()

    @property
    def mean_subnet(self):
        self._check_H_init()
        return self.native_.mean

    def sample(self, n_samples=100, generator=None):
        self._check_H_init()
        return self.native_.model.full_vector(self.native_.sample(n_samples, generator))

    def square_norm(self, value):
        value = (
            value[..., self.subnetwork_indices.to(value.device)]
            if value.shape[-1] == self.n_params
            else value
        )
        delta = value - self.mean_subnet
        P = self.posterior_precision
        return delta @ (P * delta) if P.ndim == 1 else delta @ P @ delta


@register
class FullSubnetLaplace(SubnetLaplace):
    _key, _structure = ("subnetwork", "full"), "full"


@register
class DiagSubnetLaplace(SubnetLaplace):
    _key, _structure = ("subnetwork", "diag"), "diag"


# -------------------------------------------------------------------- subnetwork masks
class SubnetMask:
    """laplace-torch's subnetwork masks: ``select(train_loader=None)`` returns the indices."""

    def __init__(self, model):
        self.model = model
        self._indices = None

    @property
    def indices(self):
        if self._indices is None:
            raise AttributeError("Subnetwork mask not selected. Run select() first.")
        return self._indices

    @property
    def n_params_subnet(self):
        return len(self.indices)

    def select(self, train_loader=None):
        if self._indices is not None:
            raise ValueError("Subnetwork mask already selected.")
        self._indices = self._select(train_loader)
        return self._indices

    def _select(self, train_loader):
        raise NotImplementedError


class _ScoreMask(SubnetMask):
    method = ""

    def __init__(self, model, n_params_subnet):
        super().__init__(model)
        total = sum(p.numel() for _, p in trainable(model))
        if n_params_subnet is None:
            raise ValueError(
                "Need to pass number of subnetwork parameters when using subnetwork Laplace."
            )
        if n_params_subnet > total:
            raise ValueError(
                f"Subnetwork ({n_params_subnet}) cannot be larger than model ({total})."
            )
        self._n = int(n_params_subnet)

    def _select(self, train_loader):
        return select_subnetwork(self.model, self._n, self.method)


class RandomSubnetMask(_ScoreMask):
    method = "random"

    def _select(self, train_loader):
        seed = int(torch.randint(0, 2**31 - 1, ()))  # laplace-torch draws from the global RNG
        return select_subnetwork(self.model, self._n, "random", random_state=seed)


class LargestMagnitudeSubnetMask(_ScoreMask):
    method = "largest_magnitude"


class LargestVarianceDiagLaplaceSubnetMask(_ScoreMask):
    """Largest marginal variances under ``diag_laplace_model`` (a compat ``DiagLaplace``)."""

    def __init__(self, model, n_params_subnet, diag_laplace_model):
        super().__init__(model, n_params_subnet)
        self.diag_laplace_model = diag_laplace_model

    def _select(self, train_loader):
        if train_loader is None:
            raise ValueError("Need to pass train loader for subnet selection.")
        self.diag_laplace_model.fit(train_loader)
        var = self.diag_laplace_model.posterior_variance
        return torch.argsort(var.cpu(), descending=True, stable=True)[: self._n].sort().values


class ParamNameSubnetMask(SubnetMask):
    """Every entry of the named parameter tensors."""

    def __init__(self, model, parameter_names):
        super().__init__(model)
        self.parameter_names = list(parameter_names)

    def _names(self):
        known = [n for n, _ in trainable(self.model)]
        bad = [n for n in self._names_wanted() if n not in known]
        if bad:
            raise ValueError(f"Parameters {bad} do not exist in model.")
        return set(self._names_wanted())

    def _names_wanted(self):
        return self.parameter_names

    def _select(self, train_loader):
        wanted, idx, off = self._names(), [], 0
        for n, p in trainable(self.model):
            if n in wanted:
                idx.append(torch.arange(off, off + p.numel()))
            off += p.numel()
        if not idx:
            raise ValueError("Subnetwork indices cannot be empty.")
        return torch.cat(idx)


class ModuleNameSubnetMask(ParamNameSubnetMask):
    """Every parameter of the named modules."""

    def __init__(self, model, module_names):
        SubnetMask.__init__(self, model)
        self.module_names = list(module_names)

    def _names_wanted(self):
        out = []
        for m in self.module_names:
            try:
                mod = self.model.get_submodule(m)
            except AttributeError:
                raise ValueError(f"Module {m!r} does not exist in model.") from None
            out += [f"{m}.{n}" if m else n for n, p in mod.named_parameters() if p.requires_grad]
        return out


class LastLayerSubnetMask(ModuleNameSubnetMask):
    """The last layer (found from a batch of ``train_loader`` unless ``last_layer_name`` is given)."""

    def __init__(self, model, last_layer_name=None):
        super().__init__(model, [] if last_layer_name is None else [last_layer_name])
        self.last_layer_name = last_layer_name

    def _select(self, train_loader):
        if self.last_layer_name is None:
            from ..params import last_layer_names  # noqa: PLC0415

            if train_loader is None:
                raise ValueError("Need to pass train loader to find the last layer.")
            X = next(iter(train_loader))[0]
            names = last_layer_names(self.model, X)
            self.module_names = [names[0].rpartition(".")[0]]
        return super()._select(train_loader)
